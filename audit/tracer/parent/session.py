"""A trace session: one worker, one model, any number of targets and presses.

Used by ``kvaudit trace`` and by :func:`kvaudit.tracer.attach_traces`. Stdlib only on this side.
A session may be shared (the test suite keeps one worker for all its traces): :meth:`TraceSession.use`
switches the options, and the worker rebuilds its model only when the model options change.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

from ...defaults import wall_ceiling
from ...model import Defect, PressTrace
from ...source import display_path
from ..options import TraceOptions
from ..outcome import TraceOutcome
from ..verdicts import CRASH
from .client import INIT_TIMEOUT_S, REPLY_SLACK_S, WorkerClient, WorkerError
from .target import TraceInputError, TraceTarget


# Options sent with each request rather than at init: changing them needs no new model.
_PER_REQUEST = ("timeout", "press_expr", "compare_reference", "memory_limit", "worker_env")


def _init_wire(options: TraceOptions) -> dict[str, Any]:
    return {k: v for k, v in options.to_wire().items() if k not in _PER_REQUEST}


def press_label(target: TraceTarget, class_name: str | None) -> str:
    """How an error line names a press: ``PATH::Class`` (or the target as given)."""
    shown = display_path(target.path)
    return f"{shown}::{class_name}" if class_name else shown


class InternalTraceError(TraceInputError):
    """The tracer failed on a target (a bug, not the target's fault); ``traceback`` is for ``--debug``."""

    def __init__(self, message: str, traceback: str | None = None) -> None:
        super().__init__(message)
        self.traceback = traceback


class TraceSession:
    """Owns the worker process; start it early so that its imports overlap the parent's work."""

    def __init__(self, options: TraceOptions) -> None:
        self.options = options
        self._client: WorkerClient | None = None
        self._client_env: dict[str, str] = {}
        self._init_sent: dict[str, Any] | None = None  # the options the worker's model was built with
        self.model: dict[str, Any] | None = None
        self.worker_timings: dict[str, float] = {}

    def use(self, options: TraceOptions) -> None:
        """Trace with ``options`` from now on (a new worker only if ``worker_env`` changed)."""
        if options.worker_env != self._client_env and self._client is not None:
            self._restart()
        self.options = options

    def __enter__(self) -> TraceSession:
        self.start()
        return self

    def __exit__(self, kind: type | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close(kill=value is not None)  # on Ctrl-C or an error, do not wait for the worker

    def close(self, kill: bool = False) -> None:
        """Stop the worker (it exits when its stdin closes; ``kill`` does not wait)."""
        if self._client is not None:
            self._client.close(kill=kill)
            self._client = None

    def start(self) -> None:
        """Spawn the worker (it starts importing torch at once)."""
        if self._client is None:
            self._client = WorkerClient(env=self.options.worker_env)
            self._client_env = dict(self.options.worker_env)

    def _ready_client(self) -> WorkerClient:
        self.start()
        assert self._client is not None
        wire = _init_wire(self.options)
        if self.model is None or wire != self._init_sent:
            self.model = None
            reply = self._client.request({"op": "init", "options": self.options.to_wire()}, INIT_TIMEOUT_S)
            if not reply.get("ok"):
                raise WorkerError(reply.get("error", "trace worker failed to start"))
            self.model, self._init_sent = reply["model"], wire
            if reply.get("import_s") or not self.worker_timings:
                self.worker_timings = {"import_s": reply.get("import_s", 0.0), "build_s": reply.get("build_s", 0.0)}
        return self._client

    def _restart(self) -> None:
        if self._client is not None:
            self._client.close(kill=True)
        self._client, self.model, self._init_sent = None, None, None

    def model_info(self) -> dict[str, Any]:
        """Arch, layers and source of the model (starts the worker if needed)."""
        self._ready_client()
        assert self.model is not None
        return self.model

    def list_classes(self, target: TraceTarget) -> list[dict[str, Any]]:
        """Classes defined by ``target``'s module: ``{"name", "line", "is_press"}`` each, in source order.

        Raises
        ------
        TraceInputError
            The module cannot be imported (or its import hangs past the timeout); the message
            starts with the target. :class:`InternalTraceError` when the tracer failed.
        """
        client = self._ready_client()
        request = {"op": "list", "path": str(target.path), "display": display_path(target.path), "module": target.module,
                   "timeout": self.options.timeout, "memory_limit": self.options.memory_limit}
        try:
            reply = client.request(request, wall_ceiling(self.options.timeout) + REPLY_SLACK_S)
        except WorkerError as error:
            self._restart()
            raise TraceInputError(f"{target.text}: {error}") from None
        if not reply.get("ok"):
            message = reply.get("error") or "cannot be imported"
            if reply.get("internal"):
                raise InternalTraceError(f"{target.text}: internal error in the tracer: {message}", reply.get("traceback"))
            raise TraceInputError(message)  # "cannot import TARGET: reason"
        return list(reply["classes"])

    def press_classes(self, target: TraceTarget) -> list[str | None]:
        """Names of the presses to trace in ``target`` (``[None]``: the one ``--press`` builds).

        Raises
        ------
        TraceInputError
            The module cannot be imported, holds no press, or ``::ClassName`` is not a press.
        """
        classes = self.list_classes(target)
        presses = [c["name"] for c in classes if c["is_press"]]
        if target.class_name is not None:
            if target.class_name not in presses:
                raise TraceInputError(f"{target.text}: {target.class_name} is not a kvpress press (no BasePress base)")
            return [target.class_name]
        if self.options.press_expr:
            return [None]
        if not presses:
            names = ", ".join(c["name"] for c in classes) or "none"
            raise TraceInputError(f"{display_path(target.path)}: no kvpress press classes (classes defined there: {names})")
        return presses

    def trace(self, target: TraceTarget, class_name: str | None, expr_class_only: bool = False,
              claims: list[dict[str, Any]] | None = None) -> TraceOutcome:
        """Trace one press of ``target`` (and the reference when the options ask for it).

        ``claims`` are the press's paper claims found statically (``kvaudit.tracer.claimlist``).
        """
        request = {
            "op": "trace",
            "path": str(target.path),  # where the worker imports from
            "display": display_path(target.path),  # how the user sees it (as `kvaudit check` shows it)
            "module": target.module,
            "class_name": class_name,
            "press_expr": self.options.press_expr,
            "expr_class_only": expr_class_only,
            "reference": self.options.compare_reference,
            "timeout": self.options.timeout,
            "memory_limit": self.options.memory_limit,
            "claims": claims or [],
            "plan": self.options.plan_wire(),
        }
        # The worker enforces the timeout per child (at most its wall-clock ceiling); the reference run is a second child.
        reply_timeout = wall_ceiling(self.options.timeout) * (2 if self.options.compare_reference else 1) + REPLY_SLACK_S
        name, shown = class_name or "press", display_path(target.path)
        label = press_label(target, class_name)
        try:
            reply = self._ready_client().request(request, reply_timeout)
        except WorkerError as error:
            # The worker died or hung while the press ran (a press can kill its parent): the press's doing.
            self._restart()
            message = f"the trace worker died while tracing it: {error}"
            return TraceOutcome(PressTrace(name, shown, "error", message, defects=[Defect(CRASH, message)]))
        if not reply.get("ok"):  # the request itself failed in the worker
            message = reply.get("error") or "trace worker failed"
            trace = PressTrace(name, shown, "error", message)
            if reply.get("internal"):
                return TraceOutcome(trace, internal_error=message, traceback=reply.get("traceback")).labelled(label)
            return TraceOutcome(trace, setup_error=message).labelled(label)
        outcome = TraceOutcome.from_wire(reply).labelled(label)
        outcome.trace.path = shown
        reference = outcome.trace.reference
        if reference is not None and Path(reference.path).is_absolute():
            reference.path = display_path(Path(reference.path))
        return outcome
