"""Run the synthfer CLI with a kill point: SIGKILL this process at the Nth call of a function.

    python -m tests.killpoints synthfer.io.shards:ShardStore.commit after 2 -- build recipe.yaml -q

`before` kills on entry to the Nth call, `after` once it returned. The kill is real (SIGKILL:
no cleanup, no finally), so tests see exactly what a crash at that point leaves behind.
`N:SIGTERM` (or any signal name) sends that signal instead, as cron's `kill` or a Ctrl-C would.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading


def install(target: str, when: str, nth: int, signum: int = signal.SIGKILL) -> None:
    module_name, _, attr = target.partition(":")
    owner = importlib.import_module(module_name)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    real = getattr(owner, name)
    calls = {"n": 0}
    lock = threading.Lock()

    def wrapper(*args, **kwargs):
        with lock:   # two lanes call the same function at once: each call keeps its own number
            calls["n"] += 1
            n = calls["n"]
        if when == "before" and n == nth:
            os.kill(os.getpid(), signum)
        result = real(*args, **kwargs)
        if when == "after" and n == nth:
            os.kill(os.getpid(), signum)
        return result
    setattr(owner, name, wrapper)


def main(argv: list[str]) -> None:
    from synthfer import runtime

    runtime.tune_malloc()   # first, as the CLI does: the build then runs with the CLI's lanes
    split = argv.index("--")
    points, cli_args = argv[:split], argv[split + 1:]
    for i in range(0, len(points), 3):
        nth, _, name = points[i + 2].partition(":")
        install(points[i], points[i + 1], int(nth), getattr(signal, name) if name else signal.SIGKILL)
    from synthfer.__main__ import main as synthfer_main

    sys.argv = ["synthfer", *cli_args]
    synthfer_main()


if __name__ == "__main__":
    main(sys.argv[1:])
