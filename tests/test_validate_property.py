"""Property: whatever a recipe file holds, `synthfer validate` answers 0 or 2, never a traceback."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings, strategies as st
from typer.testing import CliRunner

from synthfer.cli import app

VALID = yaml.safe_load("""
name: p
seed: 1
identities: {count: 3, truncation_psi: 0.7}
targets: {emotions: [happy, at ease], intensities: [0.5, 1.0], neutral: true, points: [[0.2, -0.2]]}
models: {quality: {kind: builtin}, va: {kind: builtin, valence_index: 0, arousal_index: 1}}
filters: {min_quality: 20, failure_bands: [{from_deg: 242, to_deg: 329, action: verify, max_distance: 0.5}]}
output: {dir: out, samples_per_shard: 10, image: {format: png, size: 32}, splits: {train: 0.8, val: 0.1, test: 0.1}}
execution: {device: cpu, batch_size: 4}
""")

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["all", "happy", "skip", "png", "auto", "1e3", "-1"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


@st.composite
def mutated(draw):
    recipe = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(recipe) if p]
        path = draw(st.sampled_from(paths))
        parent = recipe
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(values)
        if not isinstance(recipe, dict):
            break
    return yaml.safe_dump(recipe, allow_unicode=True)


def _check(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipe.yaml"
        path.write_text(text, encoding="utf-8")
        result = CliRunner().invoke(app, ["validate", str(path)])
        assert result.exit_code in (0, 2), (result.exit_code, result.output, text)
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert "Traceback" not in result.output
        if result.exit_code == 2:
            assert all(line.startswith("Error: ") for line in result.stderr.splitlines())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_recipes(text):
    _check(text)


@settings(max_examples=75, deadline=None)
@given(values)
def test_random_documents(value):
    _check(yaml.safe_dump(value, allow_unicode=True))


@settings(max_examples=75, deadline=None)
@given(st.text(max_size=200))
def test_random_text(text):
    _check(text)
