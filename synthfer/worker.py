"""The per-shard work every executor runs: render a shard's images, measure, decide, commit.

Split in two so an executor can overlap them: `compute` is model work (accelerator), `finish`
is assessment, decisions, encoding and writing (CPU, I/O) and may run on another thread.

A shard already committed with the same generation fingerprint and composition is not
rendered again when only its decisions change (other filters, a quota's surplus): its stored
scores are re-decided and its stored images reused; a sample that becomes kept without a
stored image is rendered again from its own render batch, which gives the same pixels as the
first time (a shard's batches are fixed by its composition and execution.batch_size).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from synthfer.filters import ACCEPTED, REJECTED, Decider, Verdict
from synthfer import correction, runtime
from synthfer.io.records import EditRecord, Scores
from synthfer.io.shards import ShardStore
from synthfer.io.writer import Judged, ShardWriter
from synthfer.models.load import LoadedModels, load_models
from synthfer.models.stylegan2 import to_uint8
from synthfer.plan import Plan, Sample, Shard
from synthfer.recipe import LoadedRecipe, Recipe
from synthfer.recipe.schema import va_specs
from synthfer.stages import edit, identities
from synthfer.stages.assess import Assessor, scores_of

SURPLUS = "surplus"


@dataclass(frozen=True)
class Job:
    shard: Shard
    surplus: frozenset = frozenset()     # keys over the quota: accepted by the filters, kept out of the data


@dataclass
class ComputedShard:
    job: Job
    samples: list[Sample]
    early: list                          # per sample: a Verdict decided before rendering, or None
    todo: list[int]                      # sample indices rendered, in render order
    idents: list[int]                    # identity of each rendered image (todo, then neutral references)
    requests: list = field(default_factory=list)  # per render position: complex VA request, None = unedited
    pixels: torch.Tensor | None = None   # uint8 [len(idents), H, W, 3] on the model device (fresh shards)
    finite: np.ndarray | None = None     # [len(idents)] bool: no NaN/Inf in the raw image
    edits: list = field(default_factory=list)     # per todo sample: its EditRecord (fresh shards)
    extra: int = 0                       # correction renders beyond one per position
    reused: dict | None = None           # committed rows by key, their stored images, regenerated pixels

    def items(self) -> list[tuple]:
        """(identity, request) of every render position."""
        return list(zip(self.idents, self.requests))


@dataclass
class _Reuse:
    rows: dict                           # key -> manifest row of the committed version
    images: dict                         # key -> (member name, encoded bytes)
    pixels: dict = field(default_factory=dict)   # sample index -> uint8 [H, W, 3], rendered again


class Worker:
    """compute() is the model work; finish() measures, decides and hands the shard to the writer."""

    def __init__(self, recipe: Recipe, plan: Plan, models: LoadedModels, fingerprint: str, store: ShardStore):
        self.recipe, self.plan, self.models, self.fingerprint = recipe, plan, models, fingerprint
        self.store = store
        self.decider = Decider(recipe.filters)
        self.assessor = Assessor(models.quality, recipe.models.quality, list(zip(models.va, va_specs(recipe.models))))
        self.writer = ShardWriter(recipe, fingerprint, store)
        if models.device.type == "cuda":
            runtime.set_tf32(recipe.execution.tf32)
        self.correction = recipe.correction
        self._calibration = None
        self.on_batch = None   # (shard, samples) after each generated batch: progress of local builds
        self.before_batch = None   # () before each generated batch: a lane's thread count; raises to abandon

    @property
    def calibration(self) -> correction.Calibration | None:
        """The output's calibration.json (written by the build before any shard), read once."""
        if self.correction.calibrates and self._calibration is None:
            rel = self.store.layout.calibration
            self._calibration = correction.Calibration.from_json(self.store.folder.read_bytes(rel),
                                                                 self.store.folder.display(rel))
        return self._calibration

    @classmethod
    def from_recipe(cls, loaded: LoadedRecipe, store: ShardStore, device: str | None = None) -> "Worker":
        """A worker with its own models (loaded once), as every executor's process or actor makes it."""
        from synthfer import batching

        runtime.tune_malloc()
        models = load_models(loaded, device)
        loaded = loaded.with_batch_size(batching.resolve(loaded.recipe.execution.batch_size, models.generator,
                                                         models.device))
        return cls(loaded.recipe, Plan(loaded.recipe), models,
                   loaded.shard_fingerprint(models.identities, models.device.type), store)

    def build_shard(self, job: Job) -> dict:
        """The whole per-shard function: render (or reuse), assess, decide, encode, commit. Returns the marker."""
        return self.finish(self.compute(job))

    @torch.inference_mode()
    def compute(self, job: Job) -> ComputedShard:
        dtype = self.recipe.execution.dtype
        with runtime.generating():   # the writer's encoding leaves the generator its cores meanwhile
            if dtype == "float32":  # the default path: no autocast context at all, so CPU results never move
                return self._compute(job)
            with torch.autocast("cuda", dtype=getattr(torch, dtype)):
                return self._compute(job)

    def _compute(self, job: Job) -> ComputedShard:
        shard = job.shard
        samples = self.plan.samples(shard)
        early = [self.decider.before_generation(s.target) for s in samples]
        todo = [i for i, v in enumerate(early) if v is None]
        # Identity similarity compares with the identity's neutral image; render it even when the
        # shard has no neutral target (then it is measured but never written).
        has_neutral = any(s.target.is_neutral for s in samples)
        refs = list(shard.identities) if self.assessor.has_embedding and not has_neutral else []
        idents = [samples[i].identity for i in todo] + refs
        c = ComputedShard(job, samples, early, todo, idents)
        c.requests = [self._first_request(samples[i].target) for i in todo] + [None] * len(refs)
        old = self.store.reusable(shard.index, self.fingerprint, self.plan.composition(shard))
        if old is not None:
            rows, images = old
            c.reused = _Reuse(rows, images)
            wanted = [k for k, i in enumerate(todo) if self._keeps(samples[i], rows, job) and samples[i].key not in images]
            if any((rows[samples[todo[k]].key].get("attempts") or 0) > 1 for k in wanted):
                # A corrected render was batched with whatever else was still short at its step:
                # only replaying the whole shard's correction gives its pixels again.
                self._fresh(c)
                c.reused.pixels = {todo[k]: c.pixels[k] for k in wanted}
                c.pixels = c.finite = None
            else:
                c.reused.pixels = {todo[k]: p for k, (p, _) in self._render(c.items(), shard, wanted).items()}
            return c
        self._fresh(c)
        return c

    def _first_request(self, target) -> complex | None:
        if target.is_neutral:   # neutral samples keep the unedited w (EmoStyle's delta is not zero at VA (0, 0))
            return None
        cal = self.calibration
        return complex(target.valence, target.arousal) if cal is None else cal.request(target)

    def _fresh(self, c: ComputedShard) -> None:
        """Render every position; with correction, re-edit the samples still short (worker-side loop)."""
        rendered = self._render(c.items(), c.job.shard, None, progress=len(c.todo))
        res = self.models.generator.resolution
        c.pixels = torch.stack([rendered[k][0] for k in range(len(c.idents))]) if c.idents else torch.zeros(
            0, res, res, 3, dtype=torch.uint8)
        c.finite = np.array([rendered[k][1] for k in range(len(c.idents))], dtype=bool)
        c.edits = [EditRecord(None if r is None else (r.real, r.imag), 1) for r in c.requests[:len(c.todo)]]
        if self.correction.iterates:
            self._correct(c)

    def _correct(self, c: ComputedShard) -> None:
        """Up to correction.steps more renders for each sample not yet within the tolerance. All
        samples short at a step are rendered together, in sample order, in batches of
        execution.batch_size: the same shard gives the same renders on every executor."""
        spec, bs = self.correction, self.recipe.execution.batch_size
        targets = [c.samples[i].target for i in c.todo]
        eligible = [k for k, t in enumerate(targets) if correction.applies(t) and c.requests[k] is not None]
        if not eligible:
            return
        tries = {k: correction.Attempts([c.requests[k]]) for k in eligible}
        first = self.assessor.measure_va(c.pixels[eligible], bs)
        best = {}
        for k, p in zip(eligible, first):
            tries[k].predicted.append(complex(p))
            best[k] = correction.rank(targets[k], complex(p), spec)
        short = [k for k in eligible if c.finite[k] and not correction.within(targets[k], tries[k].predicted[0], spec)]
        for _ in range(spec.steps):
            if not short:
                break
            items = [(c.idents[k], correction.next_request(targets[k], tries[k].requests[-1], tries[k].predicted[-1],
                                                           spec)) for k in short]
            rendered = self._render(items, c.job.shard, None)
            c.extra += len(items)
            pixels = torch.stack([rendered[j][0] for j in range(len(items))])
            got = self.assessor.measure_va(pixels, bs)
            still = []
            for j, k in enumerate(short):
                ok = rendered[j][1]
                p = complex(got[j]) if ok else complex(np.nan, np.nan)
                tries[k].requests.append(items[j][1])
                tries[k].predicted.append(p)
                key = correction.rank(targets[k], p, spec)
                if ok and key < best[k]:
                    best[k], tries[k].best = key, len(tries[k].requests) - 1
                    c.pixels[k], c.finite[k] = pixels[j], True
                if ok and np.isfinite(p) and not correction.within(targets[k], p, spec):
                    still.append(k)
            short = still
        for k, t in tries.items():
            r = t.requests[t.best]
            c.requests[k] = r
            c.edits[k] = EditRecord((r.real, r.imag), len(t.requests), tuple(t.errors(targets[k])),
                                    tuple(_num(p.real) for p in t.predicted), tuple(_num(p.imag) for p in t.predicted))

    @torch.inference_mode()
    def pilot(self, targets: list) -> np.ndarray:
        """correction.calibrate's pilot: every target of `targets` rendered as requested for each
        pilot identity (own seeds), read back. [identities * len(targets)] complex, NaN where unusable."""
        spec = self.correction
        seeds = [correction.pilot_seed(self.recipe.seed, j) for j in range(spec.pilot_identities)]
        out = []
        for j in range(len(seeds)):   # one identity at a time: memory stays one identity's renders
            items = [(j, complex(t.valence, t.arousal)) for t in targets]
            rendered = self._render(items, None, None, (list(range(len(seeds))), seeds))
            pixels = torch.stack([rendered[k][0] for k in range(len(items))])
            got = self.assessor.measure_va(pixels, self.recipe.execution.batch_size)
            out.append(np.where([rendered[k][1] for k in range(len(items))], got, np.nan + 0j))
        return np.concatenate(out)

    def _render(self, items: list[tuple], shard: Shard | None, wanted: list[int] | None,
                people: tuple | None = None, progress: int = 0) -> dict:
        """{position: (uint8 [H, W, 3] image, finite)} of items[position] = (identity, request)
        for positions `wanted` (all when None). Positions are rendered in fixed batches of
        execution.batch_size, so an image never depends on which others were wanted.
        people: (identities, seeds) whose w are computed; default the shard's. progress: positions
        below it are planned samples, reported to on_batch as each batch is done."""
        g, e, device = self.models.generator, self.models.editor, self.models.device
        bs = self.recipe.execution.batch_size
        positions = range(len(items)) if wanted is None else wanted
        batches = sorted({p // bs for p in positions})
        wanted = None if wanted is None else set(wanted)
        if not batches:
            return {}
        idents, seeds = people or (list(shard.identities), [self.plan.seed_of(i) for i in shard.identities])
        ws_id = identities.identity_ws(g, seeds, self.recipe.identities.truncation_psi,
                                       self.recipe.identities.truncation_cutoff, device, bs)
        row_of = {ident: r for r, ident in enumerate(idents)}
        out = {}
        for b in batches:
            if self.before_batch is not None:
                self.before_batch()
            span = range(b * bs, min((b + 1) * bs, len(items)))
            ws = ws_id[torch.tensor([row_of[items[p][0]] for p in span], dtype=torch.long, device=device)]
            requests = [items[p][1] for p in span]
            va = torch.tensor([[r.real, r.imag] for r in requests if r is not None], dtype=torch.float32,
                              device=device).reshape(-1, 2)
            edited = torch.tensor([r is not None for r in requests], device=device)
            img = edit.render_batch(g, e, ws, va, edited)
            finite = _finite_rows(img)
            pixels = to_uint8(img if finite.all() else torch.nan_to_num(img))   # a NaN-free batch needs no copy
            for j, p in enumerate(span):
                if wanted is None or p in wanted:
                    out[p] = (pixels[j], bool(finite[j]))
            done = sum(p < progress for p in span)
            if done and self.on_batch is not None:
                self.on_batch(shard, done)
        return out

    def _keeps(self, sample: Sample, rows: dict, job: Job) -> bool:
        """Whether a committed sample's image belongs in the shard under the current decisions."""
        row = rows[sample.key]
        verdict = self._decide_stored(sample, row, job)
        return verdict.status == ACCEPTED or (verdict.status == REJECTED and self.recipe.output.keep_rejected
                                              and _finite_image(row))

    def _decide_stored(self, sample: Sample, row: dict, job: Job) -> Verdict:
        early = self.decider.before_generation(sample.target)
        if early is not None:
            return early
        scores = Scores.from_columns(row, row["score_flags"])
        return self._surplus(self.decider.after_measurement(sample.target, scores, _finite_image(row)), sample, job)

    @staticmethod
    def _surplus(verdict: Verdict, sample: Sample, job: Job) -> Verdict:
        return Verdict(SURPLUS) if verdict.status == ACCEPTED and sample.key in job.surplus else verdict

    @torch.inference_mode()
    def finish(self, c: ComputedShard) -> dict:
        """Measure (fresh shards), decide, then encode and commit (io/writer.py). Returns the marker."""
        try:
            return self._finish(c)
        finally:
            runtime.release()

    def _finish(self, c: ComputedShard) -> dict:
        if c.reused is not None:
            return self.writer.write(c.job, self._judge_reused(c), self.plan.composition(c.job.shard),
                                     len(c.reused.pixels))
        measured = self.assessor.measure(c.pixels, self.recipe.execution.batch_size)
        targets = [c.samples[i].target for i in c.todo]
        scores = scores_of(targets, c.idents, measured, self.models.quality is not None, bool(self.models.va))
        pixels = c.pixels.cpu().numpy()
        generated = {i: k for k, i in enumerate(c.todo)}
        judged = []
        for i, sample in enumerate(c.samples):
            k = generated.get(i)
            if k is None:
                judged.append(Judged(sample, c.early[i], Scores(), None))
                continue
            finite = bool(c.finite[k])
            verdict = self._surplus(self.decider.after_measurement(sample.target, scores[k], finite), sample, c.job)
            judged.append(Judged(sample, verdict, scores[k], pixels[k] if finite else None, edit=c.edits[k]))
        return self.writer.write(c.job, judged, self.plan.composition(c.job.shard), len(c.idents) + c.extra)

    def _judge_reused(self, c: ComputedShard) -> list[Judged]:
        judged = []
        for i, sample in enumerate(c.samples):
            row = c.reused.rows[sample.key]
            verdict = self._decide_stored(sample, row, c.job)
            scores = Scores.from_columns(row, row["score_flags"]) if c.early[i] is None else Scores()
            stored = c.reused.images.get(sample.key)
            pixels = c.reused.pixels.get(i)
            judged.append(Judged(sample, verdict, scores, None if pixels is None else pixels.cpu().numpy(),
                                 stored, EditRecord.from_columns(row)))
        return judged


def _finite_rows(img: torch.Tensor) -> torch.Tensor:
    """[N] bool on the CPU: whether image n holds no NaN or Inf. A sum is finite only when every
    term is (NaN and Inf propagate), so the per-value test (5 ms per 256 px batch of 16 on a
    2-core CPU, against 0.3 ms for the sums) runs only for a batch with a sum that is not: a
    NaN, an Inf, or finite values large enough to overflow it."""
    ok = torch.isfinite(img.flatten(1).sum(1))
    if not bool(ok.all()):
        ok = torch.isfinite(img).flatten(1).all(1)
    return ok.cpu()


def _num(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _finite_image(row: dict) -> bool:
    """Whether a committed sample's image was finite: rejected as non_finite with finite scores means not."""
    flags = row.get("score_flags") or []
    return not ("non_finite" in (row.get("reject_reasons") or []) and not any(f.endswith(":non_finite") for f in flags))
