"""Regressions for problems a review found: each was a traceback or a wrong result."""

from __future__ import annotations

import json

from synthfer import circumplex
from tests.conftest import SMALL, error_lines


def _one_error(result, code):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = error_lines(result.stderr)
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
    (tmp_path / "out" / "_synthfer" / "fingerprint.json").write_text("[]")
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
    assert json.loads((tmp_path / "out" / "_synthfer" / "fingerprint.json").read_text())["shard_fingerprint"] == rows[0]


# ---------------------------------------------------------------- issue 10's list: one line each, never a traceback

BILLION_LAUGHS = """\
a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_a_yaml_alias_bomb_is_refused(cli, write_recipe):
    recipe = write_recipe(BILLION_LAUGHS)
    line = _one_error(cli("validate", recipe), 2)
    assert line == (f"Error: {recipe}: expands to more than 100,000 values through YAML aliases; refused "
                    f"(a recipe needs far fewer)")
    # ordinary aliases stay fine
    ok = write_recipe(SMALL + "filters: {failure_bands: [&band {from_deg: 242, to_deg: 329, action: skip}]}\n",
                      "ok.yaml")
    assert cli("validate", ok).exit_code == 0


def test_deeply_nested_yaml_is_refused(cli, write_recipe):
    recipe = write_recipe("name: " + "[" * 3000 + "]" * 3000 + "\n")
    assert _one_error(cli("validate", recipe), 2) == f"Error: {recipe}: nested too deeply to be a recipe"


def test_a_set_that_creates_an_unknown_field_is_blamed_on_the_set(cli, write_recipe):
    line = _one_error(cli("validate", write_recipe(SMALL), "--set", "a.b.c=1"), 2)
    assert line.startswith("Error: --set a.b.c=1: a: unknown key (allowed: name, seed, ")


def test_a_file_system_without_locks_says_what_to_do(cli, write_recipe, tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    recipe = write_recipe(SMALL)
    line = _one_error(cli("build", recipe), 2)
    assert line == (f"Error: {tmp_path / 'out'}: the file system has no file locks (flock: No locks available); "
                    f"set output.lock: lease on every machine that builds into this folder")
    assert cli("build", recipe, "-q", "--set", "output.lock=lease").exit_code == 0   # the documented fallback
    assert not list((tmp_path / "out").glob(".lease-*"))   # released at the end
    assert cli("verify", tmp_path / "out").exit_code == 0   # fingerprint.json says which lock the output uses


def test_verify_reports_an_unexpected_status_instead_of_crashing(cli, write_recipe, tmp_path):
    import pyarrow.parquet as pq

    from synthfer.io.manifest import SCHEMA
    assert cli("build", write_recipe(SMALL), "-q").exit_code == 0
    path = tmp_path / "out" / "manifest.parquet"
    rows = pq.read_table(path).to_pylist()
    rows[1]["status"] = "maybe"
    pq.write_table(pq.read_table(path).from_pylist(rows, schema=SCHEMA), path)
    result = cli("verify", tmp_path / "out")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"Problem: shard-000000: {rows[1]['key']} has an image but status 'maybe'" in result.stderr


def test_unexpected_errors_are_one_line_with_a_documented_code(cli, write_recipe, monkeypatch):
    from synthfer import plan

    def broken(self, spec):
        raise ZeroDivisionError("division by zero")
    monkeypatch.setattr(plan.Plan, "select", broken)
    line = _one_error(cli("build", write_recipe(SMALL)), 70)
    assert line.startswith("Error: internal error (ZeroDivisionError: division by zero); please report it at ")

    def denied(self, spec):
        raise PermissionError(13, "Permission denied", "/some/file")
    monkeypatch.setattr(plan.Plan, "select", denied)
    assert _one_error(cli("build", write_recipe(SMALL)), 1) == "Error: /some/file: Permission denied"


def test_readme_lists_every_reject_reason_with_its_label():
    from synthfer.filters import reasons
    from tests.conftest import REPO
    readme = (REPO / "README.md").read_text()
    for reason, rule in reasons().items():
        assert f"| `{reason}` | {rule.short} |" in readme, reason
