"""The dataset card: OUT/README.md with Hugging Face front matter, so `load_dataset(OUT)` finds the
splits (and only them) and anyone who gets the folder reads what made it and under which terms.

The licence follows the weights actually used: all of them open for commercial use (the builtin
stand-ins are MIT, like synthfer) gives `mit`; any non-commercial one (NVIDIA's FFHQ StyleGAN2,
EmoNet) makes the data `other`, non-commercial, with the reason; a file whose terms synthfer
cannot know (a user's ONNX model) gives `other` with what to check. Its content is a function of
the build's inputs and counts only (no times), so the card is as reproducible as the data.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import yaml

import synthfer
from synthfer.io.layout import Layout
from synthfer.io.writer import LABEL_FIELDS
from synthfer.plan import SPLITS

HF_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def licence(notes: list[dict]) -> dict:
    """{"id", "commercial_use", "reason"} for the card from the models' licence notes."""
    closed = [n for n in notes if n["commercial"] is False]
    unknown = [n for n in notes if n["commercial"] is None]
    if closed:
        reason = _joined(closed)
        return {"id": "other", "name": "non-commercial", "commercial_use": False,
                "reason": f"made with non-commercial weights, so the images are for non-commercial use only: {reason}"}
    if unknown:
        reason = _joined(unknown)
        return {"id": "other", "name": "check-model-terms", "commercial_use": None,
                "reason": f"the terms of these weights decide how the images may be used: {reason}"}
    return {"id": "mit", "name": "mit", "commercial_use": True,
            "reason": "made only with weights open for commercial use (synthfer's builtin stand-ins are MIT)"}


def _joined(notes: list[dict]) -> str:
    """The notes as one sentence's clauses: each note's own full stop dropped (the card adds one)."""
    return "; ".join(f"{n['role']} ({n['kind']}): {n['note'].rstrip().rstrip('.')}" for n in notes)


def card(loaded, result, model_info: dict, notes: list[dict], layout: Layout, splits_present: list[str],
         content_id: str) -> bytes:
    """The card's bytes. content_id names the data (a digest of the committed shards): it is the
    config's name because Hugging Face `datasets` keys its cache of a folder with `configs` by the
    folder's name, the config's name and the data_files *patterns*, not the files; under the name
    "default" a rebuilt output would load the earlier build's cached rows."""
    recipe = loaded.recipe
    lic = licence(notes)
    size = result.by_status.get("accepted", 0)
    meta = {
        "license": lic["id"],
        **({"license_name": lic["name"]} if lic["id"] == "other" else {}),
        "pretty_name": recipe.name,
        "task_categories": ["image-classification"],
        "tags": ["synthetic", "facial-expression-recognition", "valence-arousal", "stylegan2", "emostyle"],
        "size_categories": [_size_category(size)],
        "configs": [{"config_name": f"synthfer-{content_id}", "default": True, "data_files": [
            {"split": HF_SPLITS[s], "path": layout.split_pattern(s)} for s in SPLITS if s in splits_present]}],
        "synthfer": {
            "version": synthfer.__version__, "format_version": layout.version,
            "recipe_fingerprint": result.fingerprint, "shard_fingerprint": result.shard_fingerprint,
            "weights": {role: info.get("weights_sha256", info.get("file_sha256")) for role, info in model_info.items()},
            "commercial_use": lic["commercial_use"],
        },
    }
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    return ("---\n" + front + "---\n\n" + _body(loaded, result, model_info, notes, lic)).encode("utf-8")


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def _body(loaded, result, model_info: dict, notes: list[dict], lic: dict) -> str:
    recipe = loaded.recipe
    cites = json.loads(resources.files("synthfer").joinpath("data/citations.json").read_text("utf-8"))
    builtin = all(n["kind"] == "builtin" for n in notes if n["role"] in ("generator", "editor"))
    unit = "class" if recipe.targets.classes is not None else "target"
    lines = [f"# {recipe.name}", "",
             f"Synthetic facial-expression images made by synthfer {synthfer.__version__}: StyleGAN2 identities, "
             f"each edited toward valence/arousal targets by an EmoStyle editor, measured by a face-quality model "
             f"and a valence/arousal estimator, and filtered. {result.by_status.get('accepted', 0)} accepted images "
             f"of {result.identities} identities; every planned sample, with its status and scores, is in "
             f"`manifest.parquet`.", ""]
    if builtin:
        lines += ["> **Made with synthfer's untrained stand-in models**: the images are not faces and the scores "
                  "mean nothing. This output shows the format, not a training set.", ""]
    lines += ["## Licence", "", f"`{lic['id']}`: {lic['reason']}.", ""]
    lines += ["## How it was made", "", "| role | kind | file | sha256 |", "|---|---|---|---|"]
    kinds = {n["role"]: n["kind"] for n in notes}
    for role, info in model_info.items():
        # the file's name only: the card is published, the builder's folders are nobody's business
        # (run.json, which stays with the builder, has the full paths)
        lines.append(f"| {role} | {kinds.get(role, '')} | {Path(info['file']).name if info.get('file') else 'builtin'} | "
                     f"{info.get('weights_sha256') or info.get('file_sha256')} |")
    f = recipe.filters
    rules = [f"{name} {value}" for name, value in f.model_dump(exclude={"failure_bands"}).items() if value is not None]
    rules += [f"band {b.label} {b.action}" for b in f.failure_bands]
    lines += ["", f"Seed {recipe.seed}, truncation psi {recipe.identities.truncation_psi}, intensities "
              f"{recipe.targets.intensities}; filters: {', '.join(rules) or 'none'}"
              + (f"; quota {recipe.targets.quota} accepted per {unit} ({result.rounds} top-up rounds)"
                 if recipe.targets.quota else "")
              + (f"; expression correction {recipe.correction.mode} toward the VA estimator's reading (labels "
                 f"are the requested targets; the filters judge with the same estimator, so an independent "
                 f"check is advised)" if recipe.correction.mode != "off" else "")
              + ". Splits are by identity (no person is in two splits). "
              "`run.json` holds the whole resolved recipe.", ""]
    lines += [f"## Contents: accepted images per {unit} and split", "",
              f"| {unit} | train | validation | test | passed filters / planned |", "|---|---|---|---|---|"]
    for u, splits in sorted(result.by_class.items()):
        planned = sum(sum(c.values()) for c in splits.values())
        passed = sum(c.get("accepted", 0) + c.get("surplus", 0) for c in splits.values())
        lines.append(f"| {u} | " + " | ".join(str(splits.get(s, {}).get("accepted", 0)) for s in SPLITS)
                     + f" | {passed}/{planned} |")
    lines += ["", "## Use", "", "```python", "from datasets import load_dataset",
              "ds = load_dataset(\"path/to/this/folder\")   # train / validation / test", "",
              "import synthfer.data   # synthfer installed with its data extra (webdataset)", f"train = synthfer.data.dataset(\"path/to/this/folder\", "
              f"split=\"train\", label=\"{'class' if unit == 'class' else 'va'}\")", "```", "",
              f"Each sample is `KEY.<image>` plus `KEY.json` ({', '.join(LABEL_FIELDS)}; no nulls: -1 or -2 "
              f"stand for values that do not exist).", ""]
    lines += ["## Known limitations", "",
              f"- {cites['failure_region']} Samples there are verified or rejected only as far as the recipe's "
              f"filters say; the labels are the requested valence/arousal, not human ratings.",
              "- The valence/arousal estimator that filtered the images has errors of its own.", ""]
    lines += ["## Citation", "", f"- Method: {cites['method']['text']}", f"- Editor: {cites['editor']['text']}", "",
              "```bibtex", cites["method"]["bibtex"], "```", ""]
    return "\n".join(lines)
