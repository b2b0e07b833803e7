"""Small random-weight stand-ins for the real models, for tests, demos and dry runs.

Same architecture as the 64 px reference fixture (z = w = 128, channels 64 up to 32 px, 32 at
64 px, 10 w rows). Every tensor is overwritten from a ``torch.Generator`` seeded with ``seed``, and
the modules' default initialisation runs inside ``fork_rng``, so construction leaves torch's global
RNG untouched and two calls with the same seed give bit-identical weights. (Building on the meta
device instead would avoid the throw-away init but costs ~1 s of one-off imports.)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from synthfer.models.emostyle import EmoMappingWplus
from synthfer.models.stylegan2 import Generator, blur_kernel, channels_for

# Bump whenever any change here alters the weights a seed produces (fingerprints depend on it).
VERSION = 1
BUILTIN_RESOLUTION = 64
BUILTIN_DIM = 128
# Unscaled random to-RGB weights give image std ~1.2-2.1 (peaks ~11, like the fixture); this
# brings std to ~0.3-0.5 so to_uint8 leaves only a few percent of pixels saturated.
RGB_GAIN = 0.25
# Editor output gain: delta std comes out ~0.5-0.8x that of w, so edits change images visibly.
DELTA_GAIN = 0.6
# Emotion-code gain: makes the (valence, arousal) part of each MLP input as strong as the w part.
EMO_GAIN = 2.0


def _fill_generator(gen: Generator, g: torch.Generator, lr_mul: float) -> None:
    """Random weights; constants perturbed (as in the fixture) so every term of the forward pass matters."""
    for name, t in gen.state_dict(keep_vars=True).items():
        if name.endswith("kernel"):
            value = blur_kernel(4.0)
        elif name == "latent_avg":
            value = torch.zeros(t.shape)  # replaced by the mean w below
        elif name.startswith("style.") and name.endswith(".weight"):
            value = torch.randn(t.shape, generator=g) / lr_mul
        elif name.startswith("style."):
            value = 0.1 * torch.randn(t.shape, generator=g) / lr_mul  # stored raw, scaled by lr_mul at run time
        elif name.endswith("modulation.bias"):
            value = 1.0 + 0.1 * torch.randn(t.shape, generator=g)
        elif name.endswith(("noise.weight", "bias")):
            value = 0.1 * torch.randn(t.shape, generator=g)
        else:  # conv weights, constant input, noise maps
            value = torch.randn(t.shape, generator=g)
        if name.startswith(("to_rgb1.", "to_rgbs.")) and name.endswith(("conv.weight", ".bias")) \
                and "modulation" not in name:
            value = value * RGB_GAIN  # to-RGB is linear, so this scales the whole image
        t.copy_(value)


@torch.no_grad()
def builtin_generator(seed: int = 0, resolution: int = BUILTIN_RESOLUTION, channel_max: int = 64) -> Generator:
    """Deterministic random generator (eval mode), images roughly in [-1.5, 1.5].

    The default is the fixture's architecture (64 px, channels 64 .. 32); larger resolutions keep
    the same rule (channel_base = 32 * resolution, capped at channel_max) for benchmarks.
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    lr_mul = 0.01
    with torch.random.fork_rng(devices=[]):
        gen = Generator(
            resolution, BUILTIN_DIM, BUILTIN_DIM, n_mlp=8,
            channels=channels_for(resolution, channel_base=32 * resolution, channel_max=channel_max), lr_mul=lr_mul,
        )
    _fill_generator(gen, g, lr_mul)
    gen.latent_avg.copy_(gen.mean_w(4096, seed))
    return gen.eval()


def _init_linear(lin: nn.Linear, g: torch.Generator, gain: float) -> None:
    fan_in = lin.weight.shape[1]
    lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * (gain / math.sqrt(fan_in)))
    lin.bias.copy_(0.1 * torch.randn(lin.bias.shape, generator=g))


@torch.no_grad()
def builtin_editor(seed: int = 0, n_latent: int = 10, w_dim: int = BUILTIN_DIM) -> EmoMappingWplus:
    """Deterministic small EmoStyle editor (hidden 256/128/128) matching builtin_generator's w+ shape."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        editor = EmoMappingWplus(n_latent=n_latent, w_dim=w_dim, emo_dim=64, emo_hidden=32, hidden=(256, 128, 128))
    lrelu_gain = math.sqrt(2.0 / (1.0 + 0.2**2))  # keeps activations' scale through leaky ReLU(0.2)
    _init_linear(editor.emotion_enc[0], g, lrelu_gain)
    _init_linear(editor.emotion_enc[2], g, EMO_GAIN)
    for net in editor.latent_net:
        linears = [m for m in net if isinstance(m, nn.Linear)]
        for i, lin in enumerate(linears):
            _init_linear(lin, g, DELTA_GAIN if i == len(linears) - 1 else lrelu_gain)
    return editor.eval()
