"""Weight files, one module per file format. Formats are told apart by content, never by name:

* `nvlabs-pickle` (nvlabs_pickle.py): NVIDIA network pickles (`ffhq.pkl`), read without running
  anything from the file;
* `torch-zip` / `torch-legacy` (torch_file.py): `torch.save` files (rosinality `.pt`, EmoStyle
  editors), read with `weights_only=True`;
* `safetensors` (safetensors_file.py): NVlabs-layout state dicts and synthfer's converted files;
* ONNX models (onnx_file.py) for quality and VA.

Each reader returns `Weights`: the tensors plus what the file says about their key layout;
models/layouts.py turns them into a module. Every problem is one ModelFileError naming the file.
"""

from __future__ import annotations

import hashlib
import json
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from synthfer.errors import ModelFileError

FORMATS = ("nvlabs-pickle", "torch-zip", "torch-legacy", "safetensors")
# torch's legacy serialisation starts with a pickled long: this magic number (LONG1, 10 bytes).
_TORCH_LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors library's own limit


@dataclass
class Weights:
    """What a weights file holds, before any module is built from it."""
    path: Path
    format: str                      # one of FORMATS
    tensors: dict                    # name -> torch.Tensor (CPU)
    contents: str = ""               # what the file holds, for `models info`
    layout: str = ""                 # nvlabs | rosinality | emostyle | synthfer; "" = tell by key names
    metadata: dict = field(default_factory=dict)   # init_kwargs (nvlabs), format + config (synthfer), ...


def check_regular(path: str | Path) -> None:
    """ModelFileError unless `path` is a regular file (a FIFO or device would block or never end)."""
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        raise ModelFileError(f"{path}: file not found") from None
    except OSError as err:
        raise ModelFileError(f"{path}: cannot read: {err.strerror or err}") from None
    if stat.S_ISDIR(mode):
        raise ModelFileError(f"{path}: is a directory, not a model file")
    if not stat.S_ISREG(mode):
        raise ModelFileError(f"{path}: not a regular file")


def sha256_file(path: str | Path) -> str:
    check_regular(path)
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


def detect_format(path: str | Path) -> str:
    """One of FORMATS, from the file's first and last bytes (and a zip's / safetensors' index)."""
    path = Path(path)
    check_regular(path)
    try:
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
    if head[8:9] == b"{" and 2 <= n <= SAFETENSORS_MAX_HEADER:
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


def read_weights(path: str | Path) -> Weights:
    """The tensors of a generator or editor file in any supported format."""
    from synthfer.models.formats import nvlabs_pickle, safetensors_file, torch_file

    path = Path(path)
    fmt = detect_format(path)
    reader = {"nvlabs-pickle": nvlabs_pickle.read, "safetensors": safetensors_file.read}.get(fmt, torch_file.read)
    try:
        weights = reader(path)
    except OSError as err:
        raise ModelFileError(f"{path}: cannot read: {err.strerror or err}") from None
    weights.format = fmt
    return weights
