"""The recipe blocks of the model kinds synthfer ships (`models.generator`, `.editor`, `.quality`,
`.va`). Pydantic only: validating a recipe never imports torch. Each kind's entry in
models/kinds.py names its block; `files` lists the fields that hold file paths (resolved
against the recipe's folder, left out of the fingerprint, which counts the weights instead).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from synthfer.blocks import PathError, Strict


class _FileSpec(Strict):
    files: ClassVar[tuple[str, ...]] = ()   # fields holding file paths (registry.spec_files)


class BuiltinGenerator(_FileSpec):
    kind: Literal["builtin"] = "builtin"              # untrained 64 px stand-in
    seed: int = Field(0, ge=0, lt=2**63)              # weights' seed
    resolution: int = 64                              # image side
    channel_max: int = Field(64, ge=8, le=512)        # channel cap

    @field_validator("resolution")
    @classmethod
    def _power_of_two(cls, v):
        if v < 8 or v > 1024 or v & (v - 1):
            raise ValueError(f"must be a power of two from 8 to 1024, got {v}")
        return v


class _CheckpointSpec(_FileSpec):
    files: ClassVar[tuple[str, ...]] = ("checkpoint",)

    @model_validator(mode="after")
    def _needs_file(self):
        if not self.checkpoint:
            raise PathError(("checkpoint",), f"kind {self.kind} needs a checkpoint file")
        return self


class StyleGAN2Generator(_CheckpointSpec):
    kind: Literal["stylegan2"] = "stylegan2"
    checkpoint: str | None = None                     # NVlabs .pkl, rosinality .pt or safetensors


class BuiltinEditor(_FileSpec):
    kind: Literal["builtin"] = "builtin"              # untrained EmoMappingWplus stand-in
    seed: int = Field(0, ge=0, lt=2**63)              # weights' seed


class EmoStyleEditor(_CheckpointSpec):
    kind: Literal["emostyle"] = "emostyle"
    checkpoint: str | None = None                     # emo_mapping_wplus_*.pt


class Preprocess(Strict):
    """How an image is turned into a model input: crop, resize, channel order, normalisation."""
    crop: list[float] = [0.1, 0.1, 0.9, 0.9]      # left, top, right, bottom as fractions of the frame
    size: int = Field(112, ge=8, le=2048)         # model input side
    resample: Literal["nearest", "bilinear", "bicubic", "area"] = "bilinear"
    channels: Literal["rgb", "bgr"] = "rgb"
    scale: float = Field(1 / 255, gt=0)           # pixel values (0..255) are multiplied by this,
    mean: list[float] = [0.0, 0.0, 0.0]           # then (x - mean) / std per channel, in model order
    std: list[float] = [1.0, 1.0, 1.0]
    rounding: Literal["nearest", "floor"] = "nearest"  # crop box edges in pixels; floor: EmoStyle's int()

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
    """EmoNet as EmoStyle and the paper use it: central 80% (edges at int(0.1 * side) and
    int(0.9 * side)), nearest resize to 256, RGB in [0, 1]."""
    size: int = Field(256, ge=8, le=2048)
    resample: Literal["nearest", "bilinear", "bicubic", "area"] = "nearest"
    rounding: Literal["nearest", "floor"] = "floor"


class _OnnxSpec(_FileSpec):
    files: ClassVar[tuple[str, ...]] = ("path",)
    preset: str | None = None                         # a registry entry whose I/O contract fills the rest
    path: str | None = None                           # .onnx file for kind onnx, or registry:NAME
    input_name: str | None = None                     # needed only when the model has several inputs
    output_name: str | None = None                    # default: the model's first output

    @model_validator(mode="after")
    def _needs_file(self):
        if self.kind == "onnx" and not self.path:
            raise PathError(("path",), "kind onnx needs a path to the .onnx file")
        if self.kind == "builtin" and self.path:
            raise PathError(("path",), "kind builtin has no file; set kind: onnx to use this one")
        return self


class QualitySpec(_OnnxSpec):
    kind: Literal["builtin", "onnx"] = "builtin"      # builtin: untrained ONNX stand-in
    output: Literal["embedding", "scalar"] = "embedding"  # embedding: quality = L2 norm, identity = direction
    quality_scale: Literal["magnitude", "ofiq"] = "magnitude"  # ofiq: 100 / (1 + exp((23 - mag) / 2.6))
    preprocess: QualityPreprocess = QualityPreprocess()

    @property
    def gives_embedding(self) -> bool:
        return self.output == "embedding"


class VASpec(_OnnxSpec):
    kind: Literal["builtin", "onnx"] = "builtin"
    valence_index: int = Field(0, ge=0)               # HSEmotion *_va_mtl: 8 and 9
    arousal_index: int = Field(1, ge=0)
    preprocess: VAPreprocess = VAPreprocess()

    @model_validator(mode="after")
    def _distinct(self):
        if self.valence_index == self.arousal_index:
            raise PathError(("arousal_index",), f"must differ from valence_index, both are {self.arousal_index}")
        return self
