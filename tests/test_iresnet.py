"""MagFace iResNet: layout pinned to the reference (fixtures), checkpoint reading, batching, ONNX.

Numerical parity with the reference code is tools/parity_magface.py's job (it needs the MagFace
checkout); these tests need only tests/fixtures/magface-keys/.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from synthfer.errors import ModelFileError
from synthfer.models.iresnet import (DEPTHS, IResNet, iresnet50, iresnet100, load_magface,
                                     parameter_count)

KEYS = Path(__file__).resolve().parent / "fixtures" / "magface-keys"
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
BUILDERS = {50: iresnet50, 100: iresnet100}


def fixture_layout(depth: int) -> tuple[str, list[tuple[str, list[int]]]]:
    header, *lines = (KEYS / f"iresnet{depth}.txt").read_text().splitlines()
    rows = []
    for line in lines:
        name, shape = line.split("\t")
        rows.append((name, [int(n) for n in shape.strip("[]").split(",") if n.strip()]))
    return header, rows


def meta_model(depth: int) -> IResNet:
    with torch.device("meta"):   # names and shapes without allocating 65M weights
        return BUILDERS[depth]()


def scaled_random_(model: IResNet, seed: int) -> IResNet:
    """Seeded weights with trained-like scales (embedding norm ~10), so 1e-5 is a meaningful tolerance."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "num_batches_tracked":
                t.fill_(7)
            elif t.ndim >= 2:
                t.copy_(torch.randn(t.shape, generator=gen) / math.sqrt(t[0].numel()))
            elif "prelu" in name:
                t.copy_(0.05 + 0.3 * torch.rand(t.shape, generator=gen))
            elif leaf in ("running_var", "weight"):
                t.copy_(0.5 + 0.5 * torch.rand(t.shape, generator=gen))
            else:
                t.copy_(0.1 * torch.randn(t.shape, generator=gen))
    return model.eval()


def constant_state(model: IResNet) -> dict[str, torch.Tensor]:
    """A distinct value per entry, stored as a stride-0 view: files of any depth stay a few kB."""
    return {k: (torch.tensor(float(i)).expand(v.shape) if v.is_floating_point() else torch.tensor(i))
            for i, (k, v) in enumerate(model.state_dict().items())}


def assert_loaded(model: IResNet, state: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert list(got) == list(state)
    for key, value in state.items():
        assert torch.equal(got[key], value.to(got[key].dtype).expand(got[key].shape)), key


@pytest.fixture(scope="module")
def net50() -> IResNet:
    return scaled_random_(iresnet50(), seed=5)


@pytest.mark.parametrize("depth", [50, 100])
def test_layout_equals_reference_fixture(depth):
    header, rows = fixture_layout(depth)
    assert header.startswith("# IrvingMeng/MagFace@")
    ours = [(k, list(v.shape)) for k, v in meta_model(depth).state_dict().items()]
    assert ours == rows


@pytest.mark.parametrize("depth", [50, 100])
def test_parameter_count_equals_fixture(depth):
    header, rows = fixture_layout(depth)
    want = sum(math.prod(shape) for name, shape in rows if not name.endswith(BUFFERS))
    assert parameter_count(meta_model(depth)) == want
    assert f" {want} parameters" in header
    assert meta_model(depth).layers == DEPTHS[depth]


def test_reads_released_ddp_layout(tmp_path, net50):
    # magface_epoch_00025.pth: backbone under features.module., the margin head's weight beside it.
    state = net50.state_dict()
    path = tmp_path / "magface_epoch_00025.pth"
    torch.save({"epoch": 25, "arch": "iresnet50", "args": argparse.Namespace(embedding_size=512),
                "state_dict": {**{f"features.module.{k}": v for k, v in state.items()},
                               "fc.weight": torch.randn(1000, 512)}}, path)
    model = load_magface(path)
    assert not model.training and model.layers == DEPTHS[50]
    assert_loaded(model, state)


@pytest.mark.parametrize("depth", [50, 100])
def test_reads_dataparallel_layout_and_infers_depth(tmp_path, depth):
    # DataParallel training: module.features.<backbone>, MagLinear weight stored [512, classes].
    state = constant_state(meta_model(depth))
    path = tmp_path / "dp.pth"
    torch.save({"epoch": 1, "arch": f"iresnet{depth}",
                "state_dict": {**{f"module.features.{k}": v for k, v in state.items()},
                               "module.fc.weight": torch.zeros(512, 1000)}}, path)
    model = load_magface(path)
    assert model.layers == DEPTHS[depth]
    assert_loaded(model, state)
    assert load_magface(path, depth=depth).layers == DEPTHS[depth]


def test_reads_bare_state_dict_and_legacy_format(tmp_path):
    state = constant_state(meta_model(50))
    for name, zip_format in (("bare.pth", True), ("legacy.pth", False)):
        path = tmp_path / name
        torch.save(state, path, _use_new_zipfile_serialization=zip_format)
        assert_loaded(load_magface(path), state)


def test_missing_num_batches_tracked_is_tolerated(tmp_path):
    state = constant_state(meta_model(50))
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)
    model = load_magface(path)
    assert int(model.bn1.num_batches_tracked) == 0
    assert_loaded(model, {**state, **{k: torch.tensor(0) for k in state if k.endswith("num_batches_tracked")}})


def write_variant(tmp_path: Path, change) -> Path:
    state = constant_state(meta_model(50))
    change(state)
    path = tmp_path / "variant.pth"
    torch.save({"state_dict": {**{f"features.module.{k}": v for k, v in state.items()},
                               "fc.weight": torch.zeros(1000, 512)}}, path)
    return path


def refusal(path: Path, depth: int | None = None) -> str:
    with pytest.raises(ModelFileError) as info:
        load_magface(path, depth)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message[len(f"{path}: "):]


def test_refuses_missing_keys(tmp_path):
    def drop(state):
        for key in ("layer2.1.bn2.weight", "fc.bias", "features.running_mean", "bn2.bias", "prelu.weight"):
            del state[key]
    assert refusal(write_variant(tmp_path, drop)) == (
        "not an iResNet50 MagFace backbone: missing prelu.weight, layer2.1.bn2.weight, bn2.bias, "
        "fc.bias (+1 more)")


def test_refuses_wrong_shape_and_unexpected_key(tmp_path):
    def damage(state):
        state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
        state["layer1.0.extra"] = torch.zeros(3)
    assert refusal(write_variant(tmp_path, damage)) == (
        "not an iResNet50 MagFace backbone: unexpected layer1.0.extra; "
        "wrong shape layer1.0.conv1.weight [64, 64, 1, 1] (expected [64, 64, 3, 3])")


def test_refuses_unknown_and_mismatched_depth(tmp_path):
    path = tmp_path / "r34.pth"
    with torch.device("meta"):
        r34 = IResNet((3, 4, 6, 3))
    torch.save(constant_state(r34), path)
    assert refusal(path) == ("an iResNet with (3, 4, 6, 3) blocks per stage; "
                             "known depths are 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)")
    path50 = write_variant(tmp_path, lambda state: None)
    assert refusal(path50, 100) == ("asked for iResNet100 (3, 13, 30, 3) but the file has "
                                    "(3, 4, 14, 3) blocks per stage")
    assert refusal(path50, 34) == "iResNet depth 34 is not one of [50, 100]"


def test_refuses_non_checkpoints(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("hello\n")
    assert refusal(text) == "not a PyTorch checkpoint (neither a torch zip archive nor a pickle)"
    assert refusal(tmp_path / "absent.pth") == "file not found"
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], listed)
    assert refusal(listed) == "holds a list, not a checkpoint dict or state dict"
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2), "decoder.weight": torch.zeros(2)}}, other)
    assert refusal(other) == ("no iResNet stem conv1.weight under any of the prefixes features.module., "
                              "module.features., module., features. or none; keys start decoder.weight, "
                              "encoder.weight")
    pickled = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), pickled)
    assert refusal(pickled) == ("refuses to load: the pickle calls torch.nn.modules.linear.Linear; "
                                "only tensors and plain data are allowed")


def test_batched_equals_one_at_a_time(net50):
    x = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        batched = net50(x)
        single = torch.cat([net50(x[i:i + 1]) for i in range(2)])
    assert batched.shape == (2, 512)
    assert 5 < float(batched.norm(dim=1).min())          # a realistic scale, so atol means something
    assert (batched - single).abs().max().item() <= 1e-5
    assert (batched[0] - batched[1]).abs().max().item() > 1e-3   # the input matters


def test_forward_checks_input_shape(net50):
    with pytest.raises(AssertionError, match=r"x must be \[N, 3, 112, 112\], got \(1, 3, 96, 96\)"):
        net50(torch.zeros(1, 3, 96, 96))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # dynamo=False is the legacy exporter, on purpose
def test_onnx_export_matches_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    # One block per stage keeps it fast; the export path (dynamic batch, Flatten, PReLU) is the same.
    model = scaled_random_(IResNet((1, 1, 1, 1)), seed=2)
    path = tmp_path / "iresnet.onnx"
    torch.onnx.export(model, (torch.rand(2, 3, 112, 112),), str(path), dynamo=False,
                      input_names=["image"], output_names=["embedding"],
                      dynamic_axes={"image": {0: "N"}, "embedding": {0: "N"}}, opset_version=17)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = torch.rand(n, 3, 112, 112, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            want = model(x).numpy()
        got = session.run(["embedding"], {"image": x.numpy()})[0]
        assert got.shape == (n, 512)
        assert np.abs(got - want).max() <= 1e-4
