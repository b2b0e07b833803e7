"""The recipe schema: pydantic models, strict, unknown keys refused. The truth about every field.

Validators raise _PathError when the problem sits below the field they validate, so the
loader can name `targets.intensities[2]` rather than `targets.intensities`.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from synthfer import circumplex

FORMAT_VERSION = 1


class _Strict(BaseModel):
    # strict: YAML already gives typed values, so "3" for a count is a mistake, not a number.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Identities(_Strict):
    count: int = Field(100, gt=0, le=10_000_000)  # how many people
    truncation_psi: float = Field(0.7, gt=0, le=1.0)  # EmoStyle uses 0.7
    truncation_cutoff: int | None = Field(None, gt=0)  # truncate only the first N w rows


class Targets(_Strict):
    emotions: Literal["all"] | list[str] = "all"  # names from `synthfer emotions`
    intensities: list[float] = [0.33, 0.66, 1.0]  # distance from the circumplex origin
    neutral: bool = True                          # include the unedited identity
    points: list[list[float]] = []                # extra raw [valence, arousal] targets

    @field_validator("emotions")
    @classmethod
    def _known_emotions(cls, names):
        if names == "all":
            return names
        out = []
        for i, name in enumerate(names):
            if circumplex.find(name) is None:
                hint = circumplex.suggest(name)
                raise _IndexedError(i, f"unknown emotion {name!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                                 + "; `synthfer emotions` lists them")
            canon = circumplex.canonical_name(name)
            if canon in out:
                raise _IndexedError(i, f"emotion {name!r} listed twice")
            out.append(canon)
        return out

    @field_validator("intensities")
    @classmethod
    def _intensities(cls, values):
        if not values:
            raise ValueError("must list at least one intensity")
        seen = {}
        for i, v in enumerate(values):
            if not 0 < v <= 1:
                raise _IndexedError(i, f"must be in (0, 1], got {v}")
            pct = round(v * 100)
            if pct in seen:
                raise _IndexedError(i, f"{v} and {seen[pct]} give the same key suffix {pct:03d}")
            seen[pct] = v
        return values

    @field_validator("points")
    @classmethod
    def _points(cls, values):
        seen = {}
        for i, p in enumerate(values):
            if len(p) != 2 or not all(-1 <= x <= 1 for x in p):
                raise _IndexedError(i, f"must be [valence, arousal] with both in [-1, 1], got {p}")
            key = point_key(p[0], p[1])
            if key in seen:
                raise _IndexedError(i, f"{p} and {seen[key]} give the same key {key}")
            seen[key] = p
        return values

    @model_validator(mode="after")
    def _not_empty(self):
        if not self.neutral and not self.emotions and not self.points:
            raise ValueError("no targets: enable neutral, list emotions or add points")
        return self

    def emotion_list(self) -> list[circumplex.Emotion]:
        if self.emotions == "all":
            return list(circumplex.emotions())
        return [circumplex.find(n) for n in self.emotions]


class _WeightsSpec(_Strict):
    """A model that is either a builtin stand-in or a weights file."""

    @model_validator(mode="after")
    def _needs_file(self):
        if self.kind != "builtin" and not self.checkpoint:
            raise _PathError(("checkpoint",), f"kind {self.kind} needs a checkpoint file")
        return self


class GeneratorSpec(_WeightsSpec):
    kind: Literal["builtin", "stylegan2"] = "builtin"  # builtin: untrained 64 px stand-in
    checkpoint: str | None = None                     # stylegan2 weights file
    seed: int = Field(0, ge=0)                        # builtin weights' seed
    resolution: int = 64                              # builtin only: image side (real files say their own)
    channel_max: int = Field(64, ge=8, le=512)        # builtin only: channel cap

    @field_validator("resolution")
    @classmethod
    def _power_of_two(cls, v):
        if v < 8 or v > 1024 or v & (v - 1):
            raise ValueError(f"must be a power of two from 8 to 1024, got {v}")
        return v


class EditorSpec(_WeightsSpec):
    kind: Literal["builtin", "emostyle"] = "builtin"  # builtin: untrained EmoMappingWplus stand-in
    checkpoint: str | None = None                    # emo_mapping_wplus_*.pt
    seed: int = Field(0, ge=0)                       # builtin weights' seed


class Preprocess(_Strict):
    """How an image is turned into a model input: crop, resize, channel order, normalisation."""
    crop: list[float] = [0.1, 0.1, 0.9, 0.9]      # left, top, right, bottom as fractions of the frame
    size: int = Field(112, ge=8, le=2048)         # model input side
    resample: Literal["nearest", "bilinear", "bicubic", "area"] = "bilinear"
    channels: Literal["rgb", "bgr"] = "rgb"
    scale: float = Field(1 / 255, gt=0)           # pixel values (0..255) are multiplied by this,
    mean: list[float] = [0.0, 0.0, 0.0]           # then (x - mean) / std per channel, in model order
    std: list[float] = [1.0, 1.0, 1.0]

    @field_validator("crop")
    @classmethod
    def _crop(cls, v):
        if len(v) != 4 or not (0 <= v[0] < v[2] <= 1 and 0 <= v[1] < v[3] <= 1):
            raise ValueError(f"must be [left, top, right, bottom] fractions with 0 <= left < right <= 1 "
                             f"and 0 <= top < bottom <= 1, got {v}")
        return v

    @field_validator("mean", "std")
    @classmethod
    def _three(cls, v, info):
        if len(v) != 3 or (info.field_name == "std" and any(x <= 0 for x in v)):
            raise ValueError(f"must be three numbers{' > 0' if info.field_name == 'std' else ''}, got {v}")
        return v


class QualityPreprocess(Preprocess):
    """MagFace's convention: aligned 112x112 BGR in [0, 1]; FFHQ frames are aligned, so a fixed crop."""
    channels: Literal["rgb", "bgr"] = "bgr"


class VAPreprocess(Preprocess):
    """EmoNet as EmoStyle and the paper use it: central 80%, nearest resize to 256, RGB in [0, 1]."""
    size: int = Field(256, ge=8, le=2048)
    resample: Literal["nearest", "bilinear", "bicubic", "area"] = "nearest"


class QualitySpec(_Strict):
    kind: Literal["builtin", "onnx"] = "builtin"      # builtin: untrained ONNX stand-in
    path: str | None = None                           # .onnx file for kind onnx
    input_name: str | None = None                     # needed only when the model has several inputs
    output_name: str | None = None                    # default: the model's first output
    output: Literal["embedding", "scalar"] = "embedding"  # embedding: quality = L2 norm, identity = direction
    quality_scale: Literal["magnitude", "ofiq"] = "magnitude"  # ofiq: 100 / (1 + exp((23 - mag) / 2.6))
    preprocess: QualityPreprocess = QualityPreprocess()

    @model_validator(mode="after")
    def _needs_file(self):
        if self.kind == "onnx" and not self.path:
            raise _PathError(("path",), "kind onnx needs a path to the .onnx file")
        return self


class VASpec(_Strict):
    kind: Literal["builtin", "onnx"] = "builtin"
    path: str | None = None
    input_name: str | None = None
    output_name: str | None = None
    valence_index: int = Field(0, ge=0)               # HSEmotion *_va_mtl: 8 and 9
    arousal_index: int = Field(1, ge=0)
    preprocess: VAPreprocess = VAPreprocess()

    @model_validator(mode="after")
    def _needs_file(self):
        if self.kind == "onnx" and not self.path:
            raise _PathError(("path",), "kind onnx needs a path to the .onnx file")
        if self.valence_index == self.arousal_index:
            raise _PathError(("arousal_index",), f"must differ from valence_index, both are {self.arousal_index}")
        return self


class Models(_Strict):
    generator: GeneratorSpec = GeneratorSpec()
    editor: EditorSpec = EditorSpec()
    quality: QualitySpec | None = None                # None: quality and identity not measured
    va: VASpec | None = None                          # None: VA not measured


class Thresholds(_Strict):
    """VA-accuracy limits; a sample beyond any of them is rejected. None = not checked."""
    max_direction_error_deg: float | None = Field(None, gt=0, le=180)
    max_distance: float | None = Field(None, gt=0)
    max_magnitude_error: float | None = Field(None, gt=0)

    def va_limits(self) -> dict:
        return {k: v for k, v in (("va_direction", self.max_direction_error_deg), ("va_distance", self.max_distance),
                                  ("va_magnitude", self.max_magnitude_error)) if v is not None}


class Band(Thresholds):
    """Target directions where the editor is known to miss (EmoStyle: 242 to 329 degrees).

    skip: not generated (row status skipped); reject: generated, measured, always rejected;
    verify: kept only if it passes the accuracy limits (the band's own, else the global ones).
    """
    from_deg: float = Field(ge=0, lt=360)
    to_deg: float = Field(ge=0, le=360)
    action: Literal["skip", "reject", "verify"] = "verify"

    @property
    def label(self) -> str:
        return f"{self.from_deg:g}-{self.to_deg:g}"


class Filters(Thresholds):
    min_quality: float | None = None                  # on models.quality.quality_scale
    min_identity_similarity: float | None = Field(None, ge=-1, le=1)  # cosine to the identity's neutral
    failure_bands: list[Band] = []


class ImageSpec(_Strict):
    format: Literal["png", "jpg", "webp"] = "png"
    size: int = Field(256, ge=8, le=4096)   # square side in pixels, resized with antialiasing
    quality: int = Field(95, ge=1, le=100)  # jpg/webp only


class Splits(_Strict):
    train: float = Field(0.8, ge=0, le=1)
    val: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self):
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


class Output(_Strict):
    dir: str = "out"                                 # relative to the recipe's folder
    samples_per_shard: int = Field(1000, gt=0)       # shards hold whole identities, so about this many
    image: ImageSpec = ImageSpec()
    splits: Splits = Splits()
    keep_rejected: bool = False                      # rejected images go to shards/rejected-*.tar


def _check_device(v: str) -> str:
    if v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit()):
        return v
    raise ValueError(f"must be auto, cpu, cuda, cuda:N or mps, got {v!r}")


class RaySpec(_Strict):
    address: str | None = None                       # None: start a local Ray; "auto" or ray://head:10001
    workers: int | None = Field(None, gt=0)          # actors; default: one per GPU, else one per 2 CPUs
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float | None = Field(None, ge=0)  # default: 1 when device is cuda, else 0


class Execution(_Strict):
    device: str = "auto"                             # auto | cpu | cuda | cuda:N
    devices: list[str] | None = None                # several devices of one machine: a worker process each
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # float16/bfloat16: autocast, CUDA only
    batch_size: int = Field(16, gt=0, le=4096)       # images per forward pass
    executor: Literal["local", "ray"] = "local"
    ray: RaySpec = RaySpec()
    retries: int = Field(2, ge=0, le=100)            # extra attempts for a shard that raises

    @field_validator("device")
    @classmethod
    def _device(cls, v):
        return _check_device(v)

    @field_validator("devices")
    @classmethod
    def _devices(cls, v):
        if v is None:
            return v
        if not v:
            raise ValueError("must list at least one device, or be left out")
        for i, d in enumerate(v):
            try:
                _check_device(d)
            except ValueError as err:
                raise _IndexedError(i, str(err)) from None
            if d in ("auto", "cuda"):
                raise _IndexedError(i, f"name one device (cpu, cuda:N), got {d!r}")
        if len({d.split(":")[0] for d in v}) > 1:
            raise ValueError(f"must all be of one type (all cuda:N or all cpu), got {v}")
        return v


class Recipe(_Strict):
    name: str = Field("synthfer", min_length=1)
    seed: int = Field(0, ge=0, lt=2**63)
    identities: Identities = Identities()
    targets: Targets = Targets()
    models: Models = Models()
    filters: Filters = Filters()
    output: Output = Output()
    execution: Execution = Execution()

    @model_validator(mode="after")
    def _filters_have_models(self):
        f, m = self.filters, self.models
        if f.min_quality is not None and m.quality is None:
            raise _PathError(("filters", "min_quality"), "needs models.quality (e.g. {kind: builtin})")
        if f.min_identity_similarity is not None and (m.quality is None or m.quality.output != "embedding"):
            raise _PathError(("filters", "min_identity_similarity"),
                             "needs models.quality with output: embedding (identity is the embedding's direction)")
        if f.va_limits() and m.va is None:
            raise _PathError(("filters",) + (next(iter(_limit_fields(f))),), "needs models.va (e.g. {kind: builtin})")
        for i, band in enumerate(f.failure_bands):
            if band.action == "verify":
                if not (band.va_limits() or f.va_limits()):
                    raise _PathError(("filters", "failure_bands", i, "action"),
                                     "verify needs accuracy limits: the band's own max_direction_error_deg, "
                                     "max_distance or max_magnitude_error, or the global ones")
                if m.va is None:
                    raise _PathError(("filters", "failure_bands", i, "action"), "verify needs models.va")
        return self


class _PathError(ValueError):
    """A validator's error about a field below the one validated, so the message can name it
    (`field[i]`, `filters.min_quality`). Paths are relative to the validated field."""

    def __init__(self, path: tuple, message: str):
        super().__init__(f"@{json.dumps(list(path))}@{message}")


def _IndexedError(index: int, message: str) -> _PathError:
    return _PathError((index,), message)


def _limit_fields(t: Thresholds) -> list[str]:
    return [name for name in ("max_direction_error_deg", "max_distance", "max_magnitude_error")
            if getattr(t, name) is not None]


def point_key(valence: float, arousal: float) -> str:
    def part(x: float) -> str:
        return ("p" if x >= 0 else "m") + f"{round(abs(x) * 100):03d}"
    return f"va-{part(valence)}-{part(arousal)}"


