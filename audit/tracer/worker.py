"""The trace worker: one process that pays the torch/transformers/kvpress imports once.

Started by :class:`kvaudit.tracer.client.WorkerClient` as ``python -m kvaudit.tracer.worker``. It
reads one JSON request per line on stdin and answers one JSON line on its private copy of
stdout. File descriptor 1 itself is pointed at stderr, so that whatever the user's code prints
can never corrupt the protocol. Every request that runs user code forks a child
(:func:`kvaudit.tracer.childproc.run_in_child`) with the request's timeout.

Requests: ``init`` (imports, model), ``list`` (classes of a target), ``trace`` (one press).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything can import huggingface_hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ..model import Defect, PressTrace  # noqa: E402  (stdlib only, like the rest below)
from .childproc import FAILED, OK, TIMEOUT, ChildOutcome, run_in_child  # noqa: E402
from .options import TraceOptions  # noqa: E402
from .serialize import trace_from_dict, trace_to_dict  # noqa: E402
from .verdicts import CRASH  # noqa: E402


def _outcome_message(outcome: ChildOutcome) -> str:
    return f"timeout: {outcome.detail}" if outcome.status == TIMEOUT else outcome.detail


class WorkerState:
    """What the worker holds between requests: the options and the model."""

    def __init__(self) -> None:
        self.options = TraceOptions()
        self.model: Any = None

    def init(self, request: dict[str, Any]) -> dict[str, Any]:
        """Import torch, transformers and kvpress; build and warm the model (CPU) once, before any fork."""
        self.options = TraceOptions(**request["options"])
        started = time.perf_counter()
        import torch

        torch.set_num_threads(1)  # tiny models gain nothing from threads, and fork stays safe
        import kvpress  # noqa: F401  (patches the attention functions once, before forking)

        from . import jobs, modelload  # noqa: F401  (jobs: pay its imports before forking)

        imported = time.perf_counter()
        try:
            torch.device(self.options.device)  # parses the name only: CUDA must stay uninitialised before a fork
        except (RuntimeError, ValueError) as error:
            from .build import one_line

            return {"ok": False, "error": f"--device {self.options.device}: {one_line(error)}"}
        if self.options.device == "cpu":
            self.model, info = modelload.load_model(self.options)
            modelload.warm_up(self.model)
        else:
            # CUDA cannot be initialised before a fork: each child builds its own model.
            info = modelload.ModelInfo(
                self.options.arch, self.options.layers,
                f"{self.options.model_path or 'embedded tiny ' + self.options.arch}, built in each child on "
                f"{self.options.device} (HF_HUB_OFFLINE=1: nothing is downloaded)",
            )
        built = time.perf_counter()
        return {
            "ok": True,
            "model": {"arch": info.arch, "layers": info.layers, "source": info.source},
            "import_s": round(imported - started, 3),
            "build_s": round(built - imported, 3),
        }

    def list(self, request: dict[str, Any]) -> dict[str, Any]:
        """The classes of a target module, imported in a child."""
        from .jobs import list_job

        outcome = run_in_child(lambda: list_job(request), float(request.get("timeout", self.options.timeout)))
        if outcome.status == OK:
            return {"ok": True, **outcome.payload}
        return {"ok": False, "error": _outcome_message(outcome)}

    def trace(self, request: dict[str, Any]) -> dict[str, Any]:
        """Trace one press in a child, then (if asked) the reference press in another."""
        from .jobs import ImportFailure

        timeout = float(request.get("timeout", self.options.timeout))
        outcome = run_in_child(lambda: self._trace_in_child(request, reference=False), timeout)
        input_error: str | None = None
        setup_error: str | None = None
        if outcome.status == OK:
            trace = trace_from_dict(outcome.payload["trace"])
            input_error = outcome.payload.get("input_error")
        else:
            message = _outcome_message(outcome)
            path = request.get("display") or request["path"]
            trace = PressTrace(request.get("class_name") or "press", path, "error", message)
            if outcome.status != FAILED:  # a hang or a hard death is the press's doing
                trace.defects.append(Defect(CRASH, message))
            elif outcome.error_type == ImportFailure.__name__:
                input_error = message
            else:
                # The child raised outside the press's own build and prefills (those end up in the
                # trace): the model could not be built here (--device, --dtype), or the tracer failed.
                setup_error = message
        if request.get("reference"):
            reference = run_in_child(lambda: self._trace_in_child(request, reference=True), timeout)
            if reference.status == OK:
                trace.reference = trace_from_dict(reference.payload["trace"])
            else:
                trace.reference = PressTrace("ChunkKVReusePress", "audit/reference", "error", _outcome_message(reference))
        return {"ok": True, "trace": trace_to_dict(trace), "input_error": input_error, "setup_error": setup_error,
                "seconds": round(outcome.seconds, 3)}

    def _trace_in_child(self, request: dict[str, Any], reference: bool) -> dict[str, Any]:
        from .jobs import trace_job

        model = self.model
        if model is None:  # not on the CPU: built here, after the fork
            from .build import one_line
            from .jobs import ModelFailure
            from .modelload import load_model

            try:
                model, _ = load_model(self.options)
            except Exception as error:  # noqa: BLE001 - e.g. a CUDA device that is not there
                raise ModelFailure(f"cannot build the model on {self.options.device}: {one_line(error)}") from None
        return trace_job(model, self.options, request, reference)


def main() -> None:
    """Serve requests until stdin closes."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # prints of the user's code (and of libraries) go to stderr
    sys.stdout = sys.stderr
    state = WorkerState()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            handler = {"init": state.init, "list": state.list, "trace": state.trace}[request["op"]]
            reply = handler(request)
        except Exception as error:  # noqa: BLE001 - the parent must always get an answer
            reply = {"ok": False, "error": f"worker error: {type(error).__name__}: {error}"}
        protocol.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
