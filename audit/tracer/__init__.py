"""The dynamic tracer: run a press on a tiny model and watch what it really does, layer by layer.

Importing this package is light (stdlib, rich on demand): torch, transformers, kvpress and the
user's press code only ever run in the worker subprocess (:mod:`kvaudit.tracer.worker`) and its
forked children. ``kvaudit check`` imports this package, and must not pay for torch.

Public API
----------
TraceOptions
    Model, prefill and limit options.
trace_targets(targets, options)
    Trace every press of each target; returns a :class:`TraceReport` (used by ``kvaudit trace``).
attach_traces(result, options)
    Trace every press of a static :class:`kvaudit.model.AuditResult` and set ``press.trace``
    (used by ``kvaudit check --trace``).
open_session(options)
    The worker both of them use: a context manager (tests replace it to share one worker).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..exitcodes import BAD_INPUT, FINDINGS, OK
from ..model import AuditResult, FileStatus, PressTrace
from ..source import display_path
from ..targets import looks_like_module, resolve_module, split_class_selector
from .options import TraceOptions, missing_trace_extra, run_plan
from .parent.target import TraceInputError, TraceTarget, check_expression, resolve_target

if TYPE_CHECKING:
    from ..config import Config

__all__ = [
    "TraceInputError",
    "TraceOptions",
    "TraceReport",
    "attach_traces",
    "open_session",
    "trace_targets",
]


@contextmanager
def open_session(options: TraceOptions) -> Iterator[Any]:
    """A :class:`kvaudit.tracer.parent.session.TraceSession` for ``options``, closed (worker and all) on the way out."""
    from .parent.session import TraceSession

    with TraceSession(options) as session:
        yield session

@dataclass
class TraceReport:
    """Everything ``kvaudit trace`` prints: the model, the prefill plan, the traces, bad input.

    ``setup_errors`` holds one line per press that never ran because of the options or the machine
    (the model cannot be built on ``--device``); such a press also has a trace with
    ``status="error"``. A press that is abstract, needs constructor arguments, or raised in a
    prefill is the press's own doing and never lands there. ``internal_errors`` holds one line per
    failure of the tracer itself (exit code 2), and ``tracebacks`` their tracebacks (``--debug``).
    """

    model: dict[str, Any] = field(default_factory=dict)
    plan: list[str] = field(default_factory=list)
    traces: list[PressTrace] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    input_errors: list[str] = field(default_factory=list)
    worker_timings: dict[str, float] = field(default_factory=dict)
    setup_errors: list[str] = field(default_factory=list)
    unused_acceptances: list[str] = field(default_factory=list)  # [[accept]] entries that covered nothing
    plan_label: str = ""
    internal_errors: list[str] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)

    @property
    def error_lines(self) -> list[str]:
        """Every ``error:`` line of the run (bad input, then tracer failures), each naming its target."""
        return [*self.input_errors, *self.internal_errors]

    @property
    def nothing_traced(self) -> str | None:
        """Why nothing was traced at all, when the options or the machine are to blame; else None.

        The rule: no press traced successfully and none has a defect, while some press was
        tried: it never ran because of the options or the machine (:attr:`setup_errors`), or it
        could not be built (abstract, needs arguments, its constructor raised). Like a folder
        that holds no press, a run that traced nothing must not pass a CI gate as clean.
        """
        return nothing_traced(self.traces, self.setup_errors)

    @property
    def exit_code(self) -> int:
        """0: clean; 1: a defect (crash, stale-indices, batch-row-0) or a violated claim not accepted;
        2: bad input, a tracer failure, or nothing traced."""
        if self.input_errors or self.internal_errors or self.nothing_traced:
            return BAD_INPUT
        if any(trace.defects or any(c.open_violation for c in trace.claims) for trace in self.traces):
            return FINDINGS
        return OK


def nothing_traced(traces: list[PressTrace], setup_errors: list[str] = ()) -> str | None:
    """``no press could be traced: REASON`` when no press of ``traces`` ran, else None (see :attr:`TraceReport.nothing_traced`)."""
    if any(t.status == "ok" or t.defects for t in traces):
        return None
    if setup_errors:
        return f"no press could be traced: {setup_errors[0]}"
    failed = next((t for t in traces if t.status == "error"), None)
    if failed is not None:
        return f"no press could be traced: {failed.name}: {failed.message}"
    return None


ProgressStep = Callable[[str], None]


@contextmanager
def _progress(total: int, enabled: bool) -> Iterator[ProgressStep]:
    """A rich progress bar on stderr while several presses are traced; a no-op otherwise."""
    if not enabled or total < 2:
        yield lambda label: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..reporters.console import console

    columns = (TextColumn("tracing {task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console(stderr=True), transient=True) as progress:
        task = progress.add_task("", total=total)
        first = True

        def step(label: str) -> None:
            nonlocal first
            if not first:
                progress.advance(task)
            first = False
            progress.update(task, description=label)

        yield step
        progress.advance(task)


@contextmanager
def _status(message: str, enabled: bool) -> Iterator[None]:
    """A spinner on stderr while the worker starts (its imports take seconds)."""
    if not enabled:
        yield
        return
    from ..reporters.console import console

    with console(stderr=True).status(message):
        yield


def _options_problem(options: TraceOptions) -> str | None:
    """A one-line reason when the trace extra is missing, or the options or the --press expression are unusable."""
    problem = missing_trace_extra() or options.validate()
    if problem is None and options.press_expr is not None:
        try:
            check_expression(options.press_expr)
        except TraceInputError as error:
            problem = str(error)
    return problem


def _expand(text: str) -> list[tuple[str, bool]]:
    """A directory or a package names each of its Python files (``True``: found by expansion, not named)."""
    base, class_name = split_class_selector(text)
    if class_name is None:
        path = Path(base)
        if path.is_dir():
            return [(str(p), True) for p in sorted(path.rglob("*.py")) if "__pycache__" not in p.parts]
        if not path.exists() and looks_like_module(base):
            resolved = resolve_module(base)
            if resolved is not None and resolved.name == "__init__.py":
                return [(str(p), True) for p in sorted(resolved.parent.rglob("*.py")) if "__pycache__" not in p.parts]
    return [(text, False)]


def _claims_for_targets(targets: list[TraceTarget], config: Config | None) -> dict[tuple[str, str], list[dict]]:
    from .claimlist import claims_by_class

    overrides = config.claim_overrides if config is not None else []
    return claims_by_class([t.path for t in targets], (), overrides, config.root if config is not None else None)


def _fill_claims(trace: PressTrace, claims: list[dict]) -> None:
    """A trace the worker never completed still answers for every claim: ``not-run``, with the reason."""
    if not trace.claims and claims:
        from .claimlist import not_run_checks

        trace.claims = not_run_checks(claims, trace.message or "the press was not traced")


def trace_targets(targets: list[str], options: TraceOptions, progress: bool = True,
                  config: Config | None = None) -> TraceReport:
    """Trace every press of every target (a directory or a package: of each of its files).

    Bad input is collected in ``TraceReport.input_errors`` (exit code 2), never raised, and the
    good targets are still traced, as ``kvaudit check`` does. Targets are checked in this process
    first (existence, syntax, ``::ClassName``), so bad input alone costs no worker start. When no
    press could be traced because of the options or the machine, a line saying so is added to
    ``input_errors`` too (exit code 2). Failures of the tracer itself go to ``internal_errors``.
    """
    from .parent.client import WorkerError
    from .parent.session import InternalTraceError

    report = TraceReport(targets=list(targets), plan=[spec.label for spec in run_plan(options)],
                         plan_label=options.plan_label())
    problem = _options_problem(options)
    if problem is not None:
        report.input_errors.append(problem)
        return report
    resolved: list[TraceTarget] = []
    expanded: set[Path] = set()  # files found in a directory or package: no presses there is no error
    for name in targets:
        for text, found in _expand(name):
            try:
                target = resolve_target(text, options.press_expr)
            except TraceInputError as error:
                if not found:
                    report.input_errors.append(str(error))
                continue
            resolved.append(target)
            if found:
                expanded.add(target.path)
    if not resolved:
        if not report.input_errors:
            report.input_errors.append(f"{', '.join(targets)}: no Python file with classes to trace")
        return report
    claims = _claims_for_targets(resolved, config)

    show = progress and sys.stderr.isatty()
    with open_session(options) as session:
        session.use(options)
        jobs: list[tuple[TraceTarget, str | None]] = []
        try:
            with _status("starting the trace worker (torch, transformers, kvpress, model)…", show):
                for target in resolved:
                    try:
                        jobs.extend((target, name) for name in session.press_classes(target))
                    except InternalTraceError as error:
                        report.internal_errors.append(str(error))
                        report.tracebacks.extend([error.traceback] if error.traceback else [])
                    except TraceInputError as error:
                        if target.path not in expanded or "no kvpress press classes" not in str(error):
                            report.input_errors.append(str(error))
                report.model = session.model_info()
        except WorkerError as error:
            report.input_errors.append(f"the trace worker failed to start: {error}")
            return report
        report.worker_timings = dict(session.worker_timings)
        with _progress(len(jobs), show) as step:
            for target, name in jobs:
                step(name or target.text)
                wanted = claims.get((str(target.path), name or ""), [])
                traced = session.trace(target, name, claims=wanted)
                _fill_claims(traced.trace, wanted)
                report.traces.append(traced.trace)
                if traced.input_error:
                    report.input_errors.append(traced.input_error)
                if traced.setup_error:
                    report.setup_errors.append(traced.setup_error)
                if traced.internal_error:
                    report.internal_errors.append(traced.internal_error)
                    report.tracebacks.extend([traced.traceback] if traced.traceback else [])
    reason = report.nothing_traced
    if reason is not None and not report.input_errors and not report.internal_errors:
        report.input_errors.append(reason)  # the one line that says why; an error line already does
    if config is not None and config.acceptances:
        from ..acceptance import apply_acceptances

        report.unused_acceptances = [u.message for u in apply_acceptances(report.traces, config.acceptances)]
    return report


def _claim_requests(press: Any, found: dict[tuple[str, str], list[dict]], path: Path) -> list[dict]:
    """The claims of a statically audited press (overrides applied), then its contract claims."""
    from .claimlist import claim_wire

    wired = [claim_wire(c) for c in press.claims]
    taken = {c.id for c in press.claims}
    return wired + [c for c in found.get((str(path), press.name), []) if c.get("contract") and c["id"] not in taken]


def attach_traces(result: AuditResult, options: TraceOptions, progress: bool = True) -> list[str]:
    """Trace every press of ``result`` and set ``press.trace`` (with ``.reference`` if asked).

    Presses are matched by file path and class name. One worker serves all files. With
    ``options.press_expr``, the expression builds the press of the class it instantiates; the other
    presses are built with defaults. The exit-code rule is ``kvaudit trace``'s (docs/trace.md):

    * a press that cannot be traced (abstract, needs arguments, not a press at run time) gets a
      trace with ``status="error"`` and a one-line ``message``; its dynamic defects (crash,
      stale-indices, batch-row-0) are findings (KVA303, :mod:`kvaudit.acceptance`);
    * what is not the press's doing adds an error entry to ``result.files`` (exit code 2, never 1)
      and leaves the presses it stopped untraced (``press.trace`` stays None): unusable options, a
      trace extra that is missing or fails to import, a worker that cannot start, a model that
      cannot be built on ``--device``, a module that cannot be imported, a bad ``--press``, a bug of
      the tracer, and a run in which no press could be traced at all.

    Returns the tracebacks of the tracer's own failures (for ``--debug``).
    """
    from .parent.client import WorkerError
    from .parent.session import InternalTraceError

    tracebacks: list[str] = []
    if not result.presses:
        return tracebacks
    failed: list[FileStatus] = []

    def error(message: str, path: str, traceback: str | None = None) -> None:
        if all(f.message != message for f in failed):  # a run-level reason is said once
            failed.append(FileStatus(path, "error", message))
        tracebacks.extend([traceback] if traceback else [])

    problem = _options_problem(options)
    if problem is not None:
        error(problem, result.presses[0].path)
        _finish(result, failed)
        return tracebacks

    by_file: dict[Path, list[Any]] = {}
    for press in result.presses:
        by_file.setdefault(Path(press.path).resolve(), []).append(press)

    from .claimlist import claims_by_class

    found = claims_by_class([path for path in by_file if path.is_file()])
    stopped = False  # the worker or the model cannot run any press: the rest stay untraced
    with open_session(options) as session, _progress(len(result.presses), progress and sys.stderr.isatty()) as step:
        session.use(options)
        for path, reports in by_file.items():
            if stopped:
                break
            shown = display_path(path)
            target = TraceTarget(text=shown, path=path, module=None, class_name=None)
            try:
                classes = session.list_classes(target) if path.is_file() else []
            except WorkerError as failure:  # the worker did not start (its imports, --device): nothing can run
                error(f"the trace worker failed to start: {failure}", shown)
                stopped = True
                break
            except InternalTraceError as failure:
                error(str(failure), shown, failure.traceback)
                continue
            except TraceInputError as failure:  # the module does not import: bad input, like `trace`'s
                error(str(failure), shown)
                continue
            known = {c["name"] for c in classes if c["is_press"]}
            for report in reports:
                step(report.name)
                wanted = _claim_requests(report, found, path)
                if not path.is_file() or report.name not in known:
                    message = (f"{shown}: no such file or directory" if not path.is_file()
                               else f"{report.name} is not a kvpress press at run time (no BasePress base)")
                    report.trace = PressTrace(report.name, report.path, "error", message)
                    _fill_claims(report.trace, wanted)
                    continue
                traced = session.trace(target, report.name, expr_class_only=True, claims=wanted)
                if traced.setup_error:  # the model cannot be built here: no press can run
                    error(traced.setup_error, report.path)
                    stopped = True
                    break
                traced.trace.path = report.path  # matched by the static path, as the static report wrote it
                _fill_claims(traced.trace, wanted)
                report.trace = traced.trace
                if traced.input_error:
                    error(traced.input_error, report.path)
                if traced.internal_error:
                    error(traced.internal_error, report.path, traced.traceback)
    if not failed:
        reason = nothing_traced([p.trace for p in result.presses if p.trace is not None])
        if reason is not None:
            first = next(p for p in result.presses if p.trace is not None)
            error(reason, first.path)
    _finish(result, failed)
    return tracebacks


def _finish(result: AuditResult, failed: list[FileStatus]) -> None:
    if failed:
        result.files.extend(failed)
        result.sort()
