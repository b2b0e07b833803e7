"""A validated recipe and what is derived from it: resolved paths (recipe-relative or
`registry:NAME`), the models it names (slots), what run.json records, and the fingerprints.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthfer.io import png
from synthfer.io.folder import is_url, open_folder
from synthfer.models import catalog, registry
from synthfer.recipe.schema import FORMAT_VERSION, Recipe, va_specs

# Fingerprint keys that change only which rendered samples are kept, never a pixel: a build whose
# recipe differs from its output's only here re-decides committed shards from their stored scores.
DECISION_KEYS = ("recipe.filters.", "recipe.targets.quota:", "recipe.identities.max_count:",
                 "recipe.output.keep_rejected:")
_ROLES = ("generator", "editor", "quality", "va")


class LoadedRecipe:
    """A validated recipe plus where it came from: file, folder for relative paths, overrides."""

    def __init__(self, recipe: Recipe, path: Path, overrides: list[str]):
        self.recipe = recipe
        self.path = path
        self.overrides = overrides

    def with_batch_size(self, batch_size: int) -> "LoadedRecipe":
        """This recipe with execution.batch_size settled (auto resolved: synthfer/batching.py)."""
        if self.recipe.execution.batch_size == batch_size:
            return self
        execution = self.recipe.execution.model_copy(update={"batch_size": batch_size})
        return LoadedRecipe(self.recipe.model_copy(update={"execution": execution}), self.path, self.overrides)

    def resolve(self, relative: str) -> Path:
        """A model or output path as written: `registry:NAME` is that entry's file in the models
        folder (models/catalog.py); a relative path is relative to the recipe's folder."""
        if catalog.is_reference(relative):
            return catalog.resolve(relative)
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.path.parent / p).resolve()

    @property
    def output_location(self) -> str:
        """The output folder: an absolute local path, or a URL as written."""
        where = self.recipe.output.dir
        return where if is_url(where) else str(self.resolve(where))

    def output_folder(self):
        """The output folder object (io/folder.py), the only thing that writes there."""
        return open_folder(self.output_location, self.recipe.output.storage_options)

    def resolved(self) -> dict:
        """Every default filled in, paths absolute: what run.json records."""
        data = self.recipe.model_dump(mode="json")
        data["output"]["dir"] = self.output_location
        data["output"].pop("storage_options", None)  # may hold credentials
        for slot, field, value in self.model_files():
            _block(data, slot)[field] = str(self.resolve(value))
        if data["correction"]["calibration"] is not None:
            data["correction"]["calibration"] = str(self.resolve(data["correction"]["calibration"]))
        return data

    def model_slots(self) -> list[Slot]:
        """Every model of the recipe, in role order; several VA estimators are va.0, va.1, ..."""
        out = []
        for role in _ROLES:
            if role == "va":
                many = va_specs(self.recipe.models)
                if len(many) == 1 and not isinstance(self.recipe.models.va, list):
                    out.append(Slot("va", "va", many[0], ("models", "va")))
                else:
                    out += [Slot(f"va.{i}", "va", spec, ("models", "va", i)) for i, spec in enumerate(many)]
                continue
            spec = getattr(self.recipe.models, role)
            if spec is not None:
                out.append(Slot(role, role, spec, ("models", role)))
        return out

    def model_files(self) -> list[tuple[Slot, str, str]]:
        """(slot, field name, path as written) for every model given by a file."""
        return [(slot, field, value) for slot in self.model_slots()
                for field, value in registry.spec_files(slot.spec).items()]

    def fingerprint_inputs(self, model_hashes: dict[str, str], device_type: str) -> dict:
        """What determines the bytes of the output: content, model weights, execution settings.

        The output folder and model file locations are left out so a copy or a move of either
        keeps the fingerprint; the weights count through their sha256.
        """
        data = self.recipe.model_dump(mode="json")
        # Where and how shards are scheduled changes no byte: left out.
        for key in ("executor", "retries", "ray", "devices"):
            del data["execution"][key]
        for key in ("dir", "lock", "storage_options"):
            del data["output"][key]
        del data["name"]
        # The device that runs, not the one asked for: "auto" is a CPU here and a GPU there.
        data["execution"]["device"] = device_type
        if device_type != "cuda":   # TF32 exists on CUDA only: a CPU build's bytes do not depend on it
            del data["execution"]["tf32"]
        # Correction off renders exactly as before it existed: fingerprints of such builds stay.
        # A reused calibration counts by its content, not where it lies.
        if self.recipe.correction.mode == "off":
            del data["correction"]
        elif self.recipe.correction.calibration is not None:
            data["correction"]["calibration"] = "sha256:" + hashlib.sha256(
                self.resolve(self.recipe.correction.calibration).read_bytes()).hexdigest()
        for slot in self.model_slots():
            for field in getattr(slot.spec, "files", ()):
                _block(data, slot).pop(field, None)
        out = {"recipe": data, "models": model_hashes, "format_version": FORMAT_VERSION}
        if self.recipe.output.image.format == "png":   # a new encoder makes new bytes from the same pixels
            out["png_encoder"] = png.encoder_id()
        return out

    def fingerprint(self, model_hashes: dict[str, str], device_type: str) -> str:
        """The whole build's fingerprint (run.json, fingerprint.json)."""
        return _digest(self.fingerprint_inputs(model_hashes, device_type))

    def shard_fingerprint(self, model_hashes: dict[str, str], device_type: str) -> str:
        """How each sample's pixels are made: stored in markers and manifest rows. It leaves out how
        many identities there are (--mode extend keeps old shards byte-identical) and what only
        decides which samples are kept (filters but skip bands, quotas, keep_rejected), so such
        changes re-decide committed shards instead of rendering them again."""
        inputs = self.fingerprint_inputs(model_hashes, device_type)
        recipe = inputs["recipe"]
        del recipe["identities"]["count"], recipe["identities"]["max_count"], recipe["targets"]["quota"]
        del recipe["output"]["keep_rejected"]
        recipe["filters"] = {"skip_bands": [b for b in recipe["filters"]["failure_bands"] if b["action"] == "skip"]}
        return _digest(inputs)


@dataclass(frozen=True)
class Slot:
    """One model of a recipe: `va.1` is the second of several VA estimators."""
    name: str        # generator | editor | quality | va | va.N
    role: str        # generator | editor | quality | va
    spec: Any        # its recipe block
    loc: tuple       # where it is in the recipe, e.g. ("models", "va", 1)

    @property
    def field_path(self) -> str:
        """models.va or models.va[1], as recipe messages name fields."""
        return ".".join(str(p) for p in self.loc if not isinstance(p, int)) + \
            "".join(f"[{p}]" for p in self.loc if isinstance(p, int))


def _block(data: dict, slot: Slot) -> dict:
    """A model's block inside a dumped recipe."""
    node: Any = data
    for part in slot.loc:
        node = node[part]
    return node


def _digest(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def diff_inputs(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Key-by-key differences between two fingerprint inputs, e.g. `recipe.seed: 1 -> 2`."""
    lines = []
    for key in sorted(set(old) | set(new), key=str):
        path = f"{prefix}.{key}" if prefix else str(key)
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            lines += diff_inputs(a, b, path)
        elif a != b:
            lines.append(f"{path}: {json.dumps(a)} -> {json.dumps(b)}")
    return lines
