"""`synthfer models export-onnx`: the published EmoNet and MagFace checkpoints as the ONNX files
synthfer's recipes read, made with synthfer's own implementations (models/emonet.py,
models/iresnet.py) so nobody needs a second project's code.

The I/O contract is the one the registry presets state:

* EmoNet (emonet_8.pth, emonet_5.pth): input "image" float32 [N, 3, 256, 256], RGB in [0, 1];
  output "va" [N, 2] = (valence, arousal), unclamped (synthfer clamps).
* MagFace iResNet50/100 (magface_epoch_00025.pth, ...): input "image" [N, 3, 112, 112], BGR in
  [0, 1]; output "embedding" [N, 512], not normalised (its norm is the quality).

The batch axis is dynamic. Every export is checked before it is kept: onnxruntime's output on a
seeded batch must match torch's to 1e-4; the file is written under a temporary name and renamed.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from synthfer.errors import ModelFileError, UsageError

ARCHITECTURES = ("emonet", "iresnet50", "iresnet100")
TOLERANCE = 1e-4          # max |onnxruntime - torch| / max(1, max |torch|) accepted on the check batch
OPSET = 17


def detect(path: Path) -> str:
    """emonet | iresnet50 | iresnet100, from the checkpoint's keys (no weights are kept)."""
    from synthfer.models.formats.torch_file import load_object

    obj = load_object(path)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else {}
    keys = [k for k in state if isinstance(k, str)] if isinstance(state, dict) else []
    if any(k.endswith("emo_fc_2.3.weight") for k in keys):
        return "emonet"
    if any(k.endswith("conv1.weight") for k in keys) and any(".layer3." in f".{k}" for k in keys):
        blocks = {int(k.split("layer3.", 1)[1].split(".", 1)[0]) for k in keys if "layer3." in k}
        return "iresnet100" if max(blocks) + 1 >= 30 else "iresnet50"
    raise ModelFileError(f"{path}: neither an EmoNet nor a MagFace iResNet checkpoint; "
                         f"--arch emonet, iresnet50 or iresnet100 names what it should be")


def export(src: str | Path, dst: str | Path, arch: str | None = None) -> dict:
    """Write `dst` (ONNX) from checkpoint `src`; returns what was written (arch, parameters,
    input/output, the check's max difference)."""
    src, dst = Path(src), Path(dst)
    if arch is not None and arch not in ARCHITECTURES:
        raise UsageError(f"--arch: must be one of {', '.join(ARCHITECTURES)}, got {arch!r}")
    if dst.suffix != ".onnx":
        raise UsageError(f"{dst}: the output name must end in .onnx")
    arch = arch or detect(src)
    model, side, output = _model(src, arch)
    parameters = sum(p.numel() for p in model.parameters())
    data = _onnx_bytes(model, side, output)
    diff = _check(model, data, side, output, dst)
    _write(dst, data)
    return {"arch": arch, "parameters": parameters, "input": f"image [N, 3, {side}, {side}]",
            "output": f"{output} [N, {2 if output == 'va' else 512}]", "max_difference": diff,
            "size_bytes": len(data)}


def _model(src: Path, arch: str) -> tuple[torch.nn.Module, int, str]:
    if arch == "emonet":
        from synthfer.models.emonet import EmoNetVA, load_emonet

        return EmoNetVA(load_emonet(src)).eval(), 256, "va"
    from synthfer.models.iresnet import load_magface

    return load_magface(src, depth=int(arch.removeprefix("iresnet"))).eval(), 112, "embedding"


def _onnx_bytes(model: torch.nn.Module, side: int, output: str) -> bytes:
    buffer = io.BytesIO()
    example = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
        # onnxscript; both write the same operators for these plain conv nets.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), buffer, dynamo=False, input_names=["image"], output_names=[output],
                          dynamic_axes={"image": {0: "N"}, output: {0: "N"}}, opset_version=OPSET)
    return buffer.getvalue()


def _check(model: torch.nn.Module, data: bytes, side: int, output: str, dst: Path) -> float:
    """max |onnxruntime - torch| / max(1, max |torch|) on a seeded batch of 3 (a batch size the
    export never saw)."""
    import onnxruntime as ort

    x = torch.rand(3, side, side, 3, generator=torch.Generator().manual_seed(1)).permute(0, 3, 1, 2).contiguous()
    with torch.inference_mode():
        want = model(x).numpy()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (got,) = session.run([output], {"image": x.numpy()})
    diff = float(np.max(np.abs(got - want)))
    # Relative to the output's scale (at least 1): float32 rounding grows with the values, and an
    # untrained checkpoint's embedding can be thousands where a trained one's is about 1.
    scale = max(1.0, float(np.max(np.abs(want))))
    if not diff / scale <= TOLERANCE:
        raise ModelFileError(f"{dst}: the export differs from torch by {diff:.2e} on outputs up to {scale:.3g} "
                             f"(more than {TOLERANCE:g} of them); not written")
    return diff / scale


def _write(dst: Path, data: bytes) -> None:
    """Temp file, fsync, rename: a reader never sees half an ONNX file."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
