"""The recipe schema: pydantic models, strict, unknown keys refused. The truth about every field.

Validators raise _PathError when the problem sits below the field they validate, so the
loader can name `targets.intensities[2]` rather than `targets.intensities`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Discriminator, Field, Tag, create_model, field_validator, model_validator
from pydantic.fields import FieldInfo

from synthfer import circumplex
from synthfer import classes as classes_module
from synthfer.filters import Filters, check_models
from synthfer.models import kinds as _kinds  # noqa: F401  (registers the shipped model kinds)
from synthfer.models import registry, specs
from synthfer.blocks import IndexedError as _IndexedError
from synthfer.blocks import PathError as _PathError
from synthfer.blocks import PathErrors
from synthfer.blocks import Strict as _Strict
from synthfer.io.folder import without_file_scheme

FORMAT_VERSION = 2   # io/layout.py: 2 names shards by split and keeps bookkeeping in _synthfer/


class Identities(_Strict):
    count: int = Field(100, gt=0, le=10_000_000)  # how many people (the first round)
    truncation_psi: float = Field(0.7, gt=0, le=1.0)  # EmoStyle uses 0.7
    truncation_cutoff: int | None = Field(None, gt=0)  # truncate only the first N w rows
    max_count: int | None = Field(None, gt=0, le=10_000_000)  # quota top-ups stop here; default 10 x count

    @model_validator(mode="after")
    def _max_at_least_count(self):
        if self.max_count is not None and self.max_count < self.count:
            raise _PathError(("max_count",), f"must be at least identities.count ({self.count}), got {self.max_count}")
        return self

    @property
    def cap(self) -> int:
        """The most identities a build with quotas may use."""
        return self.max_count if self.max_count is not None else min(10 * self.count, 10_000_000)


class Targets(_Strict):
    emotions: Literal["all"] | list[str] = "all"  # names from `synthfer emotions`
    intensities: list[float] = [0.33, 0.66, 1.0]  # distance from the circumplex origin
    neutral: bool = True                          # include the unedited identity
    points: list[list[float]] = []                # extra raw [valence, arousal] targets
    classes: str | list[str] | dict[str, Any] | None = None  # preset, class names, or name -> members
    quota: int | None = Field(None, gt=0, le=100_000_000)     # accepted images per class (per target
                                                  # without classes), split by output.splits

    @field_validator("emotions")
    @classmethod
    def _known_emotions(cls, names):
        if names == "all":
            return names
        out, problems = [], []
        for i, name in enumerate(names):
            if circumplex.find(name) is None:
                problems.append(((i,), f"unknown emotion {name!r}: {classes_module.emotion_hint(name)}"))
                continue
            canon = circumplex.canonical_name(name)
            if canon in out:
                problems.append(((i,), f"emotion {name!r} listed twice"))
            out.append(canon)
        if problems:
            raise PathErrors(problems)
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
    def _classes(self):
        if self.classes is None:
            return self
        if "emotions" in self.model_fields_set:
            raise _PathError(("emotions",), "leave it out when targets.classes is set: the classes say which "
                                            "directions are rendered")
        if self.points:
            raise _PathError(("points",), "raw points have no class; give them to a class as {valence, arousal} "
                                          "anchors in targets.classes")
        if "neutral" not in self.model_fields_set:  # the unedited identity is a class, or not rendered as one
            self.neutral = any(c.is_neutral for c in self.class_list())
        resolved, problems = classes_module.resolve(self.classes, self.neutral)
        if problems:
            raise PathErrors([(("classes",) + path, message) for path, message in problems])
        seen: dict[str, str] = {}
        for key, cls, _, _ in classes_module.class_targets(resolved, self.intensities):
            if key in seen:
                raise _PathError(("classes", cls.name), f"gives target {key!r} like class {seen[key]!r}; rename one")
            seen[key] = cls.name
        return self

    @model_validator(mode="after")
    def _not_empty(self):
        if not self.neutral and not self.emotions and not self.points and self.classes is None:
            raise ValueError("no targets: enable neutral, list emotions or add points")
        return self

    def class_list(self) -> list:
        """The resolved classes (classes.ClassSpec), [] without targets.classes."""
        if self.classes is None:
            return []
        return classes_module.resolve(self.classes, True)[0]

    def emotion_list(self) -> list[circumplex.Emotion]:
        if self.emotions == "all":
            return list(circumplex.emotions())
        return [circumplex.find(n) for n in self.emotions]


def _kind_tag(value: Any) -> Any:
    """The kind a model block asks for; `builtin` when it names none."""
    if isinstance(value, dict):
        return value.get("kind", "builtin")
    return getattr(value, "kind", None)


def _role_type(role: str):
    members = tuple(Annotated[k.spec, Tag(name)] for name, k in registry.kinds(role).items())
    return Annotated[Union[members], Discriminator(_kind_tag)]


def _one_or_many(value: Any) -> str:
    return "many" if isinstance(value, (list, tuple)) else "one"


def _models_class():
    """The `models` block, one field per role, each a union of that role's registered kinds;
    `va` may also be a list of estimators (consensus: their mean and their disagreement)."""
    defaults = {"generator": specs.BuiltinGenerator(), "editor": specs.BuiltinEditor()}
    fields = {role: (_role_type(role), defaults[role]) if role in defaults else (Optional[_role_type(role)], None)
              for role in registry.ROLES}
    one_or_many = Union[Annotated[_role_type("va"), Tag("one")],
                        Annotated[list[_role_type("va")], Field(min_length=1, max_length=8), Tag("many")]]
    fields["va"] = (Optional[Annotated[one_or_many, Discriminator(_one_or_many)]], None)
    return create_model("Models", __base__=_Strict, **fields)


def va_specs(models) -> list:
    """The VA estimators of a `models` block, in order: [] without one, [spec] for a single block."""
    va = models.va
    return [] if va is None else list(va) if isinstance(va, list) else [va]


Models = _models_class()


class ImageSpec(_Strict):
    format: Literal["png", "jpg", "webp"] = "png"
    size: int = Field(256, ge=8, le=4096)   # square side in pixels, resized with antialiasing
    quality: int = Field(95, ge=1, le=100)  # jpg/webp only
    png_level: int = Field(6, ge=0, le=9)   # png only: deflate level; 1 encodes faster, files ~6% larger

    @field_validator("format", mode="before")
    @classmethod
    def _jpeg_is_jpg(cls, v):
        return "jpg" if isinstance(v, str) and v.lower() == "jpeg" else v   # one name, one fingerprint


class Splits(_Strict):
    train: float = Field(0.8, ge=0, le=1)
    val: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self):
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            unset = [f"{name} {getattr(self, name):g}" for name in ("train", "val", "test")
                     if name not in self.model_fields_set]
            hint = (f" ({' and '.join(unset)} {'is the default' if len(unset) == 1 else 'are defaults'}: "
                    f"name every split, e.g. {{train: 0.9, val: 0.1, test: 0}})") if unset else ""
            raise ValueError(f"train + val + test must be 1, got {total:g}{hint}")
        return self


class Output(_Strict):
    dir: str = Field("out", min_length=1)            # relative to the recipe's folder
    samples_per_shard: int = Field(1000, gt=0, le=10_000_000)  # shards hold whole identities, so about this many
    image: ImageSpec = ImageSpec()
    splits: Splits = Splits()
    keep_rejected: bool = False                      # rejected images go to rejected/rejected-*.tar
    lock: Literal["auto", "flock", "lease"] = "auto"  # auto: flock on local folders, a lease on object stores
    storage_options: dict[str, Any] = {}             # passed to fsspec for URLs (endpoint_url, profile, ...)

    @field_validator("dir")
    @classmethod
    def _local_file_url(cls, v: str) -> str:
        # file:///data/x is the local folder /data/x: resolved and locked as one, not as a URL
        path = without_file_scheme(v)
        if not path.strip():
            raise ValueError(f"{v!r} names no folder")
        return path


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
    batch_size: Union[Literal["auto"], int] = "auto"  # images per forward pass; auto: synthfer/batching.py
    tf32: bool = False                               # CUDA: TF32 matmuls/convolutions (faster, ~1e-3 off)
    executor: Literal["local", "ray"] = "local"
    ray: RaySpec = RaySpec()
    retries: int = Field(2, ge=0, le=100)            # extra attempts for a shard that raises

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, v):
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096):
            return v
        raise ValueError(f"must be auto or a whole number from 1 to 4096, got {v!r}")

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


class Correction(_Strict):
    """Closed-loop expression correction toward the measured VA (synthfer/correction.py)."""
    mode: Literal["off", "iterate", "calibrate", "both"] = "off"
    steps: int = Field(3, ge=1, le=10)                 # iterate: extra renders per sample, at most
    gain: float = Field(1.0, gt=0, le=2)               # iterate: share of the measured miss undone per step
    update: Literal["rotate", "additive"] = "rotate"   # rotate: turn/scale the request by the miss; additive
    tolerance_deg: float = Field(5.0, gt=0, le=180)    # within this direction error a render is kept as is
    tolerance_distance: float | None = Field(None, gt=0)  # and, when set, within this VA distance
    pilot_identities: int = Field(8, ge=1, le=10_000)  # calibrate: identities of the pilot (own seeds)
    bin_deg: float = Field(15.0, ge=1, le=90)          # calibrate: width of a direction bin
    calibration: str | None = None                     # calibrate: reuse this calibration.json, no pilot

    @field_validator("mode", mode="before")
    @classmethod
    def _off_is_not_false(cls, v):
        return "off" if v is False else v   # YAML 1.1 reads a bare `mode: off` as false

    @property
    def iterates(self) -> bool:
        return self.mode in ("iterate", "both")

    @property
    def calibrates(self) -> bool:
        return self.mode in ("calibrate", "both")


class Recipe(_Strict):
    name: str = Field("synthfer", min_length=1)
    seed: int = Field(0, ge=0, lt=2**63)
    identities: Identities = Identities()
    targets: Targets = Targets()
    models: Models = Models()  # type: ignore[valid-type]  (rebuilt when a model kind is registered)
    filters: Filters = Filters()
    output: Output = Output()
    execution: Execution = Execution()
    correction: Correction = Correction()

    @model_validator(mode="after")
    def _correction_has_an_estimator(self):
        c = self.correction
        if c.mode != "off" and self.models.va is None:
            raise _PathError(("correction", "mode"), f"{c.mode} corrects toward the VA estimator's reading: "
                                                     "needs models.va")
        if c.calibration is not None and not c.calibrates:
            raise _PathError(("correction", "calibration"), f"a calibration is used by mode calibrate or both, "
                                                            f"not {c.mode}")
        return self

    @model_validator(mode="after")
    def _filters_have_models(self):
        m = self.models
        has = {"quality": m.quality is not None, "va": m.va is not None, "va_consensus": len(va_specs(m)) > 1,
               "embedding": m.quality is not None and getattr(m.quality, "gives_embedding", False)}
        problem = check_models(self.filters, has)
        if problem is not None:
            raise _PathError(*problem)
        return self


def _rebuild_models() -> None:
    """A model kind was (un)registered: recipes may name it from now on."""
    global Models
    Models = _models_class()
    Recipe.model_fields["models"] = FieldInfo(annotation=Models, default=Models())
    Recipe.model_rebuild(force=True)


registry.on_change(_rebuild_models)


def point_key(valence: float, arousal: float) -> str:
    def part(x: float) -> str:
        return ("p" if x >= 0 else "m") + f"{round(abs(x) * 100):03d}"
    return f"va-{part(valence)}-{part(arousal)}"


