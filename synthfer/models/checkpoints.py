"""The only code that opens generator and editor weight files: load, inspect, convert.

Reading is one pass: the file's format module (models/formats/) reads its tensors, then
models/layouts.py builds the module from them. The generator configuration (resolution, widths,
mapping depth, w_avg) always comes from the file: NVlabs `_init_kwargs`, synthfer's `config`,
or else the tensor shapes. A missing `latent_avg` is replaced by `Generator.mean_w()`, which is
deterministic, so builds stay reproducible. Every user-caused problem is a ModelFileError with
one line naming the file.
"""

from __future__ import annotations

import hashlib
import math
import json
from pathlib import Path

from synthfer.errors import ModelFileError, OutputError
from synthfer.io.local_folder import write_file
from synthfer.models import layouts
from synthfer.models.emostyle import EmoMappingWplus
from synthfer.models.formats import FORMATS, detect_format, read_weights, sha256_file  # noqa: F401
from synthfer.models.formats.onnx_file import read_onnx  # noqa: F401
from synthfer.models.formats.safetensors_file import read_tensors as read_safetensors
from synthfer.models.formats.safetensors_file import to_bytes as safetensors_bytes
from synthfer.models.layouts import (EDITOR_FORMAT, GENERATOR_FORMAT, editor_config,  # noqa: F401
                                     fill_constant_buffers, generator_config)
from synthfer.models.nvlabs_layout import generator_from_nvlabs_kwargs, nvlabs_to_rosinality  # noqa: F401
from synthfer.models.stylegan2 import Generator


def load_checkpoint(path: str | Path, estimate_latent_avg: bool = True) -> tuple[Generator | EmoMappingWplus, dict]:
    """(module in eval mode, info) for a generator or an editor in any supported format.

    `info` is what inspect() reports, without the file hash. With `estimate_latent_avg` False a
    generator lacking latent_avg keeps zeros there (for inspection only).
    """
    return layouts.build(read_weights(path), estimate_latent_avg)


def load_generator(path: str | Path) -> Generator:
    """StyleGAN2 generator (eval mode) from a file in any supported format."""
    module, _ = load_checkpoint(path)
    if not isinstance(module, Generator):
        raise ModelFileError(f"{path}: an EmoStyle editor, not a StyleGAN2 generator")
    return module


def load_editor(path: str | Path) -> EmoMappingWplus:
    """EmoStyle editor (eval mode): `emo_mapping_wplus_*.pt` (a dict with `emo_mapping_state_dict`
    or a bare state dict) or a synthfer-converted safetensors file. Sizes come from the file."""
    module, _ = load_checkpoint(path, estimate_latent_avg=False)
    if not isinstance(module, EmoMappingWplus):
        raise ModelFileError(f"{path}: a StyleGAN2 generator, not an EmoStyle editor")
    return module


def load_nvlabs_safetensors(path: str | Path) -> Generator:
    """Generator (eval mode) from a safetensors file holding an NVlabs `G_ema` state dict whose
    metadata holds `init_kwargs` (the test fixture's format). Raises ValueError."""
    tensors, metadata = read_safetensors(path)
    if "init_kwargs" not in metadata:
        raise ValueError(f"{path}: safetensors metadata has no 'init_kwargs'")
    generator = generator_from_nvlabs_kwargs(json.loads(metadata["init_kwargs"]))
    generator.load_state_dict(fill_constant_buffers(generator, nvlabs_to_rosinality(tensors)), strict=True)
    return generator.eval()


def inspect(path: str | Path) -> dict:
    """What a weights file holds, detected by content. Keys: path, format, layout, contents,
    architecture ("stylegan2-generator" | "emostyle-editor"), resolution, n_latent, w_dim, z_dim,
    parameters, latent_avg ("stored" | "estimated"; None for editors), config, sha256, size_bytes;
    generators add n_mlp and channels; converted files add source_sha256 and source_format."""
    try:
        _, info = load_checkpoint(path, estimate_latent_avg=False)
    except ModelFileError as err:
        # Only a regular file whose content is nothing synthfer loads may be an ONNX estimator
        # (never open a FIFO or device a second time: it would block).
        info = _onnx_info(path) if str(err).endswith("(unrecognised content)") and Path(path).is_file() else None
        if info is None:
            raise err from None
    info["sha256"] = sha256_file(path)
    info["size_bytes"] = Path(path).stat().st_size
    return info


def _onnx_info(path: str | Path) -> dict | None:
    """An ONNX file's graph inputs, outputs and size (a quality or VA estimator); None if not ONNX."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - anything onnx cannot parse is simply not ONNX
        return None
    if not model.graph.node:
        return None
    init = {i.name for i in model.graph.initializer}

    def shape(v):
        dims = [d.dim_param or str(d.dim_value) for d in v.type.tensor_type.shape.dim]
        return f"{v.name} [{', '.join(dims)}]"
    return {"path": str(path), "format": "onnx", "architecture": "onnx model (a quality or VA estimator)",
            "inputs": "; ".join(shape(v) for v in model.graph.input if v.name not in init),
            "outputs": "; ".join(shape(v) for v in model.graph.output),
            "opset": ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import),
            "parameters": sum(math.prod(i.dims) for i in model.graph.initializer),
            "check": "synthfer models check RECIPE runs it with the recipe's preprocessing"}


def convert(src: str | Path, dst: str | Path) -> dict:
    """Write the generator or editor in `src` (any format) to `dst` as synthfer safetensors.

    Generators are stored in the rosinality layout including latent_avg (estimated if `src` has
    none), so loading `dst` gives a bit-identical state dict. Metadata: format, config (JSON
    constructor kwargs), source_sha256, source_format, latent_avg (how `src` had it). `dst` is
    replaced atomically. Returns inspect()'s fields for `dst`.
    """
    module, info = load_checkpoint(src)
    source_sha = sha256_file(src)
    if isinstance(module, Generator):
        kind, config = GENERATOR_FORMAT, generator_config(module)
    else:
        kind, config = EDITOR_FORMAT, editor_config(module)
    metadata = {"format": kind, "config": json.dumps(config, sort_keys=True), "source_sha256": source_sha,
                "source_format": info["format"]}
    if info["latent_avg"] is not None:
        metadata["latent_avg"] = info["latent_avg"]
    data = safetensors_bytes(module.state_dict(), metadata)
    try:
        write_file(dst, data)
    except OSError as err:
        raise OutputError(f"{dst}: cannot write: {err.strerror or err}") from None
    info.update({"path": str(dst), "format": "safetensors", "layout": "synthfer",
                 "contents": f"synthfer-converted {'generator' if kind == GENERATOR_FORMAT else 'editor'}",
                 "latent_avg": "stored" if info["latent_avg"] else None,
                 "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data),
                 "source_sha256": source_sha, "source_format": metadata["source_format"]})
    return info
