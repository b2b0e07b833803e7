"""The writer side of a shard: manifest rows, KEY.json labels, encoded images, tars and the part,
handed to the commit protocol as files. A new per-shard output file is added here (its name in
io/layout.py); nothing upstream changes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from synthfer import runtime
from synthfer.filters import ACCEPTED, REJECTED, Verdict, decisions_digest, surplus_digest
from synthfer.io import images, manifest
from synthfer.io.manifest import part_bytes
from synthfer.io.records import EditRecord, Row, Scores
from synthfer.io.shards import Member, ShardStore, tar_bytes


@dataclass
class Judged:
    """One planned sample after the decide stage."""
    sample: object                 # plan.Sample
    verdict: Verdict
    scores: Scores
    pixels: np.ndarray | None      # uint8 [H, W, 3] of a rendered, finite image; None otherwise
    stored: tuple | None = None    # (member name, encoded bytes, width, height) kept from a committed version
    edit: EditRecord = EditRecord()  # the request it was rendered with, the correction's attempts


ENCODE_PIXELS = 1 << 16   # pixels per encoding task: one 256 px image, or 16 of 64 px


def _encode(chunk: list[Judged], spec) -> list[tuple[bytes, int, int]]:
    with runtime.side_slot():
        return images.encode_many([j.pixels for j in chunk], spec.format, spec.size, spec.quality, spec.png_level)


def _chunks(kept: list[Judged]) -> list[list[Judged]]:
    """Encoding tasks of about ENCODE_PIXELS each: one task per small image spent more on the
    pool's hand-over than on the encoding (64 px: 0.65 ms of pool CPU per image against 0.3)."""
    if not kept:
        return []
    area = max(j.pixels.shape[0] * j.pixels.shape[1] for j in kept)
    per = max(1, ENCODE_PIXELS // area)
    return [kept[s:s + per] for s in range(0, len(kept), per)]


class ShardWriter:
    def __init__(self, recipe, fingerprint: str, store: ShardStore):
        self.recipe, self.fingerprint, self.store = recipe, fingerprint, store
        manifest.warm_up()

    def write(self, job, judged: list[Judged], composition: str, rendered: int) -> dict:
        """Encode what is kept, build rows and tars, commit the shard. Returns its marker, plus
        `rendered` (images rendered for it this time; reported, not stored)."""
        shard = job.shard
        spec, keep_rejected = self.recipe.output.image, self.recipe.output.keep_rejected
        ext = images.EXTENSIONS[spec.format]
        tars: dict[str, list[Member]] = {ACCEPTED: [], REJECTED: []}
        rows = []
        kept = [j for j in judged if j.stored is None and j.pixels is not None and (
            j.verdict.status == ACCEPTED or (j.verdict.status == REJECTED and keep_rejected))]
        # The encoders release the GIL: with cores to spare the images go to a pool.
        encode = (lambda chunk: _encode(chunk, spec))
        pool, chunks = runtime.pool("side"), _chunks(kept)
        encoded = dict(zip((id(j) for j in kept),
                           (e for done in (pool.map(encode, chunks) if pool else map(encode, chunks)) for e in done)))
        for j in judged:
            status = j.verdict.status
            image = None
            if status == ACCEPTED or (status == REJECTED and keep_rejected):
                if j.stored is not None:
                    image = (j.stored[0], j.stored[1], j.stored[2], j.stored[3])
                elif j.pixels is not None:
                    data, width, height = encoded[id(j)]
                    image = (f"{j.sample.key}.{ext}", data, width, height)
            row = self._row(shard, j, image)
            if image is not None:
                tars[status] += [Member(image[0], image[1]), Member(f"{row.key}.json", _label(j.sample, row))]
            rows.append(row)
        layout = self.store.layout
        files = {layout.tar(shard.index, shard.split): tar_bytes(tars[ACCEPTED]),
                 layout.part(shard.index): part_bytes(rows)}
        if keep_rejected:
            files[layout.rejected_tar(shard.index, shard.split)] = tar_bytes(tars[REJECTED])
        info = {"fingerprint": self.fingerprint, "split": shard.split, "round": shard.round, "rows": len(rows),
                "accepted": sum(r.status == ACCEPTED for r in rows),
                "images": sum(m.name.endswith(".json") for m in tars[ACCEPTED]),
                "composition": composition, "decisions": decisions_digest(self.recipe),
                "surplus": surplus_digest(job.surplus)}
        return dict(self.store.commit(shard.index, files, info), rendered=rendered)

    def _row(self, shard, j: Judged, image: tuple | None) -> Row:
        s, t = j.sample, j.sample.target
        return Row(key=s.key, shard=shard.index, identity=s.identity, identity_seed=s.identity_seed,
                   split=s.split, target=t.key, target_angle_deg=t.angle_deg, target_intensity=t.intensity,
                   target_valence=t.valence, target_arousal=t.arousal, class_name=t.class_name,
                   class_id=t.class_id, status=j.verdict.status, reject_reasons=j.verdict.reasons,
                   scores=j.scores, score_flags=tuple(j.scores.flags()), edit=j.edit,
                   width=image[2] if image else None, height=image[3] if image else None,
                   image_sha256=hashlib.sha256(image[1]).hexdigest() if image else None,
                   recipe_fingerprint=self.fingerprint)


# KEY.json never holds null, so a default collate batches every field: a value that does not
# exist (neutral's angle) or was not measured is this sentinel, outside the field's valid range.
LABEL_SENTINELS = {"target_angle_deg": -1.0, "quality": -1.0, "identity_similarity": -2.0,
                   "pred_valence": -2.0, "pred_arousal": -2.0}


# KEY.json's fields, in the order the card lists them (the file itself is written with sorted keys).
LABEL_FIELDS = ("key", "identity", "identity_seed", "split", "status", "target", "class", "class_id",
                "target_valence", "target_arousal", "target_intensity", "target_angle_deg", "quality",
                "identity_similarity", "pred_valence", "pred_arousal")


def _label(sample, row: Row) -> bytes:
    """KEY.json: what a training job needs next to the image, named as the manifest's columns."""
    t = sample.target
    label = {"key": sample.key, "identity": sample.identity, "identity_seed": sample.identity_seed,
             "split": sample.split, "status": row.status, "target": t.key, "class": t.class_name,
             "class_id": t.class_id, "target_valence": t.valence, "target_arousal": t.arousal,
             "target_intensity": t.intensity,
             "target_angle_deg": t.angle_deg if t.angle_deg is not None else LABEL_SENTINELS["target_angle_deg"]}
    for name in ("quality", "identity_similarity", "pred_valence", "pred_arousal"):
        value = row.scores.number(name)
        label[name] = value if value is not None else LABEL_SENTINELS[name]
    return json.dumps(label, sort_keys=True, separators=(",", ":")).encode()
