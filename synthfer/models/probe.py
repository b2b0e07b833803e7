"""One real batch through every model of a recipe, as `synthfer models check` runs it: the first
identity, edited to a few of the recipe's targets, rendered, then measured by the quality model
and each VA estimator with the recipe's own preprocessing.

It fails (ModelFileError, one line) on whatever the build would fail on with these files (an
output narrower than the indices read, a model that cannot run a batch) and warns about files
that run but are probably read wrong: VA outputs far outside [-1, 1] (logits or unnormalised
scores), rows that sum to one (class probabilities), indices other than the preset's, a
quality embedding of one value or a scalar read from a wide output.
"""

from __future__ import annotations

import numpy as np
import torch

from synthfer.errors import ModelFileError
from synthfer.models.stylegan2 import to_uint8
from synthfer.plan import Plan
from synthfer.stages import edit, identities
from synthfer.stages.assess import preprocess

PROBE_SAMPLES = 4       # images in the batch: the neutral image and up to three edits
LOGIT_LIMIT = 1.5       # |valence| or |arousal| beyond this is not a valence/arousal reading


def probe(loaded, models) -> tuple[list[str], list[str]]:
    """(lines, warnings) about one batch; raises ModelFileError where a build would fail."""
    pixels = _render(loaded, models)
    lines, warnings = [f"probe: {pixels.shape[0]} images of identity 0 rendered at {pixels.shape[1]} px"], []
    recipe = loaded.recipe
    if models.quality is not None:
        w = _quality(models.quality, recipe.models.quality, pixels, lines)
        warnings += w
    va_slots = [slot for slot in loaded.model_slots() if slot.role == "va"]
    for slot, model in zip(va_slots, models.va):
        warnings += _va(slot, model, pixels, lines)
    return lines, warnings


def _render(loaded, models) -> torch.Tensor:
    """uint8 [N, H, W, 3] of identity 0: its neutral image and edits to the first targets."""
    recipe, plan = loaded.recipe, Plan(loaded.recipe)
    targets = [t for t in plan.targets if not t.is_neutral][:PROBE_SAMPLES - 1]
    g, e, device = models.generator, models.editor, models.device
    with torch.inference_mode():
        ws = identities.identity_ws(g, [plan.seed_of(0)], recipe.identities.truncation_psi,
                                    recipe.identities.truncation_cutoff, device, 1)
        ws = ws.repeat(len(targets) + 1, 1, 1)
        va = torch.tensor([[t.valence, t.arousal] for t in targets], dtype=torch.float32, device=device)
        edited = torch.tensor([False] + [True] * len(targets), device=device)   # row 0: the neutral image
        img = edit.render_batch(g, e, ws, va, edited)
        if not torch.isfinite(img).all():
            raise ModelFileError("models.generator/editor: the probe batch has NaN or infinite pixels; "
                                 "the weights or execution.dtype are broken")
        return to_uint8(img)


def _quality(model, spec, pixels, lines: list[str]) -> list[str]:
    out = model.run(preprocess(pixels, spec.preprocess), spec.output_name).reshape(pixels.shape[0], -1)
    width, warnings = out.shape[1], []
    if spec.output == "embedding":
        norms = np.linalg.norm(out, axis=1)
        lines.append(f"quality: {width}-d embedding, norms {norms.min():.2f} to {norms.max():.2f}")
        if width == 1:
            warnings.append("models.quality: output: embedding but the model gives one value per image; "
                            "identity similarity needs an embedding (output: scalar for a score)")
    else:
        lines.append(f"quality: scalar {out[:, 0].min():.3f} to {out[:, 0].max():.3f}")
        if width > 1:
            warnings.append(f"models.quality: output: scalar reads the first of {width} values per image; "
                            f"a {width}-d output is usually an embedding (output: embedding)")
    if not np.isfinite(out).all():
        warnings.append("models.quality: the probe batch got NaN or infinite scores")
    return warnings


def _va(slot, model, pixels, lines: list[str]) -> list[str]:
    spec, name = slot.spec, slot.field_path
    out = model.run(preprocess(pixels, spec.preprocess), spec.output_name).reshape(pixels.shape[0], -1)
    width = out.shape[1]
    wanted = max(spec.valence_index, spec.arousal_index)
    if width <= wanted:
        raise ModelFileError(f"{name}: {model.label}: the output has {width} values per image, "
                             f"the recipe reads index {wanted} (valence_index {spec.valence_index}, "
                             f"arousal_index {spec.arousal_index})")
    v, a = out[:, spec.valence_index], out[:, spec.arousal_index]
    lines.append(f"{slot.name}: {width} values per image; valence {v.min():+.3f} to {v.max():+.3f}, "
                 f"arousal {a.min():+.3f} to {a.max():+.3f} (indices {spec.valence_index}, {spec.arousal_index})")
    warnings = []
    reach = float(np.nanmax(np.abs(np.stack([v, a])))) if np.isfinite(np.stack([v, a])).any() else 0.0
    if reach > LOGIT_LIMIT:
        warnings.append(f"{name}: values at indices {spec.valence_index} and {spec.arousal_index} reach "
                        f"{reach:.2f}, far outside [-1, 1]: they look like logits, not valence and arousal"
                        f"{_index_hint(width)}")
    if width >= 3 and np.all(out >= 0) and np.all(out <= 1) and np.allclose(out.sum(1), 1.0, atol=1e-3):
        warnings.append(f"{name}: every row of the output sums to 1: these are class probabilities, "
                        f"not valence and arousal")
    if not np.isfinite(np.stack([v, a])).all():
        warnings.append(f"{name}: the probe batch got NaN or infinite valence/arousal")
    preset = _preset_indices(spec)
    if preset is not None and preset != (spec.valence_index, spec.arousal_index):
        warnings.append(f"{name}: reads indices {spec.valence_index} and {spec.arousal_index}, preset "
                        f"{spec.preset} has valence at {preset[0]} and arousal at {preset[1]}")
    return warnings


def _index_hint(width: int) -> str:
    if width == 10:
        return " (HSEmotion *_va_mtl models: valence_index 8, arousal_index 9, or preset: hsemotion-...)"
    return "; check valence_index and arousal_index"


def _preset_indices(spec) -> tuple[int, int] | None:
    if not getattr(spec, "preset", None):
        return None
    from synthfer.models import catalog

    block = catalog.get(spec.preset).recipe
    if "valence_index" not in block:
        return None
    return int(block["valence_index"]), int(block["arousal_index"])
