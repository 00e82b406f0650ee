"""The trace worker: one process that pays the torch/transformers/kvpress imports once.

Started by :class:`kvaudit.tracer.parent.client.WorkerClient` as ``python -m kvaudit.tracer.worker``. It
reads one JSON request per line on stdin and answers one JSON line on its private copy of
stdout. File descriptor 1 itself is pointed at stderr, so that whatever the user's code prints
can never corrupt the protocol. Every request that runs user code forks a child
(:func:`kvaudit.tracer.worker.process.run_in_child`) with the request's timeout.

Requests: ``init`` (imports, model; sent again when a shared session changes the model),
``list`` (classes of a target), ``trace`` (one press).

Process hygiene (see :mod:`kvaudit.tracer.worker.process`): the worker runs in its own session, is a
child subreaper, and stops at once when kvaudit dies; before it exits, on every path, it kills and
reaps every process below it. It is started with ``python -P``: the working directory is not put
first on ``sys.path``, so a ``torch.py`` or ``rules/`` there shadows nothing; each target's own
folder (or package root) is put there instead, in the child that imports it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything can import huggingface_hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ...model import Defect, PressTrace  # noqa: E402  (stdlib only, like the rest below)
from .. import errors  # noqa: E402
from ..errors import ModelFailure  # noqa: E402
from ..options import PARENT_ENV, TRACE_PACKAGES, TraceOptions, broken_trace_extra, missing_trace_extra  # noqa: E402
from ..outcome import TraceOutcome  # noqa: E402
from ..serialize import MalformedTrace  # noqa: E402
from . import process  # noqa: E402
from .process import DIED, FAILED, OK, TIMEOUT, ChildOutcome, run_in_child  # noqa: E402


def _outcome_message(outcome: ChildOutcome) -> str:
    return f"timeout: {outcome.detail}" if outcome.status == TIMEOUT else outcome.detail


def _failure(outcome: ChildOutcome) -> str:
    """How a child that returned nothing failed (:func:`kvaudit.tracer.errors.child_failure`)."""
    return errors.child_failure(outcome.status == FAILED, outcome.error_type)


def _import_trace_extra() -> str | None:
    """Import torch, transformers and kvpress (kvpress patches the attention functions once, before forking).

    Returns the one line that names the package which failed, and how, or None. Whatever an import
    raises (an ``ImportError`` from a missing shared library, ``OSError``, ``SystemExit``) is said here,
    never reported as a press's failure or a bug of the tracer.
    """
    import importlib

    from ..child.build import one_line

    for name in TRACE_PACKAGES:
        try:
            importlib.import_module(name)
        except BaseException as error:  # noqa: BLE001 - any failure of an installed package is one line
            return broken_trace_extra(name, one_line(error))
    return None


def _malformed(outcome: ChildOutcome, problem: str) -> ChildOutcome:
    """A child whose result has the wrong shape: the user's code wrote on the result pipe, a crash of the press.

    The press runs in the process that writes the result, so it can write a frame of its own; a
    well-formed forgery cannot be told apart (docs/trace.md, "Process hygiene"), a malformed one can.
    """
    return ChildOutcome(DIED, detail=f"the press wrote a malformed result on the tracer's result pipe ({problem})",
                        seconds=outcome.seconds)


def _list_problem(payload: Any) -> str | None:
    """What is wrong with a ``list`` child's result, or None: ``{"module": str, "classes": [{name, line, is_press}]}``."""
    if not isinstance(payload, dict) or not isinstance(payload.get("module"), str):
        return "no module name"
    classes = payload.get("classes")
    if not isinstance(classes, list):
        return "no class list"
    for item in classes:
        if not (isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("is_press"), bool)
                and isinstance(item.get("line"), int)):
            return "a class entry without name, line and is_press"
    return None


class WorkerState:
    """What the worker holds between requests: the options and the model."""

    def __init__(self) -> None:
        self.options = TraceOptions()
        self.model: Any = None
        self.model_info: dict[str, Any] = {}

    def init(self, request: dict[str, Any]) -> dict[str, Any]:
        """Import torch, transformers and kvpress; build and warm the model (CPU) once, before any fork."""
        options = TraceOptions(**request["options"])
        if self.model is not None and options.model_key() == self.options.model_key():
            self.options = options  # a shared session changed the prefills, not the model
            return {"ok": True, "model": self.model_info, "import_s": 0.0, "build_s": 0.0}
        self.options, self.model = options, None
        missing = missing_trace_extra()
        if missing is not None:
            return {"ok": False, "error": missing}
        started = time.perf_counter()
        broken = _import_trace_extra()
        if broken is not None:  # installed but broken (a missing CUDA library, say): the machine, not a press
            return {"ok": False, "error": broken}
        import torch

        torch.set_num_threads(1)  # tiny models gain nothing from threads, and fork stays safe

        from ..child import jobs, runner  # noqa: F401  (pay their imports once, before forking)
        from . import modelload

        imported = time.perf_counter()
        try:
            torch.device(self.options.device)  # parses the name only: CUDA must stay uninitialised before a fork
        except (RuntimeError, ValueError) as error:
            from ..child.build import one_line

            return {"ok": False, "error": f"--device {self.options.device}: {one_line(error)}"}
        if self.options.device == "cpu":
            try:
                self.model, info = modelload.load_model(self.options)
            except Exception as error:  # noqa: BLE001 - a folder that is not a model is bad input
                from ..child.build import one_line

                what = f"--model {self.options.model_path}" if self.options.model_path else f"--arch {self.options.arch}"
                return {"ok": False, "error": f"{what}: cannot build the model: {one_line(error)}"}
            modelload.warm_up(self.model)
        else:
            # CUDA cannot be initialised before a fork: each child builds its own model.
            info = modelload.ModelInfo(
                self.options.arch, self.options.layers,
                f"{self.options.model_path or 'embedded tiny ' + self.options.arch}, built in each child on "
                f"{self.options.device} (HF_HUB_OFFLINE=1: nothing is downloaded)",
            )
        built = time.perf_counter()
        self.model_info = {"arch": info.arch, "layers": info.layers, "source": info.source}
        return {
            "ok": True,
            "model": self.model_info,
            "import_s": round(imported - started, 3),
            "build_s": round(built - imported, 3),
        }

    def _memory_limit(self, request: dict[str, Any]) -> int | None:
        # CUDA reserves far more address space than it uses: RLIMIT_AS would break it, so CPU only.
        limit = request.get("memory_limit")
        return int(limit) if limit and self.options.device == "cpu" else None

    def _run(self, function: Any, request: dict[str, Any]) -> ChildOutcome:
        timeout = float(request.get("timeout", self.options.timeout))
        return run_in_child(function, timeout, self._memory_limit(request))

    def list(self, request: dict[str, Any]) -> dict[str, Any]:
        """The classes of a target module, imported in a child."""
        from ..child.jobs import list_job

        outcome = self._run(lambda: list_job(request), request)
        if outcome.status == OK:
            problem = _list_problem(outcome.payload)
            if problem is None:
                return {"ok": True, **outcome.payload}
            outcome = _malformed(outcome, problem)
        failure = _failure(outcome)
        if failure == errors.INTERNAL:
            return {"ok": False, "internal": True, "error": outcome.detail, "traceback": outcome.traceback}
        if failure != errors.CRASH:  # ImportFailure: "cannot import TARGET: reason"
            return {"ok": False, "error": outcome.detail}
        target = request.get("module") or request.get("display") or request["path"]
        return {"ok": False, "error": f"cannot import {target}: {_outcome_message(outcome)}"}

    def trace(self, request: dict[str, Any]) -> dict[str, Any]:
        """Trace one press in a child, then (if asked) the reference press in another."""
        outcome = self._run(lambda: self._trace_in_child(request, reference=False), request)
        traced = self._traced(outcome, request)
        if request.get("reference"):
            reference = self._run(lambda: self._trace_in_child(request, reference=True), request)
            if reference.status == OK:
                try:
                    traced.trace.reference = TraceOutcome.from_wire(reference.payload).trace
                except MalformedTrace as error:
                    reference = _malformed(reference, str(error))
            if reference.status != OK:
                traced.trace.reference = PressTrace("ChunkKVReusePress", "audit/reference", "error",
                                                    _outcome_message(reference))
        return {"ok": True, **traced.to_wire()}

    @staticmethod
    def _traced(outcome: ChildOutcome, request: dict[str, Any]) -> TraceOutcome:
        """The child's outcome, or what its failure means (:func:`kvaudit.tracer.errors.child_failure`)."""
        if outcome.status == OK:
            try:
                traced = TraceOutcome.from_wire(outcome.payload)
            except MalformedTrace as error:
                outcome = _malformed(outcome, str(error))
            else:
                traced.seconds = outcome.seconds
                return traced
        message = _outcome_message(outcome)
        trace = PressTrace(request.get("class_name") or "press", request.get("display") or request["path"], "error",
                           message)
        failure = _failure(outcome)
        if failure == errors.CRASH:  # a hang or a hard death is the press's doing
            trace.defects.append(Defect(errors.CRASH, message))
            return TraceOutcome(trace, seconds=outcome.seconds)
        if failure == errors.INPUT:
            return TraceOutcome(trace, input_error=message, seconds=outcome.seconds)
        if failure == errors.SETUP:  # the model could not be built here (--device, --dtype): no press can run
            return TraceOutcome(trace, setup_error=message, seconds=outcome.seconds)
        return TraceOutcome(trace, internal_error=message, traceback=outcome.traceback, seconds=outcome.seconds)

    def _trace_in_child(self, request: dict[str, Any], reference: bool) -> dict[str, Any]:
        from ..child.jobs import trace_job

        model = self.model
        if model is None:  # not on the CPU: built here, after the fork
            from ..child.build import one_line
            from .modelload import load_model

            try:
                model, _ = load_model(self.options)
            except Exception as error:  # noqa: BLE001 - e.g. a CUDA device that is not there
                raise ModelFailure(f"cannot build the model on {self.options.device}: {one_line(error)}") from None
        return trace_job(model, self.options, request, reference)


def main() -> None:
    """Serve requests until stdin closes; on every way out, kill and reap everything below."""
    parent = int(os.environ.get(PARENT_ENV) or os.getppid())
    process.become_subreaper()  # orphans of a press come back here, even from a new session
    process.guard_parent(parent)  # kvaudit died: kill everything below and exit at once
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    process.private_fds.append(protocol.fileno())
    os.dup2(2, 1)  # prints of the user's code (and of libraries) go to stderr
    sys.stdout = sys.stderr
    state = WorkerState()
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                request = json.loads(line)
                handler = {"init": state.init, "list": state.list, "trace": state.trace}[request["op"]]
                reply = handler(request)
            except Exception as error:  # noqa: BLE001 - the parent must always get an answer
                import traceback

                reply = {"ok": False, "internal": True, "error": f"worker error: {type(error).__name__}: {error}",
                         "traceback": traceback.format_exc()}
            protocol.write(json.dumps(reply) + "\n")
    finally:
        process.kill_descendants()
    # Nothing is left to flush but stderr: skip the interpreter's teardown of torch (a second or more).
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
