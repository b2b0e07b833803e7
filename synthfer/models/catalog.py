"""The registry of published weights (synthfer/data/models.yaml): what a recipe may name as
`registry:NAME` or `preset: NAME`, and what `synthfer models list / fetch` show and download.

Users see it as "the registry"; this module is called catalog so it is not confused with
models/registry.py, the registry of model *kinds* (code). A models folder may hold a
`registry.yaml` of its own (same fields) that adds entries or replaces shipped ones by name: a
lab's mirror, a fine-tuned estimator. Where the models folder is: `--dir`, else
$SYNTHFER_MODELS_DIR, else `data/models` under the current folder.
"""

from __future__ import annotations

import difflib
import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from synthfer.errors import ModelFileError, UsageError

PREFIX = "registry:"
LOCAL_REGISTRY = "registry.yaml"
DEFAULT_DIR = Path("data") / "models"
ENV_DIR = "SYNTHFER_MODELS_DIR"


class Entry(BaseModel):
    """One published file (the fields are explained at the top of data/models.yaml)."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    role: Literal["generator", "editor", "quality", "va"]
    title: str
    file: str
    urls: list[str] = Field(min_length=1)
    page: str | None = None
    archive: Literal["zip"] | None = None
    size: int | None = Field(None, gt=0)
    sha256: str | None = None
    git_blob_sha1: str | None = None
    licence: str
    commercial: bool
    licence_url: str | None = None
    export: Literal["emonet", "iresnet50", "iresnet100"] | None = None
    onnx: str | None = None
    recipe: dict[str, Any]
    expects: dict[str, int] | None = None
    note: str | None = None
    sources: list[str] = Field(min_length=1)

    @field_validator("file", "onnx")
    @classmethod
    def _plain_name(cls, v):
        if v is not None and (not v or "/" in v or "\\" in v or v.startswith(".")):
            raise ValueError(f"must be a plain file name, got {v!r}")
        return v

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, v):
        if v is not None and (len(v) != 64 or any(c not in "0123456789abcdef" for c in v)):
            raise ValueError(f"must be 64 lowercase hex digits, got {v!r}")
        return v

    @field_validator("git_blob_sha1")
    @classmethod
    def _blob(cls, v):
        if v is not None and (len(v) != 40 or any(c not in "0123456789abcdef" for c in v)):
            raise ValueError(f"must be 40 lowercase hex digits, got {v!r}")
        return v

    @property
    def recipe_file(self) -> str:
        """The file a recipe reads: the exported ONNX for checkpoints synthfer exports."""
        return self.onnx or self.file


def models_dir(explicit: str | Path | None = None) -> Path:
    if explicit is not None:
        return Path(explicit).expanduser().absolute()
    env = os.environ.get(ENV_DIR)
    return Path(env).expanduser().absolute() if env else Path.cwd() / DEFAULT_DIR


def _parse(text: str, label: str) -> dict[str, Entry]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise UsageError(f"{label}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{label}: must be a mapping of registry names to entries")
    out = {}
    for name, fields in data.items():
        if not isinstance(fields, dict):
            raise UsageError(f"{label}: {name}: must be a mapping of fields")
        try:
            out[str(name)] = Entry(name=str(name), **fields)
        except ValidationError as err:
            e = err.errors()[0]
            where = ".".join(str(p) for p in e["loc"])
            raise UsageError(f"{label}: {name}.{where}: {e['msg']}") from None
    return out


def shipped() -> dict[str, Entry]:
    text = resources.files("synthfer").joinpath("data/models.yaml").read_text("utf-8")
    return _parse(text, "synthfer/data/models.yaml")


def entries(folder: Path | None = None) -> dict[str, Entry]:
    """Shipped entries, then the models folder's own registry.yaml over them."""
    out = shipped()
    local = (folder or models_dir()) / LOCAL_REGISTRY
    if local.is_file():
        out.update(_parse(local.read_text("utf-8"), str(local)))
    return out


def get(name: str, folder: Path | None = None) -> Entry:
    known = entries(folder)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"unknown registry name {name!r}; {hint}`synthfer models list` shows them")
    return known[name]


def is_reference(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def resolve(value: str, folder: Path | None = None) -> Path:
    """`registry:NAME` -> the file a recipe reads in the models folder (it may not exist yet)."""
    folder = folder or models_dir()
    return folder / get(value[len(PREFIX):], folder).recipe_file


def missing_message(value: str, folder: Path | None = None) -> str:
    """What to say when a `registry:` file is not in the models folder yet."""
    name = value[len(PREFIX):]
    return f"{value}: {resolve(value, folder)} is not there yet; run `synthfer models fetch {name}`"


def preset(name: str, role: str, folder: Path | None = None) -> dict[str, Any]:
    """The recipe block an entry names for `role` (a copy), for `preset: NAME`."""
    entry = get(name, folder)
    if entry.role != role:
        raise UsageError(f"preset {name!r} is a {entry.role} model, not a {role} one")
    return dict(entry.recipe)


def check_expected(name: str, entry: Entry, input_side: int | None, values: int | None, label: str) -> None:
    """A preset's file must have the preset's I/O (symbolic sizes pass): raise naming both."""
    want = entry.expects or {}
    wrong = []
    if input_side is not None and want.get("input") not in (None, input_side):
        wrong.append(f"input {input_side} px where the preset expects {want['input']}")
    if values is not None and want.get("values") not in (None, values):
        wrong.append(f"{values} values per image where the preset expects {want['values']}")
    if wrong:
        raise ModelFileError(f"{label}: does not fit preset {name!r}: it has {' and '.join(wrong)}")
