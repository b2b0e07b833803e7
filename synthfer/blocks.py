"""The base of every recipe block: strict pydantic models, and errors that point below a field."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    # strict: YAML already gives typed values, so "3" for a count is a mistake, not a number.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class PathError(ValueError):
    """A validator's error about a field below the one validated, so the message can name it
    (`field[i]`, `filters.min_quality`). Paths are relative to the validated field."""

    def __init__(self, path: tuple, message: str):
        super().__init__(f"@{json.dumps(list(path))}@{message}")


def IndexedError(index: int, message: str) -> PathError:
    return PathError((index,), message)


class PathErrors(ValueError):
    """Several problems of one block at once, each (path below the block, message): every unknown
    name of a list is reported in one run, not the first one only."""

    SEPARATOR = "\x1e"

    def __init__(self, problems: list[tuple[tuple, str]]):
        super().__init__(self.SEPARATOR.join(f"@{json.dumps(list(path))}@{message}" for path, message in problems))
