"""Build the recipe's models on a device, once per worker, through the model-kind registry.
Files are opened only by the kinds' loaders (checkpoints.py, onnx.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from synthfer.errors import ModelFileError
from synthfer.models import kinds as _kinds  # noqa: F401  (registers the shipped kinds)
from synthfer.models.registry import ROLES, ModelContext, kind_of
from synthfer.recipe import LoadedRecipe


@dataclass
class LoadedModels:
    generator: torch.nn.Module
    editor: torch.nn.Module
    device: torch.device
    identities: dict[str, str]   # role -> what the fingerprint counts of the weights
    files: dict[str, str]        # role -> what run.json records of the file (sha256, or the builtin's name)
    quality: object | None = None
    va: object | None = None

    def by_role(self) -> dict:
        return {role: getattr(self, role) for role in ROLES}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelFileError(f"execution.device: {name} requested but no CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ModelFileError("execution.device: mps requested but not available")
    return torch.device(name)


def build_device(loaded: LoadedRecipe) -> torch.device:
    """The device a build's first worker uses (execution.devices[0], else execution.device)."""
    ex = loaded.recipe.execution
    return resolve_device(ex.devices[0] if ex.devices else ex.device)


def _specs(loaded: LoadedRecipe) -> dict:
    return {role: getattr(loaded.recipe.models, role) for role in ROLES}


def load_models(loaded: LoadedRecipe, device: str | None = None) -> LoadedModels:
    """The recipe's models on `device` (default: execution.devices[0], else execution.device),
    checked to fit together."""
    device = resolve_device(device) if device else build_device(loaded)
    models: dict = {}
    contexts = {}
    for role, spec in _specs(loaded).items():
        if spec is None:
            models[role] = None
            continue
        contexts[role] = ModelContext(loaded.resolve, device, models.get("generator"))
        models[role] = kind_of(role, spec).load(spec, contexts[role])
    for role, spec in _specs(loaded).items():
        if spec is not None:
            kind_of(role, spec).fit(spec, models[role], models)
    identities, files = _hashes(loaded, contexts, models)
    return LoadedModels(models["generator"], models["editor"], device, identities, files,
                        models["quality"], models["va"])


def _hashes(loaded: LoadedRecipe, contexts: dict, models: dict) -> tuple[dict, dict]:
    identities, files = {}, {}
    for role, spec in _specs(loaded).items():
        if spec is None:
            continue
        kind = kind_of(role, spec)
        files[role] = kind.file_hash(spec, contexts[role])
        identities[role] = kind.weights_hash(spec, contexts[role], lambda role=role: models[role])
    return identities, files


def licence_notes(loaded: LoadedRecipe) -> list[dict]:
    """One note per model of the recipe, from its kind's registry entry."""
    notes = []
    for role, spec in _specs(loaded).items():
        if spec is not None:
            lic = kind_of(role, spec).licence
            notes.append({"role": role, "kind": spec.kind, "commercial": lic.commercial, "note": lic.note})
    return notes


def check_fit(loaded: LoadedRecipe, models: LoadedModels) -> list[str]:
    """What a user should know about how the models fit the recipe (problems raise instead)."""
    by_role = models.by_role()
    lines = []
    for role, spec in _specs(loaded).items():
        if spec is not None:
            lines += kind_of(role, spec).fit(spec, by_role[role], by_role)
    size, res = loaded.recipe.output.image.size, models.generator.resolution
    if size > res:
        lines.append(f"output.image.size {size} is larger than the generator's {res} px: images are upscaled")
    return lines
