"""Edit and render one batch: w+ of each sample (the editor's `edit(ws, va) -> ws` toward the
target VA where the sample is edited) -> synthesis -> float images. The build's worker, the
correction loop, the calibration pilot and `models check` all render through this function."""

from __future__ import annotations

import torch


def render_batch(generator, editor, ws: torch.Tensor, va: torch.Tensor, edited: torch.Tensor) -> torch.Tensor:
    """One batch of samples -> float [N, 3, R, R] images on the model's device.

    ws      [N, L, D]  each sample's identity w+ (unedited)
    va      [E, 2]     targets of the edited samples, in row order (E = edited.sum())
    edited  [N] bool   False keeps the unedited w: neutral samples are the identity itself
                       (EmoStyle's delta is not zero at VA (0, 0), so an edit to the origin
                       would be a different image)
    """
    n = ws.shape[0]
    assert ws.ndim == 3 and edited.shape == (n,) and va.ndim == 2 and va.shape[1] == 2, (ws.shape, edited.shape,
                                                                                         va.shape)
    if va.shape[0]:   # a host-side count: no device sync to learn whether anything is edited
        ws = ws.clone()
        ws[edited] = editor.edit(ws[edited], va)
    img = generator.synthesis(ws).float()
    assert img.shape == (n, 3, generator.resolution, generator.resolution), img.shape
    return img
