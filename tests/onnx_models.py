"""Purpose-built ONNX models with outputs known in advance, for tests of loading and decisions.

Each builder returns model bytes (write them to a file for path-based tests). Common knobs:
`size` is the input side (None = symbolic H and W), `batch` the batch dim ("N" = symbolic, or
a static int, e.g. 1 like many exports).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET, IR_VERSION = 17, 8


def _input(name: str = "input", size: int | None = 112, batch: int | str = "N", channels: int = 3,
           elem: int = TensorProto.FLOAT):
    side = [size, size] if size is not None else ["H", "W"]
    return helper.make_tensor_value_info(name, elem, [batch, channels, *side])


def _output(name: str, shape: list):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _bytes(nodes, inputs, outputs, inits=(), name: str = "test_model") -> bytes:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, producer_name="synthfer-tests",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString(deterministic=True)


def _image_mean() -> list:
    """Nodes: "input" [N,C,H,W] -> "mean" [N,1], the mean over C, H and W."""
    return [helper.make_node("ReduceMean", ["input"], ["mean4"], axes=[1, 2, 3], keepdims=1),
            helper.make_node("Flatten", ["mean4"], ["mean"], axis=1)]


def constant_va(valence: float, arousal: float, size: int | None = 256, width: int = 2,
                v_index: int = 0, a_index: int = 1, batch: int | str = "N", out_name: str = "va") -> bytes:
    """Output [N, width]: `valence` at v_index, `arousal` at a_index, 0 elsewhere, whatever the
    pixels (even NaN): the row is broadcast to the input's batch size, values never read."""
    assert v_index != a_index and max(v_index, a_index) < width
    row = np.zeros((1, width), np.float32)
    row[0, v_index], row[0, a_index] = valence, arousal
    nodes = [
        helper.make_node("Shape", ["input"], ["shape"], start=0, end=1),        # [N]
        helper.make_node("Concat", ["shape", "width"], ["out_shape"], axis=0),  # [N, width]
        helper.make_node("Expand", ["row", "out_shape"], [out_name]),
    ]
    inits = [_const("row", row), _const("width", np.array([width], np.int64))]
    return _bytes(nodes, [_input(size=size, batch=batch)], [_output(out_name, [batch, width])], inits)


def mean_quality(size: int | None = 112, dim: int = 512, scale: float = 1.0, batch: int | str = "N",
                 channels: int = 3, out_name: str = "embedding") -> bytes:
    """Embedding [N, dim], every entry scale * mean(image): L2 norm = |scale * mean| * sqrt(dim)."""
    nodes = _image_mean() + [
        helper.make_node("Mul", ["mean", "scale"], ["scaled"]),
        helper.make_node("Expand", ["scaled", "dim"], [out_name]),  # [N,1] x [1,dim] -> [N,dim]
    ]
    inits = [_const("scale", np.array(scale, np.float32)), _const("dim", np.array([1, dim], np.int64))]
    return _bytes(nodes, [_input(size=size, batch=batch, channels=channels)],
                  [_output(out_name, [batch, dim])], inits)


def mean_quality_scalar(size: int | None = 112, scale: float = 1.0, column: bool = False,
                        batch: int | str = "N", out_name: str = "quality") -> bytes:
    """Quality = scale * mean(image) as [N] (column=False) or [N, 1] (column=True)."""
    nodes = _image_mean() + [helper.make_node("Mul", ["mean", "scale"], ["scaled"])]
    inits = [_const("scale", np.array(scale, np.float32))]
    if column:
        nodes.append(helper.make_node("Identity", ["scaled"], [out_name]))
        shape = [batch, 1]
    else:
        nodes.append(helper.make_node("Flatten", ["scaled"], ["flat"], axis=0))  # [1, N]
        nodes.append(helper.make_node("Squeeze", ["flat", "zero"], [out_name]))
        inits.append(_const("zero", np.array([0], np.int64)))
        shape = [batch]
    return _bytes(nodes, [_input(size=size, batch=batch)], [_output(out_name, shape)], inits)


def scalar_magnitude(size: int = 112, scale: float = 1.0) -> bytes:
    """Batch-1 export returning a bare scalar (rank 0) = scale * mean(image), like OFIQ's MagFace."""
    nodes = [helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "scale"], ["magnitude"])]
    inits = [_const("scale", np.array(scale, np.float32))]
    return _bytes(nodes, [_input(size=size, batch=1)], [_output("magnitude", [])], inits)


def fixed_batch_va(size: int = 256, batch: int = 1) -> bytes:
    """Static batch (default 1): va [batch, 2] = (mean of channel 0, -mean of channel 1), so
    every row depends on its own image and chunking mistakes show."""
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["per_channel"], axes=[2, 3], keepdims=0),  # [B,3]
        helper.make_node("Slice", ["per_channel", "starts", "ends", "axes"], ["first_two"]),  # [B,2]
        helper.make_node("Mul", ["first_two", "signs"], ["va"]),
    ]
    inits = [_const("starts", np.array([0], np.int64)), _const("ends", np.array([2], np.int64)),
             _const("axes", np.array([1], np.int64)), _const("signs", np.array([1.0, -1.0], np.float32))]
    return _bytes(nodes, [_input(size=size, batch=batch)], [_output("va", [batch, 2])], inits)


def int_input_model(size: int = 112) -> bytes:
    """Input "input" is int64 (wrong type for synthfer); output "out" float [N, 6]."""
    nodes = [helper.make_node("Cast", ["input"], ["as_float"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["as_float"], ["mean4"], axes=[2, 3], keepdims=0),
             helper.make_node("Concat", ["mean4", "mean4"], ["out"], axis=1)]
    return _bytes(nodes, [_input(size=size, elem=TensorProto.INT64)], [_output("out", ["N", 6])])


def two_input_model(size: int = 112) -> bytes:
    """Inputs "image" and "mask" (both [N,3,size,size]); output "out" = image + mask."""
    nodes = [helper.make_node("Add", ["image", "mask"], ["out"])]
    inputs = [_input("image", size=size), _input("mask", size=size)]
    return _bytes(nodes, inputs, [_output("out", ["N", 3, size, size])])
