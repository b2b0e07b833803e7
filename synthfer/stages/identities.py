"""Identities: per-identity seed -> z -> w (truncated). The neutral sample is this w, unedited."""

from __future__ import annotations

import numpy as np
import torch


def latent_z(seed: int, z_dim: int) -> np.ndarray:
    """Identity's z from its own generator: batch size, shard order and worker count change nothing.

    numpy's PCG64 normal stream is stable across releases and platforms, unlike device RNGs.
    """
    return np.random.default_rng(seed).standard_normal(z_dim).astype(np.float32)


def identity_ws(generator, seeds: list[int], psi: float, cutoff: int | None,
                device: torch.device, batch_size: int) -> torch.Tensor:
    """[N, n_latent, w_dim] w+ rows of each identity, computed in batches on `device`."""
    z = torch.from_numpy(np.stack([latent_z(s, generator.z_dim) for s in seeds]))
    out = []
    for start in range(0, len(seeds), batch_size):
        chunk = z[start:start + batch_size].to(device)
        out.append(generator.mapping(chunk, truncation_psi=psi, truncation_cutoff=cutoff))
    ws = torch.cat(out)
    assert ws.shape == (len(seeds), generator.n_latent, generator.w_dim), ws.shape
    return ws
