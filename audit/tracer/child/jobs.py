"""What a worker child does: list a target's classes, or trace one press (or its reference).

These functions run in a forked child of the worker (:mod:`kvaudit.tracer.worker`): they import the
user's module and run its code. They return JSON-safe dicts: a trace is a
:class:`kvaudit.tracer.outcome.TraceOutcome`'s wire form.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import build
from ..claimlist import claims_by_class
from ..errors import ImportFailure
from .claimcheck import claims_to_check
from .loader import import_target, list_classes
from ..options import TraceOptions, run_plan
from ..outcome import TraceOutcome
from .settings import PressSettings, settings_for

REFERENCE_NAME = "ChunkKVReusePress"


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


@dataclass
class PressBuild:
    """How to build the press a request asks for: a factory, its name, its class, its settings."""

    factory: Callable[[], Any]
    name: str
    cls: type | None
    settings: PressSettings
    input_error: str | None = None


def _press_build(module: Any, request: dict[str, Any]) -> PressBuild:
    """How to build a fresh press, and a bad-input reason if any.

    With ``expr_class_only`` (``kvaudit check --trace``), ``--press`` builds only the class it
    instantiates; every other class is built with defaults, or as ``rules/presses.toml`` says for
    kvpress's own presses.
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
        settings = settings_for(cls)
        if settings.press:
            text = settings.press

            def from_settings() -> Any:
                return build.press_from_expression(text, None)

            return PressBuild(from_settings, class_name or cls.__name__, cls, settings)
        return PressBuild(lambda: build.default_press(cls), class_name or cls.__name__, cls, settings)

    def from_expression() -> Any:
        return build.press_from_expression(expression or "", module)

    try:
        cls = type(from_expression())
        return PressBuild(from_expression, cls.__name__, cls, settings_for(cls))
    except build.ExpressionError as error:
        return PressBuild(from_expression, class_name or "press", None, PressSettings(class_name or "press"), str(error))


def _class_names(cls: type | None) -> list[str]:
    return [base.__name__ for base in cls.__mro__] if cls is not None else []


def trace_job(model: Any, options: TraceOptions, request: dict[str, Any], reference: bool) -> dict[str, Any]:
    """Trace the requested press, or with ``reference`` the reference press built from it."""
    from .runner import trace_press  # torch: only where a press runs (``list`` stays light)
    from .timing import add_repeat_timings

    module = import_or_explain(request)
    press = _press_build(module, request)
    options = options.with_plan(request.get("plan"))
    if not reference:
        claims = claims_to_check(request.get("claims") or [], _class_names(press.cls))
        trace = trace_press(model, press.factory, options, press.name, request.get("display") or request["path"],
                            claims, press.settings)
        if request.get("reference") and trace.runs:  # compared with the reference: time it again
            add_repeat_timings(model, _at_ratio(press.factory, press.settings, trace.runs[0].ratio),
                               run_plan(options)[0], trace.runs[0], settings=press.settings)
        return TraceOutcome(trace, input_error=press.input_error).to_wire()

    def reference_factory() -> Any:
        return build.reference_press(press.factory())

    try:
        reference_class: type | None = type(reference_factory())
        ref_name = reference_class.__name__
        ref_path = inspect.getsourcefile(reference_class) or reference_class.__module__
    except build.BuildError:
        reference_class, ref_name, ref_path = None, REFERENCE_NAME, "audit/reference"  # trace_press reports the reason
    requested = []
    if reference_class is not None and ref_path and ref_path.endswith(".py"):
        requested = claims_by_class([Path(ref_path)]).get((str(Path(ref_path).resolve()), ref_name), [])
    claims = claims_to_check(requested, _class_names(reference_class))
    trace = trace_press(model, reference_factory, options, ref_name, ref_path, claims, PressSettings(ref_name))
    if trace.runs:
        add_repeat_timings(model, _at_ratio(reference_factory, PressSettings(ref_name), trace.runs[0].ratio),
                           run_plan(options)[0], trace.runs[0])
    return TraceOutcome(trace).to_wire()


def _at_ratio(factory: Callable[[], Any], settings: PressSettings, ratio: float | None) -> Callable[[], Any]:
    """A factory of presses set to ``ratio`` (the first run's), for the repeated timings."""
    def build_at_ratio() -> Any:
        press = factory()
        if ratio is not None and settings.ratio is not None:
            setattr(press, settings.ratio, ratio)
        return press

    return build_at_ratio
