"""Process-wide settings a build makes once per process (driver, device process or Ray actor):
glibc's allocator, thread counts, and TF32. What was set is recorded in run.json.

Allocator. glibc serves every allocation above its mmap threshold (dynamic, at most 32 MiB) with
fresh pages from the kernel and gives them back on free, so each batch's large activations
page-fault in again: at 256 px, batch 16, a 2-core CPU spent more time in the kernel than in the
convolutions (5.9 img/s; 8.3 M minor faults in 15 s). Raising the mmap threshold and the trim
threshold to 1 GiB in-process (mallopt) keeps those pages in the heap for the next batch: 16.2
img/s, 0.19 M faults, the same peak RSS. A trim threshold of 256 MiB already loses most of it
(11.8 img/s). One arena: with a pool of encoding threads each thread's own arena kept its
fragments, and peak RSS grew x1.21 from 1,000 to 10,000 samples; with one arena x1.03-1.09
(the peak moves with how a commit meets the next shard's batches), at the same speed. Free heap
memory goes back to the kernel only once RSS outgrows its level after the first shard
(`release`). `SYNTHFER_MALLOC=default` leaves glibc as it is; other C libraries are left alone.

Lanes. On a CPU the "accelerator" is the cores the writer needs too. With one shard rendering on
every core beside a writer thread, each slice of the writer's work stalls the whole two-thread
generator at its next OpenMP barrier: at 64 px a build ran 0.67 of the bare generator's speed.
A local CPU build therefore builds two shards at once (`lanes`), each lane rendering on half the
cores and then measuring, encoding and committing its own shard while the other lane renders:
0.72-0.88 (docs/performance.md). A lane alone (the last shard) takes
every core. Thread counts never change a pixel (tested). Lanes need every thread on the one
heap the allocator settings keep (below): a lane on another glibc arena gets its large
activations from fresh pages at every batch (at 256 px: 12 M page faults, half the speed), so a
process that made other arenas before `tune_malloc` (a library caller that ran torch first)
builds with one lane. The CLI sets the allocator before importing anything. `SYNTHFER_LANES=N`
overrides the choice.

Threads. torch's intra-op pool takes every core (a lane: its share of them); onnxruntime's pool
gets `ort_threads()` (half the cores). Work beside the generator (image encoding, and a shard's assessment chunks when
nothing is generating, as during the last shard's commit) runs on a per-process pool (`pool`)
and takes half the cores while the generator runs and every core while it is idle
(`generating`, `side_slot`). See docs/performance.md.

OpenMP. torch's idle OpenMP threads spin for a while after every parallel region by default,
on cores the writer's assessment and encoding need: with `OMP_WAIT_POLICY=PASSIVE` they sleep.
When images were encoded one per pool task, a 64 px build ran 7% faster with it and 8% less CPU
time; with encoding in larger tasks the speed difference is inside the noise (docs/performance.md)
and it still uses less CPU time. A bare generator loop, nothing beside it, runs 15% slower with
it. The CLI sets it before torch is imported (`set_process_env`) unless the environment already
says otherwise; run.json records the value.

TF32. PyTorch lets cuDNN convolutions run in TF32 by default even in float32; synthfer sets
both switches to `execution.tf32` (default off) so "float32" means float32.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

PROCESS_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}   # before torch is imported; a value already set wins
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
ARENAS = 1              # every thread allocates from the main heap, the one a trim empties best
HEAP_KEEP = 1 << 30     # bytes: allocations below this come from the heap, and freed memory stays up to this
RSS_SLACK = 1.05        # release() trims once RSS is this much above its first reading
LANES_CPU = 2           # shards at once on a CPU: one renders while the other measures and writes
LANES_ENV = "SYNTHFER_LANES"
_state: dict = {}


def set_process_env() -> None:
    """What the CLI sets before importing torch (and so every process a build starts inherits)."""
    for key, value in PROCESS_ENV.items():
        os.environ.setdefault(key, value)


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
            arenas = libc.mallopt(M_ARENA_MAX, ARENAS) == 1
            info = {"allocator": f"glibc {glibc}", "mmap_threshold": HEAP_KEEP if ok else None,
                    "trim_threshold": HEAP_KEEP if ok else None, "arena_max": ARENAS if arenas else None}
    _state["allocator"] = info
    return info


def release() -> None:
    """Give free heap memory back to the kernel (glibc malloc_trim) once the process's RSS has
    grown past RSS_SLACK times what it was at the first call (the end of the first shard's
    commit, which ran beside the next shard's batches: the working set). Called once per
    committed shard. With the thresholds above nothing is returned on its own, and over many
    shards freed holes add up (peak RSS x1.09-1.12 from 1,000 to 10,000 samples without any
    trim). A trim at every shard bounded that but cost the generator: at 256 px each one handed
    back about 1.4 GB that the next batches faulted in again. Trimming only past the slack keeps
    the bound and leaves the working set alone while it stays within it."""
    if not _state.get("allocator", {}).get("allocator", "").startswith("glibc"):
        return
    rss = _rss_bytes()
    first = _state.setdefault("rss_first", rss)
    if rss is None or first is None or rss > first * RSS_SLACK:
        _libc().malloc_trim(0)


def _rss_bytes() -> int | None:
    """Resident set size of this process (Linux /proc), or None where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _libc():
    if "libc" not in _state:
        _state["libc"] = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return _state["libc"]


def arenas() -> int | None:
    """glibc malloc arenas of this process (malloc_info's heaps), or None where it cannot tell."""
    import tempfile

    try:
        libc = _libc()
        libc.fdopen.restype = ctypes.c_void_p
        libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
        libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
        with tempfile.TemporaryFile() as f:
            stream = libc.fdopen(os.dup(f.fileno()), b"w")
            if not stream:
                return None
            ok = libc.malloc_info(0, stream) == 0
            libc.fclose(stream)
            f.seek(0)
            text = f.read().decode("ascii", "replace")
    except (OSError, AttributeError):
        return None
    heaps = text.count("<heap nr=") if ok else 0
    return heaps or None


def lanes(device_type: str, local: bool = True) -> int:
    """Shards a local build renders at once (see Lanes above); records the choice for run.json.
    local=False: the shards are built by other processes (processes, ray), one at a time each."""
    forced = os.environ.get(LANES_ENV, "").strip()
    if not local:
        n, why = 1, "shards built by worker processes"
    elif forced:
        if not forced.isdigit() or not 1 <= int(forced) <= 64:
            from synthfer.errors import UsageError
            raise UsageError(f"{LANES_ENV}={forced}: must be a whole number from 1 to 64")
        n, why = int(forced), LANES_ENV
    elif device_type != "cpu" or cores() < 2:
        n, why = 1, f"{device_type}, {cores()} cores"
    elif _keeps_heap() and (tune_malloc().get("arena_max") != ARENAS or arenas() != 1):
        n, why = 1, "other malloc arenas exist: lanes would not share one heap"
    else:
        n, why = LANES_CPU, f"cpu, {cores()} cores"
    _state["lanes"] = {"lanes": n, "torch_threads_each": lane_threads(n), "reason": why}
    return n


def _keeps_heap() -> bool:
    return tune_malloc().get("mmap_threshold") is not None


def lane_threads(busy: int) -> int:
    """torch threads of one lane while `busy` lanes hold a shard: the cores split between them."""
    return max(1, cores() // max(1, busy))


def cores() -> int:
    """CPU cores this process may use (an affinity mask or a container's cpuset counts)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def ort_threads() -> int:
    """onnxruntime intra-op threads: it runs beside the generator, so it gets half the cores."""
    return max(1, cores() // 2)


def side_threads() -> int:
    """Tasks beside the generator (assessment chunks, encoding) at once while it runs: the cores it leaves."""
    return max(1, cores() // 2)


_pools: dict = {}


def pool(name: str) -> ThreadPoolExecutor | None:
    """This process's thread pool `name` (a thread per core; a forked child makes its own), or
    None on one core, where a second thread has nothing to overlap with. side_slot() decides
    how many of its tasks run at once."""
    if cores() <= 1:
        return None
    key = (os.getpid(), name)
    with _busy:
        if key not in _pools:
            _pools[key] = ThreadPoolExecutor(max_workers=cores(), thread_name_prefix=f"synthfer-{name}")
        return _pools[key]


_busy = threading.Condition()
_running = {"generating": 0, "side": 0}


@contextmanager
def generating():
    """Around this process's model work: work beside it then keeps to side_threads()."""
    with _busy:
        _running["generating"] += 1
    try:
        yield
    finally:
        with _busy:
            _running["generating"] -= 1
            _busy.notify_all()


def generating_now() -> bool:
    """Whether model work (generating()) is running in this process now."""
    with _busy:
        return _running["generating"] > 0


@contextmanager
def side_slot():
    """Around one task beside the generator (an encoding task of about one 256 px image's pixels,
    or one assessment chunk): waits while side_threads() tasks (every core's worth when the
    generator is idle) are running. A task is a few ms to a few tens of ms, so the share
    follows the generator within one task."""
    with _busy:
        while _running["side"] >= (side_threads() if _running["generating"] else cores()):
            _busy.wait()
        _running["side"] += 1
    try:
        yield
    finally:
        with _busy:
            _running["side"] -= 1
            _busy.notify_all()


def set_tf32(enabled: bool) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def settings() -> dict:
    """What run.json records of this process's settings."""
    import torch

    out = {"allocator": tune_malloc(), "torch_threads": torch.get_num_threads(), "onnxruntime_threads": ort_threads(),
           "side_threads": side_threads(), "side_threads_idle": cores(), "cores": cores(),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
           "lanes": _state.get("lanes", {"lanes": 1, "reason": "not a local build"})}
    if torch.cuda.is_available():
        out.update(tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
    return out
