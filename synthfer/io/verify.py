"""`synthfer verify`: re-hash every committed shard against its marker, and the manifest against
the shards (every row's members exist with the recorded image hash, nothing extra)."""

from __future__ import annotations

import hashlib
import tarfile

from synthfer.errors import UsageError, first_line
from synthfer.io.folder import OutputFolder, open_folder
from synthfer.io.layout import CURRENT, Layout
from synthfer.io.manifest import read_manifest
from synthfer.io.shards import ShardStore, shard_name

_STATUS_TARS = {"accepted": "tar", "rejected": "rejected_tar"}


def verify(folder: OutputFolder | str, layout: Layout = CURRENT) -> tuple[list[str], dict]:
    """(problems, counts). An empty problem list means the output is whole."""
    folder = folder if isinstance(folder, OutputFolder) else open_folder(folder)
    store = ShardStore(folder, layout)
    if not folder.is_dir(layout.marker_dir) and not folder.exists(layout.manifest):
        raise UsageError(f"{folder.location}: not a synthfer output (no {layout.marker_dir}/ and no {layout.manifest})")
    problems: list[str] = []
    markers = {}
    indices = store.marker_indices()
    for index in indices:
        try:
            marker = store.read_marker(index)
        except (OSError, ValueError) as err:
            problems.append(f"{shard_name(index)}: unreadable marker: {first_line(err)}")
            continue
        problem = store.problem(index, marker, hashes=True)
        if problem:
            problems.append(f"{shard_name(index)}: {problem}")
        else:
            markers[index] = marker
    counts = {"shards": len(indices), "valid_shards": len(markers), "manifest_rows": 0}
    if not folder.exists(layout.manifest):
        problems.append(f"{layout.manifest} is missing")
        return problems, counts
    try:
        table = read_manifest(folder, layout.manifest)
    except (OSError, ValueError, TypeError) as err:  # pyarrow's ArrowInvalid is a ValueError
        problems.append(f"{layout.manifest} cannot be read as a synthfer manifest: {first_line(err)}")
        return problems, counts
    counts["manifest_rows"] = table.num_rows
    expected = sum(m.get("rows", 0) for m in markers.values())
    if table.num_rows != expected:
        problems.append(f"{layout.manifest} has {table.num_rows} rows, the valid committed shards hold {expected}")
    problems += _members_match(store, markers, table.to_pylist())
    return problems, counts


def _members_match(store: ShardStore, markers: dict, rows: list[dict]) -> list[str]:
    problems = []
    by_shard: dict[int, list[dict]] = {}
    for row in rows:
        if row["shard"] is None or row["key"] is None or row["status"] is None:
            problems.append(f"manifest row {row.get('key')!r} lacks its key, shard or status")
            continue
        by_shard.setdefault(row["shard"], []).append(row)
    for index, shard_rows in sorted(by_shard.items()):
        if index not in markers:
            problems.append(f"manifest rows of {shard_name(index)} but the shard is not validly committed")
            continue
        split = markers[index].get("split", "")
        tars = {status: getattr(store.layout, attr)(index, split) for status, attr in _STATUS_TARS.items()}
        try:
            members = {status: _member_hashes(store.folder, rel) for status, rel in tars.items()
                       if store.folder.exists(rel)}
        except (tarfile.TarError, OSError, EOFError) as err:
            problems.append(f"{shard_name(index)}: its tar cannot be read: {first_line(err)}")
            continue
        seen = {status: set() for status in members}
        for row in shard_rows:
            status = row["status"]
            if row["image_sha256"] is None:
                continue
            if status not in tars:
                problems.append(f"{shard_name(index)}: {row['key']} has an image but status {status!r}")
                continue
            found = members.get(status, {})
            image = next((n for n in found if n.startswith(row["key"] + ".") and not n.endswith(".json")), None)
            if image is None or row["key"] + ".json" not in found:
                problems.append(f"{shard_name(index)}: {row['key']} ({status}) has no image and json in "
                                f"{tars[status]}")
                continue
            if found[image] != row["image_sha256"]:
                problems.append(f"{shard_name(index)}: {image} does not match the manifest's image_sha256")
            seen[status].update({image, row["key"] + ".json"})
        for status, found in members.items():
            extra = sorted(set(found) - seen[status])
            if extra:
                problems.append(f"{shard_name(index)}: {tars[status]} holds {len(extra)} members not in the "
                                f"manifest (first: {extra[0]})")
    return problems


def _member_hashes(folder: OutputFolder, rel: str) -> dict[str, str]:
    with folder.open(rel) as f, tarfile.open(fileobj=f, mode="r:") as tar:
        return {m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest() for m in tar if m.isfile()}
