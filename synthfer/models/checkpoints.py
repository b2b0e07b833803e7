"""The only code that opens weight files: format detection, loading, inspection, conversion.

Formats are told apart by content, never by file name:

* ``nvlabs-pickle``: NVIDIA network pickle (``ffhq.pkl``), read by ``nvlabs_pickle`` without
  running anything from the file;
* ``torch-zip`` / ``torch-legacy``: ``torch.save`` files (rosinality ``.pt`` checkpoints, EmoStyle
  editors), read with ``weights_only=True``; only ``argparse.Namespace`` is added to torch's
  allow-list, because rosinality training checkpoints store their ``args`` as one;
* ``safetensors``: NVlabs-layout state dicts (with ``init_kwargs`` metadata, as the test fixture)
  and synthfer's own converted files (metadata ``format`` = ``synthfer-stylegan2`` or
  ``synthfer-emostyle`` plus the constructor ``config``).

The generator configuration (resolution, widths, mapping depth, w_avg) always comes from the
file: NVlabs ``_init_kwargs``, synthfer's ``config``, or else the tensor shapes. A missing
``latent_avg`` is replaced by ``Generator.mean_w()``, which is deterministic, so builds stay
reproducible. Every user-caused problem is a ModelFileError with one line naming the file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from synthfer.errors import ModelFileError, OutputError
from synthfer.io.folder import write_file
from synthfer.models import nvlabs_pickle
from synthfer.models.emostyle import EmoMappingWplus
from synthfer.models.nvlabs_pickle import generator_from_nvlabs_kwargs, nvlabs_to_rosinality
from synthfer.models.layouts import (EDITOR_FORMAT, GENERATOR_FORMAT, _first_line, editor_config,  # noqa: F401
                                     editor_from_state, fill_constant_buffers, finish_generator,
                                     generator_config, generator_from_config, nvlabs_generator, rosinality_generator)
from synthfer.models.stylegan2 import Generator

FORMATS = ("nvlabs-pickle", "torch-zip", "torch-legacy", "safetensors")
# torch's legacy serialisation starts with a pickled long: this magic number (LONG1, 10 bytes).
_TORCH_LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors library's own limit


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of a .safetensors file (on CPU) and its header metadata ({} when none)."""
    from safetensors import safe_open

    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        metadata = dict(f.metadata() or {})
        for key in f.keys():
            tensors[key] = f.get_tensor(key)
    return tensors, metadata


def load_nvlabs_safetensors(path: str | Path) -> Generator:
    """Generator (eval mode) from a safetensors file holding an NVlabs ``G_ema`` state dict.

    The header metadata must hold ``init_kwargs`` (JSON of the NVlabs constructor arguments).
    Raises ValueError; load_generator() is the entry point that reports ModelFileError.
    """
    tensors, metadata = read_safetensors(path)
    if "init_kwargs" not in metadata:
        raise ValueError(f"{path}: safetensors metadata has no 'init_kwargs'")
    generator = generator_from_nvlabs_kwargs(json.loads(metadata["init_kwargs"]))
    state = fill_constant_buffers(generator, nvlabs_to_rosinality(tensors))
    generator.load_state_dict(state, strict=True)
    return generator.eval()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: file not found") from None
    except OSError as err:
        raise ModelFileError(f"{path}: cannot read: {err.strerror or err}") from None
    return h.hexdigest()


# ---------------------------------------------------------------- format detection


def detect_format(path: str | Path) -> str:
    """One of FORMATS, from the file's first and last bytes (and a zip's / safetensors' index)."""
    path = Path(path)
    try:
        if path.is_dir():
            raise ModelFileError(f"{path}: is a directory, not a model file")
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(64)
            f.seek(max(size - 1, 0))
            last = f.read(1)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: file not found") from None
    except OSError as err:
        raise ModelFileError(f"{path}: cannot read: {err.strerror or err}") from None
    if size == 0:
        raise ModelFileError(f"{path}: empty file")
    if head.startswith(b"PK\x03\x04"):
        _check_torch_zip(path)
        return "torch-zip"
    if head[:1] == b"\x80" and _TORCH_LEGACY_MAGIC in head[:24]:
        return "torch-legacy"
    # Before the pickle test: a safetensors header length can start with byte 0x80 too.
    n = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
    if head[8:9] == b"{" and 2 <= n <= _SAFETENSORS_MAX_HEADER:
        _check_safetensors(path, n, size)
        return "safetensors"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        # An NVlabs file is exactly one pickle, so it ends with the STOP opcode.
        if last != b".":
            raise ModelFileError(f"{path}: truncated (the pickle has no end mark)")
        return "nvlabs-pickle"
    raise ModelFileError(f"{path}: not a model checkpoint (unrecognised content)")


def _check_torch_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ModelFileError(f"{path}: truncated or damaged (a zip archive without its index)") from None
    if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        raise ModelFileError(f"{path}: not a model checkpoint (a zip archive without data.pkl)")


def _check_safetensors(path: Path, header_len: int, size: int) -> None:
    """Header is JSON and every tensor's byte range lies inside the file."""
    if 8 + header_len > size:
        raise ModelFileError(f"{path}: truncated (safetensors header of {header_len} bytes, file of {size})")
    with open(path, "rb") as f:
        f.seek(8)
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise ModelFileError(f"{path}: damaged safetensors header") from None
    if 8 + header_len + end > size:
        raise ModelFileError(f"{path}: truncated (tensor data ends at byte {8 + header_len + end}, "
                             f"file has {size})")


# ---------------------------------------------------------------- loading


def load_checkpoint(path: str | Path, estimate_latent_avg: bool = True) -> tuple[Generator | EmoMappingWplus, dict]:
    """(module in eval mode, info) for a generator or an editor in any supported format.

    ``info`` is what inspect() reports, without the file hash. With ``estimate_latent_avg``
    False a generator lacking latent_avg keeps zeros there (for inspection only).
    """
    path = Path(path)
    fmt = detect_format(path)
    info: dict[str, Any] = {"path": str(path), "format": fmt}
    try:
        if fmt == "nvlabs-pickle":
            state, init_kwargs = nvlabs_pickle.g_ema_state(path, nvlabs_pickle.read_network_pickle(path))
            info["contents"] = "NVlabs network pickle (G_ema)"
            return nvlabs_generator(path, state, init_kwargs, info, estimate_latent_avg)
        if fmt == "safetensors":
            try:
                tensors, metadata = read_safetensors(path)
            except Exception as err:  # safetensors raises its own error type for damaged files
                raise ModelFileError(f"{path}: damaged safetensors file ({_first_line(err)})") from None
            return _from_tensors(path, tensors, metadata, info, estimate_latent_avg)
        return _from_torch(path, _torch_load(path), info, estimate_latent_avg)
    except ModelFileError:
        raise
    except OSError as err:
        raise ModelFileError(f"{path}: cannot read: {err.strerror or err}") from None


def load_generator(path: str | Path) -> Generator:
    """StyleGAN2 generator (eval mode) from a file in any supported format."""
    module, _ = load_checkpoint(path)
    if not isinstance(module, Generator):
        raise ModelFileError(f"{path}: an EmoStyle editor, not a StyleGAN2 generator")
    return module


def load_editor(path: str | Path) -> EmoMappingWplus:
    """EmoStyle editor (eval mode): ``emo_mapping_wplus_*.pt`` (a dict with
    ``emo_mapping_state_dict`` or a bare state dict) or a synthfer-converted safetensors file.
    Sizes (n_latent, w_dim, hidden widths) come from the file."""
    module, _ = load_checkpoint(path, estimate_latent_avg=False)
    if not isinstance(module, EmoMappingWplus):
        raise ModelFileError(f"{path}: a StyleGAN2 generator, not an EmoStyle editor")
    return module


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = nvlabs_pickle.refused_global(err)
        if refused:
            raise ModelFileError(f"{path}: refuses to load: the pickle calls {refused}; "
                                 f"only tensors and plain data are allowed") from None
        raise ModelFileError(f"{path}: damaged torch checkpoint ({_first_line(err)})") from None
    except OSError as err:
        raise ModelFileError(f"{path}: cannot read: {err.strerror or err}") from None
    except Exception as err:  # torch raises many types (RuntimeError, EOFError, ...) for cut or damaged files
        raise ModelFileError(f"{path}: truncated or damaged torch checkpoint ({_first_line(err)})") from None


def _from_torch(path: Path, obj: Any, info: dict, estimate: bool) -> tuple[Any, dict]:
    if not isinstance(obj, dict):
        raise ModelFileError(f"{path}: a torch file holding a {type(obj).__name__}; "
                             f"neither a StyleGAN2 generator nor an EmoStyle editor")
    if "emo_mapping_state_dict" in obj:
        info["contents"] = "EmoStyle checkpoint (emo_mapping_state_dict)"
        return editor_from_state(path, _tensor_dict(path, obj["emo_mapping_state_dict"], "emo_mapping_state_dict"), None, info)
    if "g_ema" in obj:
        state = _tensor_dict(path, obj["g_ema"], "g_ema")
        if obj.get("latent_avg") is not None:
            if not isinstance(obj["latent_avg"], torch.Tensor):
                raise ModelFileError(f"{path}: latent_avg is not a tensor")
            state["latent_avg"] = obj["latent_avg"]
        training = "args" in obj or "g_optim" in obj
        info["contents"] = f"rosinality {'training ' if training else ''}checkpoint (g_ema)"
        return rosinality_generator(path, state, info, estimate)
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _from_tensors(path, _tensor_dict(path, obj, "state dict"), {}, info, estimate)
    shown = ", ".join(sorted(map(str, obj))[:6])
    raise ModelFileError(f"{path}: a torch file with keys {shown}; neither a StyleGAN2 generator nor "
                         f"an EmoStyle editor")


def _tensor_dict(path: Path, obj: Any, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in obj.items()):
        raise ModelFileError(f"{path}: {what} is not a state dict of tensors")
    return dict(obj)


def _from_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], info: dict,
                  estimate: bool) -> tuple[Any, dict]:
    """Route a flat state dict by its metadata, else by its key names."""
    kind = metadata.get("format")
    if kind in (GENERATOR_FORMAT, EDITOR_FORMAT):
        info["layout"] = "synthfer"
        info["contents"] = f"synthfer-converted {'generator' if kind == GENERATOR_FORMAT else 'editor'}"
        info.update({k: metadata[k] for k in ("source_sha256", "source_format") if k in metadata})
        try:
            config = json.loads(metadata["config"])
        except (KeyError, ValueError):
            raise ModelFileError(f"{path}: {kind} file without a valid 'config' in its metadata") from None
        if kind == EDITOR_FORMAT:
            return editor_from_state(path, tensors, config, info)
        return finish_generator(path, generator_from_config(path, config), tensors, info, estimate)
    keys = list(tensors)
    if any(k.startswith(("latent_net.", "emotion_enc.")) for k in keys):
        info["contents"] = "EmoStyle editor state dict"
        return editor_from_state(path, tensors, None, info)
    if any(k.startswith(("mapping.", "synthesis.")) for k in keys):
        init_kwargs = None
        if "init_kwargs" in metadata:
            try:
                init_kwargs = json.loads(metadata["init_kwargs"])
            except ValueError:
                raise ModelFileError(f"{path}: metadata 'init_kwargs' is not JSON") from None
        info["contents"] = "NVlabs G_ema state dict"
        return nvlabs_generator(path, tensors, init_kwargs, info, estimate)
    if any(k.startswith(("style.", "input.", "convs.")) for k in keys):
        info["contents"] = "rosinality generator state dict"
        return rosinality_generator(path, tensors, info, estimate)
    raise ModelFileError(f"{path}: tensors named like neither a StyleGAN2 generator nor an EmoStyle editor")


# ---------------------------------------------------------------- inspect / convert


def inspect(path: str | Path) -> dict:
    """What a weights file holds, detected by content. Keys: path, format, layout, contents,
    architecture ("stylegan2-generator" | "emostyle-editor"), resolution, n_latent, w_dim, z_dim,
    parameters, latent_avg ("stored" | "estimated"; None for editors), config, sha256, size_bytes;
    generators add n_mlp and channels; converted files add source_sha256 and source_format."""
    _, info = load_checkpoint(path, estimate_latent_avg=False)
    info["sha256"] = sha256_file(path)
    info["size_bytes"] = Path(path).stat().st_size
    return info


def convert(src: str | Path, dst: str | Path) -> dict:
    """Write the generator or editor in ``src`` (any format) to ``dst`` as synthfer safetensors.

    Generators are stored in the rosinality layout including latent_avg (estimated if ``src``
    has none), so loading ``dst`` gives a bit-identical state dict. Metadata: format, config
    (JSON constructor kwargs), source_sha256, source_format, latent_avg (how ``src`` had it).
    ``dst`` is replaced atomically. Returns inspect()'s fields for ``dst``.
    """
    module, info = load_checkpoint(src)
    source_sha = sha256_file(src)
    if isinstance(module, Generator):
        kind, config = GENERATOR_FORMAT, generator_config(module)
    else:
        kind, config = EDITOR_FORMAT, editor_config(module)
    metadata = {"format": kind, "config": json.dumps(config, sort_keys=True), "source_sha256": source_sha,
                "source_format": info["format"]}
    if info["latent_avg"] is not None:
        metadata["latent_avg"] = info["latent_avg"]
    data = _safetensors_bytes(module.state_dict(), metadata)
    try:
        write_file(dst, data)
    except OSError as err:
        raise OutputError(f"{dst}: cannot write: {err.strerror or err}") from None
    info.update({"path": str(dst), "format": "safetensors", "layout": "synthfer",
                 "contents": f"synthfer-converted {'generator' if kind == GENERATOR_FORMAT else 'editor'}",
                 "latent_avg": "stored" if info["latent_avg"] else None,
                 "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data),
                 "source_sha256": source_sha, "source_format": metadata["source_format"]})
    return info


_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16"}


def _safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """A safetensors file, byte-for-byte reproducible: the safetensors library writes metadata in
    hash-map order, which changes from call to call. Tensors in name order, little-endian."""
    header: dict[str, Any] = {"__metadata__": metadata}
    chunks, offset = [], 0
    for name in sorted(tensors):
        array = tensors[name].detach().cpu().contiguous().numpy()
        raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _SAFETENSORS_DTYPES[tensors[name].dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # tensor data starts 8-byte aligned, as the library writes it
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


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
