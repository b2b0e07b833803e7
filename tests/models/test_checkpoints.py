"""Weight files in every real format: detection by content, safe loading, inspect and convert.

Files are written by tests/checkpoint_files.py (imitations of the real formats, no third-party
code) from one random generator, one random editor and the 64 px reference fixture.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from synthfer.errors import ModelFileError
from synthfer.models import checkpoints as ck
from synthfer.models.emostyle import EmoMappingWplus
from synthfer.models.stylegan2 import Generator
from tests import checkpoint_files as cf

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
WEIGHTS = FIXTURES / "stylegan2-ada-64.safetensors"
REFERENCE = FIXTURES / "stylegan2-ada-64-reference.npz"
CASES = {"psi07": (0.7, None), "psi10": (1.0, None), "cut": (0.5, 4)}

# name -> (writer, expected detect_format); all hold the same small random generator.
GENERATOR_FILES = {
    "nvlabs.pkl": "nvlabs-pickle",
    "nvlabs-g-ema-only-proto2.pkl": "nvlabs-pickle",
    "rosinality.pt": "torch-zip",
    "rosinality-legacy-no-blur.pt": "torch-legacy",
    "rosinality-train.pt": "torch-zip",
    "rosinality-train-legacy.pt": "torch-legacy",
    "nvlabs.safetensors": "safetensors",
    "nvlabs-no-kwargs.safetensors": "safetensors",
    "nvlabs-state.pt": "torch-zip",
    "converted.safetensors": "safetensors",
}
EDITOR_FILES = {
    "emostyle.pt": "torch-zip",
    "emostyle-bare.pt": "torch-zip",
    "emostyle-legacy.pt": "torch-legacy",
    "emostyle-converted.safetensors": "safetensors",
}
NO_LATENT_AVG = {"rosinality-train.pt", "rosinality-train-legacy.pt"}


def _write_all(folder: Path, gen: Generator, editor: EmoMappingWplus, base: int, cap: int) -> dict[str, Path]:
    nv, kwargs = cf.to_nvlabs_state(gen), cf.nvlabs_init_kwargs(gen, base, cap)
    p = {name: folder / name for name in (*GENERATOR_FILES, *EDITOR_FILES)}
    cf.write_nvlabs_pickle(p["nvlabs.pkl"], nv, kwargs)
    cf.write_nvlabs_pickle(p["nvlabs-g-ema-only-proto2.pkl"], nv, kwargs, only_g_ema=True, protocol=2)
    cf.write_rosinality_pt(p["rosinality.pt"], gen)
    cf.write_rosinality_pt(p["rosinality-legacy-no-blur.pt"], gen, legacy=True, drop_kernels=True)
    cf.write_rosinality_training(p["rosinality-train.pt"], gen)
    cf.write_rosinality_training(p["rosinality-train-legacy.pt"], gen, legacy=True)
    cf.write_nvlabs_safetensors(p["nvlabs.safetensors"], nv, kwargs)
    cf.write_nvlabs_safetensors(p["nvlabs-no-kwargs.safetensors"], nv, None)
    torch.save(nv, p["nvlabs-state.pt"])
    ck.convert(p["nvlabs.pkl"], p["converted.safetensors"])
    cf.write_emostyle_pt(p["emostyle.pt"], editor)
    cf.write_emostyle_pt(p["emostyle-bare.pt"], editor, bare=True)
    cf.write_emostyle_pt(p["emostyle-legacy.pt"], editor, legacy=True)
    ck.convert(p["emostyle.pt"], p["emostyle-converted.safetensors"])
    return p


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    gen, editor = cf.random_generator(0), cf.random_editor(0)
    files = _write_all(tmp_path_factory.mktemp("small"), gen, editor, cf.SMALL["channel_base"], cf.SMALL["channel_max"])
    return gen, editor, files


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory):
    gen = ck.load_nvlabs_safetensors(WEIGHTS)
    files = _write_all(tmp_path_factory.mktemp("fixture"), gen, cf.random_editor(1, n_latent=10, w_dim=128), 2048, 64)
    with np.load(REFERENCE) as data:
        ref = {k: data[k] for k in data.files}
    return files, ref


def _images(gen: Generator, psi: float = 0.7, cutoff: int | None = None, seed: int = 5) -> torch.Tensor:
    z = torch.randn(4, gen.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return gen(z, truncation_psi=psi, truncation_cutoff=cutoff)


def _error(call, *args) -> str:
    with pytest.raises(ModelFileError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


# ---------------------------------------------------------------- every format, one network


@pytest.mark.parametrize("name", [*GENERATOR_FILES, *EDITOR_FILES])
def test_detect_format_by_content(small, name, tmp_path):
    path = small[2][name]
    expected = {**GENERATOR_FILES, **EDITOR_FILES}[name]
    assert ck.detect_format(path) == expected
    renamed = tmp_path / "weights.onnx"  # the extension is never consulted
    renamed.write_bytes(path.read_bytes())
    assert ck.detect_format(renamed) == expected


@pytest.mark.parametrize("name", [n for n in GENERATOR_FILES if n not in NO_LATENT_AVG])
def test_every_generator_format_gives_the_same_images(small, name):
    gen, _, files = small
    rng_before = torch.get_rng_state()
    loaded = ck.load_generator(files[name])
    assert torch.equal(torch.get_rng_state(), rng_before)  # loading leaves torch's global RNG alone
    assert not loaded.training and loaded.resolution == 32 and loaded.n_latent == 8
    assert (_images(loaded) - _images(gen)).abs().max().item() <= 1e-5
    want = gen.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in loaded.state_dict().items())


@pytest.mark.parametrize("name", sorted(NO_LATENT_AVG))
def test_missing_latent_avg_is_estimated_deterministically(small, name):
    gen, _, files = small
    loaded = ck.load_generator(files[name])
    assert (_images(loaded, psi=1.0) - _images(gen, psi=1.0)).abs().max().item() <= 1e-5
    assert torch.equal(loaded.latent_avg, gen.mean_w(4096, 0))
    assert torch.equal(ck.load_generator(files[name]).latent_avg, loaded.latent_avg)
    assert not torch.equal(loaded.latent_avg, gen.latent_avg)
    assert ck.inspect(files[name])["latent_avg"] == "estimated"


@pytest.mark.parametrize("name", list(EDITOR_FILES))
def test_every_editor_format_loads_the_same_editor(small, name):
    _, editor, files = small
    loaded = ck.load_editor(files[name])
    assert (loaded.n_latent, loaded.w_dim, loaded.emo_dim, loaded.hidden) == (8, 32, 16, (64, 32, 32))
    want = editor.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in loaded.state_dict().items())


@pytest.mark.parametrize("protocol", [3, 5])
def test_nvlabs_pickle_protocols(small, tmp_path, protocol):
    gen = small[0]
    nv, kwargs = _small_nvlabs(gen)
    path = cf.write_nvlabs_pickle(tmp_path / "g.pkl", nv, kwargs, protocol=protocol)
    loaded = ck.load_generator(path)
    assert all(torch.equal(v, gen.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_safetensors_header_length_may_look_like_a_pickle(tmp_path):
    from safetensors.torch import save

    data = next(d for pad in range(1500) if (d := save({"x": torch.zeros(1)}, {"pad": "p" * pad}))[0] == 0x80
                and 2 <= d[1] <= 5)
    path = tmp_path / "x.safetensors"
    path.write_bytes(data)
    assert ck.detect_format(path) == "safetensors"


def test_generator_and_editor_are_not_interchangeable(small):
    files = small[2]
    assert _error(ck.load_generator, files["emostyle.pt"]).endswith("an EmoStyle editor, not a StyleGAN2 generator")
    assert _error(ck.load_editor, files["rosinality.pt"]).endswith("a StyleGAN2 generator, not an EmoStyle editor")


# ---------------------------------------------------------------- the reference fixture in every format


@pytest.mark.parametrize("name", list(GENERATOR_FILES))
def test_fixture_in_every_format_matches_official_images(fixture_files, name):
    files, ref = fixture_files
    gen = ck.load_generator(files[name])
    z = torch.from_numpy(ref["z"])
    # Without a stored w_avg, truncation uses the estimate: compare untruncated images there.
    cases = ["psi10"] if name in NO_LATENT_AVG else list(CASES) if name == "nvlabs.pkl" else ["psi07"]
    for case in cases:
        psi, cutoff = CASES[case]
        with torch.no_grad():
            img = gen(z, truncation_psi=psi, truncation_cutoff=cutoff)
        assert (img - torch.from_numpy(ref[f"img_{case}"])).abs().max().item() < 1e-4, case


def test_fixture_layout_round_trip_is_exact():
    tensors, _ = ck.read_safetensors(WEIGHTS)
    back = cf.to_nvlabs_state(ck.load_nvlabs_safetensors(WEIGHTS))
    assert set(back) == set(tensors) and all(torch.equal(back[k], tensors[k]) for k in tensors)


# ---------------------------------------------------------------- files that must not run anything


class _Command:
    """Unpickles as a call of os.system: pickle records it as posix.system on Linux."""

    def __init__(self, marker: Path):
        self.cmd = f"touch {marker}"

    def __reduce__(self):
        return os.system, (self.cmd,)


class _StorageBlob:
    """Unpickles as torch.storage._load_from_bytes(blob) with a blob that would run a command."""

    def __init__(self, marker: Path):
        buf = io.BytesIO()
        torch.save(_Command(marker), buf, _use_new_zipfile_serialization=False)
        self.blob = buf.getvalue()

    def __reduce__(self):
        return torch.storage._load_from_bytes, (self.blob,)


def _small_nvlabs(gen: Generator) -> tuple[dict, dict]:
    return cf.to_nvlabs_state(gen), cf.nvlabs_init_kwargs(gen, cf.SMALL["channel_base"], cf.SMALL["channel_max"])


@pytest.mark.parametrize("variant", ["top-level", "hand-written", "inside-meta", "storage-blob", "torch-zip"])
def test_pickle_that_would_run_a_command_is_refused(small, tmp_path, variant):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    name = "posix.system"
    if variant == "top-level":
        path.write_bytes(pickle.dumps({"G_ema": _Command(marker)}, protocol=4))
    elif variant == "hand-written":
        path.write_bytes(b"\x80\x02cos\nsystem\nX" + len(f"touch {marker}").to_bytes(4, "little")
                         + f"touch {marker}".encode() + b"\x85R.")
        name = "os.system"
    elif variant == "inside-meta":
        nv, kwargs = _small_nvlabs(small[0])
        cf.write_nvlabs_pickle(path, nv, kwargs, g_ema_attrs={"extra": _Command(marker)})
    elif variant == "storage-blob":
        path.write_bytes(pickle.dumps({"G_ema": _StorageBlob(marker)}, protocol=4))
    else:
        torch.save({"g_ema": _Command(marker)}, path)
    message = _error(ck.load_generator, path)
    assert message == f"{path}: refuses to load: the pickle calls {name}; only tensors and plain data are allowed"
    assert not marker.exists()


def test_module_source_in_a_pickle_is_never_executed(small, tmp_path):
    marker = tmp_path / "marker"
    nv, kwargs = _small_nvlabs(small[0])
    path = cf.write_nvlabs_pickle(tmp_path / "src.pkl", nv, kwargs,
                                  module_src=f"open({str(marker)!r}, 'w').close()\n")
    ck.load_generator(path)
    assert not marker.exists()


def test_other_globals_are_refused(tmp_path):
    path = tmp_path / "eval.pkl"
    path.write_bytes(b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R.")
    assert "the pickle calls builtins.eval;" in _error(ck.load_generator, path)
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.")
    assert "_codecs.encode with 'rot13'" in _error(ck.load_generator, path)


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
def test_tensor_views_past_their_storage_are_refused(tmp_path):
    class Overreach:  # a 2-element storage viewed as 1000 elements
        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, (torch.zeros(2).storage(), 0, (1000,), (1,), False, {})

    path = tmp_path / "overreach.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Overreach()}, protocol=4))
    assert "past the end of its storage" in _error(ck.load_generator, path)


# ---------------------------------------------------------------- damaged and foreign files


@pytest.mark.parametrize("name", ["nvlabs.pkl", "rosinality.pt", "rosinality-legacy-no-blur.pt",
                                  "nvlabs.safetensors", "converted.safetensors", "emostyle.pt"])
def test_truncated_files_are_refused(small, tmp_path, name):
    data = small[2][name].read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    message = _error(ck.load_generator, path)
    assert message.startswith(f"{path}: ") and ("truncated" in message or "damaged" in message)
    assert _error(ck.inspect, path) == message


def test_pickle_cut_after_a_stop_byte_is_refused(small, tmp_path):
    data = small[2]["nvlabs.pkl"].read_bytes()
    cut = data.index(b".", len(data) // 2) + 1  # passes the end-mark check; the unpickler finds the cut
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[:cut])
    message = _error(ck.load_generator, path)
    assert message.startswith(f"{path}: ") and ("truncated" in message or "damaged" in message)


@pytest.mark.parametrize("content, expected", [
    (b"", "empty file"),
    (b"name: recipe\nseed: 7\n" * 20, "not a model checkpoint (unrecognised content)"),
    (b"\x89PNG\r\n\x1a\n" + bytes(200), "not a model checkpoint (unrecognised content)"),
    (b"PK\x03\x04" + bytes(100), "truncated or damaged (a zip archive without its index)"),
])
def test_non_checkpoints_are_refused(tmp_path, content, expected):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    assert _error(ck.detect_format, path) == f"{path}: {expected}"
    assert _error(ck.load_generator, path) == f"{path}: {expected}"
    assert _error(ck.load_editor, path) == f"{path}: {expected}"


def test_missing_file_and_foreign_torch_files(tmp_path):
    assert _error(ck.load_generator, tmp_path / "nope.pt") == f"{tmp_path / 'nope.pt'}: file not found"
    assert _error(ck.sha256_file, tmp_path / "nope.pt") == f"{tmp_path / 'nope.pt'}: file not found"
    assert _error(ck.inspect, tmp_path) == f"{tmp_path}: is a directory, not a model file"
    path = tmp_path / "other.pt"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}, "epoch": 1}, path)
    assert "neither a StyleGAN2 generator nor an EmoStyle editor" in _error(ck.load_generator, path)
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    assert "neither a StyleGAN2 generator nor an EmoStyle editor" in _error(ck.load_generator, path)
    no_g_ema = tmp_path / "no-g-ema.pkl"
    no_g_ema.write_bytes(pickle.dumps({"G": 1, "D": 2}, protocol=4))
    assert _error(ck.load_generator, no_g_ema) == (f"{no_g_ema}: a pickle without a G_ema network; "
                                                   f"not an NVlabs generator pickle")


# ---------------------------------------------------------------- networks synthfer does not run


def test_stylegan3_is_refused(small, tmp_path):
    nv, kwargs = _small_nvlabs(small[0])
    sg3 = {k: v for k, v in nv.items() if k.startswith("mapping.")}
    sg3.update({"synthesis.input.affine.weight": torch.zeros(4, 32), "synthesis.input.freqs": torch.zeros(32, 2),
                "synthesis.L0_36_512.weight": torch.zeros(32, 32, 3, 3)})
    expected = "a StyleGAN3 (T/R) generator; synthfer runs StyleGAN2 only"
    path = cf.write_nvlabs_pickle(tmp_path / "sg3.pkl", sg3, kwargs, only_g_ema=True)
    assert _error(ck.load_generator, path) == f"{path}: {expected}"
    path = cf.write_nvlabs_safetensors(tmp_path / "sg3.safetensors", sg3, None)
    assert _error(ck.inspect, path) == f"{path}: {expected}"


def test_conditional_generator_is_refused(small, tmp_path):
    nv, kwargs = _small_nvlabs(small[0])
    nv = {**nv, "mapping.embed.weight": torch.zeros(32, 10), "mapping.embed.bias": torch.zeros(32)}
    expected = "a conditional generator (c_dim 10); synthfer needs an unconditional one"
    path = cf.write_nvlabs_pickle(tmp_path / "cond.pkl", nv, {**kwargs, "c_dim": 10})
    assert _error(ck.load_generator, path) == f"{path}: {expected}"
    path = cf.write_nvlabs_safetensors(tmp_path / "cond.safetensors", nv, None)  # c_dim from the shapes
    assert _error(ck.load_generator, path) == f"{path}: {expected}"


def test_mismatched_weights_are_described(small, tmp_path):
    gen, editor, _ = small
    sd = cf.rosinality_state(gen)
    sd["convs.1.conv.weight"] = torch.zeros(1, 32, 31, 3, 3)
    path = tmp_path / "bad.pt"
    torch.save({"g_ema": sd, "latent_avg": gen.latent_avg}, path)
    assert _error(ck.load_generator, path) == (f"{path}: weights do not fit a StyleGAN2 generator: "
                                               f"convs.1.conv.weight has shape (1, 32, 31, 3, 3), "
                                               f"expected (1, 32, 32, 3, 3)")
    esd = dict(editor.state_dict())
    del esd["latent_net.7.6.bias"]
    torch.save({"emo_mapping_state_dict": esd, "epoch": 1}, path)
    assert _error(ck.load_editor, path) == f"{path}: weights do not fit an EmoStyle editor: missing latent_net.7.6.bias"


# ---------------------------------------------------------------- inspect and convert


def test_inspect_reports_the_file(small):
    gen, editor, files = small
    info = ck.inspect(files["nvlabs.pkl"])
    assert info["format"] == "nvlabs-pickle" and info["layout"] == "nvlabs"
    assert info["architecture"] == "stylegan2-generator" and info["latent_avg"] == "stored"
    assert (info["resolution"], info["n_latent"], info["w_dim"], info["z_dim"], info["n_mlp"]) == (32, 8, 32, 32, 8)
    assert info["channels"] == {4: 32, 8: 32, 16: 32, 32: 16}
    assert info["parameters"] == sum(p.numel() for p in gen.parameters())
    assert info["sha256"] == hashlib.sha256(files["nvlabs.pkl"].read_bytes()).hexdigest()
    assert info["size_bytes"] == files["nvlabs.pkl"].stat().st_size
    assert ck.generator_config(gen) == info["config"]

    info = ck.inspect(files["converted.safetensors"])
    assert info["layout"] == "synthfer" and info["source_format"] == "nvlabs-pickle"
    assert info["source_sha256"] == ck.sha256_file(files["nvlabs.pkl"])

    info = ck.inspect(files["emostyle.pt"])
    assert info["architecture"] == "emostyle-editor" and info["latent_avg"] is None
    assert (info["n_latent"], info["w_dim"], info["resolution"], info["z_dim"]) == (8, 32, None, None)
    assert info["parameters"] == sum(p.numel() for p in editor.parameters())


@pytest.mark.parametrize("name", ["nvlabs.pkl", "rosinality-train.pt", "rosinality-legacy-no-blur.pt", "emostyle.pt"])
def test_convert_round_trip_is_bit_identical(small, tmp_path, name):
    src = small[2][name]
    dst = tmp_path / "out.safetensors"
    result = ck.convert(src, dst)
    assert [p.name for p in tmp_path.iterdir()] == ["out.safetensors"]  # no temporary file left
    assert result["sha256"] == ck.sha256_file(dst) and result["source_sha256"] == ck.sha256_file(src)
    before, _ = ck.load_checkpoint(src)
    after, _ = ck.load_checkpoint(dst)
    assert type(after) is type(before)
    a, b = before.state_dict(), after.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    first = dst.read_bytes()
    ck.convert(src, dst)  # same source, same bytes
    assert dst.read_bytes() == first
    converted, metadata = ck.read_safetensors(dst)
    assert metadata["format"] in (ck.GENERATOR_FORMAT, ck.EDITOR_FORMAT)
    assert metadata.get("latent_avg") == ("estimated" if name in NO_LATENT_AVG else None if "emo" in name
                                          else "stored")
