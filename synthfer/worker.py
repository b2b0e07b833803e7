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
from synthfer.models.load import LoadedModels
from synthfer.models.stylegan2 import to_uint8
from synthfer.plan import Plan, Sample, Shard
from synthfer.recipe import Recipe
from synthfer.stages import edit, identities


@dataclass
class ComputedShard:
    shard: Shard
    samples: list[Sample]
    pixels: np.ndarray   # [N, H, W, 3] uint8, one per sample, in sample order


class Worker:
    def __init__(self, recipe: Recipe, plan: Plan, models: LoadedModels, fingerprint: str):
        self.recipe, self.plan, self.models, self.fingerprint = recipe, plan, models, fingerprint

    @torch.inference_mode()
    def compute(self, shard: Shard) -> ComputedShard:
        g, e, device = self.models.generator, self.models.editor, self.models.device
        bs = self.recipe.execution.batch_size
        samples = self.plan.samples(shard)
        ws_id = identities.identity_ws(g, [self.plan.seed_of(i) for i in shard.identities],
                                       self.recipe.identities.truncation_psi,
                                       self.recipe.identities.truncation_cutoff, device, bs)
        row_of = {ident: r for r, ident in enumerate(shard.identities)}
        ws_rows = ws_id[torch.tensor([row_of[s.identity] for s in samples], device=device)]
        va = torch.tensor([[s.target.valence, s.target.arousal] for s in samples], dtype=torch.float32, device=device)
        neutral = torch.tensor([s.target.is_neutral for s in samples], device=device)
        ws = edit.sample_ws(e, ws_rows, va, neutral, bs)
        img = edit.render(g, ws, bs)
        return ComputedShard(shard, samples, to_uint8(img).cpu().numpy())

    def finish(self, computed: ComputedShard, store: ShardStore) -> dict:
        """Encode every image, build the manifest rows, commit the shard. Returns its marker."""
        spec = self.recipe.output.image
        ext = images.EXTENSIONS[spec.format]
        members, rows = [], []
        for sample, pixels in zip(computed.samples, computed.pixels):
            data, width, height = images.encode(pixels, spec.format, spec.size, spec.quality)
            row = self._row(sample, computed.shard)
            row.update(status="accepted", reject_reasons=[], width=width, height=height,
                       image_sha256=hashlib.sha256(data).hexdigest())
            rows.append(row)
            members.append(Member(f"{sample.key}.{ext}", data))
            members.append(Member(f"{sample.key}.json", _label(sample, row)))
        info = {"fingerprint": self.fingerprint, "split": computed.shard.split,
                "accepted": sum(r["status"] == "accepted" for r in rows)}
        return store.commit(computed.shard.name, members, rows, info)

    def _row(self, sample: Sample, shard: Shard) -> dict:
        t = sample.target
        return dict(key=sample.key, shard=shard.index, identity=sample.identity,
                    identity_seed=sample.identity_seed, split=sample.split, target=t.key,
                    target_angle_deg=t.angle_deg, target_intensity=t.intensity,
                    target_valence=t.valence, target_arousal=t.arousal,
                    recipe_fingerprint=self.fingerprint)


def _label(sample: Sample, row: dict) -> bytes:
    """KEY.json: what a training job needs next to the image, without opening the manifest."""
    t = sample.target
    label = {"key": sample.key, "identity": sample.identity, "split": sample.split, "target": t.key,
             "emotion": t.emotion, "valence": t.valence, "arousal": t.arousal,
             "angle_deg": t.angle_deg, "intensity": t.intensity,
             "quality": row.get("quality"), "pred_valence": row.get("pred_valence"),
             "pred_arousal": row.get("pred_arousal")}
    return json.dumps(label, sort_keys=True, separators=(",", ":")).encode()
