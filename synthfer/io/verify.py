"""`synthfer verify`: re-hash every committed shard against its marker, and the manifest against
the shards (every row's members exist with the recorded image hash, nothing extra)."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq

from synthfer.errors import UsageError
from synthfer.io.manifest import SCHEMA
from synthfer.io.shards import ShardStore


def verify(out: Path) -> tuple[list[str], dict]:
    """(problems, counts). An empty problem list means the output is whole."""
    out = Path(out)
    store = ShardStore(out)
    if not store.part_dir.is_dir() and not (out / "manifest.parquet").exists():
        raise UsageError(f"{out}: not a synthfer output (no parts/ and no manifest.parquet)")
    problems: list[str] = []
    markers = {}
    for name in store.marker_names():
        try:
            marker = json.loads(store.marker_path(name).read_text())
        except (OSError, ValueError) as err:
            problems.append(f"{name}: unreadable marker: {err}")
            continue
        problem = store.problem(name, marker, hashes=True)
        if problem:
            problems.append(f"{name}: {problem}")
        else:
            markers[name] = marker
    manifest_rows = 0
    manifest = out / "manifest.parquet"
    if not manifest.exists():
        problems.append("manifest.parquet is missing")
    else:
        try:
            table = pq.read_table(manifest, schema=SCHEMA)
        except (OSError, ValueError, TypeError) as err:  # pyarrow's ArrowInvalid is a ValueError
            problems.append(f"manifest.parquet cannot be read as a synthfer manifest: {str(err).splitlines()[0]}")
            return problems, {"shards": len(store.marker_names()), "valid_shards": len(markers), "manifest_rows": 0}
        manifest_rows = table.num_rows
        expected = sum(m.get("rows", 0) for m in markers.values())
        if manifest_rows != expected:
            problems.append(f"manifest.parquet has {manifest_rows} rows, the valid committed shards hold {expected}")
        problems += _members_match(store, markers, table.to_pylist())
    return problems, {"shards": len(store.marker_names()), "valid_shards": len(markers), "manifest_rows": manifest_rows}


def _members_match(store: ShardStore, markers: dict, rows: list[dict]) -> list[str]:
    problems = []
    by_shard: dict[str, list[dict]] = {}
    for row in rows:
        if row["shard"] is None or row["key"] is None or row["status"] is None:
            problems.append(f"manifest row {row.get('key')!r} lacks its key, shard or status")
            continue
        by_shard.setdefault(f"shard-{row['shard']:06d}", []).append(row)
    for name, shard_rows in sorted(by_shard.items()):
        if name not in markers:
            problems.append(f"manifest rows of {name} but the shard is not validly committed")
            continue
        tars = {"accepted": store.tar_path(name), "rejected": store.rejected_path(name)}
        try:
            members = {status: _member_hashes(path) for status, path in tars.items() if path.exists()}
        except (tarfile.TarError, OSError) as err:
            problems.append(f"{name}: its tar cannot be read: {err}")
            continue
        seen = {status: set() for status in members}
        for row in shard_rows:
            if row["image_sha256"] is None:
                continue
            found = members.get(row["status"], {})
            image = next((n for n in found if n.startswith(row["key"] + ".") and not n.endswith(".json")), None)
            if image is None or row["key"] + ".json" not in found:
                problems.append(f"{name}: {row['key']} ({row['status']}) has no image and json in {tars[row['status']].name}")
                continue
            if found[image] != row["image_sha256"]:
                problems.append(f"{name}: {image} does not match the manifest's image_sha256")
            seen[row["status"]].update({image, row["key"] + ".json"})
        for status, found in members.items():
            extra = sorted(set(found) - seen[status])
            if extra:
                problems.append(f"{name}: {tars[status].name} holds {len(extra)} members not in the manifest "
                                f"(first: {extra[0]})")
    return problems


def _member_hashes(path: Path) -> dict[str, str]:
    with tarfile.open(path) as tar:
        return {m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest() for m in tar.getmembers() if m.isfile()}
