"""SIGTERM and SIGINT: the documented exit (143 / 130) from the first instant, and a commit under
way always finishes, however many signals follow.

The first signal raises InterruptedBuild in the main thread: the shard being computed is
abandoned (the next run cleans its temporaries), the executor waits for a commit the writer
thread has started, the lock is released, and the CLI exits 128 + signal. Every later signal is
ignored, so it can neither abandon that commit nor let the default action kill the process
while it cleans up. `synthfer` installs the handlers before importing anything heavy
(synthfer/__main__.py); `build()` installs them for library callers.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from synthfer.errors import InterruptedBuild

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_state: dict = {"first": None, "after": ""}


def _handler(signum, _frame) -> None:
    if _state["first"] is not None:
        return  # the first signal's shutdown is under way; let it finish
    _state["first"] = signum
    raise InterruptedBuild(f"{signal.Signals(signum).name}: interrupted{_state['after']}", 128 + signum)


def explain(after: str) -> None:
    """What the interruption message adds for the command under way (e.g. build: "; committed
    shards are intact, run again to finish"); commands that leave nothing behind add nothing."""
    _state["after"] = after


def install() -> None:
    """Handle SIGTERM/SIGINT as above for the rest of this process (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        _state["first"] = None
        for s in SIGNALS:
            signal.signal(s, _handler)


@contextmanager
def handled():
    """install() for the duration of a block, unless already installed (then nothing changes)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is _handler:
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    install()
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
