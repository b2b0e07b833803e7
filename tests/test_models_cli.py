"""`synthfer models ...` and how models are checked against a recipe."""

from __future__ import annotations

import pytest
import torch

from synthfer.models.emostyle import EmoMappingWplus
from tests.conftest import SMALL, error_lines


def test_models_check_shows_fit_and_licences(cli, write_recipe):
    result = cli("models", "check", write_recipe(SMALL + "models: {quality: {kind: builtin}, va: {kind: builtin}}\n"))
    assert result.exit_code == 0, result.output
    assert "editor: 10 layers of 128: they fit" in result.stdout
    assert "va: crop 51x51 px (rows 6:57, columns 6:57) of the 64 px frame, upscaled to 256 (nearest, rgb)" in result.stdout
    assert result.stdout.count("licence ") == 4


def test_non_commercial_weights_are_flagged(cli, write_recipe, tmp_path):
    editor = EmoMappingWplus(n_latent=10, w_dim=128, hidden=(16, 16, 16))
    torch.save({"emo_mapping_state_dict": editor.state_dict(), "epoch": 3}, tmp_path / "emo.pt")
    result = cli("models", "check", write_recipe(SMALL + "models: {editor: {kind: emostyle, checkpoint: emo.pt}}\n"))
    assert result.exit_code == 0, result.output
    assert "licence editor (emostyle): [NON-COMMERCIAL]" in result.stdout


def test_editor_that_does_not_fit_the_generator(cli, write_recipe, tmp_path):
    editor = EmoMappingWplus(n_latent=18, w_dim=64, hidden=(16, 16, 16))
    torch.save({"emo_mapping_state_dict": editor.state_dict()}, tmp_path / "emo.pt")
    recipe = write_recipe(SMALL + "models: {editor: {kind: emostyle, checkpoint: emo.pt}}\n")
    for command in (["models", "check"], ["build"]):
        result = cli(*command, recipe)
        assert result.exit_code == 2
        assert error_lines(result.stderr) == ["Error: editor has 18 layers of 64, generator needs 10 of 128"]
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine bfloat16 is allowed")
def test_reduced_precision_needs_cuda(cli, write_recipe, tmp_path):
    result = cli("build", write_recipe(SMALL), "--set", "execution.dtype=bfloat16")
    assert result.exit_code == 2
    assert error_lines(result.stderr) == ["Error: execution.dtype: bfloat16 runs under CUDA autocast only; "
                                          "this build runs on cpu (use float32)"]
    assert not (tmp_path / "out").exists()


def test_build_from_pickle_equals_build_from_its_converted_copy(cli, write_recipe, tmp_path):
    import json as _json

    from synthfer.models.checkpoints import read_safetensors
    from tests import checkpoint_files
    from tests.conftest import FIXTURES

    tensors, meta = read_safetensors(FIXTURES / "stylegan2-ada-64.safetensors")
    checkpoint_files.write_nvlabs_pickle(tmp_path / "ffhq.pkl", tensors, _json.loads(meta["init_kwargs"]))
    converted = cli("models", "convert", tmp_path / "ffhq.pkl", tmp_path / "ffhq.safetensors")
    assert converted.exit_code == 0, converted.output
    info = cli("models", "info", tmp_path / "ffhq.pkl")
    assert info.exit_code == 0 and "nvlabs-pickle" in info.stdout and "527,544" in info.stdout
    recipe = SMALL + "models: {generator: {kind: stylegan2, checkpoint: ffhq.pkl}}\n"
    assert cli("build", write_recipe(recipe), "-q", "--output", tmp_path / "a").exit_code == 0
    recipe = recipe.replace("ffhq.pkl", "ffhq.safetensors")
    assert cli("build", write_recipe(recipe), "-q", "--output", tmp_path / "b").exit_code == 0
    from tests.conftest import dataset_files
    assert dataset_files(tmp_path / "a") == dataset_files(tmp_path / "b")
    run_a = _json.loads((tmp_path / "a" / "run.json").read_text())["models"]["generator"]
    run_b = _json.loads((tmp_path / "b" / "run.json").read_text())["models"]["generator"]
    assert run_a["weights_sha256"] == run_b["weights_sha256"] and run_a["file_sha256"] != run_b["file_sha256"]


def test_bad_checkpoint_files_exit_2_with_one_line(cli, tmp_path):
    (tmp_path / "empty.pkl").write_bytes(b"")
    (tmp_path / "text.pt").write_text("not weights\n")
    for name, message in (("empty.pkl", "empty file"), ("text.pt", "not a model checkpoint (unrecognised content)")):
        result = cli("models", "info", tmp_path / name)
        assert result.exit_code == 2
        assert result.stderr == f"Error: {tmp_path / name}: {message}\n"
    from tests.conftest import FIXTURES
    whole = (FIXTURES / "stylegan2-ada-64.safetensors").read_bytes()
    (tmp_path / "half.safetensors").write_bytes(whole[: len(whole) // 2])
    result = cli("models", "info", tmp_path / "half.safetensors")
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"Error: {tmp_path / 'half.safetensors'}: truncated")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(SMALL + "models: {generator: {kind: stylegan2, checkpoint: half.safetensors}}\n")
    result = cli("build", recipe)
    assert result.exit_code == 2 and "truncated" in result.stderr and not (tmp_path / "out").exists()
    bad_name = cli("models", "convert", tmp_path / "text.pt", tmp_path / "out.pt")
    assert bad_name.exit_code == 2 and "must end in .safetensors" in bad_name.stderr
