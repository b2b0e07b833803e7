"""EmoStyle editor: checkpoint layout, batched evaluation equals the per-layer loop, built-in stand-in."""

from __future__ import annotations

import copy

import torch

from synthfer.models.builtin import builtin_editor, builtin_generator
from synthfer.models.emostyle import EmoMappingWplus, editor_param_count
from synthfer.models.stylegan2 import to_uint8


def _inputs(n: int, n_latent: int, w_dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, n_latent, w_dim, generator=g), torch.rand(n, 2, generator=g) * 2 - 1


def test_full_size_layout_and_count():
    with torch.device("meta"):
        editor = EmoMappingWplus()
    assert sum(p.numel() for p in editor.parameters()) == 73_214_112
    assert editor_param_count() == 73_214_112
    sd = editor.state_dict()
    expected = {f"emotion_enc.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
    expected |= {f"latent_net.{i}.{j}.{p}" for i in range(18) for j in (0, 2, 4, 6) for p in ("weight", "bias")}
    assert set(sd) == expected
    assert sd["latent_net.0.0.weight"].shape == (2048, 576)
    assert sd["latent_net.17.6.weight"].shape == (512, 512)
    assert sd["emotion_enc.2.weight"].shape == (64, 32)


def test_batched_equals_loop():
    editor = builtin_editor(0)
    ws, va = _inputs(7, 10, 128)
    with torch.no_grad():
        fast, slow = editor(ws, va), editor.forward_loop(ws, va)
    assert fast.shape == ws.shape
    assert (fast - slow).abs().max().item() < 1e-5
    # One sample at a time gives the batch's rows.
    with torch.no_grad():
        single = torch.cat([editor(ws[i : i + 1], va[i : i + 1]) for i in range(len(ws))])
    assert (single - fast).abs().max().item() < 1e-5


def test_default_init_18_layers_batched_equals_loop():
    torch.manual_seed(0)
    editor = EmoMappingWplus(n_latent=18, w_dim=64, emo_dim=16, emo_hidden=8, hidden=(96, 48, 32))
    ws, va = _inputs(3, 18, 64, seed=1)
    with torch.no_grad():
        assert (editor(ws, va) - editor.forward_loop(ws, va)).abs().max().item() < 1e-5


def test_stack_cache_follows_weight_changes():
    editor = builtin_editor(0)
    ws, va = _inputs(2, 10, 128)
    with torch.no_grad():
        before = editor(ws, va)
        editor.load_state_dict(builtin_editor(1).state_dict())  # in-place copies
        after = editor(ws, va)
        assert torch.allclose(after, editor.forward_loop(ws, va), atol=1e-5)
        assert not torch.allclose(before, after)
        editor.latent_net[3][4].bias.add_(1.0)
        assert torch.allclose(editor(ws, va), editor.forward_loop(ws, va), atol=1e-5)
        doubled = editor.double()  # parameters replaced
        out64 = doubled(ws.double(), va.double())
        assert out64.dtype == torch.float64
        assert torch.allclose(out64, doubled.forward_loop(ws.double(), va.double()), atol=1e-10)
    assert copy.deepcopy(editor)._stack is None


def test_gradients_flow_through_batched_path():
    editor = builtin_editor(0)
    ws, va = _inputs(2, 10, 128)
    editor(ws, va).square().sum().backward()
    assert editor.latent_net[5][0].weight.grad is not None
    assert editor.emotion_enc[0].weight.grad is not None


def test_builtin_editor_deterministic_and_visible():
    rng = torch.get_rng_state()
    a = builtin_editor(0)
    assert torch.equal(rng, torch.get_rng_state())
    sa, sb = a.state_dict(), builtin_editor(0).state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["latent_net.0.0.weight"], builtin_editor(1).state_dict()["latent_net.0.0.weight"])

    gen = builtin_generator(0)
    z = torch.randn(4, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ws = gen.mapping(z, truncation_psi=0.7)
        happy = a(ws, torch.tensor([[0.9, 0.6]]).repeat(4, 1))
        sad = a(ws, torch.tensor([[-0.8, -0.4]]).repeat(4, 1))
        assert 0.2 < happy.std() / ws.std() < 2  # same order as w
        diff = (to_uint8(gen.synthesis(ws + happy)).float() - to_uint8(gen.synthesis(ws + sad)).float()).abs()
    assert diff.mean() > 5  # VA edits visibly change the image
