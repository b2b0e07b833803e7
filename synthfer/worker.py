"""The per-shard work every executor runs: compute a shard's images, then encode and commit it.

Split in two so an executor can overlap them: `compute` is model work (accelerator),
`finish` is encoding and writing (CPU, I/O) and may run on another thread.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch

from synthfer.io import images
from synthfer.io.shards import Member, ShardStore
from synthfer.models.load import LoadedModels, load_models
from synthfer.models.stylegan2 import to_uint8
from synthfer.plan import Plan, Sample, Shard
from synthfer.recipe import LoadedRecipe, Recipe
from synthfer import metrics
from synthfer.stages import edit, identities
from synthfer.stages.assess import Assessor
from synthfer.stages.decide import Decider


@dataclass
class ComputedShard:
    shard: Shard
    samples: list[Sample]
    early: list                          # per sample: a Verdict decided before generation, or None
    todo: list[int]                      # sample indices that were generated, in pixel order
    idents: list[int]                    # identity of each generated image (todo, then neutral references)
    pixels: torch.Tensor                 # uint8 [len(idents), H, W, 3] on the model device
    finite: np.ndarray                   # [len(idents)] bool: no NaN/Inf in the raw image


class Worker:
    """compute() is the model work; finish() measures, decides, encodes and commits. An executor
    may run finish() on another thread, so assessment and encoding overlap the next shard's
    generation."""

    def __init__(self, recipe: Recipe, plan: Plan, models: LoadedModels, fingerprint: str):
        self.recipe, self.plan, self.models, self.fingerprint = recipe, plan, models, fingerprint
        self.decider = Decider(recipe.filters)
        self.assessor = Assessor(models.quality, recipe.models.quality, models.va, recipe.models.va)

    @classmethod
    def from_recipe(cls, loaded: LoadedRecipe, device: str | None = None) -> "Worker":
        """A worker with its own models (loaded once), as every executor's process or actor makes it."""
        models = load_models(loaded, device)
        return cls(loaded.recipe, Plan(loaded.recipe), models,
                   loaded.shard_fingerprint(models.identities, models.device.type))

    def build_shard(self, shard: Shard, store: ShardStore) -> dict:
        """The whole per-shard function: generate, assess, decide, encode, commit. Returns the marker."""
        return self.finish(self.compute(shard), store)

    @torch.inference_mode()
    def compute(self, shard: Shard) -> ComputedShard:
        """Generate every sample of a shard that needs an image; skipped samples cost nothing."""
        dtype = self.recipe.execution.dtype
        if dtype == "float32":  # the default path: no autocast context at all, so CPU results never move
            return self._compute(shard)
        with torch.autocast("cuda", dtype=getattr(torch, dtype)):
            return self._compute(shard)

    def _compute(self, shard: Shard) -> ComputedShard:
        g, e, device = self.models.generator, self.models.editor, self.models.device
        bs = self.recipe.execution.batch_size
        samples = self.plan.samples(shard)
        early = [self.decider.before_generation(s.target) for s in samples]
        todo = [i for i, v in enumerate(early) if v is None]
        # Identity similarity compares with the identity's neutral image; render it even when
        # neutral is not a target (then it is measured but never written).
        refs = list(shard.identities) if self.assessor.has_embedding and not self.recipe.targets.neutral else []

        ws_id = identities.identity_ws(g, [self.plan.seed_of(i) for i in shard.identities],
                                       self.recipe.identities.truncation_psi,
                                       self.recipe.identities.truncation_cutoff, device, bs)
        row_of = {ident: r for r, ident in enumerate(shard.identities)}
        idents = [samples[i].identity for i in todo] + refs
        targets = [samples[i].target for i in todo] + [None] * len(refs)
        ws = edit.sample_ws(
            e, ws_id[torch.tensor([row_of[i] for i in idents], dtype=torch.long, device=device)],
            torch.tensor([[t.valence, t.arousal] if t else [0.0, 0.0] for t in targets], dtype=torch.float32, device=device),
            torch.tensor([t is None or t.is_neutral for t in targets], dtype=torch.bool, device=device), bs)
        img = edit.render(g, ws, bs).float() if idents else torch.zeros(0, 3, g.resolution, g.resolution, device=device)
        finite = torch.isfinite(img).flatten(1).all(1).cpu().numpy()
        return ComputedShard(shard, samples, early, todo, idents, to_uint8(torch.nan_to_num(img)), finite)

    @torch.inference_mode()
    def assess(self, c: ComputedShard) -> tuple[list[dict], dict[int, np.ndarray]]:
        """Measure and decide: manifest rows in sample order, and the pixels of generated finite images."""
        measured = self.assessor.measure(c.pixels, self.recipe.execution.batch_size)
        pixels_np = c.pixels.cpu().numpy()
        scores = self._scores(c.samples, c.todo, c.idents, measured)
        rows, kept = [self._row(sample, c.shard) for sample in c.samples], {}
        for i, verdict in enumerate(c.early):
            if verdict is not None:
                rows[i].update(status=verdict.status, reject_reasons=list(verdict.reasons))
        for k, i in enumerate(c.todo):
            verdict = self.decider.after_measurement(c.samples[i].target, scores[k], bool(c.finite[k]))
            rows[i].update(scores[k], status=verdict.status, reject_reasons=list(verdict.reasons))
            if c.finite[k]:
                kept[i] = pixels_np[k]
        return [_nulls(r) for r in rows], kept

    def _scores(self, samples, todo, idents, m) -> list[dict]:
        """Manifest score columns per generated sample: None = not measured, NaN = model gave no number."""
        n = len(todo)
        out = [dict() for _ in range(n)]
        if self.models.quality is not None:
            for k in range(n):
                out[k]["quality"] = float(m.quality[k])
            if m.embedding is not None:
                neutral_row = {}
                for k, ident in enumerate(idents):
                    if k >= n or samples[todo[k]].target.is_neutral:
                        neutral_row.setdefault(ident, k)
                sims = metrics.cosine_similarity(m.embedding[:n], m.embedding[[neutral_row[i] for i in idents[:n]]])
                for k in range(n):
                    out[k]["identity_similarity"] = None if samples[todo[k]].target.is_neutral else float(sims[k])
        if self.models.va is not None:
            t = [samples[i].target for i in todo]
            err = metrics.va_errors([x.valence for x in t], [x.arousal for x in t], m.pred_valence[:n], m.pred_arousal[:n])
            for k in range(n):
                out[k].update(pred_valence=float(m.pred_valence[k]), pred_arousal=float(m.pred_arousal[k]))
                out[k].update({name: float(v[k]) for name, v in err.items()})
                if t[k].intensity == 0.0:   # no direction at the origin: undefined, not a failure
                    out[k]["direction_error_deg"] = None
                if m.pred_valence[k] == 0.0 and m.pred_arousal[k] == 0.0:  # predicted exactly neutral
                    out[k]["pred_angle_deg"] = out[k]["direction_error_deg"] = None
        return out

    def finish(self, computed: ComputedShard, store: ShardStore) -> dict:
        """Assess, then encode kept images, fill in their columns, commit the shard. Returns its marker."""
        rows, pixels = self.assess(computed)
        spec = self.recipe.output.image
        ext = images.EXTENSIONS[spec.format]
        keep_rejected = self.recipe.output.keep_rejected
        tars: dict[str, list[Member]] = {"accepted": [], "rejected": []}
        for i, (sample, row) in enumerate(zip(computed.samples, rows)):
            if i not in pixels or not (row["status"] == "accepted" or (row["status"] == "rejected" and keep_rejected)):
                continue
            data, width, height = images.encode(pixels[i], spec.format, spec.size, spec.quality)
            row.update(width=width, height=height, image_sha256=hashlib.sha256(data).hexdigest())
            tars[row["status"]].append(Member(f"{sample.key}.{ext}", data))
            tars[row["status"]].append(Member(f"{sample.key}.json", _label(sample, row)))
        info = {"fingerprint": self.fingerprint, "split": computed.shard.split,
                "accepted": sum(r["status"] == "accepted" for r in rows)}
        return store.commit(computed.shard.name, tars["accepted"], tars["rejected"] if keep_rejected else None,
                            rows, info)

    def _row(self, sample: Sample, shard: Shard) -> dict:
        t = sample.target
        return dict(key=sample.key, shard=shard.index, identity=sample.identity,
                    identity_seed=sample.identity_seed, split=sample.split, target=t.key,
                    target_angle_deg=t.angle_deg, target_intensity=t.intensity,
                    target_valence=t.valence, target_arousal=t.arousal,
                    recipe_fingerprint=self.fingerprint)


def _nulls(row: dict) -> dict:
    """NaN in a score column means 'no usable number': the manifest stores it as null."""
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}


def _label(sample: Sample, row: dict) -> bytes:
    """KEY.json: what a training job needs next to the image, without opening the manifest."""
    t = sample.target
    label = {"key": sample.key, "identity": sample.identity, "split": sample.split, "target": t.key,
             "emotion": t.emotion, "valence": t.valence, "arousal": t.arousal,
             "angle_deg": t.angle_deg, "intensity": t.intensity,
             "quality": row.get("quality"), "pred_valence": row.get("pred_valence"),
             "pred_arousal": row.get("pred_arousal")}
    return json.dumps(label, sort_keys=True, separators=(",", ":")).encode()
