"""What a worker child does: list a target's classes, or trace one press (or its reference).

These functions run in a forked child of the worker (:mod:`kvaudit.tracer.worker`): they import the
user's module and run its code. They return JSON-safe dicts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from . import build
from .childproc import ReportedError
from .loader import import_target, list_classes
from .options import TraceOptions, run_plan
from .serialize import trace_to_dict

REFERENCE_NAME = "ChunkKVReusePress"


class ImportFailure(ReportedError):
    """The target module could not be imported (a bad target: exit code 2)."""


class ModelFailure(ReportedError):
    """The model could not be built in the child (``--device``, ``--dtype``, ``--model``): no press can run."""


def import_or_explain(request: dict[str, Any]) -> Any:
    """Import the request's target module, or raise :class:`ImportFailure` with one line."""
    try:
        return import_target(request["path"], request.get("module"))
    except BaseException as error:  # noqa: BLE001 - any failure of the user's module is one line
        target = request.get("module") or request.get("display") or request["path"]
        raise ImportFailure(f"cannot import {target}: {build.one_line(error)}") from None


def list_job(request: dict[str, Any]) -> dict[str, Any]:
    """The classes the target module defines, and whether each is a kvpress press."""
    module = import_or_explain(request)
    return {"module": module.__name__, "classes": [asdict(info) for info in list_classes(module)]}


def _press_factory(module: Any, request: dict[str, Any]) -> tuple[Callable[[], Any], str, str | None]:
    """A function that builds a fresh press, the press's name, and a bad-input reason if any.

    With ``expr_class_only`` (``kvaudit check --trace``), ``--press`` builds only the class it
    instantiates; every other class is built with defaults.
    """
    class_name: str | None = request.get("class_name")
    expression: str | None = request.get("press_expr")
    use_expression = bool(expression)
    if expression and class_name and request.get("expr_class_only"):
        try:
            use_expression = type(build.press_from_expression(expression, module)).__name__ == class_name
        except build.BuildError:
            use_expression = True  # the real build reports the bad expression
    if not use_expression:
        cls = getattr(module, class_name or "")
        return (lambda: build.default_press(cls)), class_name or cls.__name__, None

    def from_expression() -> Any:
        return build.press_from_expression(expression or "", module)

    try:
        return from_expression, type(from_expression()).__name__, None
    except build.ExpressionError as error:
        return from_expression, class_name or "press", str(error)


def trace_job(model: Any, options: TraceOptions, request: dict[str, Any], reference: bool) -> dict[str, Any]:
    """Trace the requested press, or with ``reference`` the reference press built from it."""
    from .runner import trace_press  # torch: only where a press runs (``list`` stays light)
    from .timing import add_repeat_timings

    module = import_or_explain(request)
    factory, name, input_error = _press_factory(module, request)
    plan = run_plan(options)
    if not reference:
        trace = trace_press(model, factory, plan, name, request.get("display") or request["path"])
        if request.get("reference") and trace.runs:  # compared with the reference: time it again
            add_repeat_timings(model, factory, plan[0], trace.runs[0])
        return {"trace": trace_to_dict(trace), "input_error": input_error}

    def reference_factory() -> Any:
        return build.reference_press(factory())

    try:
        reference_class = type(reference_factory())
        ref_name = reference_class.__name__
        ref_path = inspect.getsourcefile(reference_class) or reference_class.__module__
    except build.BuildError:
        ref_name, ref_path = REFERENCE_NAME, "audit/reference"  # trace_press reports the reason
    trace = trace_press(model, reference_factory, plan, ref_name, ref_path)
    if trace.runs:
        add_repeat_timings(model, reference_factory, plan[0], trace.runs[0])
    return {"trace": trace_to_dict(trace), "input_error": None}
