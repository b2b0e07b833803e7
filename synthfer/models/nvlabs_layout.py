"""NVIDIA's (stylegan2-ada-pytorch / stylegan3) generator key layout -> rosinality's, which our
Generator uses, as a table of renames; and NVlabs constructor kwargs -> an empty Generator.

Constant blur kernels: the Generator owns them as buffers (rosinality files carry them as
`convs.{even}.conv.blur.kernel` / `to_rgbs.N.upsample.kernel`). NVlabs files carry their own
`resample_filter` instead; each is checked to be the standard [1,3,3,1] filter (the only one
the Generator implements) and dropped.
"""

from __future__ import annotations

import math
import re
from typing import Callable

import torch

from synthfer.models.stylegan2 import Generator, blur_kernel, channels_for


def _layer(res: str, layer: str) -> str:
    """Rosinality prefix of synthesis block `b{res}`'s layer; KeyError for one that cannot exist."""
    r = int(res)
    if r < 4 or r & (r - 1):
        raise KeyError(res)
    if r == 4:
        return {"conv1": "conv1", "torgb": "to_rgb1"}[layer]
    j = int(math.log2(r)) - 3                 # block index above 4 px
    return {"conv0": f"convs.{2 * j}", "conv1": f"convs.{2 * j + 1}", "torgb": f"to_rgbs.{j}"}[layer]


def _noise(res: str, layer: str) -> str:
    """Rosinality's noise buffer of a conv layer: noise_0 at 4 px, then two per block."""
    prefix = _layer(res, layer)
    return "noise_0" if prefix == "conv1" else f"noise_{int(prefix.split('.')[1]) + 1}"


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _batch_dim(t: torch.Tensor) -> torch.Tensor:
    return t.unsqueeze(0)


_B = r"synthesis\.b(\d+)"
# NVlabs key pattern -> (rosinality name from the match groups, value transform). First match wins.
RENAMES: list[tuple[str, Callable[..., str], Callable[[torch.Tensor], torch.Tensor]]] = [
    (r"mapping\.w_avg",                          lambda: "latent_avg",                            _same),
    (r"mapping\.fc(\d+)\.(weight|bias)",         lambda i, p: f"style.{int(i) + 1}.{p}",           _same),
    (rf"{_B}\.const",                             lambda r: "input.input" if r == "4" else _no(),   _batch_dim),
    (rf"{_B}\.(conv0|conv1|torgb)\.weight",       lambda r, l: f"{_layer(r, l)}.conv.weight",       _batch_dim),
    (rf"{_B}\.(conv0|conv1|torgb)\.affine\.(weight|bias)",
                                                  lambda r, l, p: f"{_layer(r, l)}.conv.modulation.{p}", _same),
    (rf"{_B}\.(conv0|conv1)\.bias",               lambda r, l: f"{_layer(r, l)}.activate.bias",     _same),
    (rf"{_B}\.torgb\.bias",                       lambda r: f"{_layer(r, 'torgb')}.bias",          lambda t: t.reshape(1, -1, 1, 1)),
    (rf"{_B}\.(conv0|conv1)\.noise_strength",     lambda r, l: f"{_layer(r, l)}.noise.weight",      lambda t: t.reshape(1)),
    (rf"{_B}\.(conv0|conv1)\.noise_const",        lambda r, l: f"noises.{_noise(r, l)}",
                                                  lambda t: t.reshape(1, 1, *t.shape[-2:])),
]
_FILTER = re.compile(rf"{_B}\.(?:(?:conv0|conv1|torgb)\.)?resample_filter")
_COMPILED = [(re.compile(p), name, value) for p, name, value in RENAMES]


def _no() -> str:
    raise KeyError("const above 4 px")


def is_stylegan3(keys) -> bool:
    return any(k.startswith("synthesis.input.") or re.match(r"synthesis\.L\d+_", k) for k in keys)


def _check_filter(key: str, value: torch.Tensor) -> None:
    expected = blur_kernel(1.0)
    if value.shape != expected.shape or not torch.allclose(value.float().cpu(), expected, atol=1e-6):
        raise ValueError(f"{key}: only the [1,3,3,1] resample filter is supported")


def nvlabs_to_rosinality(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename/reshape an NVlabs `G_ema` state dict to the rosinality layout used by Generator.

    `resample_filter` buffers are validated and dropped; unknown keys, including StyleGAN3
    (`synthesis.input.*`, `synthesis.L*`) and conditional (`mapping.embed.*`) networks,
    raise ValueError.
    """
    if is_stylegan3(state):
        raise ValueError("this is a StyleGAN3 (-T/-R) network, not StyleGAN2: not supported")
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if _FILTER.fullmatch(key):
            _check_filter(key, value)
            continue
        for pattern, name, transform in _COMPILED:
            m = pattern.fullmatch(key)
            if m:
                try:
                    out[name(*m.groups())] = transform(value)
                except KeyError:
                    unknown.append(key)
                break
        else:
            unknown.append(key)
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise ValueError(f"not a StyleGAN2 generator state dict: {len(unknown)} unexpected keys ({shown})")
    return out


def generator_from_nvlabs_kwargs(init_kwargs: dict) -> Generator:
    """Empty Generator with the architecture described by NVlabs `G_ema` `_init_kwargs`."""
    if init_kwargs.get("c_dim", 0):
        raise ValueError(f"conditional generators (c_dim={init_kwargs['c_dim']}) are not supported")
    if init_kwargs.get("img_channels", 3) != 3:
        raise ValueError(f"only RGB generators are supported (img_channels={init_kwargs['img_channels']})")
    mk = dict(init_kwargs.get("mapping_kwargs") or {})
    sk = dict(init_kwargs.get("synthesis_kwargs") or {})
    arch = sk.get("architecture", "skip")
    if arch != "skip":
        raise ValueError(f"only the 'skip' synthesis architecture is supported, got {arch!r}")
    for where, kwargs in (("mapping", mk), ("synthesis", sk)):
        if kwargs.get("activation", "lrelu") != "lrelu":
            raise ValueError(f"only leaky-ReLU networks are supported ({where} activation {kwargs['activation']!r})")
    w_dim = int(init_kwargs["w_dim"])
    if mk.get("layer_features") not in (None, w_dim):
        raise ValueError("mapping layer_features different from w_dim are not supported")
    resolution = int(init_kwargs["img_resolution"])
    channels = channels_for(
        resolution, channel_base=int(sk.get("channel_base", 32768)), channel_max=int(sk.get("channel_max", 512))
    )
    with torch.random.fork_rng(devices=[]):  # the constructor draws initial weights; keep the global RNG
        return Generator(
            resolution=resolution,
            z_dim=int(init_kwargs["z_dim"]),
            w_dim=w_dim,
            n_mlp=int(mk.get("num_layers", 8)),
            channels=channels,
            lr_mul=float(mk.get("lr_multiplier", 0.01)),
            conv_clamp=sk.get("conv_clamp"),
        )
