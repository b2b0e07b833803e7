"""Regressions for problems a review found: each was a traceback or a wrong result."""

from __future__ import annotations

import json

from synthfer import circumplex
from tests.conftest import SMALL


def _one_error(result, code):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    return lines[0]


def test_set_into_a_scalar(cli, write_recipe):
    line = _one_error(cli("validate", write_recipe(SMALL), "--set", "targets.intensities.0.x=1"), 2)
    assert line == "Error: --set targets.intensities.0.x=1: targets.intensities.0 is a value, not a mapping"


def test_unusable_lock_file(cli, write_recipe, tmp_path):
    (tmp_path / "out" / ".lock").mkdir(parents=True)
    line = _one_error(cli("build", write_recipe(SMALL)), 1)
    assert line.startswith(f"Error: {tmp_path / 'out' / '.lock'}: cannot open the build lock: ")


def test_damaged_fingerprint_file(cli, write_recipe, tmp_path):
    recipe = write_recipe(SMALL)
    assert cli("build", recipe, "-q").exit_code == 0
    (tmp_path / "out" / "fingerprint.json").write_text("[]")
    line = _one_error(cli("build", recipe, "-q"), 2)
    assert line.endswith("fingerprint.json: damaged or not synthfer's; use --mode overwrite to start this output again")
    (tmp_path / "out" / "report").mkdir()
    assert cli("build", recipe, "-q", "--mode", "overwrite").exit_code == 0
    assert not (tmp_path / "out" / "report").exists()   # a report of the old build is gone with it
    assert cli("verify", tmp_path / "out").exit_code == 0


def test_verify_reports_a_garbage_manifest(cli, write_recipe, tmp_path):
    assert cli("build", write_recipe(SMALL), "-q").exit_code == 0
    (tmp_path / "out" / "manifest.parquet").write_bytes(b"not parquet")
    result = cli("verify", tmp_path / "out")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Problem: manifest.parquet cannot be read as a synthfer manifest" in result.stderr


def test_absurd_counts_and_non_finite_thresholds_are_refused(cli, write_recipe):
    recipe = write_recipe(SMALL)
    line = _one_error(cli("plan", recipe, "--set", "identities.count=1000000000000"), 2)
    assert line == ("Error: --set identities.count=1000000000000: identities.count: must be less than or equal "
                    "to 10000000, got 1000000000000")
    line = _one_error(cli("validate", recipe, "--set", "models.quality={kind: builtin}",
                          "--set", "filters.min_quality=.nan"), 2)
    assert line == "Error: --set filters.min_quality=.nan: filters.min_quality: must be a finite number, got nan"


def test_a_band_over_the_whole_circle():
    assert all(circumplex.in_band(a, 0, 360) for a in (0, 90, 180, 359.9))
    assert circumplex.in_band(5, 10, 360) is False and circumplex.in_band(0, 10, 360) is True


def test_output_option_is_relative_to_the_current_folder(cli, write_recipe, tmp_path, monkeypatch):
    recipe = write_recipe(SMALL, name="sub.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli("build", recipe, "-q", "--output", "myout").exit_code == 0
    assert (elsewhere / "myout" / "manifest.parquet").exists()
    assert cli("verify", "myout").exit_code == 0


def test_quiet_wins_over_json_and_run_json_names_the_row_fingerprint(cli, write_recipe, tmp_path):
    result = cli("build", write_recipe(SMALL), "-q", "--log-format", "json")
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""
    import pyarrow.parquet as pq
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    rows = pq.read_table(tmp_path / "out" / "manifest.parquet").column("recipe_fingerprint").to_pylist()
    assert set(rows) == {info["shard_fingerprint"]}
    assert json.loads((tmp_path / "out" / "fingerprint.json").read_text())["shard_fingerprint"] == rows[0]
