"""The model kinds synthfer ships, one registry entry each (see models/registry.py).

Adding a kind: its recipe block (a pydantic class with a `kind` literal), its module, and one
`register(ModelKind(...))` here or in the caller's own code. Loaders import torch lazily, so
reading a recipe stays cheap.
"""

from __future__ import annotations

import hashlib

from synthfer.errors import ModelFileError
from synthfer.models import specs
from synthfer.models.registry import ModelKind, licence, register, spec_files


def weights_identity(module) -> str:
    """sha256 over the weights themselves (sorted names, dtypes, shapes, bytes), not the file:
    an NVlabs pickle and its `synthfer models convert` copy are the same model, so builds from
    either share a fingerprint and give the same bytes, while any changed weight is noticed."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


def _place(module, ctx):
    """Eval mode, no gradients, on the build's device."""
    import torch

    module.eval().requires_grad_(False).to(ctx.device)
    if ctx.device.type == "cuda" and hasattr(module, "synthesis"):
        module.to(memory_format=torch.channels_last)  # faster cuDNN convolutions; same values
    return module


def _file_sha(spec, ctx) -> str:
    from synthfer.models.checkpoints import sha256_file

    (path,) = spec_files(spec).values()
    return sha256_file(ctx.resolve(path))


def _builtin_id(spec, ctx) -> str:
    from synthfer.models.builtin import VERSION

    return f"builtin-v{VERSION}-seed{spec.seed}"


# ---------------------------------------------------------------- generators


def _load_builtin_generator(spec, ctx):
    from synthfer.models.builtin import builtin_generator

    return _place(builtin_generator(spec.seed, spec.resolution, spec.channel_max), ctx)


def _load_stylegan2(spec, ctx):
    from synthfer.models.checkpoints import load_generator

    return _place(load_generator(ctx.resolve(spec.checkpoint)), ctx)


def _generator_fit(spec, g, models) -> list[str]:
    return [f"generator: {g.resolution}x{g.resolution}, {g.n_latent} w rows of {g.w_dim}"]


register(ModelKind("generator", "builtin", specs.BuiltinGenerator, _load_builtin_generator, _builtin_id,
                   lambda spec, ctx, model: _builtin_id(spec, ctx), licence("generator/builtin"), _generator_fit))
register(ModelKind("generator", "stylegan2", specs.StyleGAN2Generator, _load_stylegan2, _file_sha,
                   lambda spec, ctx, model: weights_identity(model()), licence("generator/stylegan2"), _generator_fit))


# ---------------------------------------------------------------- editors


def _load_builtin_editor(spec, ctx):
    from synthfer.models.builtin import builtin_editor

    g = ctx.generator
    return _place(builtin_editor(seed=spec.seed, n_latent=g.n_latent, w_dim=g.w_dim), ctx)


def _load_emostyle(spec, ctx):
    from synthfer.models.checkpoints import load_editor

    return _place(load_editor(ctx.resolve(spec.checkpoint)), ctx)


def _editor_fit(spec, e, models) -> list[str]:
    g = models["generator"]
    if (e.n_latent, e.w_dim) != (g.n_latent, g.w_dim):
        raise ModelFileError(f"editor has {e.n_latent} layers of {e.w_dim}, generator needs "
                             f"{g.n_latent} of {g.w_dim}")
    return [f"editor: {e.n_latent} layers of {e.w_dim}: they fit the generator"]


register(ModelKind("editor", "builtin", specs.BuiltinEditor, _load_builtin_editor, _builtin_id,
                   lambda spec, ctx, model: _builtin_id(spec, ctx), licence("editor/builtin"), _editor_fit))
register(ModelKind("editor", "emostyle", specs.EmoStyleEditor, _load_emostyle, _file_sha,
                   lambda spec, ctx, model: weights_identity(model()), licence("editor/emostyle"), _editor_fit))


# ---------------------------------------------------------------- quality and VA (onnxruntime)


def _onnx_file(role: str, spec, ctx):
    from synthfer.models.builtin_onnx import builtin_model_path

    return builtin_model_path(role) if spec.kind == "builtin" else ctx.resolve(spec.path)


def _onnx_loader(role: str):
    def load(spec, ctx):
        from synthfer.models.checkpoints import read_onnx
        from synthfer.models.onnx import OnnxModel

        path = _onnx_file(role, spec, ctx)
        label = f"builtin {role} model" if spec.kind == "builtin" else str(path)
        return OnnxModel(read_onnx(path), label, role, spec.preprocess.size, str(ctx.device), spec.input_name,
                         first_check=lambda model: _check_preset(role, spec, model))
    return load


def _onnx_sha(role: str):
    def file_hash(spec, ctx) -> str:
        from synthfer.models.checkpoints import sha256_file

        return sha256_file(_onnx_file(role, spec, ctx))
    return file_hash


def _crop_fit(role: str, spec, models) -> list[str]:
    from synthfer.stages.assess import crop_edges

    res = models["generator"].resolution
    left, top, right, bottom = spec.preprocess.crop
    x0, x1 = crop_edges(left, right, res, spec.preprocess.rounding)
    y0, y1 = crop_edges(top, bottom, res, spec.preprocess.rounding)
    w, h = x1 - x0, y1 - y0
    if min(w, h) < 8:
        raise ModelFileError(f"models.{role}.preprocess.crop: leaves {w}x{h} px of a {res} px frame; "
                             f"widen the crop box")
    size = spec.preprocess.size
    how = "downscaled" if min(w, h) > size else "upscaled" if min(w, h) < size else "as is"
    return [f"{role}: crop {w}x{h} px (rows {y0}:{y1}, columns {x0}:{x1}) of the {res} px frame, {how} to {size} "
            f"({spec.preprocess.resample}, {spec.preprocess.channels})"]


def _check_preset(role: str, spec, model) -> None:
    """A block that names a preset must hold that preset's model: its I/O is checked against the
    registry entry's, naming both, before anything else is said about the file."""
    if getattr(spec, "preset", None):
        from synthfer.models import catalog

        catalog.check_expected(spec.preset, catalog.get(spec.preset), model.input_side,
                               model.values_per_image(spec.output_name), f"models.{role}: {model.label}")


def _preset_fit(role: str, spec, model) -> list[str]:
    if not getattr(spec, "preset", None):
        return []
    from synthfer.models import catalog

    return [f"{role}: preset {spec.preset} ({catalog.get(spec.preset).title})"]


def _quality_fit(spec, model, models) -> list[str]:
    return _preset_fit("quality", spec, model) + _crop_fit("quality", spec, models)


def _va_fit(spec, model, models) -> list[str]:
    model.check_output(spec.output_name, max(spec.valence_index, spec.arousal_index) + 1)
    return _preset_fit("va", spec, model) + _crop_fit("va", spec, models)


for _role, _spec, _fit in (("quality", specs.QualitySpec, _quality_fit), ("va", specs.VASpec, _va_fit)):
    for _name in ("builtin", "onnx"):
        register(ModelKind(_role, _name, _spec, _onnx_loader(_role), _onnx_sha(_role),
                           (lambda file_hash: lambda spec, ctx, model: file_hash(spec, ctx))(_onnx_sha(_role)),
                           licence(f"{_role}/{_name}"), _fit))
