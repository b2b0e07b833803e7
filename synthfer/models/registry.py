"""Model kinds: what a recipe's `models.<role>.kind` may name, and everything synthfer needs to
know about each in one entry: its recipe block, how to load it, what of its weights the
fingerprint counts, what run.json records of its file, its licence note and its fit check.

Roles and what their models provide:

* generator: `mapping(z, truncation_psi, truncation_cutoff) -> w+`, `synthesis(w+) -> image`,
  `resolution`, `n_latent`, `w_dim`, `z_dim`;
* editor: `edit(ws, va) -> ws` and `n_latent`, `w_dim` (an image-space or diffusion editor
  plugs in by providing the same);
* quality, va: an `OnnxModel` (run, check_output).

A kind's recipe block is a pydantic model with a `kind` literal; a ClassVar `files` names the
fields that hold file paths (resolved against the recipe, left out of the fingerprint).

The kinds synthfer ships are registered by models/kinds.py; `register()` adds one from outside
(the recipe schema is rebuilt so recipes can name it at once).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

ROLES = ("generator", "editor", "quality", "va")


@dataclass(frozen=True)
class Licence:
    commercial: bool | None     # None: depends on the file; check its terms
    note: str


@dataclass
class ModelContext:
    """What a loader needs besides its recipe block."""
    resolve: Callable[[str], Path]     # recipe-relative path -> file
    device: Any                        # torch.device the model must end up on
    generator: Any = None              # the loaded generator, for editors that must match it


@dataclass(frozen=True)
class ModelKind:
    role: str                                              # generator | editor | quality | va
    name: str                                              # `kind:` in recipes
    spec: type                                             # its recipe block (pydantic, specs.py style)
    load: Callable[[Any, ModelContext], Any]               # (spec, ctx) -> model on ctx.device
    file_hash: Callable[[Any, ModelContext], str]          # what run.json records of the file
    weights_hash: Callable[[Any, ModelContext, Any], str]  # what the fingerprint counts (spec, ctx, model)
    licence: Licence
    fit: Callable[[Any, Any, dict], list[str]] = field(default=lambda spec, model, models: [])
    # fit(spec, model, models by role) -> lines for `models check`; raises ModelFileError on a misfit


_KINDS: dict[tuple[str, str], ModelKind] = {}
_listeners: list[Callable[[], None]] = []


def register(kind: ModelKind) -> ModelKind:
    if kind.role not in ROLES:
        raise ValueError(f"unknown role {kind.role!r}; roles are {', '.join(ROLES)}")
    if not isinstance(kind.licence, Licence):
        raise ValueError(f"{kind.role}/{kind.name}: a model kind needs a Licence")
    if "kind" not in getattr(kind.spec, "model_fields", {}):
        raise ValueError(f"{kind.role}/{kind.name}: its spec needs a `kind` field")
    _KINDS[(kind.role, kind.name)] = kind
    for listener in _listeners:
        listener()
    return kind


def unregister(role: str, name: str) -> None:
    del _KINDS[(role, name)]
    for listener in _listeners:
        listener()


def on_change(listener: Callable[[], None]) -> None:
    """Called after every (un)registration: the recipe schema rebuilds its model blocks."""
    _listeners.append(listener)


def kinds(role: str) -> dict[str, ModelKind]:
    return {name: k for (r, name), k in _KINDS.items() if r == role}


def kind_of(role: str, spec: Any) -> ModelKind:
    return _KINDS[(role, spec.kind)]


def spec_files(spec: Any) -> dict[str, str]:
    """Field name -> path as written, for every file a model block names (its `files` fields)."""
    return {f: getattr(spec, f) for f in getattr(spec, "files", ()) if getattr(spec, f, None)}


def licence(key: str) -> Licence:
    """A licence note from data/licences.json (where each note cites its source)."""
    table = json.loads(resources.files("synthfer").joinpath("data/licences.json").read_text("utf-8"))
    entry = table[key]
    return Licence(entry["commercial"], entry["note"])
