"""A known-answer STAND-IN for testing expression correction: no faces, a failure of known size.

Real EmoStyle weights are not at hand, so correction is tested on a pair whose answer is known:

* generator kind `canvas`: every image is one flat colour; red and green hold the first w row's
  dimensions 0 and 1 (where the editor writes the requested valence and arousal), blue a shade
  per identity;
* editor kind `canvas`: writes the requested (valence, arousal) into those two dimensions, so
  the image carries exactly the request (to uint8 precision, 1/255);
* `estimator_bytes()`: an ONNX VA estimator that reads the colour back and, for directions
  inside a band (the paper's 242-329 degrees by default), returns it turned by `rotate_deg`
  and shrunk by `shrink`, as EmoStyle's measured miss there (30-41 degrees, too little
  intensity). Outside the band it reads the request exactly.

The miss is a jump at the band's edges, like a real editor that cannot make some expressions:
with a counter-clockwise turn of 35 degrees, band directions from 242 + 35 = 277 to 329 degrees
have a request that lands on them (35 degrees earlier), those from 242 to 277 have none (any
request in the band lands 35 degrees later, any outside stays outside). Correction must rescue
the first and must not make the second worse.

`register()` adds the two kinds (tests and bench/correction.py call it; recipes can then name
them). Nothing here is registered by default.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from synthfer.blocks import Strict

N_LATENT, W_DIM, Z_DIM = 2, 4, 8
# How a recipe's VA block reads the canvas back exactly: x = (pixel - 127.5) / 127.5 (to_uint8
# is floor(x * 127.5 + 128), so a value comes back within 0.5 / 127.5).
PREPROCESS = {"crop": [0.0, 0.0, 1.0, 1.0], "size": 16, "resample": "area", "channels": "rgb",
              "scale": 1 / 127.5, "mean": [1.0, 1.0, 1.0], "std": [1.0, 1.0, 1.0]}


class CanvasGenerator(torch.nn.Module):
    """generator interface: mapping(z) -> w+ [N, 2, 4]; synthesis(w+) -> flat images [N, 3, R, R]."""

    def __init__(self, resolution: int = 16):
        super().__init__()
        self.resolution, self.n_latent, self.w_dim, self.z_dim = resolution, N_LATENT, W_DIM, Z_DIM

    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff=None) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == Z_DIM, z.shape
        ws = torch.zeros(z.shape[0], N_LATENT, W_DIM, device=z.device)
        ws[:, :, 2] = 0.5 * torch.tanh(z[:, :1]) * truncation_psi   # the identity's shade
        return ws

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        assert ws.shape[1:] == (N_LATENT, W_DIM), ws.shape
        colour = ws[:, 0, :3]                                          # [N, 3] in [-1, 1]
        return colour[:, :, None, None].expand(-1, -1, self.resolution, self.resolution).contiguous()


class CanvasEditor(torch.nn.Module):
    """editor interface: edit(ws, va) writes the request into w dimensions 0 and 1 of every row."""

    def __init__(self):
        super().__init__()
        self.n_latent, self.w_dim = N_LATENT, W_DIM

    def edit(self, ws: torch.Tensor, va: torch.Tensor) -> torch.Tensor:
        assert va.shape == (ws.shape[0], 2), (ws.shape, va.shape)
        out = ws.clone()
        out[:, :, :2] = va[:, None, :].to(ws.dtype)
        return out


class CanvasGeneratorSpec(Strict):
    kind: Literal["canvas"] = "canvas"
    resolution: int = 16          # image side (flat colour, any size)


class CanvasEditorSpec(Strict):
    kind: Literal["canvas"] = "canvas"


def estimator_bytes(rotate_deg: float = 35.0, shrink: float = 0.8, band: tuple = (242.0, 329.0),
                    size: int = 16) -> bytes:
    """ONNX: "input" [N, 3, size, size] (PREPROCESS) -> "va" [N, 2]: the colour's (red, green),
    turned by rotate_deg (counter-clockwise) and scaled by shrink when its direction is inside
    `band` (from, to counter-clockwise; less than 180 degrees wide)."""
    from onnx import TensorProto, helper, numpy_helper

    from synthfer.models.builtin_onnx import _model

    a1, a2 = math.radians(band[0]), math.radians(band[1])
    assert 0 < (band[1] - band[0]) % 360 < 180, band
    # Inside the band: cross(edge1, p) >= 0 and cross(p, edge2) >= 0, both linear in p.
    edges = np.array([[-math.sin(a1), math.sin(a2)], [math.cos(a1), -math.cos(a2)]], np.float32)
    c, s = math.cos(math.radians(rotate_deg)), math.sin(math.radians(rotate_deg))
    turn = (shrink * np.array([[c, s], [-s, c]])).astype(np.float32)   # row vector p @ turn = shrink * R p
    pick = np.array([[1, 0], [0, 1], [0, 0]], np.float32)               # (red, green, blue) -> (v, a)
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["colour"], axes=[2, 3], keepdims=0),   # [N, 3]
        helper.make_node("MatMul", ["colour", "pick"], ["p"]),                             # [N, 2]
        helper.make_node("MatMul", ["p", "edges"], ["sides"]),
        helper.make_node("GreaterOrEqual", ["sides", "zero"], ["side_ok"]),
        helper.make_node("Cast", ["side_ok"], ["side_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMin", ["side_f"], ["inside"], axes=[1], keepdims=1),      # [N, 1] 0 or 1
        helper.make_node("MatMul", ["p", "turn"], ["turned"]),
        helper.make_node("Sub", ["turned", "p"], ["delta"]),
        helper.make_node("Mul", ["delta", "inside"], ["masked"]),
        helper.make_node("Add", ["p", "masked"], ["va"]),
    ]
    inits = [numpy_helper.from_array(pick, "pick"), numpy_helper.from_array(edges, "edges"),
             numpy_helper.from_array(np.zeros((1, 2), np.float32), "zero"), numpy_helper.from_array(turn, "turn")]
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])
    y = helper.make_tensor_value_info("va", TensorProto.FLOAT, ["N", 2])
    return _model(nodes, [x], [y], inits, "synthfer_known_answer_va")


def va_block(path: str) -> dict:
    """The recipe's models.va block for an estimator_bytes() file."""
    return {"kind": "onnx", "path": path, "output_name": "va", "valence_index": 0, "arousal_index": 1,
            "preprocess": dict(PREPROCESS)}


def register() -> None:
    """Add generator and editor kind `canvas` (idempotent)."""
    from synthfer.models import registry
    from synthfer.models.registry import Licence, ModelKind

    if "canvas" in registry.kinds("generator"):
        return
    note = Licence(True, "synthfer's known-answer stand-in (MIT): a flat colour that carries the request")

    def place(module, ctx):
        return module.eval().requires_grad_(False).to(ctx.device)

    registry.register(ModelKind(
        "generator", "canvas", CanvasGeneratorSpec, lambda spec, ctx: place(CanvasGenerator(spec.resolution), ctx),
        lambda spec, ctx: f"canvas-{spec.resolution}", lambda spec, ctx, model: f"canvas-{spec.resolution}", note))
    registry.register(ModelKind(
        "editor", "canvas", CanvasEditorSpec, lambda spec, ctx: place(CanvasEditor(), ctx),
        lambda spec, ctx: "canvas", lambda spec, ctx, model: "canvas", note))
