"""`synthfer verify`: everything an output claims, checked against what it holds.

* every committed shard: each file its marker lists exists with the recorded size and sha256
  (a marker that lists no manifest part is not trusted);
* the manifest: it records the parts it was merged from, which must be the committed shards'
  parts with their current sha256s; and its rows must equal those parts row by row, so any
  changed value (a score, a status, a key) is found, not only missing files;
* every manifest row with an image: the image and its json are in the right tar with the
  recorded image sha256, and the tars hold nothing else.
"""

from __future__ import annotations

import hashlib
import json
import tarfile

import pyarrow as pa
import pyarrow.compute as pc

from synthfer.errors import UsageError, first_line
from synthfer.io.folder import OutputFolder, open_folder
from synthfer.io.layout import Layout, layout_of
from synthfer.io.manifest import merged_from, read_manifest, read_table
from synthfer.io.shards import ShardStore, shard_name

_STATUS_TARS = {"accepted": "tar", "rejected": "rejected_tar"}


def check_output(folder: OutputFolder, layout: Layout) -> None:
    """UsageError unless `folder` holds a synthfer output: checked before verify takes the build
    lock, which would otherwise leave a .lock file in a folder that is not one."""
    if folder.is_local and not folder.is_dir(""):
        raise UsageError(f"{folder.location}: no such folder")
    if not folder.is_dir(layout.marker_dir) and not folder.exists(layout.manifest):
        raise UsageError(f"{folder.location}: not a synthfer output (no {layout.marker_dir}/ and no {layout.manifest})")


def verify(folder: OutputFolder | str, layout: Layout | None = None) -> tuple[list[str], dict]:
    """(problems, counts). An empty problem list means the output is whole. Reads format 1 and 2."""
    folder = folder if isinstance(folder, OutputFolder) else open_folder(folder)
    layout = layout or layout_of(folder)
    store = ShardStore(folder, layout)
    check_output(folder, layout)
    problems: list[str] = []
    markers = {}
    indices = store.marker_indices()
    made_by = _shard_fingerprint(folder, layout)
    for index in indices:
        try:
            marker = store.read_marker(index)
        except (OSError, ValueError) as err:
            problems.append(f"{shard_name(index)}: unreadable marker: {first_line(err)}")
            continue
        problem = store.problem(index, marker, hashes=True)
        if problem is None and made_by is not None and marker.get("fingerprint") != made_by:
            problem = (f"built by another recipe or weights (fingerprint {marker.get('fingerprint')}, the output's "
                       f"{made_by}): a build that was not holding the lock wrote it")
        if problem:
            problems.append(f"{shard_name(index)}: {problem}")
        else:
            markers[index] = marker
    counts = {"shards": len(indices), "valid_shards": len(markers), "manifest_rows": 0}
    for rel in store.garbage():   # no build runs under verify's lock: these are a dead build's
        problems.append(f"{rel}: no commit marker lists it (a build died while writing it; the next build removes "
                        f"it), yet a reader that globs the shard names would read it")
    if not folder.exists(layout.manifest):
        problems.append(f"{layout.manifest} is missing")
        return problems, counts
    old = layout.version < 2   # format 1: no class / score_flags columns, no record of merged parts
    try:
        table = read_manifest(folder, layout.manifest, fill_missing=old)
        recorded = merged_from(folder, layout.manifest)
    except (OSError, ValueError, TypeError, pa.ArrowException) as err:
        problems.append(f"{layout.manifest} cannot be read as a synthfer manifest: {first_line(err)}")
        return problems, counts
    counts["manifest_rows"] = table.num_rows
    expected = sum(m.get("rows", 0) for m in markers.values())
    if table.num_rows != expected:
        problems.append(f"{layout.manifest} has {table.num_rows} rows, the valid committed shards hold {expected}")
    parts = [(layout.part(i), markers[i]["files"][layout.part(i)]["sha256"]) for i in sorted(markers)]
    if recorded is None and not old:
        problems.append(f"{layout.manifest} does not record the parts it was merged from (damaged, or written by "
                        f"an older synthfer: the same synthfer build rewrites it)")
    elif recorded is not None and recorded != parts:
        problems.append(f"{layout.manifest} was merged from other parts than the committed shards "
                        f"({_first_difference(recorded, parts)})")
    problems += _rows_match_parts(store, markers, table, old)
    problems += _members_match(store, markers, table.to_pylist())
    return problems, counts


def _shard_fingerprint(folder: OutputFolder, layout: Layout) -> str | None:
    """The shard fingerprint fingerprint.json records (None when it records none: older outputs)."""
    try:
        value = json.loads(folder.read_bytes(layout.fingerprint)).get("shard_fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _first_difference(recorded: list, parts: list) -> str:
    """The first part, by name, where the manifest's record and the valid committed shards
    differ. By name, not by position: a shard that failed its check drops out of `parts`, and
    pairing by position then compared every later part with its neighbour's."""
    listed, have = dict(recorded), dict(parts)
    if len(listed) != len(recorded):
        return "it lists a part more than once"
    for name in sorted(set(listed) | set(have)):
        if name not in have:
            return f"it lists {name}, which no valid committed shard has"
        if name not in listed:
            return f"it misses {name}"
        if listed[name] != have[name]:
            return f"it lists {name} with sha256 {listed[name][:12]}, the shard has {have[name][:12]}"
    return "the same parts in another order"


def _rows_match_parts(store: ShardStore, markers: dict, table: pa.Table, old: bool) -> list[str]:
    """Each valid shard's manifest rows equal its part, value for value."""
    problems = []
    shards = table.column("shard")
    for index in sorted(markers):
        mine = table.filter(pc.equal(shards, index))
        try:
            part = read_table(store.folder.read_bytes(store.layout.part(index)), fill_missing=old)
        except (OSError, ValueError, pa.ArrowException) as err:
            problems.append(f"{shard_name(index)}: its part cannot be read: {first_line(err)}")
            continue
        if mine.num_rows == 0 and part.num_rows:
            problems.append(f"{shard_name(index)}: its {part.num_rows} rows are missing from {store.layout.manifest}")
        elif not mine.equals(part):
            problems.append(f"{shard_name(index)}: {store.layout.manifest} {_row_difference(mine, part)}")
    return problems


def _row_difference(mine: pa.Table, part: pa.Table) -> str:
    if mine.num_rows != part.num_rows:
        return f"has {mine.num_rows} of its rows, its part {part.num_rows}"
    keys = part.column("key").to_pylist()
    for name in part.schema.names:
        a, b = mine.column(name).to_pylist(), part.column(name).to_pylist()
        for row, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return f"row {keys[row]!r} differs from its part in {name} ({x!r}, part {y!r})"
    return "differs from its part"


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
