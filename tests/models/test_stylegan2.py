"""StyleGAN2 generator: numerics against NVIDIA's official forward pass, layout, conversion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synthfer.models.builtin import builtin_generator
from synthfer.models.checkpoints import (
    fill_constant_buffers,
    generator_from_nvlabs_kwargs,
    load_nvlabs_safetensors,
    nvlabs_to_rosinality,
    read_safetensors,
)
from synthfer.models.stylegan2 import Generator, channels_for, to_uint8

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
WEIGHTS = FIXTURES / "stylegan2-ada-64.safetensors"
REFERENCE = FIXTURES / "stylegan2-ada-64-reference.npz"
CASES = {"psi07": (0.7, None), "psi10": (1.0, None), "cut": (0.5, 4)}


@pytest.fixture(scope="module")
def gen() -> Generator:
    return load_nvlabs_safetensors(WEIGHTS)


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as data:
        return {k: data[k] for k in data.files}


def test_reference_documents_the_cases(ref):
    # Guards against the table above drifting from the fixture's own record of its calls.
    assert np.allclose(ref["truncation_psi"], [CASES[c][0] for c in ("psi07", "psi10", "cut")])
    assert list(ref["truncation_cutoff"]) == [-1 if CASES[c][1] is None else CASES[c][1] for c in ("psi07", "psi10", "cut")]


@pytest.mark.parametrize("case", list(CASES))
def test_matches_official_forward(gen, ref, case):
    psi, cutoff = CASES[case]
    z = torch.from_numpy(ref["z"])
    with torch.no_grad():
        ws = gen.mapping(z, truncation_psi=psi, truncation_cutoff=cutoff)
        img = gen.synthesis(ws)
        img_from_ref_ws = gen.synthesis(torch.from_numpy(ref[f"ws_{case}"]))
    assert ws.shape == (6, 10, 128) and img.shape == (6, 3, 64, 64)
    assert (ws - torch.from_numpy(ref[f"ws_{case}"])).abs().max().item() < 1e-5
    assert (img - torch.from_numpy(ref[f"img_{case}"])).abs().max().item() < 1e-4
    # Synthesis alone, fed the official w's, so a mapping error cannot mask a synthesis one.
    assert (img_from_ref_ws - torch.from_numpy(ref[f"img_{case}"])).abs().max().item() < 1e-4
    assert torch.equal(gen(z, truncation_psi=psi, truncation_cutoff=cutoff), img)


def test_cutoff_truncates_only_leading_rows(gen, ref):
    z = torch.from_numpy(ref["z"])
    with torch.no_grad():
        full = gen.mapping(z)
        cut = gen.mapping(z, truncation_psi=0.5, truncation_cutoff=4)
    assert torch.equal(cut[:, 4:], full[:, 4:])
    assert not torch.allclose(cut[:, :4], full[:, :4])
    assert torch.equal(full, full[:, :1].expand_as(full))


def test_batch_equals_one_at_a_time(gen, ref):
    ws = torch.from_numpy(ref["ws_psi07"])
    with torch.no_grad():
        batch = gen.synthesis(ws)
        single = torch.cat([gen.synthesis(ws[i : i + 1]) for i in range(len(ws))])
    # Fixture images reach |11|; the official code itself differs by up to 1.5e-5 here.
    assert (batch - single).abs().max().item() < 2e-5

    small = builtin_generator(0)
    z = torch.randn(8, small.z_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        batch = small(z, truncation_psi=0.7)
        single = torch.cat([small(z[i : i + 1], truncation_psi=0.7) for i in range(len(z))])
    assert (batch - single).abs().max().item() < 1e-5


def rosinality_keys(resolution: int) -> set[str]:
    """Expected key set, written out independently of the module code."""
    n_blocks = int(np.log2(resolution)) - 2
    keys = {"latent_avg", "input.input"}
    keys |= {f"style.{i}.{p}" for i in range(1, 9) for p in ("weight", "bias")}
    styled = ("conv.weight", "conv.modulation.weight", "conv.modulation.bias", "noise.weight", "activate.bias")
    rgb = ("bias", "conv.weight", "conv.modulation.weight", "conv.modulation.bias")
    keys |= {f"conv1.{s}" for s in styled} | {f"to_rgb1.{s}" for s in rgb}
    for k in range(2 * n_blocks):
        keys |= {f"convs.{k}.{s}" for s in styled}
        if k % 2 == 0:
            keys.add(f"convs.{k}.conv.blur.kernel")
    for j in range(n_blocks):
        keys |= {f"to_rgbs.{j}.{s}" for s in rgb} | {f"to_rgbs.{j}.upsample.kernel"}
    keys |= {f"noises.noise_{i}" for i in range(2 * n_blocks + 1)}
    return keys


def test_state_dict_layout(gen):
    sd = gen.state_dict()
    assert set(sd) == rosinality_keys(64)
    assert gen.n_latent == 10 and gen.resolution == 64 and gen.z_dim == 128 and gen.w_dim == 128
    assert sd["input.input"].shape == (1, 64, 4, 4)
    assert sd["conv1.conv.weight"].shape == (1, 64, 64, 3, 3)
    assert sd["convs.6.conv.weight"].shape == (1, 32, 64, 3, 3)
    assert sd["to_rgbs.3.conv.weight"].shape == (1, 3, 32, 1, 1)
    assert sd["to_rgb1.bias"].shape == (1, 3, 1, 1)
    assert sd["conv1.noise.weight"].shape == (1,)
    assert [sd[f"noises.noise_{i}"].shape[-1] for i in range(9)] == [4, 8, 8, 16, 16, 32, 32, 64, 64]
    assert sd["latent_avg"].shape == (128,)


def test_config_f_1024_on_meta():
    with torch.device("meta"):
        g = Generator(1024, z_dim=512, w_dim=512, channels=channels_for(1024, channel_multiplier=2))
    assert sum(p.numel() for p in g.parameters()) == 30_370_060  # buffers (noises, kernels) excluded
    assert set(g.state_dict()) == rosinality_keys(1024)
    assert len(g.state_dict()) == 171 + 1  # rosinality's 171 plus latent_avg
    assert g.n_latent == 18


def test_channel_rules():
    assert channels_for(1024, channel_multiplier=2) == channels_for(1024, channel_base=32768)
    assert channels_for(64, channel_base=2048, channel_max=64) == {4: 64, 8: 64, 16: 64, 32: 64, 64: 32}
    assert channels_for(256, channel_multiplier=1) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64}
    with pytest.raises(ValueError):
        channels_for(100)
    with pytest.raises(ValueError):
        channels_for(64, channel_base=2048, channel_multiplier=2)


def test_conversion_shapes_and_refusals():
    state, meta = read_safetensors(WEIGHTS)
    assert meta["format"].startswith("nvlabs-stylegan2-ada")
    conv = nvlabs_to_rosinality(state)
    assert conv["input.input"].shape == (1, 64, 4, 4)
    assert conv["noises.noise_8"].shape == (1, 1, 64, 64)
    assert torch.equal(conv["latent_avg"], state["mapping.w_avg"])
    assert torch.equal(conv["convs.3.noise.weight"], state["synthesis.b16.conv1.noise_strength"].reshape(1))
    assert torch.equal(conv["to_rgbs.0.bias"].flatten(), state["synthesis.b8.torgb.bias"])
    assert not any("kernel" in k for k in conv)

    with pytest.raises(ValueError, match="StyleGAN3"):
        nvlabs_to_rosinality({**state, "synthesis.input.affine.weight": torch.zeros(4, 4)})
    with pytest.raises(ValueError, match="unexpected"):
        nvlabs_to_rosinality({**state, "mapping.embed.weight": torch.zeros(4, 4)})
    bad = dict(state)
    bad["synthesis.b8.conv0.resample_filter"] = torch.ones(4, 4) / 16
    with pytest.raises(ValueError, match="resample filter"):
        nvlabs_to_rosinality(bad)
    with pytest.raises(ValueError, match="c_dim"):
        generator_from_nvlabs_kwargs({**json.loads(meta["init_kwargs"]), "c_dim": 10})


def test_rosinality_dict_without_kernels_loads(gen):
    # Some rosinality copies lack the constant blur buffers: they are rebuilt from the module.
    sd = {k: v for k, v in gen.state_dict().items() if not k.endswith("kernel")}
    fresh = Generator(64, 128, 128, channels=gen.channels)
    fresh.load_state_dict(fill_constant_buffers(fresh, sd), strict=True)
    z = torch.randn(2, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(fresh(z), gen(z))


def test_conv_clamp_passes_through(gen, ref):
    kwargs = json.loads(read_safetensors(WEIGHTS)[1]["init_kwargs"])
    kwargs["synthesis_kwargs"]["conv_clamp"] = 1.0
    clamped = generator_from_nvlabs_kwargs(kwargs)
    clamped.load_state_dict(gen.state_dict())
    ws = torch.from_numpy(ref["ws_psi07"][:2])
    with torch.no_grad():
        assert not torch.allclose(clamped.synthesis(ws), gen.synthesis(ws))


def test_to_uint8():
    img = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, 2.0]).reshape(1, 1, 1, 6).repeat(1, 3, 1, 1)
    out = to_uint8(img)
    assert out.dtype == torch.uint8 and out.shape == (1, 1, 6, 3)
    assert out[0, 0, :, 0].tolist() == [0, 0, 128, 191, 255, 255]


def test_builtin_generator_deterministic():
    rng = torch.get_rng_state()
    a = builtin_generator(0)
    b = builtin_generator(0)
    assert torch.equal(rng, torch.get_rng_state())  # global RNG untouched
    sa, sb, sc = a.state_dict(), b.state_dict(), builtin_generator(1).state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["style.1.weight"], sc["style.1.weight"])
    z = torch.randn(8, 128, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        img = a(z, truncation_psi=0.7)
        assert torch.equal(img, b(z, truncation_psi=0.7))
    assert img.abs().max() < 4 and 0.15 < img.std() < 0.8
    u = to_uint8(img)
    assert ((u == 0) | (u == 255)).float().mean() < 0.1  # not saturated
