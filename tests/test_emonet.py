"""synthfer's EmoNet: the released checkpoints' key layout, load_emonet's checks, EmoNetVA.

The layout fixtures (tests/fixtures/emonet-keys/) were generated from the authors' model; numerical
parity with it is tools/parity_emonet.py's job (it needs their code, which the tests do not).
"""

from __future__ import annotations

import math

import pytest
import torch

from synthfer.errors import ModelFileError
from synthfer.models.emonet import EmoNet, EmoNetVA, load_emonet, parameter_count
from tests.conftest import FIXTURES

KEYS = FIXTURES / "emonet-keys"
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def fixture_layout(n_expression: int) -> list[tuple[str, str]]:
    lines = (KEYS / f"emonet_{n_expression}.txt").read_text().splitlines()
    return [tuple(line.split("\t")) for line in lines if line and not line.startswith("#")]


def shape_text(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def numel(shape: str) -> int:
    return 1 if shape == "scalar" else math.prod(int(d) for d in shape.split("x"))


@pytest.fixture(scope="module")
def state5() -> dict[str, torch.Tensor]:
    """A random EmoNet(5) state dict (5 classes, so that load_emonet must infer the width)."""
    torch.manual_seed(0)
    state = EmoNet(n_expression=5).state_dict()
    return {k: (torch.randn_like(v) if v.is_floating_point() else v) for k, v in state.items()}


def save(path, state):
    torch.save(state, path)
    return path


@pytest.mark.parametrize("n_expression", [8, 5])
def test_key_layout_is_the_checkpoints(n_expression):
    ours = [(k, shape_text(v)) for k, v in EmoNet(n_expression=n_expression).state_dict().items()]
    assert ours == fixture_layout(n_expression)


@pytest.mark.parametrize("n_expression, published", [(8, 13_963_410), (5, 13_963_023)])
def test_parameter_count_matches_the_fixture(n_expression, published):
    learnable = sum(numel(shape) for name, shape in fixture_layout(n_expression)
                    if not name.endswith(BUFFERS))
    assert parameter_count(EmoNet(n_expression=n_expression)) == learnable == published


@pytest.mark.parametrize("wrap", ["module_prefix", "bare", "under_state_dict", "legacy_format"])
def test_load_emonet_reads_the_checkpoint_forms(tmp_path, state5, wrap):
    if wrap == "module_prefix":   # as released: saved from DataParallel
        obj = {f"module.{k}": v for k, v in state5.items()}
    elif wrap == "under_state_dict":
        obj = {"state_dict": state5, "epoch": 3}
    else:
        obj = state5
    path = tmp_path / "emonet.pth"
    torch.save(obj, path, _use_new_zipfile_serialization=wrap != "legacy_format")
    model = load_emonet(path)
    assert isinstance(model, EmoNet) and model.n_expression == 5 and not model.training
    loaded = model.state_dict()
    assert list(loaded) == list(state5)
    assert all(torch.equal(loaded[k], v) for k, v in state5.items())


def refusal(path) -> str:
    with pytest.raises(ModelFileError) as info:
        load_emonet(path)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_load_emonet_refuses_a_missing_key(tmp_path, state5):
    state = {k: v for k, v in state5.items() if k != "m1.b2_plus_1.conv2.weight"}
    path = save(tmp_path / "emonet.pth", state)
    assert refusal(path) == f"{path}: not an EmoNet checkpoint: missing keys m1.b2_plus_1.conv2.weight"


def test_load_emonet_names_the_first_few_offenders(tmp_path, state5):
    state = {k: v for k, v in state5.items() if not k.startswith("emo_net_2.")}
    state["extra.weight"] = torch.zeros(1)
    path = save(tmp_path / "emonet.pth", state)
    assert refusal(path) == (f"{path}: not an EmoNet checkpoint: missing keys emo_net_2.0.bn1.weight, "
                             "emo_net_2.0.bn1.bias, emo_net_2.0.bn1.running_mean (+57 more); "
                             "unexpected keys extra.weight")


def test_load_emonet_refuses_a_wrong_shape(tmp_path, state5):
    state = dict(state5, **{"conv1.weight": torch.zeros(64, 3, 5, 5)})
    path = save(tmp_path / "emonet.pth", state)
    assert refusal(path) == (f"{path}: not an EmoNet checkpoint: wrong shapes "
                             "conv1.weight (64x3x5x5, expected 64x3x7x7)")


def test_load_emonet_refuses_what_is_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not weights\n")
    assert refusal(text).startswith(f"{text}: not a PyTorch checkpoint (")
    listed = save(tmp_path / "list.pth", [torch.zeros(2)])
    assert refusal(listed) == (f"{listed}: not an EmoNet checkpoint "
                               "(expected a state dict of tensors, got list)")
    assert refusal(tmp_path / "absent.pth") == f"{tmp_path / 'absent.pth'}: file not found"


def test_emonet_va_is_batch_independent():
    torch.manual_seed(1)
    model = EmoNet().eval()
    with torch.no_grad():
        # Default init gives near-zero outputs; widen the read-out so the comparison means something.
        model.emo_fc_2[3].weight.normal_()
        model.emo_fc_2[1].running_var.uniform_(0.5, 2.0)
    va_model = EmoNetVA(model).eval()
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        batched = va_model(x)
        first = model(x[:1])          # the dict forward, one image
        second = va_model(x[1:])
    assert batched.shape == (2, 2) and batched.dtype == torch.float32
    assert batched.abs().max() > 0.1
    one_by_one = torch.cat([torch.stack([first["valence"], first["arousal"]], 1), second])
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=0)
    assert first["expression"].shape == (1, 8) and first["heatmap"].shape == (1, 68, 64, 64)


def test_files_without_batchnorm_step_counters_load(tmp_path, state5):
    """PyTorch < 0.4.1 saved no num_batches_tracked; eval never reads them."""
    state = {k: v for k, v in state5.items() if not k.endswith("num_batches_tracked")}
    path = save(tmp_path / "emonet.pth", state)
    from synthfer.models.emonet import load_emonet

    assert load_emonet(path).n_expression == 5

