"""Process pools whose workers hold a resource (an engine) for the whole run, fed lazily.

`imap_stateful(setup, fn, items, workers)` opens `setup()` once per worker process, applies
`fn(state, item)` to each item and yields the results as they arrive (any order). With one worker it
runs in this process, which keeps small runs and tests simple.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any, TypeVar

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")


class WorkerError(RuntimeError):
    """A worker process raised; the message carries its error."""


def _next_task(tasks: Any, parent: int) -> Any:
    """The next task, or None once the parent is gone: a parent killed by a signal runs no cleanup,
    and an orphaned worker would otherwise go on playing queued games (and hold its engine) forever."""
    while os.getppid() == parent:
        try:
            return tasks.get(timeout=1.0)
        except queue.Empty:
            continue
    return None


def _worker(setup: Callable[[], AbstractContextManager[Any]], fn: Callable[[Any, Any], Any],
            tasks: Any, results: Any, parent: int) -> None:
    try:
        with setup() as state:
            while (item := _next_task(tasks, parent)) is not None:
                results.put(("ok", fn(state, item)))
    except Exception as e:  # reported to the parent, which stops the run
        results.put(("error", f"{type(e).__name__}: {e}"))
        return
    results.put(("done", None))


def imap_stateful(setup: Callable[[], AbstractContextManager[S]], fn: Callable[[S, T], R], items: Iterable[T],
                  workers: int) -> Iterator[R]:
    """Results of fn(state, item) for every item, state = setup() opened once per worker process."""
    if workers <= 1:
        with setup() as state:
            for item in items:
                yield fn(state, item)
        return
    ctx = mp.get_context("spawn")
    tasks: Any = ctx.Queue()
    results: Any = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(setup, fn, tasks, results, os.getpid()), daemon=True)
             for _ in range(workers)]
    for p in procs:
        p.start()
    source = iter(items)
    in_flight = 0
    exhausted = False
    try:
        while True:
            while not exhausted and in_flight < 4 * workers:  # bounded: big inputs are never all in memory
                nxt: T | None = next(source, None)
                if nxt is None:
                    exhausted = True
                    for _ in procs:
                        tasks.put(None)
                else:
                    tasks.put(nxt)
                    in_flight += 1
            if exhausted and in_flight == 0:
                break
            try:
                kind, value = results.get(timeout=5.0)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    raise WorkerError("all worker processes died") from None
                continue
            if kind == "error":
                raise WorkerError(value)
            if kind == "ok":
                in_flight -= 1
                yield value
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5.0)
