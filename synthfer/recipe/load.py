"""Recipe loading: the only YAML reader. Line numbers, --set overrides, one-line problems.

Every problem becomes one line `FILE:LINE: field.path: message`, collected into a RecipeError
(exit 2) so the user sees all of them at once.
"""

from __future__ import annotations

import json
import re
import stat
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from synthfer.blocks import PathErrors
from synthfer.errors import RecipeError, UsageError
from synthfer.io.folder import check_location, is_url, without_file_scheme
from synthfer.models import catalog, registry
from synthfer.recipe.loaded import DECISION_KEYS, LoadedRecipe, diff_inputs  # noqa: F401  (re-exported)
from synthfer.recipe.schema import Recipe

# YAML aliases can make a small file expand to billions of values ("billion laughs"); a recipe
# never needs more than this many.
MAX_VALUES = 100_000


def load_recipe(path: str | Path, overrides: list[str] = (), output: str | None = None) -> LoadedRecipe:
    """Read, override and validate a recipe; raise RecipeError listing every problem.
    `-` (or /dev/stdin) reads standard input; its relative paths resolve against the current folder."""
    text, path, label = _read(Path(path))
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and _expanded_size(node) > MAX_VALUES:
            raise RecipeError([f"{label}: expands to more than {MAX_VALUES:,} values through YAML aliases; "
                               f"refused (a recipe needs far fewer)"])
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{label}:{mark.line + 1}" if mark else label
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RecipeError([f"{where}: YAML syntax error: {problem}"]) from None
    except RecursionError:
        raise RecipeError([f"{label}: nested too deeply to be a recipe"]) from None
    if data is None:
        raise RecipeError([f"{label}: the file is empty; a recipe is a mapping such as `name: demo`"])
    if not isinstance(data, dict):
        raise RecipeError([f"{label}:1: a recipe must be a mapping of fields, got a {_yaml_type(data)}"])
    lines = _line_map(node)
    duplicates = [f"{label}:{line}: {_field_path(path)}: duplicate key (YAML keeps only the last one)"
                  for path, line in _duplicate_keys(node)]
    if duplicates:
        raise RecipeError(duplicates)

    applied: dict[tuple, str] = {}
    for item in overrides:
        dotted, value = _parse_override(item)
        _apply_override(data, dotted, value, item)
        applied[tuple(dotted)] = f"--set {item}"
    if output is not None:
        try:
            local = without_file_scheme(output)
        except ValueError as err:
            raise RecipeError([f"--output: {err}"]) from None
        if not local.strip():   # Path("") is the current folder: never what was meant
            raise RecipeError([f"--output: {'is empty' if not output.strip() else f'{output} names no folder'}; "
                               f"name a folder (or a URL)"])
        data.setdefault("output", {})
        if not isinstance(data["output"], dict):
            data["output"] = {}
        # A command-line path means what it says from where the user stands, not from the recipe.
        data["output"]["dir"] = output if is_url(output) else str(Path(local).expanduser().absolute())
        applied[("output", "dir")] = f"--output {output}"

    problems = _apply_presets(data, label, lines, applied)
    if problems:
        raise RecipeError(problems)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError([line for e in err.errors() for line in _describe_all(e, label, lines, applied)]) from None

    loaded = LoadedRecipe(recipe, path, list(overrides))
    problems = []
    try:
        check_location(recipe.output.dir)
    except ValueError as err:
        loc = ("output", "dir")
        problems.append(f"{_where(label, lines, applied, loc)}: output.dir: {err}")
    for slot, field, value in loaded.model_files():
        loc = (*slot.loc, field)
        where = f"{_where(label, lines, applied, loc)}: {slot.field_path}.{field}"
        try:
            path = loaded.resolve(value)
        except UsageError as err:   # an unknown registry name
            problems.append(f"{where}: {err}")
            continue
        if not path.is_file():
            problems.append(f"{where}: {catalog.missing_message(value)}" if catalog.is_reference(value)
                            else f"{where}: is a folder, not a weights file: {path}" if path.is_dir()
                            else f"{where}: file not found: {path}")
    calibration = recipe.correction.calibration
    if calibration is not None and not loaded.resolve(calibration).is_file():
        loc = ("correction", "calibration")
        problems.append(f"{_where(label, lines, applied, loc)}: correction.calibration: file not found: "
                        f"{loaded.resolve(calibration)}")
    if problems:
        raise RecipeError(problems)
    return loaded


def _apply_presets(data: dict, label: str, lines: dict, applied: dict) -> list[str]:
    """Fill each quality/VA block that names `preset: NAME` from that registry entry's recipe
    block; fields the recipe sets itself win (preprocess field by field). Returns problems."""
    models = data.get("models")
    if not isinstance(models, dict):
        return []
    problems = []
    for role in ("quality", "va"):
        blocks = models.get(role)
        many = isinstance(blocks, list)
        for i, block in enumerate(blocks if many else [blocks]):
            if not isinstance(block, dict) or block.get("preset") is None:
                continue
            loc = ("models", role, *((i,) if many else ()), "preset")
            where = f"{_where(label, lines, applied, loc)}: {'.'.join(map(str, loc))}"
            try:
                filled = catalog.preset(str(block["preset"]), role)
            except UsageError as err:
                problems.append(f"{where}: {err}")
                continue
            if "kind" in block and block["kind"] != filled.get("kind"):
                problems.append(f"{where}: preset {block['preset']!r} is a kind {filled.get('kind')} model; "
                                f"leave out kind: {block['kind']}")
                continue
            own = dict(block)
            if isinstance(own.get("preprocess"), dict) and isinstance(filled.get("preprocess"), dict):
                own["preprocess"] = {**filled["preprocess"], **own["preprocess"]}
            merged = {**filled, **own}
            if many:
                blocks[i] = merged
            else:
                models[role] = merged
    return problems


STDIN = ("-", "/dev/stdin")


def _read(path: Path) -> tuple[str, Path, str]:
    """(text, path relative names resolve against, label for messages)."""
    if str(path) in STDIN:
        try:
            return sys.stdin.read(), Path.cwd() / "<stdin>", "<stdin>"
        except (OSError, UnicodeDecodeError) as err:
            raise RecipeError([f"<stdin>: cannot read: {getattr(err, 'strerror', None) or err}"]) from None
    label = str(path)
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO or device would block or never end
            raise RecipeError([f"{label}: not a regular file; give a recipe file, or - for standard input"])
        return path.read_text(encoding="utf-8"), path, label
    except FileNotFoundError:
        raise RecipeError([f"{label}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError([f"{label}: cannot read: {getattr(err, 'strerror', None) or err}"]) from None


def _expanded_size(node, memo: dict | None = None) -> int:
    """How many values the document holds once every alias is expanded (shared nodes counted
    once per use, computed once each)."""
    memo = {} if memo is None else memo
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = MAX_VALUES + 1  # a node reached again while being counted: a cycle, refuse
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, memo) for v in node.value)
    else:
        size = 1
    memo[key] = min(size, MAX_VALUES + 1)
    return memo[key]


def _yaml_type(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value), type(value).__name__)


def _line_map(node, path=()) -> dict[tuple, int]:
    """Field path -> 1-based line, for every key and list element of the YAML document."""
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = path + (key.value,)
            lines.update(_line_map(value, child))
            lines[child + ("<key>",)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            lines.update(_line_map(value, path + (i,)))
    return lines


def _duplicate_keys(node, path=()) -> list[tuple[tuple, int]]:
    out = []
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key, value in node.value:
            if key.value in seen:
                out.append((path + (key.value,), key.start_mark.line + 1))
            seen.add(key.value)
            out += _duplicate_keys(value, path + (key.value,))
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            out += _duplicate_keys(value, path + (i,))
    return out


def _where(label: str, lines: dict, applied: dict, loc: tuple) -> str:
    for n in range(len(loc), 0, -1):
        if loc[:n] in applied:
            return applied[loc[:n]]
    bare = tuple(p for p in loc if p != "<key>")
    for path, source in applied.items():  # a --set that created this field (or something below it)
        if bare and path[:len(bare)] == bare and bare not in lines:
            return source
    # the recipe's line, and any --set below the field that took part (a sum over splits)
    below = [source for path, source in applied.items() if bare and path[:len(bare)] == bare]
    with_sets = f" with {', '.join(below)}" if below else ""
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return f"{label}:{lines[loc[:n]]}{with_sets}"
    return label + with_sets


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not re.fullmatch(r"[A-Za-z0-9_<>-]+", str(part)):  # odd keys: quoted, so the line stays one line
            out += f"[{str(part)!r}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _describe_all(error: dict, label: str, lines: dict, applied: dict) -> list[str]:
    """One line per problem; a PathErrors error holds several."""
    msg = error["msg"]
    if PathErrors.SEPARATOR not in msg:
        return [_describe(error, label, lines, applied)]
    prefix = "Value error, " if msg.startswith("Value error, ") else ""
    parts = msg[len(prefix):].split(PathErrors.SEPARATOR)
    return [_describe(dict(error, msg=prefix + part), label, lines, applied) for part in parts]


def _describe(error: dict, label: str, lines: dict, applied: dict) -> str:
    # Union members (str | None, Literal | list) add their type name to loc; drop it.
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and ("[" in p or p in
                ("str", "int", "float", "list", "none", "bool", "function-after", "literal"))))
    if loc[:2] == ("models", "va") and len(loc) > 2 and loc[2] in ("one", "many"):
        loc = loc[:2] + loc[3:]   # the tags of `va: {...}` vs `va: [{...}, ...]`
    kind, msg, value = error["type"], error["msg"], error.get("input")
    spec = None  # the model kind's block, when the error is inside models.<role>
    block = 2  # models.<role> is loc[:2]; models.va.<i> is loc[:3]
    if loc[:1] == ("models",) and len(loc) >= 2 and loc[1] in registry.ROLES:
        block += len(loc) > 2 and isinstance(loc[2], int)
        known = registry.kinds(loc[1])
        if kind == "union_tag_invalid":
            return (f"{_where(label, lines, applied, loc[:block] + ('kind',))}: {_field_path(loc[:block])}.kind: "
                    f"unknown kind {_kind_of(value)!r} (known: {', '.join(known)})")
        if len(loc) > block and loc[block] in known:
            spec = known[loc[block]].spec
            loc = loc[:block] + loc[block + 1:]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if msg.startswith("@[") and "]@" in msg:  # _PathError: point below the validated field
        sub, msg = msg[1:].split("]@", 1)
        loc = loc + tuple(json.loads(sub + "]"))
    if kind == "extra_forbidden":
        parent = spec if spec is not None and len(loc) == block + 1 else _model_at(loc[:-1])
        allowed = ", ".join(parent.model_fields) if parent else ""
        where = _where(label, lines, applied, loc + ("<key>",))
        hint = ""
        if spec is not None and len(loc) == block + 1:  # a field of another kind of this role?
            others = [name for name, k in registry.kinds(loc[1]).items() if loc[block] in k.spec.model_fields]
            hint = f"; kind {others[0]} has it" if others else ""
        return f"{where}: {_field_path(loc)}: unknown key" + (f" (allowed: {allowed}{hint})" if allowed else "")
    if kind == "missing":
        return f"{_where(label, lines, applied, loc)}: {_field_path(loc)}: required field is missing"
    if kind.endswith("_type") or kind.endswith("_parsing") or kind in ("int_from_float", "model_type", "finite_number"):
        expected = msg.replace("Input should be ", "").split(",")[0]
        msg = f"must be {expected}, got {_show(value)}"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "literal_error",
                  "string_too_short"):
        msg = msg.replace("Input should be", "must be").replace("String should have", "must have") + f", got {_show(value)}"
    return f"{_where(label, lines, applied, loc)}: {_field_path(loc)}: {msg}"


def _kind_of(value: Any) -> Any:
    return value.get("kind", "builtin") if isinstance(value, dict) else value


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"a {_yaml_type(value)}"
    return repr(value)


def _model_at(loc: tuple):
    model = Recipe
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _parse_override(item: str) -> tuple[list, Any]:
    if "=" not in item:
        raise UsageError(f"--set {item}: expected FIELD=VALUE, e.g. identities.count=10")
    dotted, raw = item.split("=", 1)
    parts = dotted.strip().split(".")
    if not all(parts):
        raise UsageError(f"--set {item}: bad field path {dotted!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise UsageError(f"--set {item}: the value is not valid YAML") from None
    return [int(p) if p.isdigit() else p for p in parts], value


def _apply_override(data: dict, dotted: list, value: Any, item: str) -> None:
    node = data
    for i, part in enumerate(dotted[:-1]):
        nxt = dotted[i + 1]
        if isinstance(node, dict) and isinstance(part, str):
            if not isinstance(node.get(part), (dict, list)):
                node[part] = {}
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            raise UsageError(f"--set {item}: no field {'.'.join(map(str, dotted[:i + 1]))}")
        if isinstance(nxt, int) and not isinstance(node, list):
            raise UsageError(f"--set {item}: {'.'.join(map(str, dotted[:i + 1]))} is not a list")
    last = dotted[-1]
    if isinstance(node, list):
        if not (isinstance(last, int) and last < len(node)):
            raise UsageError(f"--set {item}: index {last} is out of range")
    elif not isinstance(node, dict):
        raise UsageError(f"--set {item}: {'.'.join(map(str, dotted[:-1]))} is a value, not a mapping")
    node[last] = value
