"""The manifest: the only Arrow schema in synthfer. One row per planned sample, every status."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from synthfer.io.atomic import publish, temp_path

_f64 = pa.float64()
SCHEMA = pa.schema([
    ("key", pa.string()),
    ("shard", pa.int32()),
    ("identity", pa.int64()),
    ("identity_seed", pa.int64()),
    ("split", pa.string()),
    ("target", pa.string()),
    ("target_angle_deg", _f64),        # null for neutral
    ("target_intensity", _f64),
    ("target_valence", _f64),
    ("target_arousal", _f64),
    ("status", pa.string()),           # accepted | rejected | skipped
    ("reject_reasons", pa.list_(pa.string())),
    ("quality", _f64),                 # scores: null where not measured
    ("identity_similarity", _f64),
    ("pred_valence", _f64),
    ("pred_arousal", _f64),
    ("pred_angle_deg", _f64),
    ("pred_intensity", _f64),
    ("direction_error_deg", _f64),
    ("magnitude_error", _f64),
    ("valence_error", _f64),
    ("arousal_error", _f64),
    ("distance_error", _f64),
    ("width", pa.int32()),             # null when no image was written
    ("height", pa.int32()),
    ("image_sha256", pa.string()),
    ("recipe_fingerprint", pa.string()),
])

# Fixed writer settings: the same rows give the same bytes.
_WRITE = dict(compression="zstd", compression_level=3, use_dictionary=True, write_statistics=True)


def rows_to_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([{name: row.get(name) for name in SCHEMA.names} for row in rows], schema=SCHEMA)


def write_part(path: Path, rows: list[dict]) -> Path:
    """Write a shard's rows to a temporary next to `path`; the caller publishes it."""
    tmp = temp_path(path)
    pq.write_table(rows_to_table(rows), tmp, **_WRITE)
    return tmp


def merge_parts(parts: list[Path], final: Path) -> int:
    """manifest.parquet from committed parts, in shard order, written atomically. Returns rows."""
    tables = [pq.read_table(p, schema=SCHEMA) for p in parts]
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    tmp = temp_path(final)
    pq.write_table(table, tmp, **_WRITE)
    publish(tmp, final)
    return table.num_rows


def read_manifest(path: Path) -> pa.Table:
    return pq.read_table(path, schema=SCHEMA)
