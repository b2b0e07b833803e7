"""UNTRAINED ONNX stand-ins for the quality model and the valence/arousal estimator.

They judge nothing about faces. They exist so that demos, dry runs and tests go through the
real path (ONNX bytes -> onnxruntime session -> preprocessed batch -> scores -> filters) when
no real MagFace / EmoNet / HSEmotion file is at hand. Each is a tiny linear read-out of an 8x8
average-pooled thumbnail with fixed, seeded weights:

* quality: BGR [N,3,112,112] in [0,1] -> "embedding" [N,512]. The norm (the MagFace quality)
  is a smooth, exactly known function of the image (see ``Q_*``); on the builtin generator's
  images it spreads over MagFace's usual range, so a threshold around 22-24 keeps part of a
  build.
* va: RGB [N,3,256,256] in [0,1] -> "va" [N,2], inside the unit disc, with predictions in
  every direction of the circumplex for varied images (see ``VA_*``).

The bytes are built without timestamps or host data, so every call (and every machine with
the same numpy and onnx) yields the same file; ``builtin_model_path`` caches it on disk under
a name that carries its content hash.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

# Bump whenever a change here alters the bytes (the file name carries the hash anyway).
VERSION = 1
OPSET = 17
IR_VERSION = 8  # oldest IR that carries opset 17; every onnxruntime >= 1.13 reads it
POOLED = 8      # both models read an 8x8 thumbnail

QUALITY_SIZE, QUALITY_DIM = 112, 512
# Quality: embedding = centre + Q_GAIN * Q @ (t - mean(t)), t the 8x8 BGR thumbnail (192
# values), Q with orthonormal columns and centre orthogonal to them, so exactly
#     |embedding| = sqrt(Q_FLOOR^2 + Q_GAIN^2 * |t - mean(t)|^2):
# flat or fine-noise images (uniform thumbnail) score Q_FLOOR, low like MagFace on non-faces;
# more structure or colour scores higher. On builtin_generator images |t - mean(t)| is about
# 1.1..4.3 (5-95%: 1.4..3.2), so these give ~15..44, mostly 17..34, median ~23.
Q_FLOOR = 10.0
Q_GAIN = 10.0
Q_SEED = 20240611

VA_SIZE = 256
# VA: (valence, arousal) = sigmoid(s) * (cos a, sin a), with a and s linear read-outs of the
# 8x8 RGB thumbnail. VA_TURNS makes the angle wrap several times across ordinary image
# variation, so predictions cover every direction of the circumplex rather than clustering
# where an image set's average colour points. On builtin_generator images the radius
# (intensity) is mostly 0.4..0.95, median ~0.75; 45-degree sectors each get 11-15%.
VA_TURNS = 60.0
VA_RADIUS_GAIN = 8.0
VA_RADIUS_BIAS = 0.0
VA_SEED = 20240612
FEATURES = 3 * POOLED * POOLED


def _model(nodes, inputs, outputs, initializers, name: str) -> bytes:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, producer_name="synthfer", producer_version=str(VERSION),
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    model.doc_string = "UNTRAINED synthfer stand-in: exercises the code path, judges nothing."
    onnx.checker.check_model(model)
    return model.SerializeToString(deterministic=True)


def _pooled_linear(size: int, out_name: str, weight: np.ndarray, bias: np.ndarray) -> tuple[list, list]:
    """Nodes + initialisers: input [N,3,size,size] -> AveragePool to 8x8 -> [N,192] @ W + b."""
    from onnx import helper, numpy_helper

    k = size // POOLED
    assert k * POOLED == size and weight.shape[0] == FEATURES, (size, weight.shape)
    nodes = [
        helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[k, k], strides=[k, k]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "weight"], ["mixed"]),
        helper.make_node("Add", ["mixed", "bias"], [out_name]),
    ]
    inits = [numpy_helper.from_array(weight.astype(np.float32), "weight"),
             numpy_helper.from_array(bias.astype(np.float32), "bias")]
    return nodes, inits


def _io(size: int, out_name: str, width: int):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])
    y = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", width])
    return x, y


# Weights come from elementwise numpy only (no BLAS/LAPACK reductions, whose rounding can
# differ between machines), so the bytes, and the cached file's hash, are the same everywhere.

@lru_cache(maxsize=1)
def quality_model_bytes() -> bytes:
    """UNTRAINED MagFace-shaped stand-in: "input" [N,3,112,112] -> "embedding" [N,512]."""
    rng = np.random.default_rng(Q_SEED)
    rows = rng.permutation(QUALITY_DIM)
    # Q: column j is +-1/sqrt(2) on two rows of its own: orthonormal columns by construction.
    q = np.zeros((QUALITY_DIM, FEATURES))
    cols = np.repeat(np.arange(FEATURES), 2)
    q[rows[:2 * FEATURES], cols] = rng.choice([-1.0, 1.0], 2 * FEATURES) / np.sqrt(2.0)
    # The centre lives on the rows Q leaves unused, hence orthogonal to everything Q adds.
    spare = rows[2 * FEATURES:]
    centre = np.zeros(QUALITY_DIM)
    centre[spare] = rng.choice([-1.0, 1.0], spare.size) * (Q_FLOOR / np.sqrt(spare.size))
    # Fold the centring into the weight: Q (t - mean t) = (Q - rowsum(Q) 1^T / 192) t. Each row
    # of Q has at most one non-zero, so its row sum is exact.
    weight = Q_GAIN * (q - q.sum(axis=1, keepdims=True) / FEATURES)
    nodes, inits = _pooled_linear(QUALITY_SIZE, "embedding", weight.T, centre)
    x, y = _io(QUALITY_SIZE, "embedding", QUALITY_DIM)
    return _model(nodes, [x], [y], inits, "synthfer_builtin_quality")


@lru_cache(maxsize=1)
def va_model_bytes() -> bytes:
    """UNTRAINED valence/arousal stand-in: "input" [N,3,256,256] -> "va" [N,2], |va| < 1."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(VA_SEED)
    unit = rng.standard_normal((FEATURES, 2)) / np.sqrt(FEATURES)
    weight = unit * np.array([VA_TURNS, VA_RADIUS_GAIN])
    # Read-outs of (t - 0.5), so mid-grey gives angle 0 and radius sigmoid(VA_RADIUS_BIAS).
    # math.fsum: exactly rounded, so the bias does not depend on numpy's summation order.
    bias = np.array([-0.5 * math.fsum(weight[:, i]) for i in range(2)]) + np.array([0.0, VA_RADIUS_BIAS])
    nodes, inits = _pooled_linear(VA_SIZE, "angle_radius", weight, bias)
    inits += [numpy_helper.from_array(np.array([0], np.int64), "first"),
              numpy_helper.from_array(np.array([1], np.int64), "second")]
    nodes += [
        helper.make_node("Gather", ["angle_radius", "first"], ["angle"], axis=1),   # [N,1]
        helper.make_node("Gather", ["angle_radius", "second"], ["logit"], axis=1),  # [N,1]
        helper.make_node("Cos", ["angle"], ["cos"]),
        helper.make_node("Sin", ["angle"], ["sin"]),
        helper.make_node("Concat", ["cos", "sin"], ["direction"], axis=1),          # [N,2]
        helper.make_node("Sigmoid", ["logit"], ["radius"]),
        helper.make_node("Mul", ["direction", "radius"], ["va"]),
    ]
    x, y = _io(VA_SIZE, "va", 2)
    return _model(nodes, [x], [y], inits, "synthfer_builtin_va")


_BUILDERS = {"quality": quality_model_bytes, "va": va_model_bytes}


def cache_dir() -> Path:
    """$SYNTHFER_CACHE, else $XDG_CACHE_HOME/synthfer, else ~/.cache/synthfer."""
    if os.environ.get("SYNTHFER_CACHE"):
        return Path(os.environ["SYNTHFER_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "synthfer"


def builtin_model_path(role: str) -> Path:
    """Path of the builtin `role` ("quality" or "va") model file, written on first use.

    The name carries the content hash, so a file that exists is the right one and parallel
    workers never see a half-written file (each writes a temp file and renames it in place).
    An unwritable cache falls back to the system temp dir.
    """
    if role not in _BUILDERS:
        raise ValueError(f"builtin ONNX model role must be 'quality' or 'va', got {role!r}")
    data = _BUILDERS[role]()
    name = f"builtin-{role}-{hashlib.sha256(data).hexdigest()[:16]}.onnx"
    for folder in (cache_dir(), Path(tempfile.gettempdir()) / "synthfer"):
        path = folder / name
        try:
            if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
                return path
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            return path
        except OSError:
            continue
    raise OSError(f"cannot write the builtin {role} model to {cache_dir()} or the temp dir")
