"""NVIDIA (NVlabs) network pickles: a reader that runs nothing from the file.

An NVlabs network pickle (stylegan2-ada-pytorch, stylegan3) is a plain ``pickle.dump`` of
``{G, D, G_ema, training_set_kwargs, augment_pipe}`` (some files hold only ``G_ema``). Each network
pickles as a call of ``torch_utils.persistence._reconstruct_persistent_obj(meta)``, whose real
implementation exec()s the Python source stored in ``meta``: unpickling such a file the usual way
runs code from the file. Here ``find_class`` hands out only stand-ins that keep data:

* the persistence call keeps ``meta`` as a ``PersistentObject`` (class name and the module's
  ``__dict__``); ``module_src`` stays a string and is never executed;
* ``dnnlib.util.EasyDict`` becomes a plain dict subclass;
* tensors are rebuilt by our own functions (bounds-checked: ``Tensor.set_`` is not) from storages
  that torch decodes with ``weights_only=True``; torch's own ``torch.storage._load_from_bytes``,
  which the pickles name, uses ``weights_only=False``;
* the few numpy / collections / builtins names real files contain (numpy float64 gains, sets,
  OrderedDicts) map to their data-only constructors.

Every other global is refused before anything is called.
"""

from __future__ import annotations

import codecs
import importlib
import io
import pickle
import re
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthfer.errors import ModelFileError, first_line
from synthfer.models.formats import Weights

# torch.load's weights_only refusals name the global as "GLOBAL module.name".
_TORCH_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


class RefusedGlobal(Exception):
    """The pickle names a global outside the allow-list; nothing of it was called."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict (config dicts such as ``_init_kwargs``)."""


class PersistentObject:
    """A persistent network as data: its class name and pickled ``__dict__``; its source is never run."""

    __slots__ = ("class_name", "module_src", "state")

    def __init__(self, meta: Any):
        if not isinstance(meta, dict) or not isinstance(meta.get("state"), dict):
            raise ValueError("a persistent object without a state dict")
        self.class_name = str(meta.get("class_name"))
        self.module_src = meta.get("module_src")
        self.state = meta["state"]


def _check_storage(storage: Any) -> torch.storage.TypedStorage:
    if not isinstance(storage, torch.storage.TypedStorage):
        raise ValueError("tensor data is not a torch storage")
    return storage


def _rebuild_tensor(storage: Any, offset: int, size: tuple, stride: tuple, *_training_state: Any) -> torch.Tensor:
    """Tensor view of a storage. requires_grad, backward hooks (callables) and metadata are dropped."""
    storage = _check_storage(storage)
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    offset = int(offset)
    if len(size) != len(stride) or offset < 0 or min(size + stride, default=0) < 0:
        raise ValueError("a tensor with a negative offset, size or stride")
    # Tensor.set_ does not check that the view stays inside the storage.
    if 0 not in size and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= storage._size():
        raise ValueError("a tensor reaching past the end of its storage")
    out = torch.empty(0, dtype=storage.dtype)
    return out.set_(storage._untyped_storage, offset, size, stride)


def _rebuild_parameter(data: Any, *_training_state: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise ValueError("a parameter without tensor data")
    return data


def _load_storage(data: Any) -> torch.storage.TypedStorage:
    """Storages pickle as torch's legacy serialisation of the storage alone; decode it weights-only."""
    if not isinstance(data, bytes):
        raise ValueError("storage data is not bytes")
    return _check_storage(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))


def _latin1_encode(text: Any, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles write bytes as _codecs.encode(str, 'latin1'); other codecs are not data.
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise RefusedGlobal(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


def _numpy_core(submodule: str, name: str) -> Any:
    try:  # numpy >= 2 moved numpy.core to numpy._core (numpy.core still imports, with a warning)
        module = importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:
        module = importlib.import_module(f"numpy.core.{submodule}")
    return getattr(module, name)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentObject,
        ("dnnlib.util", "EasyDict"): EasyDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _load_storage,
        ("collections", "OrderedDict"): OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("_codecs", "encode"): _latin1_encode,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    # numpy float64 gains (scalar), arrays (_reconstruct; _frombuffer under pickle protocol 5).
    for package in ("numpy.core", "numpy._core"):
        for submodule, name in (("multiarray", "scalar"), ("multiarray", "_reconstruct"), ("numeric", "_frombuffer")):
            allowed[(f"{package}.{submodule}", name)] = _numpy_core(submodule, name)
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    _allowed = _allowed_globals()
    _py2_modules = {"__builtin__": "builtins", "copy_reg": "copyreg"}

    def find_class(self, module: str, name: str) -> Any:
        module = self._py2_modules.get(module, module)
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise ValueError("a pickle with persistent ids (not a network pickle)")


def refused_global(err: BaseException) -> str | None:
    """The global torch's weights-only reader refused, from its error message (None if another error)."""
    found = _TORCH_REFUSED_GLOBAL.search(str(err))
    return found.group(1) if found else None


def read_network_pickle(path: str | Path) -> Any:
    """Everything in the pickle, networks as PersistentObject. ModelFileError naming the file on any problem."""
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            return _RestrictedUnpickler(f).load()
    except RefusedGlobal as err:
        raise ModelFileError(f"{path}: refuses to load: the pickle calls {err.name}; "
                             f"only tensors and plain data are allowed") from None
    except OSError as err:
        raise ModelFileError(f"{path}: cannot read: {err.strerror or err}") from None
    except EOFError:
        raise ModelFileError(f"{path}: truncated (the pickle ends early)") from None
    except pickle.UnpicklingError as err:
        refused = refused_global(err)
        if refused:  # a storage blob that torch's weights-only reader refused
            raise ModelFileError(f"{path}: refuses to load: the pickle calls {refused}; "
                                 f"only tensors and plain data are allowed") from None
        if "truncated" in str(err):
            raise ModelFileError(f"{path}: truncated (the pickle ends early)") from None
        raise ModelFileError(f"{path}: damaged pickle ({first_line(err)})") from None
    except Exception as err:  # malformed opcodes raise many types (ValueError, TypeError, RuntimeError, ...)
        raise ModelFileError(f"{path}: damaged pickle ({first_line(err)})") from None


def flatten_state(obj: PersistentObject, prefix: str = "") -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers of a persistent network, named as its state_dict() would."""
    state = obj.state
    skip = state.get("_non_persistent_buffers_set") or set()
    out: dict[str, torch.Tensor] = {}
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{prefix}{name} is not a tensor")
            out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentObject):
            raise ValueError(f"submodule {prefix}{name} is not a network object")
        out.update(flatten_state(child, f"{prefix}{name}."))
    return out


def g_ema_state(path: str | Path, data: Any) -> tuple[dict[str, torch.Tensor], dict]:
    """Flat NVlabs-layout state dict and ``_init_kwargs`` of the pickle's ``G_ema``."""
    g_ema = data.get("G_ema") if isinstance(data, dict) else None
    if not isinstance(g_ema, PersistentObject):
        raise ModelFileError(f"{path}: a pickle without a G_ema network; not an NVlabs generator pickle")
    try:
        state = flatten_state(g_ema)
    except (ValueError, TypeError, AttributeError, RecursionError) as err:
        raise ModelFileError(f"{path}: damaged G_ema network ({first_line(err)})") from None
    init_kwargs = g_ema.state.get("_init_kwargs")
    return state, dict(init_kwargs) if isinstance(init_kwargs, dict) else {}


def read(path: Path) -> Weights:
    """An NVlabs network pickle's G_ema as NVlabs-layout tensors, with its constructor kwargs."""
    state, init_kwargs = g_ema_state(path, read_network_pickle(path))
    return Weights(Path(path), "nvlabs-pickle", state, "NVlabs network pickle (G_ema)", "nvlabs",
                   {"init_kwargs": init_kwargs})
