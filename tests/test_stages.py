"""Stage-level batching: the batch size must not change a sample beyond float noise."""

import torch

from synthfer.models.builtin import builtin_editor, builtin_generator
from synthfer.stages import edit, identities


def test_batched_generation_equals_one_at_a_time():
    g, e = builtin_generator(0), builtin_editor(0)
    seeds = [11, 12, 13]
    va = torch.tensor([[0.0, 0.0], [0.9, 0.1], [-0.5, -0.5], [0.2, 0.8], [0.0, 0.0], [-1.0, 0.0]])
    neutral = torch.tensor([True, False, False, False, True, False])
    rows = torch.tensor([0, 0, 1, 1, 2, 2])
    with torch.inference_mode():
        out = {}
        for bs in (1, 16):
            ws_id = identities.identity_ws(g, seeds, 0.7, None, torch.device("cpu"), bs)
            ws = edit.sample_ws(e, ws_id[rows], va, neutral, bs)
            out[bs] = (ws_id, ws, edit.render(g, ws, bs))
    for a, b in zip(out[1], out[16]):
        assert (a - b).abs().max().item() <= 1e-5
    ws_id, ws, _ = out[16]
    assert torch.equal(ws[0], ws_id[0]) and torch.equal(ws[4], ws_id[2])   # neutral is the unedited w
    assert not torch.allclose(ws[1], ws_id[0])


def test_identity_latent_is_independent_of_neighbours():
    g = builtin_generator(0)
    with torch.inference_mode():
        alone = identities.identity_ws(g, [42], 0.7, None, torch.device("cpu"), 4)
        among = identities.identity_ws(g, [7, 42, 9], 0.7, None, torch.device("cpu"), 4)
    assert (alone[0] - among[1]).abs().max().item() <= 1e-5
