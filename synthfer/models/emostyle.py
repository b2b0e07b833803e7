"""EmoStyle latent editor (EmoMappingWplus): (w+, valence/arousal) -> w+ delta.

Key layout is the released checkpoint's (``emotion_enc.{0,2}.*``, ``latent_net.{i}.{0,2,4,6}.*``).
The original runs its per-layer MLPs in a Python loop; here the n_latent MLPs of one depth are
evaluated as a single batched matmul over weights stacked to (n_latent, out, in). Stacking the
full-size editor copies ~293 MB, far more than the matmuls cost for small batches, so the stack is
cached and rebuilt only when a weight changes (in place or by replacement, e.g. ``.to()``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EmoMappingWplus(nn.Module):
    """Predicts a per-layer w+ offset from w+ and (valence, arousal); edited w+ = ws + delta."""

    def __init__(
        self,
        n_latent: int = 18,                            # W+ rows (18 at 1024 px)
        w_dim: int = 512,                              # w size
        emo_dim: int = 64,                             # emotion code size, concatenated to each w row
        emo_hidden: int = 32,                          # hidden width of the (valence, arousal) encoder
        hidden: tuple[int, ...] = (2048, 1024, 512),   # hidden widths of each per-layer MLP
    ):
        super().__init__()
        self.n_latent, self.w_dim, self.emo_dim = n_latent, w_dim, emo_dim
        self.hidden = tuple(hidden)
        self.emotion_enc = nn.Sequential(nn.Linear(2, emo_hidden), nn.LeakyReLU(0.2), nn.Linear(emo_hidden, emo_dim))
        self.latent_net = nn.ModuleList(self._mlp() for _ in range(n_latent))
        self._stack_key: tuple | None = None
        self._stack: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def _mlp(self) -> nn.Sequential:
        dims = [self.w_dim + self.emo_dim, *self.hidden, self.w_dim]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(nn.LeakyReLU(0.2))
        return nn.Sequential(*layers)

    def _linears(self, depth: int) -> list[nn.Linear]:
        return [net[2 * depth] for net in self.latent_net]

    def _build_stack(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per depth: weight (L, out, in) and bias (L, 1, out)."""
        out = []
        for depth in range(len(self.hidden) + 1):
            lins = self._linears(depth)
            w = torch.stack([lin.weight for lin in lins])
            b = torch.stack([lin.bias for lin in lins]).unsqueeze(1)
            out.append((w, b))
        return out

    def stacked_weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Stacked weights, cached unless gradients must flow through them."""
        params = list(self.latent_net.parameters())
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return self._build_stack()
        # _version moves on every in-place write (load_state_dict, optimiser steps); data_ptr,
        # device and dtype change when a parameter is replaced (.to(), .half()).
        key = tuple((p.data_ptr(), p._version, p.device, p.dtype) for p in params)
        if key != self._stack_key or self._stack is None:
            with torch.no_grad():
                self._stack = self._build_stack()
            self._stack_key = key
        return self._stack

    def __getstate__(self) -> dict:
        # Pickles and deep copies must not carry the (large, derivable) stacked copy.
        state = self.__dict__.copy()
        state["_stack"], state["_stack_key"] = None, None
        return state

    def _inputs(self, ws: torch.Tensor, va: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert ws.ndim == 3 and ws.shape[1:] == (self.n_latent, self.w_dim), (
            f"ws must be [N, {self.n_latent}, {self.w_dim}], got {tuple(ws.shape)}"
        )
        assert va.shape == (ws.shape[0], 2), f"va must be [{ws.shape[0]}, 2], got {tuple(va.shape)}"
        return ws, self.emotion_enc(va.to(ws.dtype))

    def forward(self, ws: torch.Tensor, va: torch.Tensor) -> torch.Tensor:
        """ws [N, L, D], va [N, 2] (valence, arousal in [-1, 1]) -> delta [N, L, D]."""
        ws, emo = self._inputs(ws, va)
        n = ws.shape[0]
        # Layer-major so each depth is one (L, N, in) @ (L, in, out) batched matmul.
        x = torch.cat([ws.transpose(0, 1), emo.unsqueeze(0).expand(self.n_latent, n, self.emo_dim)], dim=2)
        stack = self.stacked_weights()
        for depth, (w, b) in enumerate(stack):
            x = torch.baddbmm(b.to(x.dtype), x, w.to(x.dtype).transpose(1, 2))
            if depth < len(stack) - 1:
                x = F.leaky_relu(x, 0.2)
        delta = x.transpose(0, 1).contiguous()
        assert delta.shape == ws.shape
        return delta

    def edit(self, ws: torch.Tensor, va: torch.Tensor) -> torch.Tensor:
        """The editor interface every editor kind provides: ws [N, L, D] moved toward va [N, 2]."""
        return ws + self(ws, va)

    def forward_loop(self, ws: torch.Tensor, va: torch.Tensor) -> torch.Tensor:
        """Reference: one MLP call per W+ row, as the original code does (tests only)."""
        ws, emo = self._inputs(ws, va)
        rows = [net(torch.cat([ws[:, i], emo], dim=1)) for i, net in enumerate(self.latent_net)]
        return torch.stack(rows, dim=1)


def editor_param_count(
    n_latent: int = 18, w_dim: int = 512, emo_dim: int = 64, emo_hidden: int = 32,
    hidden: tuple[int, ...] = (2048, 1024, 512),
) -> int:
    """Parameter count of EmoMappingWplus without building it (73,214,112 at the defaults)."""
    enc = 2 * emo_hidden + emo_hidden + emo_hidden * emo_dim + emo_dim
    dims = [w_dim + emo_dim, *hidden, w_dim]
    per_layer = sum(dims[i] * dims[i + 1] + dims[i + 1] for i in range(len(dims) - 1))
    return enc + n_latent * per_layer
