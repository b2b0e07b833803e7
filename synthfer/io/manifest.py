"""The manifest: one row per planned sample, every status. Its schema is derived from
io/records.Row, the only place a column is named; rows that do not match it exactly are refused
(a renamed key must fail loudly, never become an all-null column)."""

from __future__ import annotations

import errno
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

from synthfer.errors import first_line
from synthfer.io.folder import OutputFolder
from synthfer.io.records import Row, arrow_schema

SCHEMA = arrow_schema()

# Fixed writer settings: the same rows give the same bytes.
_WRITE = dict(compression="zstd", compression_level=3, use_dictionary=True, write_statistics=True)


def warm_up() -> None:
    """pyarrow imports pandas the first time it builds an array: about a second of CPU, mostly
    with the GIL held. A worker calls this while its models load, so that second is not spent
    in its first commit, beside the generator."""
    pa.array([0])


def rows_to_table(rows: list[Row | dict]) -> pa.Table:
    """Rows (Row records or dicts with exactly the schema's columns) as a manifest table."""
    names = set(SCHEMA.names)
    dicts = []
    for row in rows:
        d = row.columns() if isinstance(row, Row) else row
        if set(d) != names:
            unknown, missing = sorted(set(d) - names), sorted(names - set(d))
            raise ValueError(f"manifest row {d.get('key')!r} does not match the schema: "
                             f"unknown {unknown}, missing {missing}")
        dicts.append(d)
    return pa.Table.from_pylist(dicts, schema=SCHEMA)


def table_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **_WRITE)
    return buf.getvalue()


def part_bytes(rows: list[Row]) -> bytes:
    """A shard's rows as Parquet bytes (the shard's commit writes them)."""
    return table_bytes(rows_to_table(rows))


def read_table(data: bytes, columns: list[str] | None = None, fill_missing: bool = False) -> pa.Table:
    """Manifest (or part) rows from Parquet bytes, checked against the schema. One thread and no
    dataset API: pyarrow's dataset reader with an explicit schema can abort the interpreter at
    exit ("terminate called without an active exception") when torch is not loaded.
    fill_missing: columns an older format lacks (class, class_id, score_flags) come back null,
    for readers of older outputs (report)."""
    try:
        file = pq.ParquetFile(pa.BufferReader(data))
        expected = SCHEMA if columns is None else pa.schema([SCHEMA.field(c) for c in columns])
        present = set(file.schema_arrow.names)
        missing = [f for f in expected if f.name not in present] if fill_missing else []
        if any(f.name in ("key", "status") for f in missing):   # every format has them: another tool's table
            raise ValueError("it has no key and status columns")
        table = file.read(columns=[n for n in expected.names if n in present or not fill_missing], use_threads=False)
        for f in missing:
            table = table.append_column(f, pa.nulls(table.num_rows, f.type))
        if table.schema.remove_metadata().equals(expected):
            return table
        return table.select(expected.names).cast(expected)
    except (KeyError, ValueError, TypeError, OSError, pa.ArrowException) as err:   # not Parquet (bytes, so an
        # OSError is pyarrow failing to parse them), or other columns
        raise ValueError(f"not a synthfer manifest ({str(err).splitlines()[0] if str(err) else 'other columns'})") from None


# The manifest's own record of the parts it was merged from: [[relative name, sha256], ...].
PARTS_KEY = b"synthfer.parts"


def read_part(folder: OutputFolder, rel: str) -> pa.Table:
    """A committed shard's manifest part. One that does not read as a part (a build that checked
    only sizes, --trust-markers, can meet one) is an OSError naming it, as a storage failure is."""
    try:
        return read_table(folder.read_bytes(rel))
    except ValueError as err:
        raise OSError(errno.EIO, f"{rel}: damaged ({first_line(err)}); run the build again without "
                                 f"--trust-markers, which checks sha256 and rebuilds it") from None


def merge_parts(folder: OutputFolder, parts: list[tuple[str, str]], final: str) -> pa.Table:
    """The manifest from committed parts ((name, sha256) in shard order), written whole, with the
    list of parts in its metadata so `verify` can tell what it was made from. Returns the rows."""
    tables = [read_part(folder, rel) for rel, _ in parts]
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    record = json.dumps([[rel, sha] for rel, sha in parts], separators=(",", ":")).encode()
    folder.write(final, table_bytes(table.replace_schema_metadata({PARTS_KEY: record})))
    return table


def read_manifest(folder: OutputFolder, rel: str, columns: list[str] | None = None,
                  fill_missing: bool = False) -> pa.Table:
    return read_table(folder.read_bytes(rel), columns, fill_missing)


def merged_from(folder: OutputFolder, rel: str) -> list[tuple[str, str]] | None:
    """The parts a manifest records it was merged from; None when it records none (older
    synthfer). ValueError when the record is damaged."""
    metadata = pq.read_metadata(pa.BufferReader(folder.read_bytes(rel))).metadata or {}
    if PARTS_KEY not in metadata:
        return None
    record = json.loads(metadata[PARTS_KEY])
    if not isinstance(record, list) or not all(isinstance(p, list) and len(p) == 2 for p in record):
        raise ValueError("not a list of [part, sha256]")
    return [(str(a), str(b)) for a, b in record]
