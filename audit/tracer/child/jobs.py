"""What a worker child does: list a target's classes, or trace one press (or its reference).

These functions run in a forked child of the worker (:mod:`kvaudit.tracer.worker`): they import the
user's module and run its code. Each returns its reply (:mod:`kvaudit.tracer.wire`) as plain data;
a failure that is not the press's (the module does not import, a bad ``--press``, the model cannot
be built) is raised as :class:`~kvaudit.tracer.errors.ImportFailure` or ``ModelFailure`` and given its
kind by the worker.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...codec import to_data
from ..errors import ImportFailure
from ..options import TraceOptions, run_plan
from ..wire import ListReply, ListRequest, TraceReply, TraceRequest
from . import build
from .claimcheck import claims_to_check
from .loader import class_entry, import_target, list_classes
from .settings import PressSettings, settings_for
from .standins import StandIns, mark

REFERENCE_NAME = "ChunkKVReusePress"


def import_or_explain(request: ListRequest | TraceRequest) -> Any:
    """Import the request's target module, or raise :class:`ImportFailure` with one line."""
    try:
        return import_target(request.path, request.module)
    except BaseException as error:  # noqa: BLE001 - any failure of the user's module is one line
        target = request.module or request.display or request.path
        raise ImportFailure(f"cannot import {target}: {build.one_line(error)}") from None


def _from_expression(expression: str, module: Any) -> Any:
    """The press ``--press`` builds in ``module``'s namespace; a bad expression is bad input."""
    try:
        return build.press_from_expression(expression, module)
    except build.ExpressionError as error:
        raise ImportFailure(str(error)) from None


def list_job(request: ListRequest) -> dict[str, Any]:
    """The classes the target module defines (is each a press, its MRO), and the class ``--press`` builds there."""
    module = import_or_explain(request)
    expression = class_entry(type(_from_expression(request.press_expr, module))) if request.press_expr else None
    return to_data(ListReply(classes=list_classes(module), expression=expression))


@dataclass
class PressBuild:
    """How to build the press a request asks for: a factory, its name, its class, its settings."""

    factory: Callable[[], Any]
    name: str
    cls: type | None
    settings: PressSettings


def press_build(module: Any, request: TraceRequest) -> PressBuild:
    """How to build a fresh press: ``--press`` when the parent chose it for this press, else defaults
    (or as ``rules/presses.toml`` says for kvpress's own presses)."""
    expression = request.press_expr
    if expression:
        cls = type(_from_expression(expression, module))
        return PressBuild(lambda: _from_expression(expression, module), cls.__name__, cls, settings_for(cls))
    cls = getattr(module, request.class_name or "")
    settings = settings_for(cls)
    if settings.press:
        text = settings.press
        return PressBuild(lambda: build.press_from_expression(text, None), cls.__name__, cls, settings)
    return PressBuild(lambda: build.default_press(cls), cls.__name__, cls, settings)


def trace_job(model: Any, options: TraceOptions, request: TraceRequest, reference: bool) -> dict[str, Any]:
    """Trace the requested press, or with ``reference`` the reference press built from it."""
    module = import_or_explain(request)
    with StandIns(model) as stand_ins:  # seeded stand-ins for Hub files, in every press built here
        press = press_build(module, request)
        press.factory = stand_ins.equip(press.factory)
        trace = _trace(model, options, request, reference, press)
        return to_data(TraceReply(mark(trace, stand_ins.applied)))


def _trace(model: Any, options: TraceOptions, request: TraceRequest, reference: bool, press: PressBuild) -> Any:
    from .runner import trace_press  # torch: only where a press runs (``list`` stays light)
    from .timing import add_repeat_timings

    plan = request.plan
    options = options.with_plan(plan.tokens, plan.long_tokens, plan.ratios, plan.decode_steps, plan.seed)
    if not reference:
        trace = trace_press(model, press.factory, options, press.name, request.display, claims_to_check(request.claims),
                            press.settings)
        if request.reference and trace.runs:  # compared with the reference: time it again
            add_repeat_timings(model, _at_ratio(press.factory, press.settings, trace.runs[0].ratio),
                               run_plan(options)[0], trace.runs[0], settings=press.settings)
        return trace

    def reference_factory() -> Any:
        return build.reference_press(press.factory())

    try:
        reference_class = type(reference_factory())
        name, path = reference_class.__name__, inspect.getsourcefile(reference_class) or reference_class.__module__
    except build.BuildError:
        name, path = REFERENCE_NAME, "audit/reference"  # trace_press reports the reason
    trace = trace_press(model, reference_factory, options, name, path, claims_to_check(request.reference_claims),
                        PressSettings(name))
    if trace.runs:
        add_repeat_timings(model, _at_ratio(reference_factory, PressSettings(name), trace.runs[0].ratio),
                           run_plan(options)[0], trace.runs[0])
    return trace


def _at_ratio(factory: Callable[[], Any], settings: PressSettings, ratio: float | None) -> Callable[[], Any]:
    """A factory of presses set to ``ratio`` (the first run's), for the repeated timings."""
    def build_at_ratio() -> Any:
        press = factory()
        if ratio is not None and settings.ratio is not None:
            setattr(press, settings.ratio, ratio)
        return press

    return build_at_ratio

