"""The per-shard work every executor runs: compute a shard's images, then measure, decide and
commit them.

Split in two so an executor can overlap them: `compute` is model work (accelerator), `finish`
is assessment, decisions, encoding and writing (CPU, I/O) and may run on another thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from synthfer.filters import Decider
from synthfer.io.records import Scores
from synthfer.io.shards import ShardStore
from synthfer.io.writer import Judged, ShardWriter
from synthfer.models.load import LoadedModels, load_models
from synthfer.models.stylegan2 import to_uint8
from synthfer.plan import Plan, Sample, Shard
from synthfer.recipe import LoadedRecipe, Recipe
from synthfer.stages import edit, identities
from synthfer.stages.assess import Assessor, scores_of


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
    """compute() is the model work; finish() measures, decides and hands the shard to the writer.
    An executor may run finish() on another thread, so assessment and encoding overlap the next
    shard's generation."""

    def __init__(self, recipe: Recipe, plan: Plan, models: LoadedModels, fingerprint: str, store: ShardStore):
        self.recipe, self.plan, self.models, self.fingerprint = recipe, plan, models, fingerprint
        self.decider = Decider(recipe.filters)
        self.assessor = Assessor(models.quality, recipe.models.quality, models.va, recipe.models.va)
        self.writer = ShardWriter(recipe, fingerprint, store)

    @classmethod
    def from_recipe(cls, loaded: LoadedRecipe, store: ShardStore, device: str | None = None) -> "Worker":
        """A worker with its own models (loaded once), as every executor's process or actor makes it."""
        models = load_models(loaded, device)
        return cls(loaded.recipe, Plan(loaded.recipe), models,
                   loaded.shard_fingerprint(models.identities, models.device.type), store)

    def build_shard(self, shard: Shard) -> dict:
        """The whole per-shard function: generate, assess, decide, encode, commit. Returns the marker."""
        return self.finish(self.compute(shard))

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
    def finish(self, c: ComputedShard) -> dict:
        """Measure, decide, then encode and commit the shard (io/writer.py). Returns its marker."""
        measured = self.assessor.measure(c.pixels, self.recipe.execution.batch_size)
        targets = [c.samples[i].target for i in c.todo]
        scores = scores_of(targets, c.idents, measured, self.models.quality is not None, self.models.va is not None)
        pixels = c.pixels.cpu().numpy()
        generated = {i: k for k, i in enumerate(c.todo)}
        judged = []
        for i, sample in enumerate(c.samples):
            k = generated.get(i)
            if k is None:
                judged.append(Judged(sample, c.early[i], Scores(), None))
                continue
            finite = bool(c.finite[k])
            verdict = self.decider.after_measurement(sample.target, scores[k], finite)
            judged.append(Judged(sample, verdict, scores[k], pixels[k] if finite else None))
        return self.writer.write(c.shard, judged)
