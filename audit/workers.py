"""Running the audit's independent tasks on every core, without letting one crash stop the run.

Tasks are run in-process when there are few of them, or when one job is asked for; else in
a pool of forked worker processes. A worker that dies (a segfault in a native parser, the
kernel's OOM killer) breaks the pool: the tasks it left unfinished are then split into
single-file tasks and rerun one by one in fresh pools, so that only the file that kills a
worker again is reported, as an error of that file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    import multiprocessing.context
# multiprocessing and concurrent.futures are imported only by a run that uses the pool (start-up cost).

R = TypeVar("R")


class Task(Protocol[R]):  # type: ignore[misc]
    """A unit of work over some files: it can be split per file, and says how a crash reads."""

    size: int  # for the progress bar: how many files it covers

    def __call__(self) -> R: ...

    def split(self) -> Sequence[Task[R]]: ...

    def crashed(self, reason: str) -> R: ...

    @classmethod
    def merge(cls, results: list[R]) -> R: ...


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _fork_context() -> multiprocessing.context.BaseContext | None:
    # Forked workers start in milliseconds and share the parent's imports; elsewhere
    # (macOS, Windows) spawning would cost a fresh interpreter per worker: stay in-process.
    import multiprocessing

    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return None


def _call(task: Task[R]) -> R:
    return task()


class Runner(Generic[R]):
    """Runs tasks in order of submission, in-process or in a pool, and reports each completion."""

    def __init__(self, jobs: int, on_done: Callable[[int], None] | None = None) -> None:
        self.jobs = max(1, jobs)
        self.on_done = on_done or (lambda _size: None)

    def run(self, tasks: Sequence[Task[R]], parallel: bool) -> list[R]:
        context = _fork_context() if parallel and self.jobs > 1 and len(tasks) > 1 else None
        if context is None:
            results = []
            for task in tasks:
                results.append(task())
                self.on_done(task.size)
            return results
        return self._pooled(tasks, context)

    def _pooled(self, tasks: Sequence[Task[R]], context) -> list[R]:
        from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        results: list[R | None] = [None] * len(tasks)
        broken: list[int] = []
        pool = ProcessPoolExecutor(max_workers=min(self.jobs, len(tasks)), mp_context=context)
        try:
            pending: dict[Future, int] = {pool.submit(_call, task): i for i, task in enumerate(tasks)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    i = pending.pop(future)
                    try:
                        results[i] = future.result()
                        self.on_done(tasks[i].size)
                    except BrokenProcessPool:
                        broken.append(i)
                    except Exception as err:  # a task lets nothing escape; if one does, it is a bug
                        results[i] = tasks[i].crashed(f"internal error: {type(err).__name__}: {err}")
                        self.on_done(tasks[i].size)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        for i in sorted(broken):
            results[i] = self._isolated(tasks[i], context)
        return results  # type: ignore[return-value]

    def _isolated(self, task: Task[R], context) -> R:
        """Rerun a task whose worker died, file by file, each in a fresh one-worker pool."""
        parts = task.split()
        if len(parts) <= 1:
            result = self._alone(task, context)
            self.on_done(task.size)
            return result
        results = []
        for part in parts:
            results.append(self._alone(part, context))
            self.on_done(part.size)
        return type(task).merge(results)

    @staticmethod
    def _alone(task: Task[R], context) -> R:
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        pool = ProcessPoolExecutor(max_workers=1, mp_context=context)
        try:
            return pool.submit(_call, task).result()
        except BrokenProcessPool:
            return task.crashed("the analysis process died on this file (a crash in a parser, or out of memory)")
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
