"""Write-whole-then-rename helpers. A reader never sees a half-written file under its final name."""

from __future__ import annotations

import json
import os
from pathlib import Path

TMP_TAG = ".tmp-"


def temp_path(final: Path) -> Path:
    """A hidden sibling tagged with our pid, so a later run can tell whose leftover it is."""
    return final.with_name(f".{final.name}{TMP_TAG}{os.getpid()}")


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not every platform lets a directory be opened; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """fsync the temporary, rename it into place, fsync the folder so the rename survives a crash."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)


def write_bytes(final: Path, data: bytes) -> None:
    tmp = temp_path(final)
    tmp.write_bytes(data)
    publish(tmp, final)


def write_json(final: Path, obj) -> None:
    write_bytes(final, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete leftovers of dead processes (a crash mid-write); live writers' files stay."""
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if not (p.name.startswith(".") and TMP_TAG in p.name):
            continue
        pid = p.name.rsplit(TMP_TAG, 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
