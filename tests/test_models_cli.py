"""`synthfer models ...` and how models are checked against a recipe."""

from __future__ import annotations

import pytest
import torch

from synthfer.models.emostyle import EmoMappingWplus
from tests.conftest import SMALL


def test_models_check_shows_fit_and_licences(cli, write_recipe):
    result = cli("models", "check", write_recipe(SMALL + "models: {quality: {kind: builtin}, va: {kind: builtin}}\n"))
    assert result.exit_code == 0, result.output
    assert "editor: 10 layers of 128: they fit" in result.stdout
    assert "va: crop 51x51 px of the 64 px frame, upscaled to 256 (nearest, rgb)" in result.stdout
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
        assert result.stderr.strip() == "Error: editor has 18 layers of 64, generator needs 10 of 128"
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine bfloat16 is allowed")
def test_reduced_precision_needs_cuda(cli, write_recipe, tmp_path):
    result = cli("build", write_recipe(SMALL), "--set", "execution.dtype=bfloat16")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("Error: execution.dtype: bfloat16 runs under CUDA autocast only; "
                                     "this build runs on cpu (use float32)")
    assert not (tmp_path / "out").exists()
