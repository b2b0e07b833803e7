"""ONNX models (face quality, valence/arousal) run through onnxruntime.

An ``OnnxModel`` is built once per process or worker from the file's bytes (sessions cannot be
pickled, so workers receive bytes and build their own). Everything that can be wrong with a
user's file is checked at load, before any image is generated, and raised as a one-line
``ModelFileError`` naming the file: not ONNX, several inputs, wrong input rank / channels /
side / element type. ``check_output`` lets the caller verify, also up front, that the output it
will read is wide enough.

The caller feeds float32 [N, 3, size, size] batches it has already preprocessed; this module
does no image handling.
"""

from __future__ import annotations

import re

import numpy as np

from synthfer.errors import ModelFileError, first_line
from synthfer import runtime

_FLOAT = "tensor(float)"
# onnxruntime prefixes every message with "[ONNXRuntimeError] : <code> : <NAME> :"; users need
# only the text after it.
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")
# Failures meaning the bytes are not an ONNX model at all (as opposed to a model that
# onnxruntime cannot run, e.g. an unsupported operator).
_NOT_ONNX = ("INVALID_PROTOBUF", "No graph was found")


def _ort_line(err: BaseException) -> str:
    """The first line of an onnxruntime error without its "[ONNXRuntimeError] : N : NAME :" prefix."""
    return _ORT_PREFIX.sub("", first_line(err)).strip()


def _providers(device: str) -> list:
    """CUDA first when asked for and available (onnxruntime silently falls back to CPU for nodes
    CUDA lacks); plain CPU otherwise, so a CPU-only onnxruntime never fails on a cuda device."""
    import onnxruntime as ort

    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = device.partition(":")[2]
        # "DEFAULT" instead of the exhaustive cuDNN search: the same algorithm every run, so
        # the same image gets the same score across runs.
        options = {"device_id": int(index) if index.isdigit() else 0, "cudnn_conv_algo_search": "DEFAULT"}
        return [("CUDAExecutionProvider", options), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _dim_text(dim, symbol: str) -> str:
    return str(dim) if isinstance(dim, int) else symbol


def _shape_text(shape) -> str:
    """Nx3x112x112 style; symbolic dims shown as N (batch), C, H, W."""
    symbols = ["N", "C", "H", "W"] if len(shape) == 4 else ["N"] + ["?"] * max(len(shape) - 1, 0)
    return "x".join(_dim_text(d, s) for d, s in zip(shape, symbols)) or "scalar"


class OnnxModel:
    """One onnxruntime session plus the facts the caller needs (input name, outputs, batch)."""

    def __init__(self, model_bytes: bytes, label: str, role: str, size: int, device: str = "cpu",
                 input_name: str | None = None, first_check=None):
        """first_check(model): raises before the input checks (a preset names what the file must be)."""
        import onnxruntime as ort

        assert role in ("quality", "va"), role
        assert isinstance(model_bytes, (bytes, bytearray)), type(model_bytes)
        self.label, self.role, self.size, self.device = label, role, int(size), device

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no warnings about unused initializers etc.
        # Same reduction order every run, so a rebuilt shard gets bit-identical scores.
        options.use_deterministic_compute = True
        # onnxruntime's pool threads spin after each run by default, burning the cores the
        # generator needs between calls; synthfer calls it in bursts, so let them sleep.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.intra_op_num_threads = runtime.ort_threads()   # it runs beside the generator (runtime.py)
        try:
            self.session = ort.InferenceSession(bytes(model_bytes), sess_options=options,
                                                providers=_providers(device))
        except Exception as err:  # onnxruntime's pybind errors share no useful base class
            text = str(err)
            if not model_bytes or any(marker in text for marker in _NOT_ONNX):
                raise ModelFileError(f"{label}: not an ONNX model ({_ort_line(err)})") from None
            raise ModelFileError(f"{label}: onnxruntime cannot load this model ({_ort_line(err)})") from None

        self._input = self._pick_input(input_name)
        self.input_name: str = self._input.name
        self._outputs = {o.name: o for o in self.session.get_outputs()}
        self.output_names: list[str] = [o.name for o in self.session.get_outputs()]
        batch = self._input.shape[0]
        self.fixed_batch: int | None = batch if isinstance(batch, int) and batch > 0 else None
        if first_check is not None:
            first_check(self)
        self._check_input()

    # ----------------------------------------------------------------------------------- load checks

    def _pick_input(self, wanted: str | None):
        inputs = self.session.get_inputs()  # only inputs that must be fed (initialisers excluded)
        names = ", ".join(f"'{i.name}'" for i in inputs)
        if wanted is not None and wanted not in [i.name for i in inputs]:
            raise ModelFileError(f"{self.label}: {self.role} model has no input '{wanted}' (inputs: {names})")
        # synthfer feeds exactly one tensor; onnxruntime refuses to run with any input missing,
        # so a second required input is an error even when the recipe names the image input.
        if len(inputs) != 1:
            raise ModelFileError(f"{self.label}: {self.role} model has {len(inputs)} inputs ({names}); "
                                 f"synthfer feeds a single image batch")
        return inputs[0]

    def _check_input(self) -> None:
        shape, want = list(self._input.shape), f"Nx3x{self.size}x{self.size}"
        if self._input.type != _FLOAT:
            raise ModelFileError(f"{self.label}: {self.role} model input '{self.input_name}' is "
                                 f"{self._input.type}, synthfer feeds tensor(float)")
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise ModelFileError(f"{self.label}: {self.role} model expects {_shape_text(shape)}, "
                                 f"synthfer feeds {want}")
        if any(isinstance(d, int) and d != self.size for d in shape[2:]):
            raise ModelFileError(f"{self.label}: {self.role} model expects {_shape_text(shape)}, "
                                 f"recipe gives {self.size}")

    def _output(self, output: str | None):
        if output is None:
            return self.session.get_outputs()[0]
        if output not in self._outputs:
            names = ", ".join(f"'{n}'" for n in self.output_names)
            raise ModelFileError(f"{self.label}: {self.role} model has no output '{output}' (outputs: {names})")
        return self._outputs[output]

    @property
    def input_side(self) -> int | None:
        """The input's static side in pixels (None when symbolic)."""
        side = self._input.shape[-1]
        return side if isinstance(side, int) else None

    def values_per_image(self, output: str | None) -> int | None:
        """The output's static width per image (None when any dimension is symbolic)."""
        per_image = self._output(output).shape[1:]
        if not all(isinstance(d, int) for d in per_image):
            return None
        return int(np.prod(per_image)) if per_image else 1

    def check_output(self, output: str | None, min_width: int) -> None:
        """Raise if `output` is unknown, or its per-image width is static and < min_width
        (e.g. a VA model read at indices 8 and 9 needs min_width 10). Symbolic widths pass;
        ``run``'s caller then sees the real width."""
        meta = self._output(output)
        per_image = meta.shape[1:] if len(meta.shape) >= 1 else []
        if all(isinstance(d, int) for d in per_image):
            width = int(np.prod(per_image)) if per_image else 1
            if width < min_width:
                raise ModelFileError(f"{self.label}: {self.role} output '{meta.name}' has {width} "
                                     f"value{'s' if width != 1 else ''} per image, recipe reads index {min_width - 1}")

    # ------------------------------------------------------------------------------------------- run

    def run(self, batch: np.ndarray, output: str | None = None) -> np.ndarray:
        """float32 [N, 3, size, size] -> the named output (default: the first), float32, leading dim N.

        A model exported with a static batch (often 1) is run in chunks of that batch; the
        last chunk is padded by repeating its final image and the padding dropped afterwards.
        """
        assert batch.dtype == np.float32 and batch.shape[1:] == (3, self.size, self.size), \
            (batch.dtype, batch.shape)
        name = self._output(output).name
        n = batch.shape[0]
        if n == 0:  # nothing to run; keep the per-image shape where the model states it
            per_image = self._outputs[name].shape[1:]
            return np.zeros((0, *[d if isinstance(d, int) else 0 for d in per_image]), np.float32)
        step = self.fixed_batch or n
        parts = []
        for start in range(0, n, step):
            chunk = batch[start:start + step]
            real = chunk.shape[0]
            if real < step:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - real, axis=0)])
            parts.append(self._run_chunk(np.ascontiguousarray(chunk), name)[:real])
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        assert out.shape[0] == n, (out.shape, n)
        return out

    def _run_chunk(self, chunk: np.ndarray, name: str) -> np.ndarray:
        try:
            (out,) = self.session.run([name], {self.input_name: chunk})
        except Exception as err:  # a model that loads but fails on a real batch is the file's fault
            raise ModelFileError(f"{self.label}: {self.role} model failed to run ({_ort_line(err)})") from None
        out = np.asarray(out)
        if out.ndim == 0 and chunk.shape[0] == 1:
            out = out.reshape(1)  # batch-1 exports that return a bare scalar (e.g. a magnitude)
        if out.ndim == 0 or out.shape[0] != chunk.shape[0]:
            raise ModelFileError(f"{self.label}: {self.role} output '{name}' has shape "
                                 f"{'x'.join(map(str, out.shape)) or 'scalar'} for a batch of {chunk.shape[0]}")
        return out.astype(np.float32, copy=False)
