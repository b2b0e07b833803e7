"""safetensors files: NVlabs-layout state dicts (with `init_kwargs` metadata, as the test fixture)
and synthfer's converted files (metadata `format` = synthfer-stylegan2 / synthfer-emostyle plus
the constructor `config`). Written byte-for-byte reproducibly by `to_bytes`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from synthfer.errors import ModelFileError, first_line
from synthfer.models.formats import Weights

_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16"}


def read_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of a .safetensors file (on CPU) and its header metadata ({} when none)."""
    from safetensors import safe_open

    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        metadata = dict(f.metadata() or {})
        for key in f.keys():
            tensors[key] = f.get_tensor(key)
    return tensors, metadata


def read(path: Path) -> Weights:
    try:
        tensors, metadata = read_tensors(path)
    except OSError:
        raise
    except Exception as err:  # safetensors raises its own error type for damaged files
        raise ModelFileError(f"{path}: damaged safetensors file ({first_line(err)})") from None
    layout = "synthfer" if str(metadata.get("format", "")).startswith("synthfer-") else ""
    parsed: dict[str, Any] = dict(metadata)
    if "init_kwargs" in metadata and not layout:
        try:
            parsed["init_kwargs"] = json.loads(metadata["init_kwargs"])
        except ValueError:
            raise ModelFileError(f"{path}: metadata 'init_kwargs' is not JSON") from None
    return Weights(path, "safetensors", tensors, "", layout, parsed)


def to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """A safetensors file, byte-for-byte reproducible: the safetensors library writes metadata in
    hash-map order, which changes from call to call. Tensors in name order, little-endian."""
    header: dict[str, Any] = {"__metadata__": metadata}
    chunks, offset = [], 0
    for name in sorted(tensors):
        array = tensors[name].detach().cpu().contiguous().numpy()
        raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _DTYPES[tensors[name].dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # tensor data starts 8-byte aligned, as the library writes it
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)
