"""`torch.save` files: rosinality checkpoints (`g_ema`, training ones with `args` and optimisers),
EmoStyle editors (`emo_mapping_state_dict`) and bare state dicts. Read with `weights_only=True`;
only `argparse.Namespace` joins torch's allow-list, because rosinality training checkpoints store
their `args` as one."""

from __future__ import annotations

import argparse
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from synthfer.errors import ModelFileError, first_line
from synthfer.models.formats import Weights
from synthfer.models.formats.nvlabs_pickle import refused_global


def load_object(path: Path) -> Any:
    """What a `torch.save` file holds, read with `weights_only=True` (plus argparse.Namespace),
    memory-mapped when it is in torch's zip format. Every model whose checkpoints are torch files
    (generators, editors, EmoNet, MagFace) reads them through this; problems are one-line
    ModelFileErrors naming the file."""
    path = Path(path)
    try:
        mapped = zipfile.is_zipfile(path)
        with open(path, "rb") as f:
            head = f.read(2)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: file not found") from None
    except OSError as err:
        raise ModelFileError(f"{path}: cannot read: {err.strerror or err}") from None
    if not mapped and head == b"PK":
        raise ModelFileError(f"{path}: truncated or damaged (a zip archive without its index)")
    if not mapped and head[:1] != b"\x80":
        raise ModelFileError(f"{path}: not a PyTorch checkpoint (neither a torch zip archive nor a pickle)")
    return _load(path)


def _load(path: Path) -> Any:
    # mmap: only the tensors a loader copies out are read. An EmoStyle training checkpoint holds
    # the editor's weights plus two Adam states (1.46 GB at full size for 293 MB of weights);
    # reading it whole cost every worker that peak (bench/editor_load_memory.py). Files saved
    # before torch's zip format cannot be mapped and are read whole.
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        refused = refused_global(err)
        if refused:
            raise ModelFileError(f"{path}: refuses to load: the pickle calls {refused}; "
                                 f"only tensors and plain data are allowed") from None
        raise ModelFileError(f"{path}: damaged torch checkpoint ({first_line(err)})") from None
    except OSError as err:
        raise ModelFileError(f"{path}: cannot read: {err.strerror or err}") from None
    except Exception as err:  # torch raises many types (RuntimeError, EOFError, ...) for cut or damaged files
        raise ModelFileError(f"{path}: truncated or damaged torch checkpoint ({first_line(err)})") from None


def tensor_dict(path: Path, obj: Any, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in obj.items()):
        raise ModelFileError(f"{path}: {what} is not a state dict of tensors")
    return dict(obj)


def read(path: Path) -> Weights:
    obj = _load(path)
    if not isinstance(obj, dict):
        raise ModelFileError(f"{path}: a torch file holding a {type(obj).__name__}; "
                             f"neither a StyleGAN2 generator nor an EmoStyle editor")
    if "emo_mapping_state_dict" in obj:
        state = tensor_dict(path, obj["emo_mapping_state_dict"], "emo_mapping_state_dict")
        return Weights(path, "", state, "EmoStyle checkpoint (emo_mapping_state_dict)", "emostyle")
    if "g_ema" in obj:
        state = tensor_dict(path, obj["g_ema"], "g_ema")
        if obj.get("latent_avg") is not None:
            if not isinstance(obj["latent_avg"], torch.Tensor):
                raise ModelFileError(f"{path}: latent_avg is not a tensor")
            state["latent_avg"] = obj["latent_avg"]
        training = "args" in obj or "g_optim" in obj
        return Weights(path, "", state, f"rosinality {'training ' if training else ''}checkpoint (g_ema)",
                       "rosinality")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return Weights(path, "", tensor_dict(path, obj, "state dict"))
    shown = ", ".join(sorted(map(str, obj))[:6])
    raise ModelFileError(f"{path}: a torch file with keys {shown}; neither a StyleGAN2 generator nor "
                         f"an EmoStyle editor")
