"""Process-wide settings a build makes once per process (driver, device process or Ray actor):
glibc's allocator, thread counts, and TF32. What was set is recorded in run.json.

Allocator. glibc serves every allocation above its mmap threshold (dynamic, at most 32 MiB) with
fresh pages from the kernel and gives them back on free, so each batch's large activations
page-fault in again: at 256 px, batch 16, a 2-core CPU spent more time in the kernel than in the
convolutions (5.9 img/s; 8.3 M minor faults in 15 s). Raising the mmap threshold and the trim
threshold to 1 GiB in-process (mallopt) keeps those pages in the heap for the next batch: 16.2
img/s, 0.19 M faults, the same peak RSS. A trim threshold of 256 MiB already loses most of it
(11.8 img/s). `SYNTHFER_MALLOC=default` leaves glibc as it is; other C libraries are left alone.

Threads. torch's intra-op pool takes every core; onnxruntime's pool (assessment, in the writer
thread, overlapping the next shard's generation) gets `ort_threads()`, image encoding
`encode_threads()` (half the cores each; on 2 cores one, inline). See docs/performance.md.

TF32. PyTorch lets cuDNN convolutions run in TF32 by default even in float32; synthfer sets
both switches to `execution.tf32` (default off) so "float32" means float32.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
HEAP_KEEP = 1 << 30     # bytes: allocations below this come from the heap, and freed memory stays up to this
_state: dict = {}


def tune_malloc() -> dict:
    """Once per process; returns what was set (run.json's `runtime.allocator`)."""
    if "allocator" in _state:
        return _state["allocator"]
    info = {"allocator": "unchanged"}
    if os.environ.get("SYNTHFER_MALLOC", "").lower() == "default":
        info["reason"] = "SYNTHFER_MALLOC=default"
    else:
        try:
            libc = _libc()
            version = libc.gnu_get_libc_version
            version.restype = ctypes.c_char_p
            glibc = version().decode()
        except (OSError, AttributeError):
            info["reason"] = "not glibc"
        else:
            ok = libc.mallopt(M_MMAP_THRESHOLD, HEAP_KEEP) == 1 and libc.mallopt(M_TRIM_THRESHOLD, HEAP_KEEP) == 1
            info = {"allocator": f"glibc {glibc}", "mmap_threshold": HEAP_KEEP if ok else None,
                    "trim_threshold": HEAP_KEEP if ok else None}
    _state["allocator"] = info
    return info


def release() -> None:
    """Give free heap memory back to the kernel (glibc malloc_trim), once per committed shard: with
    the thresholds above nothing is returned on its own, and over many shards the heap's free
    holes add up (peak RSS x1.12 from 1,000 to 10,000 samples without this)."""
    if _state.get("allocator", {}).get("allocator", "").startswith("glibc"):
        _libc().malloc_trim(0)


def _libc():
    if "libc" not in _state:
        _state["libc"] = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return _state["libc"]


def cores() -> int:
    """CPU cores this process may use (an affinity mask or a container's cpuset counts)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def ort_threads() -> int:
    """onnxruntime intra-op threads: it runs beside the generator, so it gets half the cores."""
    return max(1, cores() // 2)


def encode_threads() -> int:
    """Image encoding threads in the writer: the cores the generator and onnxruntime leave."""
    return max(1, cores() // 2)


def set_tf32(enabled: bool) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def settings() -> dict:
    """What run.json records of this process's settings."""
    import torch

    out = {"allocator": tune_malloc(), "torch_threads": torch.get_num_threads(), "onnxruntime_threads": ort_threads(),
           "encode_threads": encode_threads(), "cores": cores()}
    if torch.cuda.is_available():
        out.update(tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
    return out
