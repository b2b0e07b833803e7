"""The registry of published weights (synthfer/data/models.yaml), `registry:NAME` paths, presets,
`models check` running one batch, consensus VA and the EmoNet crop convention."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from synthfer.models import catalog
from tests import onnx_models
from tests.conftest import SMALL

HSE = "hsemotion-enet_b0_8_va_mtl"


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv(catalog.ENV_DIR, str(folder))
    return folder


def test_every_entry_cites_its_sources_and_states_its_licence():
    entries = catalog.shipped()
    assert {"ffhq", "rosinality-ffhq-config-f", "emostyle-editor", "emonet-8", "emonet-5", "magface-iresnet100",
            "magface-iresnet50", "ofiq-magface-iresnet50", HSE, "hsemotion-mbf_va_mtl",
            "hsemotion-mobilevit_va_mtl"} == set(entries)
    assert "hsemotion-enet_b2_8_va_mtl" not in entries        # EmotiEffLib publishes no such model
    for entry in entries.values():
        assert entry.sources and entry.licence and entry.urls[0].startswith("https://")
        assert catalog.is_reference(next(v for k, v in entry.recipe.items() if k in ("checkpoint", "path")))
    assert [n for n, e in entries.items() if e.commercial] == [HSE, "hsemotion-mbf_va_mtl", "hsemotion-mobilevit_va_mtl"]


@pytest.mark.parametrize("name", [n for n, e in catalog.shipped().items() if e.role in ("quality", "va")])
def test_every_preset_is_a_valid_recipe_block(name, write_recipe, cli, models_dir):
    role = catalog.get(name).role
    result = cli("validate", write_recipe(SMALL + f"models: {{{role}: {{preset: {name}}}}}\n"))
    assert result.exit_code == 2
    file = models_dir / catalog.get(name).recipe_file
    assert result.stderr.strip().endswith(f"models.{role}.path: registry:{name}: {file} is not there yet; "
                                          f"run `synthfer models fetch {name}`")


def test_a_preset_fills_indices_and_preprocessing(cli, write_recipe, models_dir):
    (models_dir / "enet_b0_8_va_mtl.onnx").write_bytes(
        onnx_models.constant_va(0.25, -0.5, size=224, width=10, v_index=8, a_index=9))
    recipe = write_recipe(SMALL + f"models: {{va: {{preset: {HSE}}}}}\n")
    result = cli("models", "check", recipe)
    assert result.exit_code == 0, result.output
    assert f"va: preset {HSE} (HSEmotion EfficientNet-B0" in result.stdout
    assert "va: 10 values per image; valence +0.250 to +0.250, arousal -0.500 to -0.500 (indices 8, 9)" in result.stdout
    assert "upscaled to 224 (bilinear, rgb)" in result.stdout
    assert "licence va (onnx): [ok for commercial use] hsemotion-enet_b0_8_va_mtl: Apache-2.0" in result.stdout
    assert result.stderr == ""


def test_a_preset_that_disagrees_with_the_file_names_both(cli, write_recipe, models_dir):
    (models_dir / "enet_b0_8_va_mtl.onnx").write_bytes(onnx_models.constant_va(0.1, 0.1, size=256, width=2))
    result = cli("models", "check", write_recipe(SMALL + f"models: {{va: {{preset: {HSE}}}}}\n"))
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"Error: models.va: {models_dir / 'enet_b0_8_va_mtl.onnx'}: does not fit preset "
                                     f"'{HSE}': it has input 256 px where the preset expects 224 and 2 values per "
                                     f"image where the preset expects 10")


def test_reading_logits_as_valence_is_warned_and_other_indices_than_the_presets_too(cli, write_recipe, models_dir):
    (models_dir / "enet_b0_8_va_mtl.onnx").write_bytes(
        onnx_models.constant_va(4.0, -3.0, size=224, width=10, v_index=0, a_index=1))
    recipe = write_recipe(SMALL + f"models: {{va: {{preset: {HSE}, valence_index: 0, arousal_index: 1}}}}\n")
    result = cli("models", "check", recipe)
    assert result.exit_code == 0, result.output
    warnings = result.stderr.strip().splitlines()
    assert warnings == [
        "Warning: models.va: values at indices 0 and 1 reach 4.00, far outside [-1, 1]: they look like logits, not "
        "valence and arousal (HSEmotion *_va_mtl models: valence_index 8, arousal_index 9, or preset: hsemotion-...)",
        f"Warning: models.va: reads indices 0 and 1, preset {HSE} has valence at 8 and arousal at 9"]
    assert cli("models", "check", recipe, "--strict").exit_code == 5


def test_class_probabilities_are_warned(cli, write_recipe, tmp_path):
    (tmp_path / "p.onnx").write_bytes(onnx_models.constant_va(0.6, 0.3, size=256, width=3, v_index=0, a_index=1))
    # a third column of 0.1 makes each row sum to 1
    (tmp_path / "p.onnx").write_bytes(_row_model([0.6, 0.3, 0.1]))
    result = cli("models", "check", write_recipe(SMALL + "models: {va: {kind: onnx, path: p.onnx}}\n"))
    assert result.exit_code == 0
    assert "every row of the output sums to 1: these are class probabilities" in result.stderr


def test_models_check_refuses_indices_beyond_a_symbolic_output_like_build(cli, write_recipe, tmp_path):
    """A model whose output width is symbolic passes the load check; the probe batch catches it."""
    (tmp_path / "v.onnx").write_bytes(_column_means())
    recipe = write_recipe(SMALL + "models: {va: {kind: onnx, path: v.onnx, valence_index: 10, arousal_index: 11, "
                                  "preprocess: {size: 10}}}\n")
    check = cli("models", "check", recipe)
    assert check.exit_code == 2
    assert check.stderr.strip() == (f"Error: models.va: {tmp_path / 'v.onnx'}: the output has 10 values per image, "
                                    f"the recipe reads index 11 (valence_index 10, arousal_index 11)")
    build = cli("build", recipe, "-q")
    assert build.exit_code == 2
    assert build.stderr.strip() == f"Error: {tmp_path / 'v.onnx'}: va output has 10 values per image, recipe reads index 11"


def _column_means() -> bytes:
    """Output [N, W]: the mean of each pixel column; W is the input's side, symbolic in the file."""
    from onnx import helper

    nodes = [helper.make_node("ReduceMean", ["input"], ["va"], axes=[1, 2], keepdims=0)]
    return onnx_models._bytes(nodes, [onnx_models._input(size=None)], [onnx_models._output("va", ["N", "W"])])


def _row_model(row: list[float], symbolic: bool = False) -> bytes:
    """Output [N, len(row)] = row for every image (width symbolic in the graph when asked)."""
    import numpy as np
    from onnx import helper

    width = len(row)
    nodes = [helper.make_node("Shape", ["input"], ["shape"], start=0, end=1),
             helper.make_node("Concat", ["shape", "width"], ["out_shape"], axis=0),
             helper.make_node("Expand", ["row", "out_shape"], ["va"])]
    inits = [onnx_models._const("row", np.array([row], np.float32)),
             onnx_models._const("width", np.array([width], np.int64))]
    return onnx_models._bytes(nodes, [onnx_models._input(size=256)],
                              [onnx_models._output("va", ["N", "W" if symbolic else width])], inits)


# ---------------------------------------------------------------- consensus VA

CONSENSUS = """\
seed: 3
identities: {count: 1}
targets: {emotions: [happy, sad], intensities: [1.0], neutral: true}
output: {dir: out, samples_per_shard: 100, image: {format: png, size: 32}, splits: {train: 1.0, val: 0.0, test: 0.0}}
execution: {device: cpu, batch_size: 4}
"""


def test_consensus_keeps_each_prediction_their_mean_and_disagreement(cli, write_recipe, tmp_path):
    (tmp_path / "a.onnx").write_bytes(onnx_models.constant_va(0.5, 0.2))
    (tmp_path / "b.onnx").write_bytes(onnx_models.constant_va(-0.1, 1.0))   # 1.0 is clamped, then averaged
    (tmp_path / "c.onnx").write_bytes(onnx_models.constant_va(2.0, 0.2))    # clamped to 1.0
    recipe = write_recipe(CONSENSUS + "models:\n  va: [{kind: onnx, path: a.onnx}, {kind: onnx, path: b.onnx}, "
                                      "{kind: onnx, path: c.onnx}]\nfilters: {max_va_disagreement: 1.0}\n")
    result = cli("build", recipe, "-q")
    assert result.exit_code == 0, result.output
    rows = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    for row in rows:
        assert row["pred_valence_each"] == pytest.approx([0.5, -0.1, 1.0])
        assert row["pred_arousal_each"] == pytest.approx([0.2, 1.0, 0.2])
        assert row["pred_valence"] == pytest.approx(1.4 / 3) and row["pred_arousal"] == pytest.approx(1.4 / 3)
        # the largest pairwise distance: b to c, sqrt(1.1^2 + 0.8^2)
        assert row["va_disagreement"] == pytest.approx((1.1 ** 2 + 0.8 ** 2) ** 0.5)
    edited = [r for r in rows if r["target"] != "neutral"]
    assert edited and all(r["reject_reasons"] == ["va_disagreement"] for r in edited)
    assert [r["status"] for r in rows if r["target"] == "neutral"] == ["accepted"]   # neutral: quality only

    loose = cli("build", recipe, "-q", "--set", "filters.max_va_disagreement=1.5")   # re-decided from the manifest
    assert loose.exit_code == 0, loose.output
    rows = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    assert all(r["status"] == "accepted" for r in rows)


def test_one_estimator_has_no_disagreement_and_the_filter_needs_two(cli, write_recipe, tmp_path):
    (tmp_path / "a.onnx").write_bytes(onnx_models.constant_va(0.5, 0.2))
    result = cli("build", write_recipe(CONSENSUS + "models: {va: {kind: onnx, path: a.onnx}}\n"), "-q")
    assert result.exit_code == 0, result.output
    row = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()[0]
    assert row["va_disagreement"] is None and row["pred_valence_each"] == pytest.approx([0.5])
    bad = cli("validate", write_recipe(CONSENSUS + "models: {va: {kind: onnx, path: a.onnx}}\n"
                                                   "filters: {max_va_disagreement: 0.2}\n"))
    assert bad.exit_code == 2
    assert bad.stderr.strip().endswith("filters.max_va_disagreement: needs two or more VA estimators "
                                       "(models.va as a list)")


def test_a_consensus_report_shows_each_estimator(cli, write_recipe, tmp_path):
    (tmp_path / "a.onnx").write_bytes(onnx_models.constant_va(0.5, 0.2))
    (tmp_path / "b.onnx").write_bytes(onnx_models.constant_va(0.4, 0.3))
    recipe = write_recipe(CONSENSUS + "models:\n  va: [{kind: onnx, path: a.onnx}, {kind: onnx, path: b.onnx}]\n")
    assert cli("build", recipe, "-q", "--report").exit_code == 0
    text = (tmp_path / "out" / "report" / "metrics.md").read_text()
    assert "## Per estimator" in text
    section = text[text.index("## Per estimator"):].split("\n## ")[0]
    rows = [line.split(" | ")[0] for line in section.splitlines() if line.startswith(("| va[", "| mean"))]
    assert rows[:3] == ["| va[0] a.onnx", "| va[1] b.onnx", "| mean (consensus)"]
    assert "| va[0] a.onnx | 2 |" in section and "median 0.141" in section   # |(0.5, 0.2) - (0.4, 0.3)|


# ---------------------------------------------------------------- EmoNet crop convention


def test_the_emonet_crop_is_emostyles_int_of_the_fractions():
    """EmoStyle crops image[:, :, int(0.1 * 1024):int(0.9 * 1024)] = rows 102:921; rounding gave 102:922."""
    from synthfer.models.specs import VAPreprocess
    from synthfer.stages.assess import crop_edges, preprocess

    preset = catalog.get("emonet-8").recipe["preprocess"]
    assert VAPreprocess(**preset).rounding == "floor" and VAPreprocess().rounding == "floor"
    assert crop_edges(0.1, 0.9, 1024, "floor") == (102, 921)
    assert crop_edges(0.1, 0.9, 1024, "nearest") == (102, 922)
    assert crop_edges(0.1, 0.9, 128, "floor") == (12, 115)          # the left edge rounding moved to 13
    frame = torch.arange(1024, dtype=torch.int32).view(1, 1024, 1, 1).expand(1, 1024, 1024, 3)
    rows = (frame % 256).to(torch.uint8)                             # pixel value = row index mod 256
    x = preprocess(rows, VAPreprocess(size=819))                     # 921 - 102 = 819: no resampling
    assert x.shape == (1, 3, 819, 819)
    assert round(float(x[0, 0, 0, 0]) * 255) == 102 and round(float(x[0, 0, -1, 0]) * 255) == 920 % 256
