"""Weights -> modules, in one pass: `build(weights)` picks the key layout (from what the file
said, else from the key names), takes the architecture from metadata or tensor shapes, and loads
the state dict exactly, with plain one-line errors. Works on tensors the format readers
(models/formats/) already read; nothing here touches the disk.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from synthfer.errors import ModelFileError, first_line
from synthfer.models.emostyle import EmoMappingWplus
from synthfer.models.formats import Weights
from synthfer.models.nvlabs_layout import generator_from_nvlabs_kwargs, is_stylegan3, nvlabs_to_rosinality
from synthfer.models.stylegan2 import Generator, blur_kernel

GENERATOR_FORMAT = "synthfer-stylegan2"  # metadata "format" of files written by convert()
EDITOR_FORMAT = "synthfer-emostyle"
_GENERATOR_CONFIG_KEYS = {"resolution", "z_dim", "w_dim", "n_mlp", "channels", "lr_mul", "conv_clamp"}
_EDITOR_CONFIG_KEYS = {"n_latent", "w_dim", "emo_dim", "emo_hidden", "hidden"}



def generator_config(generator: Generator) -> dict:
    """Constructor kwargs that rebuild ``generator``'s architecture (JSON-able but for int channel keys)."""
    mapping = [m for m in generator.style if hasattr(m, "lr_mul")]
    return {
        "resolution": generator.resolution, "z_dim": generator.z_dim, "w_dim": generator.w_dim,
        "n_mlp": generator.n_mlp, "channels": dict(generator.channels),
        "lr_mul": mapping[0].lr_mul if mapping else 0.01, "conv_clamp": generator.conv1.activate.clamp,
    }


def _new_generator(**config: Any) -> Generator:
    # Generator.__init__ draws random initial weights; keep torch's global RNG untouched.
    with torch.random.fork_rng(devices=[]):
        return Generator(**config)


def generator_from_config(path: Path, config: Any) -> Generator:
    if not isinstance(config, dict) or set(config) != _GENERATOR_CONFIG_KEYS:
        raise ModelFileError(f"{path}: {GENERATOR_FORMAT} config must have keys "
                             f"{', '.join(sorted(_GENERATOR_CONFIG_KEYS))}")
    try:
        channels = {int(k): int(v) for k, v in config["channels"].items()}
        return _new_generator(**{**config, "channels": channels})
    except (TypeError, ValueError, AttributeError) as err:
        raise ModelFileError(f"{path}: invalid {GENERATOR_FORMAT} config ({first_line(err)})") from None


def nvlabs_generator(path: Path, state: dict[str, torch.Tensor], init_kwargs: dict | None, info: dict,
                      estimate: bool) -> tuple[Generator, dict]:
    info["layout"] = "nvlabs"
    if is_stylegan3(state):
        raise ModelFileError(f"{path}: a StyleGAN3 (T/R) generator; synthfer runs StyleGAN2 only")
    c_dim = (init_kwargs or {}).get("c_dim") or 0
    if not c_dim and "mapping.embed.weight" in state:
        c_dim = state["mapping.embed.weight"].shape[-1]
    if c_dim:
        raise ModelFileError(f"{path}: a conditional generator (c_dim {c_dim}); synthfer needs an unconditional one")
    try:
        converted = nvlabs_to_rosinality(state)
        if init_kwargs:
            generator = generator_from_nvlabs_kwargs(init_kwargs)
        else:  # a bare state dict: the architecture follows from the shapes, as for rosinality files
            generator = _new_generator(**_rosinality_config(converted))
    except (ValueError, KeyError, TypeError) as err:
        raise ModelFileError(f"{path}: not a usable StyleGAN2 generator: {first_line(err)}") from None
    return finish_generator(path, generator, converted, info, estimate)


def rosinality_generator(path: Path, state: dict[str, torch.Tensor], info: dict,
                          estimate: bool) -> tuple[Generator, dict]:
    info.setdefault("layout", "rosinality")
    try:
        generator = _new_generator(**_rosinality_config(state))
    except ValueError as err:
        raise ModelFileError(f"{path}: not a usable StyleGAN2 generator: {first_line(err)}") from None
    return finish_generator(path, generator, state, info, estimate)


def _shape(state: dict[str, torch.Tensor], key: str, ndim: int) -> tuple[int, ...]:
    if key not in state:
        raise ValueError(f"missing {key}")
    if state[key].ndim != ndim:
        raise ValueError(f"{key} has shape {tuple(state[key].shape)}; expected {ndim} dimensions")
    return tuple(state[key].shape)


def _rosinality_config(state: dict[str, torch.Tensor]) -> dict:
    """Generator kwargs from rosinality-layout shapes (mapping lr_mul is rosinality's fixed 0.01)."""
    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in state:
        n_mlp += 1
    if n_mlp == 0:
        raise ValueError("missing style.1.weight (no mapping network)")
    w_dim, z_dim = _shape(state, "style.1.weight", 2)
    n_blocks = 0  # resolutions above 4 px, one to_rgbs entry each
    while f"to_rgbs.{n_blocks}.conv.weight" in state:
        n_blocks += 1
    if n_blocks == 0:
        raise ValueError("missing to_rgbs.0.conv.weight (resolution below 8 px)")
    channels = {4: _shape(state, "input.input", 4)[1]}
    for j in range(n_blocks):
        channels[2 ** (j + 3)] = _shape(state, f"convs.{2 * j}.conv.weight", 5)[1]
    return {"resolution": 2 ** (n_blocks + 2), "z_dim": z_dim, "w_dim": w_dim, "n_mlp": n_mlp,
            "channels": channels, "lr_mul": 0.01, "conv_clamp": None}


def finish_generator(path: Path, generator: Generator, state: dict[str, torch.Tensor], info: dict,
               estimate: bool) -> tuple[Generator, dict]:
    """Load ``state`` (rosinality layout) into ``generator``: rebuild constant blur kernels, and
    estimate latent_avg deterministically when the file has none."""
    for key, value in state.items():
        if key.endswith((".blur.kernel", ".upsample.kernel")) and (
                value.shape != (4, 4) or not torch.allclose(value.float(), blur_kernel(4.0), atol=1e-6)):
            raise ModelFileError(f"{path}: {key}: only the [1,3,3,1] blur filter is supported")
    stored = "latent_avg" in state
    state = fill_constant_buffers(generator, state)
    if not stored:
        state["latent_avg"] = torch.zeros(generator.w_dim)
    _load_exact(path, generator, state, "a StyleGAN2 generator")
    if not stored and estimate:
        with torch.no_grad():
            generator.latent_avg.copy_(generator.mean_w())
    config = generator_config(generator)
    info.update({
        "architecture": "stylegan2-generator", "resolution": generator.resolution,
        "n_latent": generator.n_latent, "w_dim": generator.w_dim, "z_dim": generator.z_dim,
        "n_mlp": generator.n_mlp, "channels": config["channels"],
        "parameters": sum(p.numel() for p in generator.parameters()),
        "latent_avg": "stored" if stored else "estimated", "config": config,
    })
    return generator.eval(), info


def _load_exact(path: Path, module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """load_state_dict(strict=True), with the first mismatch described on one line."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    problem = None
    if missing:
        problem = f"missing {_few(missing)}"
    elif unexpected:
        problem = f"unexpected {_few(unexpected)}"
    else:
        for key, value in own.items():
            if tuple(state[key].shape) != tuple(value.shape):
                problem = f"{key} has shape {tuple(state[key].shape)}, expected {tuple(value.shape)}"
                break
            if not state[key].is_floating_point():
                problem = f"{key} holds {state[key].dtype}, not floating-point values"
                break
    if problem:
        raise ModelFileError(f"{path}: weights do not fit {what}: {problem}")
    module.load_state_dict(state, strict=True)


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


# ---------------------------------------------------------------- editors


def editor_config(editor: EmoMappingWplus) -> dict:
    """Constructor kwargs that rebuild ``editor``'s architecture (JSON-able)."""
    return {"n_latent": editor.n_latent, "w_dim": editor.w_dim, "emo_dim": editor.emo_dim,
            "emo_hidden": editor.emotion_enc[0].out_features, "hidden": list(editor.hidden)}


def _editor_config_from_shapes(state: dict[str, torch.Tensor]) -> dict:
    rows = {int(m.group(1)) for k in state if (m := re.match(r"latent_net\.(\d+)\.", k))}
    depths = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"latent_net\.0\.(\d+)\.weight", k)))
    if not rows or not depths:
        raise ValueError("missing latent_net.0.* weights")
    if depths != list(range(0, 2 * len(depths), 2)):
        raise ValueError(f"latent_net.0 has linear layers {depths}; expected 0, 2, 4, ...")
    return {
        "n_latent": max(rows) + 1,
        "w_dim": _shape(state, f"latent_net.0.{depths[-1]}.weight", 2)[0],
        "emo_dim": _shape(state, "emotion_enc.2.weight", 2)[0],
        "emo_hidden": _shape(state, "emotion_enc.0.weight", 2)[0],
        "hidden": [_shape(state, f"latent_net.0.{d}.weight", 2)[0] for d in depths[:-1]],
    }


def editor_from_state(path: Path, state: dict[str, torch.Tensor], config: Any, info: dict) -> tuple[EmoMappingWplus, dict]:
    info.setdefault("layout", "emostyle")
    try:
        if config is None:
            config = _editor_config_from_shapes(state)
        elif not isinstance(config, dict) or set(config) != _EDITOR_CONFIG_KEYS:
            raise ValueError(f"config must have keys {', '.join(sorted(_EDITOR_CONFIG_KEYS))}")
        with torch.random.fork_rng(devices=[]):
            editor = EmoMappingWplus(**{**config, "hidden": tuple(config["hidden"])})
    except (ValueError, TypeError) as err:
        raise ModelFileError(f"{path}: EmoStyle editor weights do not fit EmoMappingWplus: {first_line(err)}") from None
    _load_exact(path, editor, state, "an EmoStyle editor")
    info.update({
        "architecture": "emostyle-editor", "resolution": None, "n_latent": editor.n_latent,
        "w_dim": editor.w_dim, "z_dim": None, "parameters": sum(p.numel() for p in editor.parameters()),
        "latent_avg": None, "config": editor_config(editor),
    })
    return editor.eval(), info


def fill_constant_buffers(generator: Generator, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copy of ``state`` with the generator's blur kernels added where absent (they are constants)."""
    filled = dict(state)
    for key, value in generator.state_dict().items():
        if key.endswith((".blur.kernel", ".upsample.kernel")) and key not in filled:
            filled[key] = value.clone()
    return filled


# ---------------------------------------------------------------- one entry


def _by_key_names(w: Weights) -> tuple[str, str]:
    """(layout, contents) of a state dict whose file did not say which it is."""
    keys = list(w.tensors)
    if any(k.startswith(("latent_net.", "emotion_enc.")) for k in keys):
        return "emostyle", "EmoStyle editor state dict"
    if any(k.startswith(("mapping.", "synthesis.")) for k in keys):
        return "nvlabs", "NVlabs G_ema state dict"
    if any(k.startswith(("style.", "input.", "convs.")) for k in keys):
        return "rosinality", "rosinality generator state dict"
    raise ModelFileError(f"{w.path}: tensors named like neither a StyleGAN2 generator nor an EmoStyle editor")


def build(w: Weights, estimate_latent_avg: bool = True) -> tuple[Generator | EmoMappingWplus, dict]:
    """(module in eval mode, info) from a file's tensors. `info` is what `models info` reports."""
    layout, contents = (w.layout, w.contents) if w.layout else _by_key_names(w)
    info: dict[str, Any] = {"path": str(w.path), "format": w.format, "contents": w.contents or contents}
    if layout == "synthfer":
        return _synthfer(w, info, estimate_latent_avg)
    if layout == "emostyle":
        return editor_from_state(w.path, w.tensors, None, info)
    if layout == "nvlabs":
        return nvlabs_generator(w.path, w.tensors, w.metadata.get("init_kwargs"), info, estimate_latent_avg)
    return rosinality_generator(w.path, w.tensors, info, estimate_latent_avg)


def _synthfer(w: Weights, info: dict, estimate: bool):
    """A file written by `synthfer models convert`: its architecture is in the metadata."""
    kind = w.metadata.get("format")
    if kind not in (GENERATOR_FORMAT, EDITOR_FORMAT):
        raise ModelFileError(f"{w.path}: unknown synthfer format {kind!r}")
    info["layout"] = "synthfer"
    info["contents"] = f"synthfer-converted {'generator' if kind == GENERATOR_FORMAT else 'editor'}"
    info.update({k: w.metadata[k] for k in ("source_sha256", "source_format") if k in w.metadata})
    try:
        config = json.loads(w.metadata["config"])
    except (KeyError, ValueError):
        raise ModelFileError(f"{w.path}: {kind} file without a valid 'config' in its metadata") from None
    if kind == EDITOR_FORMAT:
        return editor_from_state(w.path, w.tensors, config, info)
    return finish_generator(w.path, generator_from_config(w.path, config), w.tensors, info, estimate)
