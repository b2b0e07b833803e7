"""The extension points, used from outside the package as a user would: a filter rule and a
model kind registered by test code, then named by a recipe and run by a real build."""

from __future__ import annotations

from typing import Literal

import pyarrow.parquet as pq
import pytest

from synthfer import filters
from synthfer.models import registry
from synthfer.models.registry import Licence, ModelKind
from synthfer.blocks import Strict
from tests.conftest import SMALL


class NoSad(filters.Rule):
    """A toy rule: rejects every sad target (no recipe field: always on once registered)."""
    reason, short, meaning = "toy_no_sad", "SAD", "target is sad (a test rule)"

    def check(self, subject, scores):
        return self.reason if subject.target.key.startswith("sad-") else None


@pytest.fixture
def no_sad_rule():
    filters.register(NoSad)
    yield NoSad
    filters.unregister(NoSad)


def test_a_registered_rule_filters_and_is_counted(cli, write_recipe, tmp_path, no_sad_rule):
    result = cli("build", write_recipe(SMALL), "--log-format", "json")
    assert result.exit_code == 0, result.output
    rows = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    sad = [r for r in rows if r["target"].startswith("sad-")]
    assert sad and all(r["status"] == "rejected" and r["reject_reasons"] == ["toy_no_sad"] for r in sad)
    assert all(r["status"] == "accepted" for r in rows if not r["target"].startswith("sad-"))
    assert '"toy_no_sad": 8' in result.stdout   # counted in the summary's by_reason
    assert filters.short_label("toy_no_sad") == "SAD"


class ShiftEditor:
    """A toy editor kind: moves every w row by `amount` times (valence, arousal) in its first two
    dimensions. Provides the editor interface: edit(ws, va) -> ws, n_latent, w_dim."""

    def __init__(self, amount: float, n_latent: int, w_dim: int):
        self.amount, self.n_latent, self.w_dim = amount, n_latent, w_dim

    def edit(self, ws, va):
        out = ws.clone()
        out[:, :, :2] += self.amount * va[:, None, :]
        return out


class ShiftSpec(Strict):
    kind: Literal["shift"] = "shift"
    amount: float = 1.0


@pytest.fixture
def shift_kind():
    kind = ModelKind(
        role="editor", name="shift", spec=ShiftSpec,
        load=lambda spec, ctx: ShiftEditor(spec.amount, ctx.generator.n_latent, ctx.generator.w_dim),
        file_hash=lambda spec, ctx: f"shift-{spec.amount}",
        weights_hash=lambda spec, ctx, model: f"shift-{spec.amount}",
        licence=Licence(True, "toy editor written by the test suite"),
    )
    registry.register(kind)
    yield kind
    registry.unregister("editor", "shift")


def test_a_registered_model_kind_is_named_by_a_recipe_and_builds(cli, write_recipe, tmp_path, shift_kind):
    recipe = write_recipe(SMALL + "models:\n  editor: {kind: shift, amount: 3.0}\n")
    check = cli("models", "check", recipe)
    assert check.exit_code == 0, check.output
    assert "licence editor (shift): [ok for commercial use] toy editor written by the test suite" in check.stdout
    assert cli("build", recipe, "-q").exit_code == 0
    other = cli("build", recipe, "-q", "--set", "models.editor.amount=0.5", "--output", tmp_path / "half")
    assert other.exit_code == 0
    a = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pydict()
    b = pq.read_table(tmp_path / "half" / "manifest.parquet").to_pydict()
    neutral = [i for i, t in enumerate(a["target"]) if t == "neutral"]
    edited = [i for i, t in enumerate(a["target"]) if t != "neutral"]
    assert all(a["image_sha256"][i] == b["image_sha256"][i] for i in neutral)      # unedited: same pixels
    assert all(a["image_sha256"][i] != b["image_sha256"][i] for i in edited)       # the amount moved them
    bad = cli("validate", write_recipe(SMALL + "models:\n  editor: {kind: shift, amount: x}\n", "bad.yaml"))
    assert bad.exit_code == 2 and "models.editor.amount: must be a valid number, got 'x'" in bad.stderr


def test_an_unregistered_kind_is_unknown_again(cli, write_recipe):
    result = cli("validate", write_recipe(SMALL + "models:\n  editor: {kind: shift}\n"))
    assert result.exit_code == 2
    assert "models.editor.kind: unknown kind 'shift' (known: builtin, emostyle)" in result.stderr
