"""`synthfer export`: an output's accepted images for codebases that do not read WebDataset.

* imagefolder: DEST/{split}/{class}/{KEY}.{ext}, what torchvision's ImageFolder reads (the class is
  the sample's class, or its target without classes);
* affectnet-csv: DEST/images/{split}/{KEY}.{ext} plus training.csv / validation.csv / test.csv in
  the column layout of AffectNet's training CSV (subDirectory_filePath, face_x, face_y,
  face_width, face_height, facial_landmarks, expression, valence, arousal): the face box is the
  whole image (synthfer's images are aligned faces), facial_landmarks is left empty, expression
  is the class's AffectNet index (data/classes.json), valence/arousal the sample's target.

Both stream one shard at a time (memory stays flat), check every image against the manifest's
sha256 while copying, and write only into an empty destination, or with `force` over an earlier
export (what it wrote is listed in DEST/.synthfer-export.json and removed first), so running the
same export twice gives the same files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from synthfer import signals
from synthfer.classes import table as class_table
from synthfer.errors import OutputError, UsageError
from synthfer.io.folder import OutputFolder, open_folder
from synthfer.io.layout import layout_of
from synthfer.io.local_folder import LocalFolder
from synthfer.io.manifest import read_manifest
from synthfer.io.shards import ShardStore

FORMATS = ("imagefolder", "affectnet-csv")
RECORD = ".synthfer-export.json"
CSV_NAMES = {"train": "training.csv", "val": "validation.csv", "test": "test.csv"}
AFFECTNET_COLUMNS = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
                     "expression", "valence", "arousal"]


@dataclass
class Exported:
    images: int = 0
    by_split: dict = field(default_factory=dict)
    files: list = field(default_factory=list)    # relative names written into DEST
    folders: list = field(default_factory=list)  # imagefolder: DEST/split/label, one per label in every split
    empty: list = field(default_factory=list)    # those of them with no image ("train/contempt")


def export(out, fmt: str, dest: str | Path, force: bool = False, storage_options: dict | None = None) -> Exported:
    if fmt not in FORMATS:
        raise UsageError(f"--format: must be {' or '.join(FORMATS)}, got {fmt!r}")
    source = out if isinstance(out, OutputFolder) else open_folder(out, storage_options)
    layout = layout_of(source)
    try:
        rows = read_manifest(source, layout.manifest, ["key", "shard", "split", "target", "class", "status",
                                                       "target_valence", "target_arousal", "width", "height",
                                                       "image_sha256"], fill_missing=True).to_pylist()
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0]
        raise UsageError(f"{source.location}: no readable {layout.manifest} ({reason}); "
                         f"is it a finished synthfer output?") from None
    accepted = {r["key"]: r for r in rows if r["status"] == "accepted"}
    expression = _affectnet_index(rows) if fmt == "affectnet-csv" else {}
    target = LocalFolder(dest)
    _prepare(target, force)
    signals.explain(f"; {dest} holds part of the export: run the same export again with --force to replace it")
    done = Exported()
    tables: dict[str, list[list]] = {}
    store = ShardStore(source, layout)

    def record(complete: bool) -> None:
        """Written first (empty), after an interruption (what is there) and at the end, so --force
        can always replace what this export left."""
        target.write(RECORD, (json.dumps({"source": source.location, "format": fmt, "files": sorted(done.files),
                                          "folders": done.folders, **({} if complete else {"complete": False})},
                                         indent=1) + "\n").encode())

    try:
        record(complete=False)
        for index, marker in sorted(store.committed().items()):
            split = marker.get("split", "")
            rel = layout.tar(index, split)
            if fmt == "affectnet-csv":
                tables.setdefault(split, [])   # a split whose images were all rejected still gets its CSV
            if rel not in (marker.get("files") or {}):
                continue
            items = []
            for name, data in _members(source, rel):
                key, _, ext = name.partition(".")
                row = accepted.get(key)
                if row is None or ext == "json":
                    continue
                if hashlib.sha256(data).hexdigest() != row["image_sha256"]:
                    raise OutputError(f"{source.display(rel)}: {name} does not match the manifest's image_sha256; "
                                      f"run synthfer verify")
                path = _path(fmt, row, ext)
                items.append((path, data))
                if fmt == "affectnet-csv":
                    tables.setdefault(split, []).append([path.split("/", 1)[1], 0, 0, row["width"], row["height"], "",
                                                         expression[row["class"]], row["target_valence"],
                                                         row["target_arousal"]])
                done.by_split[split] = done.by_split.get(split, 0) + 1
            done.files += [p for p, _ in items]   # before writing: an interruption's record covers them
            target.write_all(items)
            done.images += len(items)
        if done.images != len(accepted):
            exported = {Path(p).stem for p in done.files}
            missing = sorted(k for k in accepted if k not in exported)
            raise OutputError(f"{source.location}: {len(missing)} of {len(accepted)} accepted images are not in "
                              f"the committed shards (first: {missing[0]}); run synthfer verify")
        if fmt == "imagefolder":
            _label_folders(target, rows, done)
        for split, lines in sorted(tables.items()):
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow(AFFECTNET_COLUMNS)
            writer.writerows(lines)
            target.write(CSV_NAMES[split], buf.getvalue().encode())
            done.files.append(CSV_NAMES[split])
        record(complete=True)
    except OSError as err:
        raise OutputError(f"{target.location}: export failed: {err.strerror or err}") from None
    except BaseException:   # interrupted (SIGINT / SIGTERM) or failed: record what is there
        try:
            record(complete=False)
        except OSError:
            pass
        raise
    return done


def _label_folders(target: LocalFolder, rows: list[dict], done: Exported) -> None:
    """Every label's folder in every split, empty where a split has no image of it: ImageFolder
    numbers the folders it finds alphabetically, so a class missing from one split would shift
    the numbers of the classes after it there (torchvision then needs allow_empty=True)."""
    labels = sorted({r["class"] or r["target"] for r in rows})
    for split in sorted({r["split"] for r in rows if r["split"]}):
        for label in labels:
            rel = f"{split}/{label}"
            done.folders.append(rel)
            if not target.exists(rel):
                target.ensure_dir(rel)
                done.empty.append(rel)


def _path(fmt: str, row: dict, ext: str) -> str:
    if fmt == "imagefolder":
        return f"{row['split']}/{row['class'] or row['target']}/{row['key']}.{ext}"
    return f"images/{row['split']}/{row['key']}.{ext}"


def _affectnet_index(rows: list[dict]) -> dict[str, int]:
    known = class_table()["classes"]
    index = {}
    for cls in sorted({r["class"] or "" for r in rows if r["status"] == "accepted"}):
        if not cls:
            raise UsageError("--format affectnet-csv: the output has no classes (built without targets.classes); "
                             "it needs AffectNet classes (targets.classes: affectnet8, basic7 or their names)")
        if cls not in known:
            raise UsageError(f"--format affectnet-csv: class {cls!r} has no AffectNet expression index; "
                             f"it needs AffectNet classes (targets.classes: affectnet8, basic7 or their names)")
        index[cls] = known[cls]["affectnet_index"]
    return index


def _prepare(target: LocalFolder, force: bool) -> None:
    try:
        if target.exists("") and not target.is_dir(""):
            raise UsageError(f"{target.location}: exists and is not a folder")
        names = [e.name for e in target.list("")]
        if names and not force:
            raise UsageError(f"{target.location}: is not empty; export into a new folder, or --force to replace an "
                             f"earlier export there")
        if names:
            try:
                record = json.loads(target.read_bytes(RECORD))
            except (OSError, ValueError):
                raise UsageError(f"{target.location}: --force replaces only an earlier synthfer export, and this "
                                 f"folder has no {RECORD}") from None
            files = record.get("files") if isinstance(record, dict) else None
            folders = record.get("folders", []) if isinstance(record, dict) else None   # older records: none
            if not all(isinstance(x, list) and all(_inside(target.root, rel) for rel in x) for x in (files, folders)):
                raise UsageError(f"{target.location}: {RECORD} is not a synthfer export record (it must list "
                                 f"relative paths inside the folder); nothing removed")
            for rel in files:
                target.remove(rel)
            # then the folders it made, deepest first, where they are now empty: a label folder
            # left behind would be a class of the next export
            parents = {"/".join(rel.split("/")[:n]) for rel in files + folders for n in range(1, rel.count("/") + 1)}
            for rel in sorted(set(folders) | parents, key=lambda r: (-r.count("/"), r)):
                target.remove_empty_dir(rel)
        target.ensure()
    except OSError as err:
        raise OutputError(f"{target.location}: {err.strerror or err}") from None


def _inside(root: Path, rel) -> bool:
    """A path an export record may list: relative, below the folder, through no symbolic link
    (a record edited to "../x", or a linked sub-folder, must not delete files elsewhere)."""
    if not isinstance(rel, str) or "\\" in rel or "\0" in rel:
        return False
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return False
    return not any((root.joinpath(*parts[:n])).is_symlink() for n in range(1, len(parts)))


def _members(folder: OutputFolder, rel: str):
    with folder.open(rel) as f, tarfile.open(fileobj=f, mode="r|") as tar:   # streamed: one member at a time
        for member in tar:
            if member.isfile():
                yield member.name, tar.extractfile(member).read()
