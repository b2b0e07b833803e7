"""Edit: w+ of each sample (the editor's `edit(ws, va) -> ws` toward the target VA) -> image."""

from __future__ import annotations

import torch


def sample_ws(editor, identity_ws: torch.Tensor, va: torch.Tensor, neutral: torch.Tensor,
              batch_size: int) -> torch.Tensor:
    """w+ per sample. identity_ws [N, L, D] (one row per sample, repeated per target),
    va [N, 2] targets, neutral [N] bool: neutral samples keep the unedited w (EmoStyle's delta
    is not zero at VA (0, 0), so "edit to the origin" would be a different image)."""
    n = identity_ws.shape[0]
    assert va.shape == (n, 2) and neutral.shape == (n,), (va.shape, neutral.shape)
    out = identity_ws.clone()
    edit_idx = torch.nonzero(~neutral).flatten()
    for start in range(0, len(edit_idx), batch_size):
        idx = edit_idx[start:start + batch_size]
        out[idx] = editor.edit(identity_ws[idx], va[idx])
    return out


def render(generator, ws: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Synthesis in batches -> [N, 3, R, R] float images on the model's device."""
    out = [generator.synthesis(ws[s:s + batch_size]) for s in range(0, ws.shape[0], batch_size)]
    img = torch.cat(out)
    assert img.shape[1:] == (3, generator.resolution, generator.resolution), img.shape
    return img
