"""Every recipe mistake: exit 2, one line per problem naming file:line and field, nothing written."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SMALL


def _error_lines(result):
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("Error: ") for line in lines), lines
    return lines


@pytest.mark.parametrize("text, expected", [
    ("name: x\ntargets:\n  intensities: [0.5, 1.0, 1.5]\n",
     "recipe.yaml:3: targets.intensities[2]: must be in (0, 1], got 1.5"),
    ("name: x\nidentities: {count: 10, colour: red}\n",
     "recipe.yaml:2: identities.colour: unknown key (allowed: count, truncation_psi, truncation_cutoff, max_count)"),
    ("identities:\n  count: ten\n",
     "recipe.yaml:2: identities.count: must be a valid integer, got 'ten'"),
    ("identities:\n  count: 0\n",
     "recipe.yaml:2: identities.count: must be greater than 0, got 0"),
    ("identities:\n  count: -5\n",
     "recipe.yaml:2: identities.count: must be greater than 0, got -5"),
    ("targets:\n  emotions:\n    - happy\n    - hapy\n",
     "recipe.yaml:4: targets.emotions[1]: unknown emotion 'hapy': did you mean 'happy'? `synthfer emotions` lists them"),
    ("name: x\nseed: [1\n",
     "recipe.yaml:3: YAML syntax error: expected ',' or ']', but got '<stream end>'"),
    ("", "recipe.yaml: the file is empty; a recipe is a mapping such as `name: demo`"),
    ("- a\n- b\n", "recipe.yaml:1: a recipe must be a mapping of fields, got a list"),
    ("output:\n  splits: {train: 0.5, val: 0.1, test: 0.1}\n",
     "recipe.yaml:2: output.splits: train + val + test must be 1, got 0.7"),
    ("output:\n  samples_per_shard: 99999999999999999999\n",
     "recipe.yaml:2: output.samples_per_shard: must be less than or equal to 10000000, got 99999999999999999999"),
    ("output:\n  splits: {train: 1.0}\n",
     "recipe.yaml:2: output.splits: train + val + test must be 1, got 1.2 (val 0.1 and test 0.1 are defaults: "
     "name every split, e.g. {train: 0.9, val: 0.1, test: 0})"),
    ("identities: {count: 3}\nseed: 1\nidentities: {count: 4}\n",
     "recipe.yaml:3: identities: duplicate key (YAML keeps only the last one)"),
    ("execution:\n  device: gpu\n",
     "recipe.yaml:2: execution.device: must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
    ("output:\n  image: {format: bmp}\n",
     "recipe.yaml:2: output.image.format: must be 'png', 'jpg' or 'webp', got 'bmp'"),
])
def test_bad_recipe_one_line(cli, write_recipe, tmp_path, text, expected):
    path = write_recipe(text)
    for command in ("validate", "build", "plan"):
        lines = _error_lines(cli(command, path))
        assert lines == [f"Error: {str(path.parent)}/{expected}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]  # nothing written


def test_missing_model_file(cli, write_recipe, tmp_path):
    path = write_recipe("models:\n  generator:\n    kind: stylegan2\n    checkpoint: weights/ffhq.pkl\n")
    lines = _error_lines(cli("build", path))
    assert lines == [f"Error: {path}:4: models.generator.checkpoint: file not found: {tmp_path}/weights/ffhq.pkl"]


def test_missing_recipe_file(cli, tmp_path):
    assert _error_lines(cli("validate", tmp_path / "nope.yaml")) == [f"Error: {tmp_path}/nope.yaml: file not found"]


def test_all_problems_listed(cli, write_recipe):
    path = write_recipe("identities: {count: 0}\ntargets: {intensities: [2]}\nbogus: 1\n")
    lines = _error_lines(cli("validate", path))
    assert len(lines) == 3
    assert any("bogus: unknown key" in line for line in lines)


def test_set_overrides_are_validated_like_the_file(cli, write_recipe):
    path = write_recipe(SMALL)
    lines = _error_lines(cli("validate", path, "--set", "identities.count=-1"))
    assert lines == ["Error: --set identities.count=-1: identities.count: must be greater than 0, got -1"]
    lines = _error_lines(cli("validate", path, "--set", "identities.count"))
    assert lines == ["Error: --set identities.count: expected FIELD=VALUE, e.g. identities.count=10"]
    lines = _error_lines(cli("validate", path, "--set", "identities.colour=3"))
    assert "identities.colour: unknown key" in lines[0]


def test_set_and_output_override(cli, write_recipe, tmp_path):
    path = write_recipe(SMALL)
    result = cli("validate", path, "--set", "identities.count=6", "--set", "targets.intensities=[1.0]")
    assert result.exit_code == 0, result.output
    assert "6 identities x 3 targets = 18 samples" in result.stdout


def test_validate_ok_and_plan(cli, write_recipe):
    path = write_recipe(SMALL)
    result = cli("validate", path)
    assert result.exit_code == 0 and "4 identities x 5 targets = 20 samples in 2 shards" in result.stdout
    result = cli("plan", path)
    assert result.exit_code == 0
    assert "shard-000001" in result.stdout and "sad-100" in result.stdout
    assert "if every planned sample were kept (before any filter) the output would be about" in " ".join(result.stdout.split())


def test_emotions_table(cli):
    result = cli("emotions")
    assert result.exit_code == 0
    assert "at-ease" in result.stdout and "321.0" in result.stdout
    assert len([line for line in result.stdout.splitlines() if "│" in line]) == 28


def test_help_for_every_command(cli):
    for command in ([], ["build"], ["validate"], ["plan"], ["emotions"]):
        result = cli(*command, "--help")
        assert result.exit_code == 0 and "Usage" in result.output


def test_help_keeps_every_bracketed_phrase_it_was_written_with(cli):
    # Rich reads "[valence, arousal]" as a markup tag and drops it; every [..] of a command's
    # help or an option's help must reach the screen (escape it as \\[ where Rich would eat it).
    import re

    import click
    import typer

    from synthfer.cli import app

    def walk(command, path):
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, path + [name])

    checked = 0
    for path, command in walk(typer.main.get_command(app), []):
        texts = [command.help or ""] + [p.help or "" for p in command.params if isinstance(p, click.Option)]
        wanted = [m.replace("\\[", "[") for t in texts for m in re.findall(r"\\?\[[^\]\[]+\]", t)]
        shown = " ".join(cli(*path, "--help").output.replace("│", " ").split())
        for phrase in wanted:
            assert " ".join(phrase.split()) in shown, (path, phrase)
            checked += 1
    assert checked >= 3   # [0, 1] twice and [valence, arousal] in models export-onnx, at least


def test_storage_options_given_with_set_are_not_recorded_in_run_json(cli, write_recipe, tmp_path):
    # They may hold credentials: the resolved recipe leaves them out, and so does the --set record.
    recipe = write_recipe(SMALL)
    result = cli("build", recipe, "-q", "--set", "output.storage_options={key: SECRETKEYID, secret: SUPERSECRET}",
                 "--set", "seed=8")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "out" / "run.json").read_text()
    assert "SECRET" not in text
    assert json.loads(text)["overrides"] == ["output.storage_options=<not recorded>", "seed=8"]
    whole = cli("build", recipe, "-q", "--output", tmp_path / "whole",
                "--set", "output={samples_per_shard: 10, splits: {train: 0.5, val: 0.5, test: 0}, "
                "storage_options: {secret: HUNTER2}}")
    assert whole.exit_code == 0, whole.output
    text = (tmp_path / "whole" / "run.json").read_text()
    assert "HUNTER2" not in text and json.loads(text)["overrides"] == ["output=<not recorded>"]


def test_a_builtin_model_seed_out_of_range_is_a_usage_error(cli, write_recipe):
    # torch's manual_seed overflows past 64 bits: that was an internal error (exit 70).
    recipe = write_recipe(SMALL)
    for role in ("generator", "editor"):
        result = cli("validate", recipe, "--set", f"models.{role}.seed={2**64}")
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == (f"Error: --set models.{role}.seed={2**64}: models.{role}.seed: must be less "
                                         f"than 9223372036854775808, got {2**64}")


def test_a_sum_a_set_broke_names_the_set_and_the_recipe_line(cli, write_recipe):
    path = write_recipe("output:\n  splits: {train: 0.8, val: 0.1, test: 0.1}\n")
    lines = _error_lines(cli("validate", path, "--set", "output.splits.train=0.5"))
    assert lines == [f"Error: {path}:2 with --set output.splits.train=0.5: output.splits: train + val + test must "
                     f"be 1, got 0.7"]
