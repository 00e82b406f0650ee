"""The one outcome of a trace request, carried from the child through the worker to the parent.

The worker child that traces a press returns a :class:`TraceOutcome` (as JSON); the worker adds
what only it can see (the child hung or died, the reference press's trace) and passes the same
type on; the parent's session puts the press's label in front of its lines. Which failure is which
(the press's, bad input, the machine, a tracer bug) is decided once, in :mod:`kvaudit.tracer.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..model import PressTrace
from .serialize import MalformedTrace, trace_from_dict, trace_to_dict, validate_trace


@dataclass
class TraceOutcome:
    """One press's trace, with one-line reasons when something was not the press's doing.

    ``input_error``: the input was wrong (the module does not import, a bad ``--press``).
    ``setup_error``: the press never ran because of the options or the machine (the model cannot
    be built on ``--device``).
    ``internal_error``: the tracer itself failed (a bug: exit code 2, never 1), with its
    ``traceback`` for ``--debug``. In the parent each of these lines starts with the press
    (``PATH::Class``).
    """

    trace: PressTrace
    input_error: str | None = None
    setup_error: str | None = None
    internal_error: str | None = None
    traceback: str | None = None
    seconds: float = 0.0

    def to_wire(self) -> dict[str, Any]:
        return {"trace": trace_to_dict(self.trace), "input_error": self.input_error, "setup_error": self.setup_error,
                "internal_error": self.internal_error, "traceback": self.traceback, "seconds": round(self.seconds, 3)}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> TraceOutcome:
        """The outcome of ``data``; :class:`MalformedTrace` when its shape is wrong (checked field by field)."""
        try:
            outcome = cls(trace_from_dict(data["trace"]), data.get("input_error"), data.get("setup_error"),
                          data.get("internal_error"), data.get("traceback"), float(data.get("seconds") or 0.0))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
            raise MalformedTrace(f"{type(error).__name__}: {str(error)[:80]}") from None
        validate_trace(outcome.trace)
        for line in (outcome.input_error, outcome.setup_error, outcome.internal_error, outcome.traceback):
            if not isinstance(line, (str, type(None))):
                raise MalformedTrace(f"an error line is {type(line).__name__}")
        return outcome

    def labelled(self, label: str) -> TraceOutcome:
        """The outcome with ``label`` (``PATH::Class``) in front of its setup and internal lines."""
        if self.setup_error:
            self.setup_error = f"{label}: {self.setup_error}"
        if self.internal_error:
            self.internal_error = f"{label}: internal error in the tracer: {self.internal_error}"
        return self
