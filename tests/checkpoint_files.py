"""Writers that imitate each real weights format, all from one synthfer Generator / EmoMappingWplus.

No NVlabs or rosinality code is used. The NVlabs network pickle is imitated with stand-in objects
whose pickled form is what a real ``ffhq.pkl`` holds: one call of
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` per network, ``meta['state']`` being
the module's ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``, hooks, ``_init_kwargs`` as a
``dnnlib.util.EasyDict``, numpy float64 gains). Fake ``torch_utils`` / ``dnnlib`` modules exist in
``sys.modules`` only while writing, so a loader cannot lean on them.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
import types
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from synthfer.models.emostyle import EmoMappingWplus
from synthfer.models.stylegan2 import Generator, blur_kernel, channels_for

# A small generator: 32 px, z = w = 32, widths 32 up to 16 px and 16 at 32 px (n_latent 8).
SMALL = {"resolution": 32, "dim": 32, "channel_base": 512, "channel_max": 32}


# ---------------------------------------------------------------- random networks


@torch.no_grad()
def random_generator(seed: int = 0, resolution: int = 32, dim: int = 32, channel_base: int = 512,
                     channel_max: int = 32, n_mlp: int = 8) -> Generator:
    """Generator with every tensor random (biases, noise strengths, latent_avg too), eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        gen = Generator(resolution, dim, dim, n_mlp=n_mlp,
                        channels=channels_for(resolution, channel_base=channel_base, channel_max=channel_max))
    for name, t in gen.state_dict(keep_vars=True).items():
        if name.endswith("kernel"):
            continue  # constant blur filters
        value = torch.randn(t.shape, generator=g)
        if name.startswith("style."):
            value = value * (100.0 if name.endswith("weight") else 10.0)  # stored raw, times lr_mul 0.01
        elif name.endswith("modulation.bias"):
            value = 1 + 0.1 * value
        elif name.endswith(("bias", "noise.weight")):
            value = 0.1 * value
        elif name == "latent_avg":
            value = 0.5 * value
        t.copy_(value)
    return gen.eval()


@torch.no_grad()
def random_editor(seed: int = 0, n_latent: int = 8, w_dim: int = 32, hidden: tuple[int, ...] = (64, 32, 32)
                  ) -> EmoMappingWplus:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return EmoMappingWplus(n_latent=n_latent, w_dim=w_dim, emo_dim=16, emo_hidden=8, hidden=hidden).eval()


def rosinality_state(gen: Generator, drop_kernels: bool = False) -> dict[str, torch.Tensor]:
    """What rosinality's Generator.state_dict() holds: everything but synthfer's latent_avg buffer."""
    return {k: v.clone() for k, v in gen.state_dict().items()
            if k != "latent_avg" and not (drop_kernels and k.endswith("kernel"))}


# ---------------------------------------------------------------- rosinality -> NVlabs layout


def nvlabs_init_kwargs(gen: Generator, channel_base: int, channel_max: int, c_dim: int = 0) -> dict:
    """G_ema._init_kwargs as stylegan2-ada-pytorch records them."""
    assert channels_for(gen.resolution, channel_base=channel_base, channel_max=channel_max) == gen.channels
    return {"z_dim": gen.z_dim, "c_dim": c_dim, "w_dim": gen.w_dim, "img_resolution": gen.resolution,
            "img_channels": 3, "mapping_kwargs": {"num_layers": gen.n_mlp},
            "synthesis_kwargs": {"channel_base": channel_base, "channel_max": channel_max,
                                 "num_fp16_res": 0, "conv_clamp": None}}


def to_nvlabs_state(gen: Generator) -> dict[str, torch.Tensor]:
    """``gen``'s weights under NVIDIA's G_ema names and shapes (the inverse of nvlabs_to_rosinality)."""
    sd = {k: v.detach().clone() for k, v in gen.state_dict().items()}
    f = blur_kernel(1.0)
    out: dict[str, torch.Tensor] = {"mapping.w_avg": sd["latent_avg"]}
    for i in range(gen.n_mlp):
        out[f"mapping.fc{i}.weight"] = sd[f"style.{i + 1}.weight"]
        out[f"mapping.fc{i}.bias"] = sd[f"style.{i + 1}.bias"]

    def layer(dst: str, src: str, noise: int | None) -> None:
        out[f"{dst}.weight"] = sd[f"{src}.conv.weight"][0]
        out[f"{dst}.affine.weight"] = sd[f"{src}.conv.modulation.weight"]
        out[f"{dst}.affine.bias"] = sd[f"{src}.conv.modulation.bias"]
        if noise is None:  # to-RGB
            out[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(3)
            return
        out[f"{dst}.bias"] = sd[f"{src}.activate.bias"]
        out[f"{dst}.noise_strength"] = sd[f"{src}.noise.weight"].reshape(())
        out[f"{dst}.noise_const"] = sd[f"noises.noise_{noise}"][0, 0]
        out[f"{dst}.resample_filter"] = f.clone()

    out["synthesis.b4.const"] = sd["input.input"][0]
    out["synthesis.b4.resample_filter"] = f.clone()
    layer("synthesis.b4.conv1", "conv1", 0)
    layer("synthesis.b4.torgb", "to_rgb1", None)
    for j in range(len(gen.to_rgbs)):
        b = f"synthesis.b{2 ** (j + 3)}"
        out[f"{b}.resample_filter"] = f.clone()
        layer(f"{b}.conv0", f"convs.{2 * j}", 2 * j + 1)
        layer(f"{b}.conv1", f"convs.{2 * j + 1}", 2 * j + 2)
        layer(f"{b}.torgb", f"to_rgbs.{j}", None)
    return out


# ---------------------------------------------------------------- NVlabs network pickle


class EasyDict(dict):
    """Pickles as dnnlib.util.EasyDict (module and name set below)."""


EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"


def _reconstruct_persistent_obj(meta: dict) -> Any:  # never called: only its pickled name matters
    raise AssertionError("the loader called the persistence function")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


class Persistent:
    """Pickles as a persistent NVlabs network: _reconstruct_persistent_obj(meta)."""

    def __init__(self, class_name: str, state: dict, module_src: str = "# networks.py source\n"):
        self.meta = {"type": "class", "version": 6, "module_src": module_src, "class_name": class_name,
                     "state": state}

    def __reduce__(self):
        return _reconstruct_persistent_obj, (self.meta,)


@contextmanager
def fake_nvlabs_modules():
    """torch_utils.persistence and dnnlib.util, present only while pickling (pickle looks names up)."""
    names = ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")
    assert not any(n in sys.modules for n in names)
    modules = {n: types.ModuleType(n) for n in names}
    modules["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    modules["dnnlib.util"].EasyDict = EasyDict
    sys.modules.update(modules)
    try:
        yield
    finally:
        for n in names:
            sys.modules.pop(n, None)


_CLASS_NAMES = {"mapping": "MappingNetwork", "synthesis": "SynthesisNetwork", "conv0": "SynthesisLayer",
                "conv1": "SynthesisLayer", "torgb": "ToRGBLayer", "affine": "FullyConnectedLayer"}
_BUFFERS = ("w_avg", "resample_filter", "noise_const")


def module_state(params: dict, buffers: dict, modules: dict, init_kwargs: dict | None = None, **attrs: Any) -> dict:
    """An nn.Module __dict__ as torch pickles it (hook dicts included)."""
    state = {"training": False, "_parameters": OrderedDict(params), "_buffers": OrderedDict(buffers),
             "_non_persistent_buffers_set": set(), "_backward_hooks": OrderedDict(),
             "_is_full_backward_hook": None, "_forward_hooks": OrderedDict(), "_forward_pre_hooks": OrderedDict(),
             "_state_dict_hooks": OrderedDict(), "_load_state_dict_pre_hooks": OrderedDict(),
             "_modules": OrderedDict(modules), "_init_args": (), "_init_kwargs": EasyDict(init_kwargs or {})}
    state.update(attrs)
    return state


def network_tree(flat: dict[str, torch.Tensor], init_kwargs: dict, class_name: str = "Generator") -> Persistent:
    """Nested persistent networks holding ``flat`` (an NVlabs state dict)."""
    root: dict = {}
    for key, value in flat.items():
        *path, name = key.split(".")
        node = root
        for part in path:
            node = node.setdefault(part, {})
        node[name] = value

    def build(name: str, node: dict, kwargs: dict | None) -> Persistent:
        params, buffers, children = {}, {}, {}
        for k, v in node.items():
            if isinstance(v, dict):
                children[k] = build(k, v, None)
            elif k in _BUFFERS:
                buffers[k] = v.clone()
            else:
                params[k] = torch.nn.Parameter(v.clone(), requires_grad=False)
        cls = _CLASS_NAMES.get(name) or ("SynthesisBlock" if name.startswith("b") else "FullyConnectedLayer")
        extra: dict = {"act_gain": np.float64(math.sqrt(2))} if cls == "SynthesisLayer" else {}
        return Persistent(cls, module_state(params, buffers, children, kwargs, **extra))

    net = build("", root, _easy(init_kwargs))
    net.meta["class_name"] = class_name
    # A non-persistent buffer: it must not reach the state dict.
    net.meta["state"]["_buffers"]["scratch"] = torch.zeros(3)
    net.meta["state"]["_non_persistent_buffers_set"] = {"scratch"}
    return net


def _easy(value: Any) -> Any:
    if isinstance(value, dict):
        return EasyDict({k: _easy(v) for k, v in value.items()})
    return value


def write_nvlabs_pickle(path: Path, nv_state: dict[str, torch.Tensor], init_kwargs: dict, *,
                        only_g_ema: bool = False, protocol: int = 4, g_ema_attrs: dict | None = None,
                        module_src: str | None = None) -> Path:
    """A stylegan2-ada-pytorch style snapshot: {G, D, G_ema, training_set_kwargs, augment_pipe}."""
    g_ema = network_tree(nv_state, init_kwargs)
    g_ema.meta["state"].update(g_ema_attrs or {})
    if module_src is not None:
        g_ema.meta["module_src"] = module_src
    data: dict[str, Any] = {"G_ema": g_ema}
    if not only_g_ema:
        res = init_kwargs["img_resolution"]
        d_params = {"weight": torch.nn.Parameter(torch.randn(8, 3, 1, 1), requires_grad=False)}
        data = {
            "G": network_tree(nv_state, init_kwargs),
            "D": Persistent("Discriminator", module_state({}, {}, {
                f"b{res}": Persistent("DiscriminatorBlock", module_state({}, {}, {
                    "fromrgb": Persistent("Conv2dLayer", module_state(d_params, {}, {}))}))},
                {"c_dim": 0, "img_resolution": res, "img_channels": 3})),
            "G_ema": g_ema,
            "training_set_kwargs": EasyDict(class_name="training.dataset.ImageFolderDataset",
                                            path="~/datasets/ffhq.zip", use_labels=False, max_size=70000,
                                            xflip=False, resolution=res),
            "augment_pipe": Persistent("AugmentPipe", module_state(
                {}, {"p": torch.tensor(0.2), "Hz_geom": torch.randn(12)}, {}, {"xflip": 1, "rotate90": 1},
                imgfilter_bands=np.array([1.0, 1.0, 1.0, 1.0]), brightness_std=np.float64(0.2))),
        }
    with fake_nvlabs_modules(), open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    return path


# ---------------------------------------------------------------- torch and safetensors files


def write_rosinality_pt(path: Path, gen: Generator, *, drop_kernels: bool = False, legacy: bool = False) -> Path:
    """A converted rosinality checkpoint: {'g_ema': state_dict, 'latent_avg': (w_dim,)}."""
    obj = {"g_ema": rosinality_state(gen, drop_kernels), "latent_avg": gen.latent_avg.clone()}
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def _adam_state(n: int) -> dict:
    p = torch.nn.Parameter(torch.ones(n))
    opt = torch.optim.Adam([p], lr=0.002, betas=(0.0, 0.99))
    p.grad = torch.full((n,), 0.5)
    opt.step()
    return opt.state_dict()


def write_rosinality_training(path: Path, gen: Generator, *, legacy: bool = False) -> Path:
    """A rosinality train.py checkpoint: g, d, g_ema, optimisers, argparse args; no latent_avg."""
    sd = rosinality_state(gen)
    args = argparse.Namespace(path="lmdb", arch="stylegan2", iter=800000, batch=16, size=gen.resolution,
                              r1=10.0, mixing=0.9, ckpt=None, lr=0.002, channel_multiplier=2, latent=gen.w_dim,
                              n_mlp=gen.n_mlp, augment=False, augment_p=0.0, wandb=False, local_rank=0)
    obj = {"g": {k: v.clone() for k, v in sd.items()}, "d": {"convs.0.0.weight": torch.randn(8, 3, 1, 1)},
           "g_ema": sd, "g_optim": _adam_state(4), "d_optim": _adam_state(2), "args": args, "ada_aug_p": 0.0}
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def write_nvlabs_safetensors(path: Path, nv_state: dict[str, torch.Tensor], init_kwargs: dict | None) -> Path:
    """The test fixture's format: NVlabs G_ema tensors, init_kwargs JSON in the metadata."""
    metadata = {"format": "nvlabs-stylegan2-ada G_ema state_dict"}
    if init_kwargs is not None:
        metadata["init_kwargs"] = json.dumps(init_kwargs)
    save_file({k: v.contiguous() for k, v in nv_state.items()}, str(path), metadata=metadata)
    return path


def write_emostyle_pt(path: Path, editor: EmoMappingWplus, *, bare: bool = False, legacy: bool = False) -> Path:
    """emo_mapping_wplus_*.pt: {'emo_mapping_state_dict', 'epoch', optimizer state}, or the bare state dict."""
    sd = {k: v.clone() for k, v in editor.state_dict().items()}
    obj: dict = sd if bare else {"emo_mapping_state_dict": sd, "epoch": 3, "optimizer_state_dict": _adam_state(3)}
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path
