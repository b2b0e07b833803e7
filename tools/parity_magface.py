"""Numerical parity of synthfer.models.iresnet with MagFace's reference iResNet.

    python tools/parity_magface.py --reference /path/to/IrvingMeng/MagFace [--write-fixtures DIR]

For iResNet50 and iResNet100: imports the reference models/iresnet.py from the given checkout
(kept outside this project), compares state-dict names and shapes, fills the reference with
seeded random weights (BatchNorm running statistics and PReLU slopes included, scaled so the
embedding norms land near MagFace's real 10-40), copies them into synthfer's network, and
compares eval-mode outputs on a seeded batch. Then exports synthfer's network to ONNX and compares
onnxruntime with torch at batch sizes 1 and 3, and writes fake checkpoints in the released
layouts (DDP `features.module.` + margin head `fc.weight`, DataParallel `module.features.` +
`module.fc.weight`) that `load_magface` must read back to the same outputs.

With --write-fixtures it also writes DIR/iresnet{50,100}.txt (`name<TAB>shape` per reference
state-dict entry) for tests/test_iresnet.py. Exits 1 if any check fails. Not imported by tests.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synthfer.models.iresnet import DEPTHS, IResNet, load_magface, parameter_count  # noqa: E402

TORCH_TOL = 1e-5     # max abs difference, reference vs synthfer, same weights and input
ONNX_TOL = 1e-4      # max abs difference, onnxruntime vs torch
REPO_NAME = "IrvingMeng/MagFace"


def reference_module(root: Path):
    # Loaded by file path so the checkout's generic package name `models` never shadows anything.
    source = root / "models" / "iresnet.py"
    spec = importlib.util.spec_from_file_location("magface_reference_iresnet", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_commit(root: Path, given: str | None) -> str:
    if given:
        return given
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fill_random_(model: torch.nn.Module, seed: int) -> None:
    """Seeded values for every state-dict entry, with trained-network-like scales (see module doc)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "num_batches_tracked":
                tensor.fill_(int(torch.randint(1, 10**6, (), generator=gen)))
            elif tensor.ndim >= 2:                       # conv / linear weights: unit gain
                tensor.copy_(torch.randn(tensor.shape, generator=gen) / math.sqrt(tensor[0].numel()))
            elif "prelu" in name:                        # negative slopes, as trained ones are
                tensor.copy_(0.05 + 0.3 * torch.rand(tensor.shape, generator=gen))
            elif leaf == "running_var":                  # strictly positive
                tensor.copy_(0.5 + 1.5 * torch.rand(tensor.shape, generator=gen))
            elif leaf == "weight":                       # BN gamma
                tensor.copy_(0.5 + 0.5 * torch.rand(tensor.shape, generator=gen))
            else:                                        # BN beta, running_mean, linear bias
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=gen))


def layout(model: torch.nn.Module) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in model.state_dict().items()]


def write_fixture(path: Path, ref: torch.nn.Module, depth: int, commit: str) -> None:
    header = (f"# {REPO_NAME}@{commit} models/iresnet.py iresnet{depth}(num_classes=512).state_dict(): "
              f"name<TAB>shape per entry, {parameter_count(ref)} parameters; "
              f"written by tools/parity_magface.py --write-fixtures")
    lines = [header] + [f"{k}\t{shape}" for k, shape in layout(ref)]
    path.write_text("\n".join(lines) + "\n")


def onnx_diff(model: IResNet, batch: torch.Tensor, tmp: Path) -> dict[int, float]:
    import onnxruntime as ort
    path = tmp / "iresnet.onnx"
    warnings.filterwarnings("ignore", category=DeprecationWarning)   # dynamo=False is the legacy exporter
    torch.onnx.export(model.eval(), (torch.rand(2, 3, 112, 112),), str(path), dynamo=False,
                      input_names=["image"], output_names=["embedding"],
                      dynamic_axes={"image": {0: "N"}, "embedding": {0: "N"}}, opset_version=17)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diffs = {}
    for n in (1, 3):
        x = batch[:n]
        with torch.no_grad():
            want = model(x).numpy()
        got = session.run(["embedding"], {"image": x.numpy()})[0]
        diffs[n] = float(np.abs(got - want).max())
    return diffs


def checkpoint_roundtrip(ref_state: dict, depth: int, x: torch.Tensor, want: torch.Tensor,
                         tmp: Path) -> dict[str, float]:
    """Fake checkpoints in the released layouts; max abs output difference after load_magface."""
    classes = 1000
    layouts = {
        # DDP training (released iResNet100/50): backbone under features.module., margin head beside it
        "features.module. + fc.weight[1000,512]": {
            **{f"features.module.{k}": v for k, v in ref_state.items()},
            "fc.weight": torch.randn(classes, 512)},
        # DataParallel training: the whole builder under module.; MagLinear stores [512, classes]
        "module.features. + module.fc.weight[512,1000]": {
            **{f"module.features.{k}": v for k, v in ref_state.items()},
            "module.fc.weight": torch.randn(512, classes)},
    }
    out = {}
    for name, state in layouts.items():
        path = tmp / "ckpt.pth"
        torch.save({"epoch": 25, "arch": f"iresnet{depth}", "state_dict": state}, path)
        model = load_magface(path)
        assert model.layers == DEPTHS[depth], (name, model.layers)
        with torch.no_grad():
            out[name] = float((model(x) - want).abs().max())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, required=True, help="MagFace checkout (has models/iresnet.py)")
    ap.add_argument("--reference-commit", help="commit of that checkout (default: git rev-parse there)")
    ap.add_argument("--depths", type=int, nargs="+", default=[50, 100], choices=sorted(DEPTHS))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-fixtures", type=Path, metavar="DIR")
    args = ap.parse_args()

    ref_mod = reference_module(args.reference)
    commit = reference_commit(args.reference, args.reference_commit)
    print(f"reference: {REPO_NAME}@{commit} ({args.reference}); torch {torch.__version__}")
    torch.manual_seed(args.seed)
    x = torch.rand(args.batch, 3, 112, 112, generator=torch.Generator().manual_seed(args.seed + 1))
    failed = []
    for depth in args.depths:
        ref = getattr(ref_mod, f"iresnet{depth}")(pretrained=False, num_classes=512)
        ours = IResNet(DEPTHS[depth])
        same_layout = layout(ref) == layout(ours)
        print(f"\niresnet{depth}: state-dict names/shapes/order identical: {same_layout} "
              f"({len(ref.state_dict())} entries)")
        print(f"  parameters: reference {parameter_count(ref):,}  synthfer {parameter_count(ours):,}")
        if not same_layout or parameter_count(ref) != parameter_count(ours):
            failed.append(f"iresnet{depth} layout")
            continue
        if args.write_fixtures:
            args.write_fixtures.mkdir(parents=True, exist_ok=True)
            write_fixture(args.write_fixtures / f"iresnet{depth}.txt", ref, depth, commit)
            print(f"  wrote {args.write_fixtures / f'iresnet{depth}.txt'}")

        fill_random_(ref, args.seed + depth)
        ours.load_state_dict(ref.state_dict(), strict=True)
        ref.eval(), ours.eval()
        with torch.no_grad():
            want, got = ref(x), ours(x)
        diff = float((got - want).abs().max())
        rel = diff / float(want.abs().max())
        norms = want.norm(dim=1)
        print(f"  embedding norms (reference): {', '.join(f'{v:.4f}' for v in norms.tolist())}")
        print(f"  torch parity: max abs {diff:.3e}  max rel {rel:.3e}  "
              f"max norm diff {float((got.norm(dim=1) - norms).abs().max()):.3e}  (tol {TORCH_TOL:g})")
        if not diff <= TORCH_TOL:
            failed.append(f"iresnet{depth} torch parity {diff:.3e}")

        with tempfile.TemporaryDirectory() as tmp:
            diffs = onnx_diff(ours, x, Path(tmp))
            print("  onnxruntime vs torch: " + "  ".join(f"batch {n}: {d:.3e}" for n, d in diffs.items())
                  + f"  (tol {ONNX_TOL:g})")
            failed += [f"iresnet{depth} onnx batch {n} {d:.3e}" for n, d in diffs.items() if not d <= ONNX_TOL]
            loads = checkpoint_roundtrip(ref.state_dict(), depth, x, want, Path(tmp))
            for name, d in loads.items():
                print(f"  load_magface({name}): depth inferred {depth}, max abs vs reference {d:.3e}")
                if not d <= TORCH_TOL:
                    failed.append(f"iresnet{depth} load {name} {d:.3e}")
    print("\nFAILED: " + "; ".join(failed) if failed else "\nall checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
