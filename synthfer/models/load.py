"""Build the recipe's models on a device, once per worker. Files are opened only by checkpoints.py."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from synthfer.errors import ModelFileError
from synthfer.models import builtin, checkpoints
from synthfer.models.builtin_onnx import builtin_model_path
from synthfer.models.onnx import OnnxModel
from synthfer.recipe import LoadedRecipe


@dataclass
class LoadedModels:
    generator: torch.nn.Module
    editor: torch.nn.Module
    device: torch.device
    identities: dict[str, str]   # role -> what the fingerprint knows of the weights (see weights_identity)
    files: dict[str, str]        # role -> sha256 of the file the weights came from (run.json)
    quality: OnnxModel | None = None
    va: OnnxModel | None = None


def weights_identity(module: torch.nn.Module) -> str:
    """sha256 over the weights themselves (sorted names, dtypes, shapes, bytes), not the file:
    an NVlabs pickle and its `synthfer models convert` copy are the same model, so builds from
    either share a fingerprint and give the same bytes, while any changed weight is noticed."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelFileError(f"execution.device: {name} requested but no CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ModelFileError("execution.device: mps requested but not available")
    return torch.device(name)


def file_hashes(loaded: LoadedRecipe) -> dict[str, str]:
    """sha256 of every model file of the recipe (builtin generator/editor: their identity)."""
    out = {}
    for role in ("generator", "editor"):
        spec = getattr(loaded.recipe.models, role)
        out[role] = (f"builtin-v{builtin.VERSION}-seed{spec.seed}" if spec.kind == "builtin"
                     else checkpoints.sha256_file(loaded.resolve(spec.checkpoint)))
    for role in ("quality", "va"):
        path = _onnx_path(loaded, role)
        if path is not None:
            out[role] = checkpoints.sha256_file(path)
    return out


def _onnx_path(loaded: LoadedRecipe, role: str) -> Path | None:
    spec = getattr(loaded.recipe.models, role)
    if spec is None:
        return None
    return builtin_model_path(role) if spec.kind == "builtin" else loaded.resolve(spec.path)


def _load_onnx(loaded: LoadedRecipe, role: str, device: torch.device) -> OnnxModel | None:
    path = _onnx_path(loaded, role)
    if path is None:
        return None
    spec = getattr(loaded.recipe.models, role)
    label = f"builtin {role} model" if spec.kind == "builtin" else str(path)
    return OnnxModel(checkpoints.read_onnx(path), label, role, spec.preprocess.size, str(device), spec.input_name)


def load_models(loaded: LoadedRecipe, device: str | None = None) -> LoadedModels:
    """The recipe's models on `device` (default: execution.devices[0], else execution.device)."""
    models = loaded.recipe.models
    ex = loaded.recipe.execution
    device = resolve_device(device or (ex.devices[0] if ex.devices else ex.device))
    dtype = loaded.recipe.execution.dtype
    if dtype != "float32" and device.type != "cuda":
        raise ModelFileError(f"execution.dtype: {dtype} runs under CUDA autocast only; this build runs on "
                             f"{device.type} (use float32)")
    if models.generator.kind == "builtin":
        generator = builtin.builtin_generator(models.generator.seed, models.generator.resolution,
                                              models.generator.channel_max)
    else:
        generator = checkpoints.load_generator(loaded.resolve(models.generator.checkpoint))
    if models.editor.kind == "builtin":
        editor = builtin.builtin_editor(seed=models.editor.seed, n_latent=generator.n_latent, w_dim=generator.w_dim)
    else:
        editor = checkpoints.load_editor(loaded.resolve(models.editor.checkpoint))
    if (editor.n_latent, editor.w_dim) != (generator.n_latent, generator.w_dim):
        raise ModelFileError(f"editor has {editor.n_latent} layers of {editor.w_dim}, generator needs "
                             f"{generator.n_latent} of {generator.w_dim}")
    generator.eval().requires_grad_(False).to(device)
    editor.eval().requires_grad_(False).to(device)
    if device.type == "cuda":
        generator.to(memory_format=torch.channels_last)  # faster cuDNN convolutions; same values
    files = file_hashes(loaded)
    identities = dict(files)
    for role, module in (("generator", generator), ("editor", editor)):
        if getattr(models, role).kind != "builtin":
            identities[role] = weights_identity(module)
    return LoadedModels(generator, editor, device, identities, files,
                        _load_onnx(loaded, "quality", device), _load_onnx(loaded, "va", device))


def licence_notes(loaded: LoadedRecipe) -> list[dict]:
    """One note per model of the recipe, from data/licences.json."""
    table = json.loads(resources.files("synthfer").joinpath("data/licences.json").read_text("utf-8"))
    notes = []
    for role in ("generator", "editor", "quality", "va"):
        spec = getattr(loaded.recipe.models, role)
        if spec is not None:
            entry = table[f"{role}/{spec.kind}"]
            notes.append({"role": role, "kind": spec.kind, **entry})
    return notes


def check_fit(loaded: LoadedRecipe, models: LoadedModels) -> list[str]:
    """What a user should know about how the models fit the recipe (problems raise instead)."""
    res = models.generator.resolution
    lines = [f"generator: {res}x{res}, {models.generator.n_latent} w rows of {models.generator.w_dim}; "
             f"editor: {models.editor.n_latent} layers of {models.editor.w_dim}: they fit"]
    for role in ("quality", "va"):
        spec = getattr(loaded.recipe.models, role)
        if spec is None:
            continue
        left, top, right, bottom = spec.preprocess.crop
        w, h = round((right - left) * res), round((bottom - top) * res)
        if min(w, h) < 8:
            raise ModelFileError(f"models.{role}.preprocess.crop: leaves {w}x{h} px of a {res} px frame; "
                                 f"widen the crop box")
        how = "downscaled" if min(w, h) > spec.preprocess.size else "upscaled" if min(w, h) < spec.preprocess.size else "as is"
        lines.append(f"{role}: crop {w}x{h} px of the {res} px frame, {how} to {spec.preprocess.size} "
                     f"({spec.preprocess.resample}, {spec.preprocess.channels})")
    size = loaded.recipe.output.image.size
    if size > res:
        lines.append(f"output.image.size {size} is larger than the generator's {res} px: images are upscaled")
    return lines
