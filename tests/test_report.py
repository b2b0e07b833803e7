"""Reports: aggregation on a hand-made manifest, and a rendered report of a small protocol build."""

from __future__ import annotations

import io
import json
import math
import re

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pathlib import Path
import yaml
from PIL import Image

from synthfer import circumplex, metrics
from synthfer.errors import UsageError
from synthfer.io.manifest import SCHEMA, rows_to_table
from synthfer.recipe import Recipe
from synthfer.report import load_run, write_report
from synthfer.report.load import direction_of
from synthfer.report.tables import mean_sd, metrics_frame
from tests.conftest import REPO

ANGLE = {e.name: e.angle_deg for e in circumplex.emotions()}


def _row(identity, target, angle, s, pred_angle=None, pred_s=None, status="accepted", reasons=()):
    """A manifest row whose score columns come from synthfer.metrics, as the assess stage's do."""
    tv, ta = (s * math.cos(math.radians(angle)), s * math.sin(math.radians(angle))) if angle is not None else (0, 0)
    row = dict.fromkeys(SCHEMA.names)   # every column; those not set here stay null
    row.update(key=f"{identity:07d}_{target}", shard=0, identity=identity, split="train", target=target,
               target_angle_deg=angle, target_intensity=s, target_valence=tv, target_arousal=ta,
               status=status, reject_reasons=list(reasons), identity_seed=identity)
    if pred_s is not None:
        pv, pa = pred_s * math.cos(math.radians(pred_angle)), pred_s * math.sin(math.radians(pred_angle))
        errors = metrics.va_errors([tv], [ta], [pv], [pa])
        row.update(pred_valence=pv, pred_arousal=pa,
                   **{k: (None if np.isnan(v[0]) else float(v[0])) for k, v in errors.items()})
    return row


def _output(tmp_path, rows, bands=(), name="hand"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows_to_table(rows), tmp_path / "manifest.parquet")
    recipe = {"name": name, "filters": {"failure_bands": [dict(b) for b in bands]}}
    (tmp_path / "run.json").write_text(json.dumps({"recipe": recipe}))
    return tmp_path


def _hand_rows():
    h, p, g = ANGLE["happy"], ANGLE["pleased"], ANGLE["glad"]
    return [
        # happy: direction errors 10, 20, 30 (one rejected); magnitude errors 0, 0.5, 0
        _row(0, "happy-100", h, 1.0, h + 10, 1.0),
        _row(1, "happy-100", h, 1.0, h - 20, 0.5, status="rejected", reasons=["va_direction", "identity_drift"]),
        _row(2, "happy-050", h, 0.5, h + 30, 0.5),
        _row(0, "pleased-100", p, 1.0, p + 40, 1.0),
        _row(0, "glad-100", g, 1.0, g - 50, 1.0),
        # neutral: no direction; prediction (0.3, 0.4) -> magnitude and distance error 0.5
        _row(0, "neutral", None, 0.0, math.degrees(math.atan2(0.4, 0.3)), 0.5),
        # skipped, yet with stale scores that would move every mean if they were counted
        _row(0, "sad-100", ANGLE["sad"], 1.0, ANGLE["sad"] + 170, 0.1, status="skipped", reasons=["failure_band"]),
        _row(0, "va-p030-m030", 315.0, math.hypot(0.3, 0.3), 315.0 + 5, math.hypot(0.3, 0.3)),
    ]


@pytest.fixture
def hand(tmp_path):
    # a band wrapping through 0 that holds happy (7.8) and pleased (353.2) but not glad (349)
    return _output(tmp_path / "hand", _hand_rows(), bands=[{"from_deg": 350, "to_deg": 10, "action": "verify"}])


def _cell(frame, subset, grouping, group):
    rows = frame[(frame.subset == subset) & (frame.grouping == grouping) & (frame.group == group)]
    assert len(rows) == 1, (subset, grouping, group)
    return rows.iloc[0]


def test_direction_mean_and_sd_measured_and_accepted(hand):
    f = metrics_frame(load_run(hand))
    m = _cell(f, "measured", "direction", "happy")
    assert m.n == 3
    assert m.direction_error_deg_mean == pytest.approx(20.0)
    assert m.direction_error_deg_sd == pytest.approx(math.sqrt(200 / 3))    # population SD of 10, 20, 30
    assert m.magnitude_error_mean == pytest.approx(1 / 6)
    assert m.magnitude_error_sd == pytest.approx(math.sqrt(((1 / 6) ** 2 * 2 + (1 / 3) ** 2) / 3))
    assert m.direction_bias_deg_mean == pytest.approx((10 - 20 + 30) / 3)  # signed, via metrics
    assert (m.planned, m.accepted, m.rejected, m.skipped) == (3, 2, 1, 0)
    assert m.reason_va_direction == 1 and m.reason_identity_drift == 1
    a = _cell(f, "accepted", "direction", "happy")
    assert a.n == 2 and a.direction_error_deg_mean == pytest.approx(20.0)
    assert a.direction_error_deg_sd == pytest.approx(10.0)
    assert a.magnitude_error_mean == pytest.approx(0.0, abs=1e-12)
    assert mean_sd(m.direction_error_deg_mean, m.direction_error_deg_sd, 1) == "20.0 ± 8.2"


def test_skipped_rows_are_not_measured_but_are_counted(hand):
    f = metrics_frame(load_run(hand))
    sad = _cell(f, "measured", "direction", "sad")
    assert sad.n == 0 and np.isnan(sad.direction_error_deg_mean)
    assert (sad.planned, sad.skipped, sad.reason_failure_band) == (1, 1, 1)
    assert _cell(f, "measured", "overall", "all").n == 7  # 8 rows, 1 skipped


def test_neutral_has_no_direction_and_is_left_out_of_direction_means(hand):
    f = metrics_frame(load_run(hand))
    n = _cell(f, "measured", "direction", "neutral")
    assert n.n == 1 and np.isnan(n.direction_error_deg_mean)
    assert n.magnitude_error_mean == pytest.approx(0.5) and n.distance_error_mean == pytest.approx(0.5)
    named = [10, 20, 30, 40, 50]
    assert _cell(f, "measured", "overall", "named directions").direction_error_deg_mean == pytest.approx(np.mean(named))
    assert _cell(f, "measured", "overall", "all").direction_error_deg_mean == pytest.approx(np.mean(named + [5]))
    assert _cell(f, "measured", "intensity", "0 (neutral)").n == 1  # neutral is intensity 0, a group of its own
    assert _cell(f, "measured", "direction", "points").direction_error_deg_mean == pytest.approx(5.0)


def test_band_wrapping_through_zero(hand):
    f = metrics_frame(load_run(hand))
    band = _cell(f, "measured", "band", "350-10")
    assert band.n == 4 and band.direction_error_deg_mean == pytest.approx(25.0)  # happy x3 + pleased
    outside = _cell(f, "measured", "band", "outside bands")
    assert outside.n == 2  # glad and the point; sad is skipped; neutral has no direction, so no band either
    assert outside.direction_error_deg_mean == pytest.approx((50 + 5) / 2)
    assert _cell(f, "accepted", "band", "350-10").n == 3


def test_intensity_groups(hand):
    f = metrics_frame(load_run(hand))
    assert _cell(f, "measured", "intensity", "1").direction_error_deg_mean == pytest.approx((10 + 20 + 40 + 50) / 4)
    assert _cell(f, "measured", "intensity", "0.5").direction_error_deg_mean == pytest.approx(30.0)


def test_direction_of():
    assert direction_of("at-ease-033", 321.0) == "at-ease"
    assert direction_of("happy-100", 7.8) == "happy"
    assert direction_of("custom", 7.83) == "happy"       # by angle, within 0.05 deg
    assert direction_of("custom", 7.9) == "points"
    assert direction_of("va-p100-p000", 0.0) == "points"
    assert direction_of("neutral", None) == "neutral"


def test_paper_region_used_when_the_recipe_has_no_bands(tmp_path):
    run = load_run(_output(tmp_path, _hand_rows(), bands=()))
    assert [(b.from_deg, b.to_deg, b.action) for b in run.bands] == [(242.0, 329.0, "reference")]
    assert _cell(metrics_frame(run), "measured", "band", "242-329").n == 1  # the point at 315 deg


def test_missing_manifest_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no manifest.parquet") as err:
        write_report(tmp_path)
    assert err.value.exit_code == 2 and "\n" not in str(err.value)
    out = _output(tmp_path / "a", _hand_rows())
    with pytest.raises(UsageError, match="no such folder"):
        write_report(out, compare=tmp_path / "missing")


@pytest.mark.parametrize("content", ["foreign", "junk"])
def test_a_foreign_or_damaged_manifest_is_one_line_for_report_and_export(cli, tmp_path, content):
    # Another tool's Parquet (no key/status) and bytes that are not Parquet: an Error line, never
    # "internal error" (exit 70) or "exported 0 images".
    import pyarrow as pa

    out = tmp_path / "out"
    out.mkdir()
    if content == "foreign":
        pq.write_table(pa.table({"a": [1, 2]}), out / "manifest.parquet")
        why = "not a synthfer manifest (it has no key and status columns)"
    else:
        (out / "manifest.parquet").write_bytes(b"not parquet")
        why = "not a synthfer manifest (Parquet magic bytes not found in footer."
    report = cli("report", out)
    assert report.exit_code == 1, report.output
    assert report.stderr.startswith(f"Error: {out}/manifest.parquet: cannot read the manifest: {why}")
    exported = cli("export", out, tmp_path / "dest", "--format", "imagefolder")
    assert exported.exit_code == 2, exported.output
    assert exported.stderr.startswith(f"Error: {out}: no readable manifest.parquet ({why}")
    for result in (report, exported):
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "dest").exists()


def test_empty_manifest_still_renders(tmp_path):
    out = _output(tmp_path, [])
    report = Path(write_report(out)).parent
    assert (report / "metrics.csv").is_file() and (report / "report.html").is_file()


def test_deterministic_and_stale_files_removed(hand):
    first = Path(write_report(hand, compare=hand, sheets=False)).parent
    names = {p.name for p in first.iterdir()}
    assert {"compare.csv", "compare.md"} <= names
    with_compare = {p.name: p.read_bytes() for p in first.iterdir()}
    again = Path(write_report(hand, sheets=False)).parent
    assert not (again / "compare.md").exists()  # an earlier --compare does not linger
    data = {p.name: p.read_bytes() for p in again.iterdir()}
    assert data["metrics.csv"] == with_compare["metrics.csv"]  # --compare adds, never changes
    third = Path(write_report(hand, sheets=False)).parent
    assert {p.name: p.read_bytes() for p in third.iterdir()} == data
    assert b"Software" not in data["circumplex.png"] and b"matplotlib" not in data["circumplex.png"]


def test_protocol_recipes_are_valid(tmp_path, monkeypatch):
    from synthfer.errors import RecipeError
    from synthfer.recipe import load_recipe

    monkeypatch.setenv("SYNTHFER_MODELS_DIR", str(tmp_path))
    with pytest.raises(RecipeError) as err:   # protocol-emostyle's weights are fetched, not in the repository
        load_recipe(REPO / "recipes" / "protocol-emostyle.yaml")
    assert [p.split(": registry:")[1].split(":")[0] for p in err.value.problems] == [
        "ffhq", "emostyle-editor", "magface-iresnet100", "emonet-8"]
    assert all(p.endswith("`") and "run `synthfer models fetch " in p for p in err.value.problems)
    for name in ("protocol.yaml", "protocol-emostyle.yaml"):
        data = yaml.safe_load((REPO / "recipes" / name).read_text())
        data["models"] = {role: {"kind": "builtin"} for role in ("quality", "va")} if name == "protocol-emostyle.yaml" \
            else data["models"]
        recipe = Recipe.model_validate(data)
        assert recipe.targets.emotions == "all" and recipe.targets.intensities == [0.33, 0.66, 1.0]
        assert recipe.targets.neutral and recipe.filters.va_limits() == {} and not recipe.filters.failure_bands
        assert recipe.filters.min_quality is None and recipe.filters.min_identity_similarity is None
        assert recipe.models.va is not None and recipe.models.quality is not None


@pytest.fixture(scope="module")
def protocol_report(tmp_path_factory):
    from synthfer.build import build
    from synthfer.recipe import load_recipe

    out = tmp_path_factory.mktemp("protocol") / "out"
    build(load_recipe(REPO / "recipes" / "protocol.yaml", ["identities.count=3"], output=str(out)))
    return Path(write_report(out, compare=out)).parent


def test_protocol_report_renders(protocol_report):
    report = protocol_report
    for name in ("circumplex.png", "direction_error.png", "acceptance.png", "sheet-033.png", "sheet-066.png",
                 "sheet-100.png"):
        with Image.open(report / name) as im:
            im.verify()
        with Image.open(report / name) as im:
            assert im.format == "PNG" and min(im.size) > 100
    csv = pd.read_csv(report / "metrics.csv")
    measured = csv[(csv.subset == "measured") & (csv.grouping == "direction")]
    assert [g for g in measured.group if g in ANGLE] == [e.name for e in circumplex.emotions()]
    assert (measured[measured.group.isin(list(ANGLE))].n == 9).all()  # 3 identities x 3 intensities
    md = (report / "metrics.md").read_text(encoding="utf-8")
    for e in circumplex.emotions():
        row = rf"^\| {re.escape(e.name)} \| {e.angle_deg:.1f} \| 9 \| \d+\.\d ± \d+\.\d \|"
        assert re.search(row, md, re.M), e.name
    compare = pd.read_csv(report / "compare.csv")
    assert (compare["direction_error_deg_mean_delta"].dropna() == 0).all()


def test_report_html_is_self_contained(protocol_report):
    text = (protocol_report / "report.html").read_text(encoding="utf-8")
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) >= 6 and all(s.startswith("data:image/png;base64,") for s in sources)
    # base64 payloads are random letters and may spell anything; judge the page without them
    page = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", text)
    assert "http" not in page.lower() and "<link" not in page.lower() and "url(" not in page.lower()
    assert "<script" not in page.lower() and "@import" not in page.lower()
    for e in circumplex.emotions():
        assert f"<td>{e.name}</td>" in page
    for uri in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)[:3]:
        import base64
        Image.open(io.BytesIO(base64.b64decode(uri))).verify()


def test_fixes_a_check_of_the_numbers_found(tmp_path):
    """NaN arousal is not measured; a raw point at intensity 0.004 is not the neutral row; a mean
    over fewer rows than n says so; neutral is in no band group."""
    h = ANGLE["happy"]
    rows = [_row(0, "happy-100", h, 1.0, h + 10, 1.0), _row(1, "happy-100", h, 1.0, h + 30, 1.0),
            _row(0, "neutral", None, 0.0, 45.0, 0.5),
            _row(0, "va-p000-p000", 45.0, 0.004, 45.0 + 10, 0.004)]
    rows[1]["pred_arousal"] = None                        # one value missing: not measured
    origin = _row(2, "happy-100", h, 1.0, 0.0, 0.0)       # predicted at the origin: no direction
    origin.update(pred_angle_deg=None, direction_error_deg=None)
    run = load_run(_output(tmp_path / "fix", rows + [origin]))
    assert run.frame.loc[run.frame["key"] == "0000001_happy-100", "measured"].item() is False
    f = metrics_frame(run)
    assert _cell(f, "measured", "intensity", "0 (neutral)").n == 1
    assert _cell(f, "measured", "intensity", "0.004").n == 1
    happy = _cell(f, "measured", "direction", "happy")
    assert happy.n == 2 and happy.direction_error_deg_n == 1   # the origin's row has no direction
    from synthfer.report.tables import sections
    table = next(s for s in sections(f, []) if s.title == "Per direction: measured")
    row = next(r for r in table.rows if r[0] == "happy")
    assert row[3].endswith("(n=1)")
    assert _cell(f, "measured", "band", "outside bands").n == 3   # two measured happy rows and the point, not neutral


def test_each_anchor_of_a_class_is_its_own_direction_group_at_its_angle():
    import pandas as pd

    from synthfer.report.load import _add_groups

    frame = pd.DataFrame({
        "target": ["neutral", "mixed-1-100", "mixed-2-100", "mixed-1-050", "disgust-100", "va-p030-m030", "happy-100"],
        "target_angle_deg": [float("nan"), 290.56, 140.19, 290.56, 146.9, 315.0, 7.8],
        "target_intensity": [0.0, 1.0, 1.0, 0.5, 1.0, 0.42, 1.0],
        "class": ["neutral", "mixed", "mixed", "mixed", "disgust", "", "happy"]})
    _add_groups(frame, [])
    assert list(frame["direction"]) == ["neutral", "mixed-1 anchor", "mixed-2 anchor", "mixed-1 anchor",
                                        "disgust anchor", "points", "happy"]
    assert list(frame["direction"].cat.categories) == ["happy", "mixed-2 anchor", "disgust anchor", "mixed-1 anchor",
                                                       "points", "neutral"]
    assert frame.loc[2, "direction_angle"] == 140.19 and frame.loc[3, "direction_angle"] == 290.56
