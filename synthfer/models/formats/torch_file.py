"""`torch.save` files: rosinality checkpoints (`g_ema`, training ones with `args` and optimisers),
EmoStyle editors (`emo_mapping_state_dict`) and bare state dicts. Read with `weights_only=True`;
only `argparse.Namespace` joins torch's allow-list, because rosinality training checkpoints store
their `args` as one."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any

import torch

from synthfer.errors import ModelFileError, first_line
from synthfer.models.formats import Weights
from synthfer.models.formats.nvlabs_pickle import refused_global


def _load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
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
