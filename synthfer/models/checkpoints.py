"""Reading generator checkpoints and converting NVIDIA (NVlabs) key layouts to rosinality's.

Constant blur kernels: the Generator owns them as persistent buffers (rosinality files carry
them as ``convs.{even}.conv.blur.kernel`` / ``to_rgbs.N.upsample.kernel``). NVlabs files carry
their own ``resample_filter`` instead; ``nvlabs_to_rosinality`` checks that each one is the
standard [1,3,3,1] filter (the only one this Generator implements) and drops it, and
``fill_constant_buffers`` copies the module's own kernels into a state dict that lacks them, so
``load_state_dict(strict=True)`` still catches every other missing or unexpected key.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import torch

from synthfer.errors import ModelFileError
from synthfer.models.emostyle import EmoMappingWplus
from synthfer.models.stylegan2 import Generator, blur_kernel, channels_for

_BLOCK_KEY = re.compile(r"synthesis\.b(\d+)\.(?:(conv0|conv1|torgb)\.)?(.+)")
_MAPPING_KEY = re.compile(r"mapping\.fc(\d+)\.(weight|bias)")


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of a .safetensors file (on CPU) and its header metadata ({} when none)."""
    from safetensors import safe_open

    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        metadata = dict(f.metadata() or {})
        for key in f.keys():
            tensors[key] = f.get_tensor(key)
    return tensors, metadata


def _check_filter(key: str, value: torch.Tensor) -> None:
    expected = blur_kernel(1.0)
    if value.shape != expected.shape or not torch.allclose(value.float().cpu(), expected, atol=1e-6):
        raise ValueError(f"{key}: only the [1,3,3,1] resample filter is supported")


def _layer_key(prefix: str, name: str, value: torch.Tensor, is_rgb: bool) -> tuple[str, torch.Tensor]:
    """Map one NVlabs conv/torgb tensor name (below the layer) to rosinality's name and shape."""
    if name == "weight":
        return f"{prefix}.conv.weight", value.unsqueeze(0)
    if name in ("affine.weight", "affine.bias"):
        return f"{prefix}.conv.modulation.{name.split('.')[1]}", value
    if name == "bias":
        if is_rgb:
            return f"{prefix}.bias", value.reshape(1, -1, 1, 1)
        return f"{prefix}.activate.bias", value
    if name == "noise_strength" and not is_rgb:
        return f"{prefix}.noise.weight", value.reshape(1)
    raise KeyError(name)


def nvlabs_to_rosinality(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename/reshape an NVlabs ``G_ema`` state dict to the rosinality layout used by Generator.

    ``resample_filter`` buffers are validated and dropped (see module docstring); unknown keys,
    including StyleGAN3 (``synthesis.input.*``, ``synthesis.L*``) and conditional
    (``mapping.embed.*``) networks, raise ValueError.
    """
    if any(k.startswith("synthesis.input.") or re.match(r"synthesis\.L\d+_", k) for k in state):
        raise ValueError("this is a StyleGAN3 (-T/-R) network, not StyleGAN2: not supported")
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key == "mapping.w_avg":
            out["latent_avg"] = value
            continue
        m = _MAPPING_KEY.fullmatch(key)
        if m:
            out[f"style.{int(m.group(1)) + 1}.{m.group(2)}"] = value
            continue
        m = _BLOCK_KEY.fullmatch(key)
        if not m:
            unknown.append(key)
            continue
        res, layer, name = int(m.group(1)), m.group(2), m.group(3)
        if res < 4 or res & (res - 1):
            unknown.append(key)
            continue
        if name == "resample_filter":
            _check_filter(key, value)
            continue
        if layer is None:
            if res == 4 and name == "const":
                out["input.input"] = value.unsqueeze(0)
            else:
                unknown.append(key)
            continue
        j = int(math.log2(res)) - 3  # block index above 4 px
        if res == 4:
            if layer == "conv0":
                unknown.append(key)
                continue
            prefix, noise_idx = ("to_rgb1", None) if layer == "torgb" else ("conv1", 0)
        elif layer == "torgb":
            prefix, noise_idx = f"to_rgbs.{j}", None
        else:
            k = 2 * j + (layer == "conv1")
            prefix, noise_idx = f"convs.{k}", k + 1
        if name == "noise_const" and noise_idx is not None:
            out[f"noises.noise_{noise_idx}"] = value.reshape(1, 1, *value.shape[-2:])
            continue
        try:
            new_key, new_value = _layer_key(prefix, name, value, layer == "torgb")
        except KeyError:
            unknown.append(key)
            continue
        out[new_key] = new_value
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise ValueError(f"not a StyleGAN2 generator state dict: {len(unknown)} unexpected keys ({shown})")
    return out


def fill_constant_buffers(generator: Generator, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copy of ``state`` with the generator's blur kernels added where absent (they are constants)."""
    filled = dict(state)
    for key, value in generator.state_dict().items():
        if key.endswith((".blur.kernel", ".upsample.kernel")) and key not in filled:
            filled[key] = value.clone()
    return filled


def generator_from_nvlabs_kwargs(init_kwargs: dict) -> Generator:
    """Empty Generator with the architecture described by NVlabs ``G_ema`` ``_init_kwargs``."""
    if init_kwargs.get("c_dim", 0):
        raise ValueError(f"conditional generators (c_dim={init_kwargs['c_dim']}) are not supported")
    if init_kwargs.get("img_channels", 3) != 3:
        raise ValueError(f"only RGB generators are supported (img_channels={init_kwargs['img_channels']})")
    mk = dict(init_kwargs.get("mapping_kwargs") or {})
    sk = dict(init_kwargs.get("synthesis_kwargs") or {})
    arch = sk.get("architecture", "skip")
    if arch != "skip":
        raise ValueError(f"only the 'skip' synthesis architecture is supported, got {arch!r}")
    w_dim = int(init_kwargs["w_dim"])
    if mk.get("layer_features") not in (None, w_dim):
        raise ValueError("mapping layer_features different from w_dim are not supported")
    resolution = int(init_kwargs["img_resolution"])
    channels = channels_for(
        resolution, channel_base=int(sk.get("channel_base", 32768)), channel_max=int(sk.get("channel_max", 512))
    )
    return Generator(
        resolution=resolution,
        z_dim=int(init_kwargs["z_dim"]),
        w_dim=w_dim,
        n_mlp=int(mk.get("num_layers", 8)),
        channels=channels,
        lr_mul=float(mk.get("lr_multiplier", 0.01)),
        conv_clamp=sk.get("conv_clamp"),
    )


def load_nvlabs_safetensors(path: str | Path) -> Generator:
    """Generator (eval mode) from a safetensors file holding an NVlabs ``G_ema`` state dict.

    The header metadata must hold ``init_kwargs`` (JSON of the NVlabs constructor arguments).
    """
    tensors, metadata = read_safetensors(path)
    if "init_kwargs" not in metadata:
        raise ValueError(f"{path}: safetensors metadata has no 'init_kwargs'")
    generator = generator_from_nvlabs_kwargs(json.loads(metadata["init_kwargs"]))
    state = fill_constant_buffers(generator, nvlabs_to_rosinality(tensors))
    generator.load_state_dict(state, strict=True)
    return generator.eval()


# ---------------------------------------------------------------- entry points used by builds
# Everything below raises ModelFileError (exit 2) with one line naming the file.


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_safetensors(path: Path) -> bool:
    """By content: an 8-byte little-endian header length, then a JSON object."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < n <= path.stat().st_size - 8


def load_generator(path: str | Path) -> Generator:
    """A StyleGAN2 generator from a weights file. Today: safetensors in NVlabs G_ema layout
    with `init_kwargs` metadata (as in tests/fixtures)."""
    path = Path(path)
    try:
        if not _is_safetensors(path):
            raise ModelFileError(f"{path}: not a safetensors file; NVlabs pickles and rosinality .pt files "
                                 f"are not supported yet")
        return load_nvlabs_safetensors(path)
    except ModelFileError:
        raise
    except OSError as err:
        raise ModelFileError(f"{path}: cannot read: {err.strerror or err}") from None
    except (ValueError, KeyError, RuntimeError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{path}: not a usable StyleGAN2 generator: {_first_line(err)}") from None


def load_editor(path: str | Path) -> EmoMappingWplus:
    """EmoStyle editor from `emo_mapping_wplus_*.pt` (a dict with `emo_mapping_state_dict`, or a
    bare state dict). weights_only=True: nothing in the file is executed."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise ModelFileError(f"{path}: cannot read: {err.strerror or err}") from None
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise ModelFileError(f"{path}: not a torch checkpoint an editor can load: {_first_line(err)}") from None
    state = obj.get("emo_mapping_state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or "latent_net.0.0.weight" not in state:
        raise ModelFileError(f"{path}: no EmoStyle editor weights (expected 'emo_mapping_state_dict' "
                             f"or keys latent_net.*)")
    try:
        n_latent = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("latent_net."))
        emo_hidden, emo_dim = state["emotion_enc.0.weight"].shape[0], state["emotion_enc.2.weight"].shape[0]
        hidden = tuple(state[f"latent_net.0.{d}.weight"].shape[0] for d in (0, 2, 4))
        w_dim = state["latent_net.0.6.weight"].shape[0]
        editor = EmoMappingWplus(n_latent=n_latent, w_dim=w_dim, emo_dim=emo_dim, emo_hidden=emo_hidden, hidden=hidden)
        editor.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError, ValueError, AttributeError) as err:
        raise ModelFileError(f"{path}: EmoStyle editor weights do not fit EmoMappingWplus: {_first_line(err)}") from None
    return editor.eval()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def read_onnx(path: str | Path) -> bytes:
    """Bytes of an ONNX model file, checked to parse as one (onnxruntime is then given the
    bytes, so the file is read once). Weights kept in external data files are refused: a
    session built from bytes cannot find them."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: file not found") from None
    except OSError as err:
        raise ModelFileError(f"{path}: cannot read: {err.strerror or err}") from None
    if not data:
        raise ModelFileError(f"{path}: not an ONNX model (empty file)")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"{path}: not an ONNX model ({_first_line(err)})") from None
    # Protobuf accepts some non-ONNX bytes as a message with no fields set.
    if not model.HasField("graph") or model.ir_version <= 0:
        raise ModelFileError(f"{path}: not an ONNX model (no graph or IR version)")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise ModelFileError(f"{path}: ONNX model keeps its weights in external data files; "
                             f"save it as a single file")
    return data
