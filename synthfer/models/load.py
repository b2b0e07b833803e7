"""Build the recipe's models on a device, once per worker, through the model-kind registry.
Files are opened only by the kinds' loaders (checkpoints.py, onnx.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from synthfer.errors import ModelFileError
from synthfer.models import kinds as _kinds  # noqa: F401  (registers the shipped kinds)
from synthfer.models.registry import ROLES, ModelContext, kind_of
from synthfer.models.registry import spec_files as registry_files
from synthfer.recipe import LoadedRecipe


@dataclass
class LoadedModels:
    generator: torch.nn.Module
    editor: torch.nn.Module
    device: torch.device
    identities: dict[str, str]   # slot (generator, ..., va or va.N) -> what the fingerprint counts of the weights
    files: dict[str, str]        # slot -> what run.json records of the file (sha256, or the builtin's name)
    quality: object | None = None
    va: list = field(default_factory=list)   # one model per VA estimator, in models.va order

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


def load_models(loaded: LoadedRecipe, device: str | None = None) -> LoadedModels:
    """The recipe's models on `device` (default: execution.devices[0], else execution.device),
    checked to fit together."""
    device = resolve_device(device) if device else build_device(loaded)
    slots = loaded.model_slots()
    by_slot: dict = {}
    by_role: dict = {"quality": None, "va": []}
    contexts = {}
    for slot in slots:
        contexts[slot.name] = ModelContext(loaded.resolve, device, by_role.get("generator"))
        model = kind_of(slot.role, slot.spec).load(slot.spec, contexts[slot.name])
        by_slot[slot.name] = model
        if slot.role == "va":
            by_role["va"].append(model)
        else:
            by_role[slot.role] = model
    for slot in slots:
        kind_of(slot.role, slot.spec).fit(slot.spec, by_slot[slot.name], by_role)
    identities, files = {}, {}
    for slot in slots:
        kind = kind_of(slot.role, slot.spec)
        files[slot.name] = kind.file_hash(slot.spec, contexts[slot.name])
        identities[slot.name] = kind.weights_hash(slot.spec, contexts[slot.name], lambda s=slot.name: by_slot[s])
    return LoadedModels(by_role["generator"], by_role["editor"], device, identities, files,
                        by_role["quality"], by_role["va"])


def licence_notes(loaded: LoadedRecipe) -> list[dict]:
    """One note per model of the recipe, from its kind's registry entry (a registry file's own
    entry when the recipe names one)."""
    notes = []
    for slot in loaded.model_slots():
        lic = kind_of(slot.role, slot.spec).licence
        note = {"role": slot.name, "kind": slot.spec.kind, "commercial": lic.commercial, "note": lic.note}
        entry = _registry_entry(slot.spec)
        if entry is not None:
            note.update(commercial=entry.commercial, note=f"{entry.name}: {entry.licence}"
                        + (f" ({entry.licence_url})" if entry.licence_url else ""))
        notes.append(note)
    return notes


def _registry_entry(spec):
    """The registry entry a model block names (registry:NAME file or preset), if any."""
    from synthfer.models import catalog

    for value in [getattr(spec, "preset", None), *registry_files(spec).values()]:
        name = value[len(catalog.PREFIX):] if catalog.is_reference(value) else value
        if name and name in catalog.entries():
            return catalog.get(name)
    return None


def check_fit(loaded: LoadedRecipe, models: LoadedModels) -> list[str]:
    """What a user should know about how the models fit the recipe (problems raise instead)."""
    by_role = models.by_role()
    lines = []
    va = iter(models.va)
    for slot in loaded.model_slots():
        model = next(va) if slot.role == "va" else by_role[slot.role]
        found = kind_of(slot.role, slot.spec).fit(slot.spec, model, by_role)
        lines += [f"{slot.name}{line[len(slot.role):]}" if line.startswith(slot.role) else line for line in found]
    size, res = loaded.recipe.output.image.size, models.generator.resolution
    if size > res:
        lines.append(f"output.image.size {size} is larger than the generator's {res} px: images are upscaled")
    return lines
