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

import os
import sys
import time
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything can import huggingface_hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ... import codec  # noqa: E402  (stdlib and msgspec only, like the rest below)
from ...model import Defect, Failure, ModelInfo, PressTrace  # noqa: E402
from ..child.claimcheck import requested_not_run  # noqa: E402
from ..errors import ImportFailure, ModelFailure  # noqa: E402
from ..options import PARENT_ENV, TRACE_PACKAGES, TraceOptions, broken_trace_extra, missing_trace_extra  # noqa: E402
from ..wire import InitReply, InitRequest, ListReply, ListRequest, Request, TraceReply, TraceRequest  # noqa: E402
from . import process  # noqa: E402
from .process import FAILED, OK, TIMEOUT, ChildOutcome, run_in_child  # noqa: E402


def _outcome_message(outcome: ChildOutcome) -> str:
    return f"timeout: {outcome.detail}" if outcome.status == TIMEOUT else outcome.detail


def _failure(outcome: ChildOutcome) -> Failure:
    """How a child that returned no reply failed: it hung or died (the press's doing), or it raised.

    The job functions raise :class:`ImportFailure` and :class:`ModelFailure` for what is not the
    press's fault; any other exception that reaches the child's top is the tracer's own.
    """
    if outcome.status != FAILED:
        return Failure.CRASH
    return {ImportFailure.__name__: Failure.INPUT, ModelFailure.__name__: Failure.SETUP}.get(
        outcome.error_type or "", Failure.INTERNAL)


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


def _malformed(problem: str) -> str:
    """A child whose result has the wrong shape: the user's code wrote on the result pipe, a crash of the press.

    The press runs in the process that writes the result, so it can write a frame of its own; a
    well-formed forgery cannot be told apart (docs/trace.md, "Process hygiene"), a malformed one can.
    """
    return f"the press wrote a malformed result on the tracer's result pipe ({problem})"


class WorkerState:
    """What the worker holds between requests: the options and the model."""

    def __init__(self) -> None:
        self.options = TraceOptions()
        self.model: Any = None
        self.model_info: ModelInfo | None = None

    def init(self, request: InitRequest) -> InitReply:
        """Import torch, transformers and kvpress; build and warm the model (CPU) once, before any fork."""
        options = request.options
        if self.model_info is not None and options.model_key() == self.options.model_key():
            self.options = options  # a shared session changed the prefills, not the model
            return InitReply(model=self.model_info)
        self.options, self.model, self.model_info = options, None, None
        missing = missing_trace_extra()
        if missing is not None:
            return InitReply(error=missing)
        started = time.perf_counter()
        broken = _import_trace_extra()
        if broken is not None:  # installed but broken (a missing CUDA library, say): the machine, not a press
            return InitReply(error=broken)
        import torch

        torch.set_num_threads(1)  # tiny models gain nothing from threads, and fork stays safe

        from ..child import jobs, runner  # noqa: F401  (pay their imports once, before forking)
        from ..child.build import one_line
        from . import modelload

        imported = time.perf_counter()
        try:
            torch.device(self.options.device)  # parses the name only: CUDA must stay uninitialised before a fork
        except (RuntimeError, ValueError) as error:
            return InitReply(error=f"--device {self.options.device}: {one_line(error)}")
        if self.options.device == "cpu":
            try:
                self.model, info = modelload.load_model(self.options)
            except Exception as error:  # noqa: BLE001 - a folder that is not a model is bad input
                what = f"--model {self.options.model_path}" if self.options.model_path else f"--arch {self.options.arch}"
                return InitReply(error=f"{what}: cannot build the model: {one_line(error)}")
            modelload.warm_up(self.model)
            if self.options.trained:  # tokenize the held-out text once, before any fork: every child shares it
                from ...trained import HeldOutTextUnavailable, heldout_prompts

                try:
                    heldout_prompts(8)
                except HeldOutTextUnavailable as error:
                    return InitReply(error=f"--model trained: {error}")
        else:
            # CUDA cannot be initialised before a fork: each child builds its own model.
            info = ModelInfo(
                self.options.arch, self.options.layers,
                f"{self.options.model_path or 'embedded tiny ' + self.options.arch}, built in each child on "
                f"{self.options.device} (HF_HUB_OFFLINE=1: nothing is downloaded)",
            )
        built = time.perf_counter()
        self.model_info = info
        return InitReply(model=info, import_s=round(imported - started, 3), build_s=round(built - imported, 3))

    def _run(self, function: Any, request: ListRequest | TraceRequest) -> ChildOutcome:
        # CUDA reserves far more address space than it uses: RLIMIT_AS would break it, so CPU only.
        limit = request.memory_limit if request.memory_limit and self.options.device == "cpu" else None
        return run_in_child(function, request.timeout, limit)

    def list(self, request: ListRequest) -> ListReply:
        """The classes of a target module (and the class its ``--press`` builds), imported in a child."""
        from ..child.jobs import list_job

        outcome = self._run(lambda: list_job(request), request)
        if outcome.status == OK:
            try:
                return codec.from_data(outcome.payload, ListReply)
            except codec.CodecError as error:
                outcome = ChildOutcome("died", detail=_malformed(str(error)), seconds=outcome.seconds)
        failure = _failure(outcome)
        if failure is Failure.CRASH:  # the module hung or died while importing: bad input, said as such
            target = request.module or request.display or request.path
            return ListReply(failure=Failure.INPUT, error=f"cannot import {target}: {_outcome_message(outcome)}")
        return ListReply(failure=failure, error=outcome.detail, traceback=outcome.traceback)

    def trace(self, request: TraceRequest) -> TraceReply:
        """Trace one press in a child, then (if asked) the reference press in another."""
        traced = self._traced(self._run(lambda: self._trace_in_child(request, reference=False), request), request,
                              request.class_name or "press", request.display or request.path, request.claims)
        if request.reference and traced.failure is None and traced.trace is not None:
            reference = self._traced(self._run(lambda: self._trace_in_child(request, reference=True), request),
                                     request, "ChunkKVReusePress", "audit/reference", request.reference_claims).trace
            if reference is not None:
                reference.defects = []  # the reference press's failure is said, never counted as the press's defect
                traced.trace.reference = reference
        return traced

    @staticmethod
    def _traced(outcome: ChildOutcome, request: TraceRequest, name: str, path: str, claims: list) -> TraceReply:
        """The child's reply, or what its failure means (:func:`_failure`)."""
        if outcome.status == OK:
            try:
                reply = codec.from_data(outcome.payload, TraceReply)
            except codec.CodecError as error:
                outcome = ChildOutcome("died", detail=_malformed(str(error)), seconds=outcome.seconds)
            else:
                reply.seconds = outcome.seconds
                return reply
        message = _outcome_message(outcome)
        failure = _failure(outcome)
        trace = PressTrace(name, path, "error", message, failure=failure)
        trace.claims = requested_not_run(claims, message)
        if failure is Failure.CRASH:  # a hang or a hard death is the press's doing: a defect, not a request failure
            trace.defects.append(Defect(Failure.CRASH.value, message))
            return TraceReply(trace, seconds=outcome.seconds)
        return TraceReply(trace, failure=failure, error=message, traceback=outcome.traceback, seconds=outcome.seconds)

    def _trace_in_child(self, request: TraceRequest, reference: bool) -> dict[str, Any]:
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

    def handle(self, request: Request) -> InitReply | ListReply | TraceReply:
        if isinstance(request, InitRequest):
            return self.init(request)
        if isinstance(request, ListRequest):
            return self.list(request)
        return self.trace(request)


def main() -> None:
    """Serve requests until stdin closes; on every way out, kill and reap everything below."""
    parent = int(os.environ.get(PARENT_ENV) or os.getppid())
    process.become_subreaper()  # orphans of a press come back here, even from a new session
    process.guard_parent(parent)  # kvaudit died: kill everything below and exit at once
    protocol = os.fdopen(os.dup(1), "wb", buffering=0)
    process.private_fds.append(protocol.fileno())
    os.dup2(2, 1)  # prints of the user's code (and of libraries) go to stderr
    sys.stdout = sys.stderr
    state = WorkerState()
    try:
        for line in sys.stdin.buffer:
            if not line.strip():
                continue
            try:
                reply = state.handle(codec.decode(line, Request))
            except Exception as error:  # noqa: BLE001 - the parent must always get an answer
                import traceback

                # Whichever reply type the parent expects, these fields fit it (every other one has a default).
                reply = {"failure": Failure.INTERNAL.value, "error": f"worker error: {type(error).__name__}: {error}",
                         "traceback": traceback.format_exc()}
            protocol.write(codec.encode(reply) + b"\n")
    finally:
        process.kill_descendants()
    # Nothing is left to flush but stderr: skip the interpreter's teardown of torch (a second or more).
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
