"""A trace session: one worker, one model, any number of modules and presses.

Used by the trace stage (:mod:`kvaudit.tracer`). Stdlib and msgspec only on this side. A session may
be shared (the test suite keeps one worker for all its traces): :meth:`TraceSession.use` switches
the options, and the worker rebuilds its model only when the model options change.
"""

from __future__ import annotations

from types import TracebackType

from ...defaults import wall_ceiling
from ...model import Defect, Failure, ModelInfo, PressTrace
from ..options import TraceOptions
from ..wire import ClaimRequest, InitReply, InitRequest, ListReply, ListRequest, Plan, TraceReply, TraceRequest
from .client import INIT_TIMEOUT_S, REPLY_SLACK_S, WorkerClient, WorkerError


class TraceSession:
    """Owns the worker process; start it early so that its imports overlap the parent's work."""

    def __init__(self, options: TraceOptions) -> None:
        self.options = options
        self._client: WorkerClient | None = None
        self._client_env: dict[str, str] = {}
        # The model options the worker's model was built with (the plan and limits travel with each request).
        self._init_sent: tuple | None = None
        self.model: ModelInfo | None = None
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
        """The worker, its model built for the current options (:class:`WorkerError` when it cannot be)."""
        self.start()
        assert self._client is not None
        key = self.options.model_key()
        if self.model is None or key != self._init_sent:
            self.model = None
            reply = self._client.request(InitRequest(self.options), InitReply, INIT_TIMEOUT_S)
            if reply.model is None:
                raise WorkerError(reply.error or "trace worker failed to start")
            self.model, self._init_sent = reply.model, key
            if reply.import_s or not self.worker_timings:
                self.worker_timings = {"import_s": reply.import_s, "build_s": reply.build_s}
        return self._client

    def _restart(self) -> None:
        if self._client is not None:
            self._client.close(kill=True)
        self._client, self.model, self._init_sent = None, None, None

    def model_info(self) -> ModelInfo:
        """Arch, layers and source of the model (starts the worker if needed; :class:`WorkerError`)."""
        self._ready_client()
        assert self.model is not None
        return self.model

    def list_classes(self, path: str, display: str, module: str | None) -> ListReply:
        """The classes ``path`` defines (and the class ``--press`` builds there), imported in a child.

        A worker that died or hung while importing the module: the module's doing, an ``input`` failure.
        """
        client = self._ready_client()
        request = ListRequest(path, display, module, self.options.timeout, self.options.memory_limit,
                              self.options.press_expr)
        try:
            return client.request(request, ListReply, wall_ceiling(self.options.timeout) + REPLY_SLACK_S)
        except WorkerError as error:
            self._restart()
            return ListReply(failure=Failure.INPUT, error=f"cannot import {module or display}: {error}")

    def trace(self, path: str, display: str, module: str | None, class_name: str | None, press_expr: str | None,
              claims: list[ClaimRequest], reference_claims: list[ClaimRequest]) -> TraceReply:
        """Trace one press of a module (and the reference when the options ask for it).

        The reply's ``error`` starts with the press (``PATH::Class``). A worker that died or hung while
        the press ran: the press's doing (a press can kill its parent), a ``crash``.
        """
        options = self.options
        request = TraceRequest(path, display, module, class_name, press_expr, options.compare_reference,
                               options.timeout, options.memory_limit, Plan.of(options), claims, reference_claims)
        # The worker enforces the timeout per child (at most its wall-clock ceiling); the reference run is a
        # second child.
        reply_timeout = wall_ceiling(options.timeout) * (2 if options.compare_reference else 1) + REPLY_SLACK_S
        name = class_name or "press"
        label = f"{display}::{class_name}" if class_name else display
        try:
            reply = self._ready_client().request(request, TraceReply, reply_timeout)
        except WorkerError as error:
            self._restart()
            message = f"the trace worker died while tracing it: {error}"
            return TraceReply(PressTrace(name, display, "error", message, failure=Failure.CRASH,
                                         defects=[Defect(Failure.CRASH.value, message)]))
        if reply.trace is None:
            reply.trace = PressTrace(name, display, "error", reply.error, failure=reply.failure or Failure.INTERNAL)
        if reply.failure is Failure.SETUP:
            reply.error = f"{label}: {reply.error}"
        elif reply.failure is Failure.INTERNAL:
            reply.error = f"{label}: internal error in the tracer: {reply.error}"
        reply.trace.path = display
        return reply
