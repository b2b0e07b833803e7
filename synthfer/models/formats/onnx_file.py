"""ONNX model files (quality and VA estimators): read once as bytes, checked to parse as ONNX."""

from __future__ import annotations

from pathlib import Path

from synthfer.errors import ModelFileError, first_line
from synthfer.models.formats import check_regular


def read_onnx(path: str | Path) -> bytes:
    """Bytes of an ONNX model file, checked to parse as one (onnxruntime is then given the
    bytes, so the file is read once). Weights kept in external data files are refused: a
    session built from bytes cannot find them."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    check_regular(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: file not found") from None
    except OSError as err:
        raise ModelFileError(f"{path}: cannot read: {err.strerror or err}") from None
    if not data:
        raise ModelFileError(f"{path}: not an ONNX model (empty file)")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"{path}: not an ONNX model ({first_line(err)})") from None
    # Protobuf accepts some non-ONNX bytes as a message with no fields set.
    if not model.HasField("graph") or model.ir_version <= 0:
        raise ModelFileError(f"{path}: not an ONNX model (no graph or IR version)")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise ModelFileError(f"{path}: ONNX model keeps its weights in external data files; "
                             f"save it as a single file")
    return data
