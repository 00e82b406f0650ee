"""Shared fixtures.

Tracing: every cold worker start costs the torch/transformers/kvpress imports (seconds), so the
suite keeps ONE worker for the whole session (:func:`trace_session`). Tests that are not about
start-up route ``kvaudit.tracer.open_session`` to it (:func:`shared_worker`, or
:func:`sharing_worker` in module-scoped fixtures); the worker rebuilds its model only when a test
changes the model options. Only tests about a cold start or a real ``kvaudit`` process start their own.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# The on-disk cache is tested on purpose (tests/test_cache.py); elsewhere a test must see a fresh run.
os.environ.setdefault("KVAUDIT_NO_CACHE", "1")

from kvaudit.targets import resolve_module

ROOT = Path(__file__).resolve().parents[1]

# `python -m pytest` puts the working directory (the checkout) first on sys.path, where `audit` and
# `rules` would import as top-level packages beside the installed `kvaudit`: tests must see only
# what the wheel installs.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != ROOT]

# One torch thread, set before anything imports torch: the tiny models gain nothing from more, and
# on a shared 2-core machine OpenMP threads that spin against other processes made the reference-
# press tests two to three times slower (the trace worker does the same for its own reasons).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def kvpress_presses_dir() -> Path:
    """kvpress's installed presses folder, found without importing kvpress."""
    path = resolve_module("kvpress.presses")
    if path is None:
        pytest.fail("kvpress is not installed: `make test` installs it")
    return path.parent


@pytest.fixture(scope="session", autouse=True)
def _warming_trace_worker() -> Iterator:
    """Start the session's trace worker with the first test, and let it import torch meanwhile.

    Its start-up (torch, transformers, kvpress, the model: seconds) then overlaps the static tests
    on the other core instead of stalling the first tracing test. The worker is spawned from the
    main thread (its parent-death signal is tied to the spawning thread); only the wait for its
    ``init`` answer runs in a helper thread, joined before any test uses the worker.
    """
    from kvaudit.tracer import TraceOptions
    from kvaudit.tracer.parent.session import TraceSession

    session = TraceSession(TraceOptions())
    session.start()
    failure: list[BaseException] = []

    def initialise() -> None:
        try:
            session.model_info()
        except BaseException as error:  # noqa: BLE001 - re-raised where a test asks for the worker
            failure.append(error)

    warming = threading.Thread(target=initialise, name="trace-worker-init", daemon=True)
    warming.start()
    yield session, warming, failure
    warming.join()
    session.close()


@pytest.fixture(scope="session")
def trace_session(_warming_trace_worker) -> Iterator:
    """One trace worker for the whole test session (closed, with everything below it, at the end)."""
    session, warming, failure = _warming_trace_worker
    warming.join()
    if failure:
        raise failure[0]
    yield session


@contextmanager
def sharing_worker(session) -> Iterator:
    """Route ``kvaudit.tracer.open_session`` (trace_targets, attach_traces, the CLI) to ``session``."""
    import kvaudit.tracer

    @contextmanager
    def reuse(options) -> Iterator:
        yield session

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kvaudit.tracer, "open_session", reuse)
        yield session


@pytest.fixture
def shared_worker(trace_session) -> Iterator:
    """The session's worker, used by every trace of this test (in-process CLI runs included)."""
    with sharing_worker(trace_session) as session:
        yield session
