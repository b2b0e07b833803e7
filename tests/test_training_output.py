"""Output format 2 read by training jobs with no glue: Hugging Face `load_dataset(OUT)`, a default
collate, synthfer.data with several workers, the README's training example, the exports, the
card's licence; and format 1 outputs still read by verify and report."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import FIXTURES, REPO

# 6 identities, one per shard: train, val, test, train, train, train; quality and VA filters
TINY = """\
name: tiny
seed: 12
identities: {count: 6}
targets: {classes: [neutral, happy, sad, anger], intensities: [1.0]}
models: {quality: {kind: builtin}, va: {kind: builtin}}
filters: {min_quality: 20, max_direction_error_deg: 60}
output: {dir: out, samples_per_shard: 4, image: {format: FORMAT, size: 24}, keep_rejected: true}
execution: {device: cpu, batch_size: 4}
"""


def _build(folder: Path, fmt: str = "png") -> Path:
    from synthfer.build import build
    from synthfer.recipe import load_recipe

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.yaml").write_text(TINY.replace("FORMAT", fmt))
    build(load_recipe(folder / "recipe.yaml"))
    return folder / "out"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("tiny"))


def _accepted(out: Path) -> Counter:
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    return Counter(r["split"] for r in rows if r["status"] == "accepted")


def test_layout_names_shards_by_split_and_hides_bookkeeping(tiny):
    names = sorted(str(p.relative_to(tiny)) for p in tiny.rglob("*") if p.is_file())
    assert "README.md" in names and "classes.json" in names and "manifest.parquet" in names
    assert sorted(n for n in names if n.startswith("data/")) == [
        "data/test-000002.tar", "data/train-000000.tar", "data/train-000003.tar", "data/train-000004.tar",
        "data/train-000005.tar", "data/val-000001.tar"]
    assert all(n.startswith(("data/", "rejected/", "_synthfer/", ".")) or "/" not in n for n in names)
    assert json.loads((tiny / "run.json").read_text())["format_version"] == 2


def _hf_cache(tmp_path, monkeypatch):
    """A cache of this test's own: `datasets` reads HF_HOME once, at import."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets")
    return datasets


def test_load_dataset_gives_the_three_splits_and_no_rejected_row(tiny, tmp_path, monkeypatch):
    datasets = _hf_cache(tmp_path, monkeypatch)
    ds = datasets.load_dataset(str(tiny))
    wanted = _accepted(tiny)
    assert {k: len(v) for k, v in ds.items()} == {"train": wanted["train"], "validation": wanted["val"],
                                                   "test": wanted["test"]}
    assert all(row["status"] == "accepted" for split in ds.values() for row in split["json"])
    assert ds["train"].features["json"]["class_id"].dtype == "int64"
    streamed = datasets.load_dataset(str(tiny), streaming=True)
    assert sum(1 for _ in streamed["test"]) == wanted["test"]


def test_a_rebuilt_output_is_not_served_from_the_cache_of_the_old_one(tmp_path, monkeypatch):
    """`datasets` caches a folder with `configs` by folder name, config name and patterns: the
    card names its config after the data, so another build in the same folder is read afresh."""
    datasets = _hf_cache(tmp_path, monkeypatch)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "recipe.yaml").write_text(TINY.replace("FORMAT", "png").replace("seed: 12", "seed: 11"))
    from synthfer.build import build
    from synthfer.recipe import load_recipe

    build(load_recipe(tmp_path / "a" / "recipe.yaml"))
    first = tmp_path / "a" / "out"
    assert _accepted(first)["val"] == 0          # this seed's val images were all rejected:
    loaded = datasets.load_dataset(str(first))   # the card leaves the empty split out
    assert set(loaded) == {"train", "test"}
    seeds = {row["identity_seed"] for row in loaded["train"]["json"]}
    (tmp_path / "a" / "recipe.yaml").write_text(TINY.replace("FORMAT", "png").replace("seed: 12", "seed: 13"))
    build(load_recipe(tmp_path / "a" / "recipe.yaml"), mode="overwrite")
    again = {row["identity_seed"] for row in datasets.load_dataset(str(first))["train"]["json"]}
    manifest = {r["identity_seed"] for r in pq.read_table(first / "manifest.parquet").to_pylist()
                if r["status"] == "accepted" and r["split"] == "train"}
    assert again == manifest and again.isdisjoint(seeds)


def test_a_default_collate_batches_every_label_field(tiny):
    labels = []
    for path in sorted((tiny / "data").glob("*.tar")) + sorted((tiny / "rejected").glob("*.tar")):
        with tarfile.open(path) as tar:
            labels += [json.loads(tar.extractfile(m).read()) for m in tar if m.name.endswith(".json")]
    assert any(lb["target"] == "neutral" for lb in labels)   # the row with no direction is among them
    batch = torch.utils.data.default_collate(labels)
    manifest = pq.read_table(tiny / "manifest.parquet").column_names
    assert set(batch) - {"status"} <= set(manifest)          # the manifest's names
    assert batch["target_angle_deg"].dtype == torch.float64 and batch["class_id"].dtype == torch.int64
    neutral = [lb for lb in labels if lb["target"] == "neutral"]
    assert all(lb["target_angle_deg"] == -1.0 for lb in neutral)


def test_synthfer_data_reads_every_split_with_more_workers_than_shards(tiny):
    import synthfer.data as sd

    wanted = _accepted(tiny)
    for split in ("train", "val", "test"):
        loader = torch.utils.data.DataLoader(sd.dataset(tiny, split=split, label="both", seed=0), batch_size=4,
                                             num_workers=2)
        seen = 0
        for images, labels in loader:
            assert images.dtype == torch.float32 and images.shape[1:] == (3, 24, 24)
            assert labels["va"].shape == (images.shape[0], 2) and labels["class_id"].dtype == torch.int64
            seen += images.shape[0]
        assert seen == wanted[split]
    with pytest.raises(Exception, match="split: must be train, val"):
        sd.dataset(tiny, split="dev")


def test_class_labels_from_an_output_without_classes_are_refused(tmp_path):
    # Without targets.classes every class_id is -1: a loss would fail far from the cause.
    import synthfer.data as sd
    from synthfer.errors import UsageError

    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "recipe.yaml").write_text(TINY.replace("FORMAT", "png").replace(
        "targets: {classes: [neutral, happy, sad, anger], intensities: [1.0]}",
        "targets: {emotions: [happy, sad], intensities: [1.0], neutral: true}"))
    from synthfer.build import build
    from synthfer.recipe import load_recipe

    build(load_recipe(folder / "recipe.yaml"))
    out = folder / "out"
    assert not (out / "classes.json").exists()
    assert len(list(sd.dataset(out, label="va", shuffle=False))) == _accepted(out)["train"]
    for label in ("class", "both"):
        with pytest.raises(UsageError) as err:
            sd.dataset(out, label=label)
        assert str(err.value) == (f"label: {label!r} needs classes, and {out} was built without targets.classes "
                                  f"(it has no classes.json); use label='va'")


@pytest.mark.parametrize("seed", [None, 0])
def test_several_workers_read_every_sample_once(tiny, seed):
    # seed None (the README's example) shuffles differently in each worker process: the shards
    # must be split between workers before that shuffle, or workers read overlapping shards.
    import synthfer.data as sd

    def digests(loader):
        return sorted(hashlib.sha256(x.numpy().tobytes()).hexdigest() for batch, _ in loader for x in batch)

    once = digests(torch.utils.data.DataLoader(sd.dataset(tiny, shuffle=False), batch_size=4))
    assert len(once) == _accepted(tiny)["train"] and len(set(once)) == len(once)
    for _ in range(2):   # two passes: a fresh draw of each worker's order every time
        loader = torch.utils.data.DataLoader(sd.dataset(tiny, seed=seed), batch_size=4, num_workers=2)
        assert digests(loader) == once


def test_each_worker_of_a_small_split_mixes_every_shard(tmp_path):
    # A DataLoader takes a batch from one worker: with fewer shards than mix x workers, a worker
    # holding only its own shards would batch half the identities. Each worker takes every N-th
    # sample of every shard instead; with enough shards, each reads its own.
    import synthfer.data as sd

    (tmp_path / "recipe.yaml").write_text(TINY.replace("FORMAT", "png").replace("count: 6", "count: 8").replace(
        "filters: {min_quality: 20, max_direction_error_deg: 60}\n", "").replace(
        "keep_rejected: true", "keep_rejected: false, splits: {train: 1, val: 0, test: 0}"))
    from synthfer.build import build
    from synthfer.recipe import load_recipe

    build(load_recipe(tmp_path / "recipe.yaml"))
    out = tmp_path / "out"
    assert len(list((out / "data").glob("train-*.tar"))) == 8 and _accepted(out)["train"] == 32

    def batches(ds):
        ds.pipeline[-1] = lambda src: (s["__key__"] for s in src)
        return list(torch.utils.data.DataLoader(ds, batch_size=1000, num_workers=2, collate_fn=list))

    everyone = {f"{i:07d}" for i in range(8)}
    for seed, mix in ((None, 8), (3, 8), (3, 2)):   # 8 shards < 8 x 2 workers; or 32 samples < 2 buffers each
        mixed = batches(sd.dataset(out, seed=seed, mix=mix))
        assert len(mixed) == 2 and all({k.split("_", 1)[0] for k in b} == everyone for b in mixed)
        keys = [k for b in mixed for k in b]
        assert len(keys) == len(set(keys)) == 32
    # 8 shards >= 2 x 2 workers and 32 samples fill 2 x 2 buffers of 4 twice: each reads its own 4
    own = batches(sd.dataset(out, seed=1, mix=2, buffer=4))
    assert len(own) == 2
    owners = [{k.split("_", 1)[0] for k in b} for b in own]
    assert [len(o) for o in owners] == [4, 4] and owners[0] | owners[1] == everyone


@pytest.fixture(scope="module")
def by_format(tiny, tmp_path_factory):
    built = {"png": tiny}

    def get(fmt):
        if fmt not in built:
            built[fmt] = _build(tmp_path_factory.mktemp(fmt), fmt)
        return built[fmt]
    return get


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_any_image_format_loads(by_format, fmt):
    import synthfer.data as sd

    out = by_format(fmt)
    images = [x for x, _ in sd.dataset(out, split="train", shuffle=False)]
    assert len(images) == _accepted(out)["train"] and images[0].shape == (3, 24, 24)


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_the_readme_ways_in_work_for_every_image_format(by_format, fmt, tmp_path, monkeypatch):
    _hf_cache(tmp_path, monkeypatch)
    out = by_format(fmt)
    text = (REPO / "README.md").read_text()
    start = text.index("## Training\n")
    section = text[start:text.index("\n## ", start + 3)]
    blocks = [b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "optimizer" not in b]
    assert len(blocks) == 3
    for block in blocks:
        assert len(block.strip().splitlines()) < 10
        scope = {}
        exec(compile(block.replace('"out/demo', '"' + str(out)), "README", "exec"), scope)
        if "loader" in scope:        # synthfer.data
            assert scope["images"].shape[1:] == (3, 64, 64) and scope["va"].shape[1] == 2
        elif "row" in scope:         # Hugging Face datasets
            assert scope["image"].size == (24, 24) and scope["label"]["status"] == "accepted"
        else:                        # raw webdataset
            image, label = next(iter(scope["ds"]))
            assert image.size == (24, 24) and label["split"] == "train"


def test_the_shuffle_mixes_identities_like_a_uniform_shuffle(tmp_path):
    import sys

    from synthfer.build import build
    from synthfer.recipe import load_recipe
    sys.path.insert(0, str(REPO / "bench"))
    from shuffle_mix import measure
    (tmp_path / "r.yaml").write_text("seed: 2\nidentities: {count: 24}\n"
                                     "targets: {classes: [neutral, happy, sad, anger], intensities: [1.0]}\n"
                                     "output: {dir: out, samples_per_shard: 4, image: {format: png, size: 8}, "
                                     "splits: {train: 1.0, val: 0.0, test: 0.0}}\nexecution: {device: cpu}\n")
    build(load_recipe(tmp_path / "r.yaml"))
    r = measure(str(tmp_path / "out"), "train", batch=16, passes=3)   # 24 identities, one per shard
    assert r["in_order"] <= 4.0 < r["uniform"]
    assert r["synthfer_data"] >= 0.9 * r["uniform"]


def test_the_readme_training_example_runs(tiny, tmp_path):
    text = (REPO / "README.md").read_text()
    start = text.index("## Training\n")
    section = text[start:text.index("\n## ", start + 3)]
    block = [b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "optimizer" in b][0]
    printed = io.StringIO()
    exec(compile(block.replace('"out/demo"', repr(str(tiny))), "README", "exec"),
         {"print": lambda *a: printed.write(" ".join(map(str, a)))})
    assert printed.getvalue().startswith("last batch loss ")


# ---------------------------------------------------------------- exports


def test_imagefolder_export_round_trips(tiny, tmp_path, cli):
    result = cli("export", tiny, tmp_path / "if", "--format", "imagefolder")
    assert result.exit_code == 0, result.output
    rows = {r["key"]: r for r in pq.read_table(tiny / "manifest.parquet").to_pylist() if r["status"] == "accepted"}
    files = [p for p in (tmp_path / "if").rglob("*.png")]
    assert len(files) == len(rows)
    for p in files:
        split, cls, name = p.relative_to(tmp_path / "if").parts
        row = rows[name.split(".")[0]]
        assert (split, cls) == (row["split"], row["class"])
        assert hashlib.sha256(p.read_bytes()).hexdigest() == row["image_sha256"]
    again = cli("export", tiny, tmp_path / "if", "--format", "imagefolder")
    assert again.exit_code == 2 and "is not empty" in again.stderr
    before = {str(p): p.read_bytes() for p in (tmp_path / "if").rglob("*") if p.is_file()}
    assert cli("export", tiny, tmp_path / "if", "--format", "imagefolder", "--force").exit_code == 0
    assert {str(p): p.read_bytes() for p in (tmp_path / "if").rglob("*") if p.is_file()} == before   # idempotent


def test_imagefolder_export_has_every_class_folder_in_every_split(tiny, tmp_path, cli):
    # ImageFolder numbers the folders it finds: a class with no image in one split would shift the
    # numbers of the classes after it there. Every split gets every class; empty ones are named.
    dest = tmp_path / "if"
    result = cli("export", tiny, dest, "--format", "imagefolder")
    assert result.exit_code == 0, result.output
    rows = pq.read_table(tiny / "manifest.parquet").to_pylist()
    accepted = Counter((r["split"], r["class"]) for r in rows if r["status"] == "accepted")
    classes = sorted({r["class"] for r in rows})
    empty = [f"{split}/{cls}" for split in ("test", "train", "val") for cls in classes if not accepted[split, cls]]
    assert empty, "the tiny build is meant to leave some class out of some split"
    for split in ("train", "val", "test"):
        assert sorted(p.name for p in (dest / split).iterdir()) == classes
    warning = [line for line in result.stderr.splitlines() if line.startswith("Warning: ")]
    assert warning == [f"Warning: {len(empty)} label folder{'s' if len(empty) > 1 else ''} with no image, kept so "
                       f"that every split numbers its classes alike (torchvision's ImageFolder needs "
                       f"allow_empty=True): {', '.join(empty[:8])}" + (f" and {len(empty) - 8} more" if len(empty) > 8
                                                                         else "")]
    # --force over an export with other labels leaves none of its folders behind
    record = dest / ".synthfer-export.json"
    data = json.loads(record.read_text())
    (dest / "train" / "stale").mkdir()
    record.write_text(json.dumps(dict(data, folders=data["folders"] + ["train/stale"])))
    assert cli("export", tiny, dest, "--format", "imagefolder", "--force").exit_code == 0
    assert sorted(p.name for p in (dest / "train").iterdir()) == classes


def test_affectnet_csv_export_round_trips(tiny, tmp_path, cli):
    assert cli("export", tiny, tmp_path / "an", "--format", "affectnet-csv").exit_code == 0
    rows = {r["key"]: r for r in pq.read_table(tiny / "manifest.parquet").to_pylist() if r["status"] == "accepted"}
    affectnet = {"neutral": 0, "happy": 1, "sad": 2, "anger": 6}
    seen = 0
    for split, name in (("train", "training.csv"), ("val", "validation.csv"), ("test", "test.csv")):
        with open(tmp_path / "an" / name) as f:
            table = list(csv.DictReader(f))
        assert list(table[0]) == ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
                                  "facial_landmarks", "expression", "valence", "arousal"]
        for line in table:
            key = Path(line["subDirectory_filePath"]).stem
            row = rows[key]
            assert row["split"] == split and int(line["expression"]) == affectnet[row["class"]]
            assert float(line["valence"]) == row["target_valence"] and int(line["face_width"]) == row["width"]
            data = (tmp_path / "an" / "images" / line["subDirectory_filePath"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == row["image_sha256"]
            seen += 1
    assert seen == len(rows)


def test_export_fails_when_an_accepted_image_is_missing_from_the_shards(tiny, tmp_path, cli):
    # A shard that lost an accepted image (edited in place) must not give a quietly smaller export.
    out = tmp_path / "out"
    shutil.copytree(tiny, out)
    tar_path = sorted((out / "data").glob("train-*.tar"))[0]
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    dropped = next(m.name for m, _ in members if m.name.endswith(".png"))
    size = tar_path.stat().st_size
    with tarfile.open(tar_path, "w") as tar:   # the image renamed in place: the tar keeps its size
        for m, data in members:
            if m.name == dropped:
                m.name = "x" + m.name[1:]
            tar.addfile(m, io.BytesIO(data))
    assert tar_path.stat().st_size == size   # so the shard still counts as committed
    accepted = sum(_accepted(out).values())
    result = cli("export", out, tmp_path / "if", "--format", "imagefolder")
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (f"Error: {out}: 1 of {accepted} accepted images are not in the committed shards "
                                     f"(first: {dropped.split('.')[0]}); run synthfer verify")
    assert json.loads((tmp_path / "if" / ".synthfer-export.json").read_text())["complete"] is False


def test_affectnet_export_needs_affectnet_classes(cli, tmp_path):
    from tests.conftest import SMALL
    (tmp_path / "r.yaml").write_text(SMALL)
    assert cli("build", tmp_path / "r.yaml", "-q").exit_code == 0
    result = cli("export", tmp_path / "out", tmp_path / "x", "--format", "affectnet-csv")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: --format affectnet-csv: the output has no classes (built without targets.classes)")


# ---------------------------------------------------------------- card, licence, format 1


def test_the_card_licence_follows_the_weights(tiny, tmp_path):
    from synthfer.card import licence
    text = (tiny / "README.md").read_text()
    front = text.split("---\n")[1]
    assert "license: mit\n" in front and "commercial_use: true" in front
    assert "- split: validation\n    path: data/val-*.tar" in front
    nc = licence([{"role": "generator", "kind": "stylegan2", "commercial": False, "note": "NVIDIA SCL-NC"},
                  {"role": "va", "kind": "onnx", "commercial": None, "note": "check"}])
    assert nc["id"] == "other" and nc["commercial_use"] is False and "NVIDIA SCL-NC" in nc["reason"]
    unknown = licence([{"role": "va", "kind": "onnx", "commercial": None, "note": "check its terms"}])
    assert unknown["id"] == "other" and unknown["commercial_use"] is None
    two = licence([{"role": "quality", "kind": "onnx", "commercial": None, "note": "check the file's terms."},
                   {"role": "va", "kind": "onnx", "commercial": None, "note": "check its licence."}])
    assert two["reason"].endswith("quality (onnx): check the file's terms; va (onnx): check its licence")


def test_the_card_lists_every_label_field_and_every_filter(tiny):
    # The card's field list is KEY.json's, and its filter line names every filter the recipe set.
    from synthfer.io.writer import LABEL_FIELDS

    with tarfile.open(sorted((tiny / "data").glob("train-*.tar"))[0]) as tar:
        label = json.loads(next(tar.extractfile(m).read() for m in tar if m.name.endswith(".json")))
    assert sorted(label) == sorted(LABEL_FIELDS)
    text = (tiny / "README.md").read_text()
    assert f"`KEY.json` ({', '.join(LABEL_FIELDS)}; no nulls" in " ".join(text.split())
    assert "filters: max_direction_error_deg 60.0, min_quality 20.0" in " ".join(text.split())
    assert "pip install synthfer" not in text


def test_a_card_of_real_weights_is_non_commercial(cli, tmp_path):
    from tests import checkpoint_files as cf
    cf.write_rosinality_pt(tmp_path / "g.pt", cf.random_generator())
    cf.write_emostyle_pt(tmp_path / "e.pt", cf.random_editor())
    (tmp_path / "r.yaml").write_text(TINY.replace("FORMAT", "png").replace(
        "models: {quality: {kind: builtin}, va: {kind: builtin}}",
        "models: {generator: {kind: stylegan2, checkpoint: g.pt}, editor: {kind: emostyle, checkpoint: e.pt}, "
        "quality: {kind: builtin}, va: {kind: builtin}}"))
    result = cli("build", tmp_path / "r.yaml", "-q")
    assert result.exit_code == 0, result.output
    card = (tmp_path / "out" / "README.md").read_text()
    front = card.split("---\n")[1]
    assert "license: other\nlicense_name: non-commercial\n" in front and "commercial_use: false" in front
    # a published card names the weights files, not the builder's folders
    assert "| generator | stylegan2 | g.pt | " in card and "| editor | emostyle | e.pt | " in card
    assert str(tmp_path) not in card


def test_format_1_outputs_are_read_and_a_build_asks_to_rebuild_them(cli, tmp_path):
    v1 = tmp_path / "v1"
    shutil.copytree(FIXTURES / "v1-output", v1)
    assert cli("verify", v1).exit_code == 0
    report = cli("report", v1)
    assert report.exit_code == 0 and (v1 / "report" / "report.html").exists()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(TINY.replace("FORMAT", "png"))
    refused = cli("build", recipe, "-q", "--output", v1)
    assert refused.exit_code == 2
    assert refused.stderr.startswith(f"Error: {v1}: a format-1 output (synthfer 0.1); this synthfer writes format 2:")
    assert cli("build", recipe, "-q", "--output", v1, "--mode", "overwrite").exit_code == 0
    assert not (v1 / "shards").exists() and (v1 / "data").is_dir() and (v1 / "HOW.md").exists()
    assert cli("verify", v1).exit_code == 0
    np.testing.assert_equal(json.loads((v1 / "run.json").read_text())["format_version"], 2)


def test_export_force_removes_only_what_its_record_lists_inside_the_folder(tiny, tmp_path, cli):
    # --force deletes the files DEST/.synthfer-export.json lists: an edited record must not reach
    # outside DEST, by "..", an absolute path or a linked sub-folder.
    dest, outside = tmp_path / "if", tmp_path / "keep"
    assert cli("export", tiny, dest, "--format", "imagefolder").exit_code == 0
    outside.mkdir()
    (outside / "precious.txt").write_text("x")
    (dest / "link").symlink_to(outside)
    record = dest / ".synthfer-export.json"
    good = json.loads(record.read_text())
    pngs = len(list(dest.rglob("*.png")))
    for files in (["../keep/precious.txt"], [str(outside / "precious.txt")], ["link/precious.txt"], [3]):
        record.write_text(json.dumps({**good, "files": good["files"] + files}))
        result = cli("export", tiny, dest, "--format", "imagefolder", "--force")
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == (f"Error: {dest}: .synthfer-export.json is not a synthfer export record "
                                         f"(it must list relative paths inside the folder); nothing removed")
        assert (outside / "precious.txt").exists() and len(list(dest.rglob("*.png"))) == pngs
    record.write_text("[1, 2]")
    assert cli("export", tiny, dest, "--format", "imagefolder", "--force").exit_code == 2


def test_an_interrupted_export_is_replaced_with_force(tiny, tmp_path, cli):
    # SIGTERM after the first shard's images: the record lists what is there, the message says
    # how to finish, and --force then gives the same folder as an uninterrupted export.
    import os
    import subprocess
    import sys

    dest = tmp_path / "cut"
    proc = subprocess.run([sys.executable, "-m", "tests.killpoints", "synthfer.io.local_folder:LocalFolder.write_all",
                           "after", "2:SIGTERM", "--", "export", str(tiny), str(dest), "--format", "imagefolder"],
                          capture_output=True, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          timeout=600)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (f"Error: SIGTERM: interrupted; {dest} holds part of the export: "
                                                    f"run the same export again with --force to replace it")
    record = json.loads((dest / ".synthfer-export.json").read_text())
    assert record["complete"] is False and record["files"]
    assert cli("export", tiny, dest, "--format", "imagefolder").exit_code == 2   # not silently mixed
    assert cli("export", tiny, dest, "--format", "imagefolder", "--force").exit_code == 0
    whole = tmp_path / "whole"
    assert cli("export", tiny, whole, "--format", "imagefolder").exit_code == 0
    files = lambda root: {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert files(dest) == files(whole)
