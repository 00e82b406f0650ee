"""The dynamic tracer: run a press on a tiny model and watch what it really does, layer by layer.

Importing this package is light (stdlib, msgspec, rich on demand): torch, transformers, kvpress and
the user's press code only ever run in the worker subprocess (:mod:`kvaudit.tracer.worker`) and its
forked children. ``kvaudit check`` imports this package, and must not pay for torch.

This is the trace stage of the pipeline (:mod:`kvaudit.pipeline`): it takes the static stage's
result (the files of the run, their presses and the claims decided for each) and traces every press:

1. each file of the run that defines a class is imported in a worker child, which says which of its
   classes are presses at run time (with their MRO), and which class ``--press`` builds there;
2. each press gets its claims (the static stage's, plus the contracts of its kvpress bases, decided
   here by :mod:`kvaudit.claims`, never in the worker) and is traced; ``press.trace`` is set;
3. what was not the press's doing (bad input, the machine, a tracer bug) becomes an error status of
   the run (exit code 2), by the :class:`~kvaudit.model.Failure` the reply carries.

Public API
----------
TraceOptions
    Model, prefill and limit options.
TraceStage
    What the stage needs beyond the options: class selectors, which files were named, claim settings.
trace_presses(result, stage)
    Trace every press of ``result``; returns the tracebacks of the tracer's own failures (``--debug``).
open_session(options)
    The worker the stage uses: a context manager (tests replace it to share one worker).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..model import AuditResult, Claim, Failure, FileStatus, PressReport, PressTrace, TraceSummary
from ..source import display_path
from .options import TraceOptions, missing_trace_extra, run_plan
from .wire import ClaimRequest, ClassEntry, ListReply, TraceReply

if TYPE_CHECKING:
    from ..analysis.index import ClassInfo, PressBase
    from ..config import ClaimOverride

__all__ = ["TraceOptions", "TraceStage", "open_session", "trace_presses"]

# Presses are traced by this many worker processes at most, side by side (each imports torch and holds
# the model: about a gigabyte).
MAX_WORKERS = 2


@contextmanager
def open_session(options: TraceOptions) -> Iterator[Any]:
    """A :class:`kvaudit.tracer.parent.session.TraceSession` for ``options``, closed (worker and all) on the way out."""
    from .parent.session import TraceSession

    with TraceSession(options) as session:
        yield session


@dataclass
class TraceStage:
    """What the trace stage needs beyond the trace options.

    ``selectors``: resolved file -> the classes its targets named (``file.py::MyPress``): only those
    presses of the file are traced. ``named``: files named one by one, where finding no press is bad input.
    ``forced``, ``overrides``, ``root`` and ``press_bases``: how the static stage decided claims, for a
    press that only shows up at run time.
    """

    options: TraceOptions
    selectors: dict[Path, set[str]] = field(default_factory=dict)
    named: set[Path] = field(default_factory=set)
    forced: Sequence[str] = ()
    overrides: Sequence[ClaimOverride] = ()
    root: Path | None = None
    press_bases: tuple[PressBase, ...] = ()
    progress: bool = True
    label: str = ""  # how an error of the whole run names what was asked for (the targets)


def options_problem(options: TraceOptions) -> str | None:
    """A one-line reason when the trace extra is missing, or the options or the ``--press`` expression are unusable."""
    problem = missing_trace_extra() or options.validate()
    if problem is None and options.press_expr is not None:
        try:
            compile(options.press_expr, "<--press>", "eval")
        except SyntaxError as error:
            problem = f"bad --press expression {options.press_expr!r}: syntax error: {error.msg}"
    return problem


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


@dataclass
class _Job:
    """One press to trace: its report, the module it is built in, and how."""

    report: PressReport
    path: Path  # the module the press is built in (imported by path)
    entry: ClassEntry | None  # the class at run time (None: not a press at run time)
    press_expr: str | None = None
    class_name: str | None = None


class _Run:
    """One trace stage: the result it fills, its errors, and the claims it decides for run-time presses."""

    def __init__(self, result: AuditResult, stage: TraceStage) -> None:
        self.result = result
        self.stage = stage
        self.errors: list[FileStatus] = []
        self.notes: list[str] = []
        self.tracebacks: list[str] = []
        self.expression_used = False
        self._reference_claims: list[ClaimRequest] | None = None
        self.lock = threading.Lock()

    def error(self, path: str, message: str, traceback: str | None = None) -> None:
        with self.lock:  # the workers' threads report here
            if all(f.message != message for f in self.errors):  # a run-level reason is said once
                self.errors.append(FileStatus(path, "error", message))
            self.tracebacks.extend([traceback] if traceback else [])

    # -- claims, decided here (kvaudit.claims), sent to the worker -------------------------------
    def paper_claims(self, path: Path, name: str, line: int) -> list[Claim]:
        """The claims of a press the static stage did not see (its base is only known at run time)."""
        from ..analysis.index import ProjectIndex
        from ..claims import press_claims
        from ..source import SourceError, load_source

        try:
            index = ProjectIndex([load_source(path, display_path(path))], self.stage.press_bases)
        except (SourceError, OSError):
            return []
        cls = index.modules[0].classes.get(name)
        if cls is None:
            return []
        try:
            return press_claims(cls, index, self.stage.forced, self.stage.overrides, self.stage.root, self.notes)
        except (RecursionError, ValueError):
            return []

    def claim_requests(self, report: PressReport, entry: ClassEntry | None) -> list[ClaimRequest]:
        from ..claims import contract_claims

        contracts = contract_claims(entry.mro, report.claims, report.line) if entry is not None else []
        return [ClaimRequest.of(claim) for claim in [*report.claims, *contracts]]

    @property
    def reference_claims(self) -> list[ClaimRequest]:
        """The claims of the reference press (``kvaudit.reference.ChunkKVReusePress``), decided once."""
        with self.lock:  # asked by the workers' threads
            return self._decide_reference_claims()

    def _decide_reference_claims(self) -> list[ClaimRequest]:
        if self._reference_claims is None:
            from ..analysis.index import ProjectIndex
            from ..claims import contract_claims, press_claims
            from ..source import load_source

            path = Path(__file__).resolve().parents[1] / "reference" / "chunkkv_reuse_press.py"
            index = ProjectIndex([load_source(path, display_path(path))])
            cls = index.modules[0].classes["ChunkKVReusePress"]
            claims = press_claims(cls, index)
            claims += contract_claims([base.name for base in index.mro(cls)], claims)
            self._reference_claims = [ClaimRequest.of(claim) for claim in claims]
        return self._reference_claims


def _classes_defined(path: Path) -> bool:
    """Whether the file has a ``class`` statement (the cheap scan of :mod:`kvaudit.analysis.prefilter`)."""
    from ..analysis.prefilter import scan_text
    from ..source import SourceError, read_text

    try:
        return bool(scan_text(read_text(path)).classes)
    except (SourceError, OSError, ValueError):
        return False


def _files_to_import(run: _Run) -> dict[Path, str]:
    """Resolved path -> display of each file of the run that may hold a press at run time, in display order.

    Every file that defines a class: the static stage sees presses through kvpress's source and the
    run's files, the worker sees those whose base lives anywhere else too. A file named on its own that
    defines no class is bad input, said without starting the worker (unless ``--press`` builds the press
    in its namespace).
    """
    files: dict[Path, str] = {}
    for press in run.result.presses:
        files.setdefault(Path(press.path).resolve(), press.path)
    for status in run.result.files:
        if status.status == "ok" and status.path.endswith(".py"):
            path = Path(status.path).resolve()
            if path in files:
                continue
            if _classes_defined(path) or (path in run.stage.named and run.stage.options.press_expr):
                files[path] = status.path
            elif path in run.stage.named:
                run.error(status.path, f"{status.path}: defines no classes, so no presses to trace")
    return dict(sorted(files.items(), key=lambda item: item[1]))


def _jobs_of(run: _Run, path: Path, display: str, listed: ListReply) -> list[_Job]:
    """The presses of one imported file: the static stage's and the run time's, as the selector allows."""
    stage, result = run.stage, run.result
    static = {p.name: p for p in result.presses if Path(p.path).resolve() == path}
    runtime = {c.name: c for c in listed.classes if c.is_press}
    wanted = stage.selectors.get(path)
    names = [c.name for c in listed.classes if c.is_press] + [n for n in static if n not in runtime]
    if wanted is not None:
        for name in sorted(wanted - set(runtime)):
            run.error(display, f"{display}: {name} is not a kvpress press (no BasePress base)")
        names = [name for name in names if name in wanted and name in runtime]
    if not names and path in stage.named:
        defined = ", ".join(c.name for c in listed.classes)
        run.error(display, f"{display}: no kvpress press classes (classes defined there: {defined})" if defined
                  else f"{display}: defines no classes, so no presses to trace")
    expression = listed.expression
    jobs = []
    for name in names:
        report = static.get(name)
        entry = runtime.get(name)
        if report is None:  # a press only the run time sees: its claims are decided the same way
            line = entry.line if entry is not None else 0
            report = PressReport(name=name, path=display, line=line, claims=run.paper_claims(path, name, line))
            result.presses.append(report)
        by_expression = (stage.options.press_expr is not None and expression is not None and expression.name == name
                         and Path(expression.path or "").resolve() == path)
        run.expression_used |= by_expression
        jobs.append(_Job(report, path, entry, stage.options.press_expr if by_expression else None, name))
    return jobs


def _expression_job(run: _Run, first: tuple[Path, ListReply] | None) -> _Job | None:
    """The press ``--press`` builds when its class is none of the run's presses (``SnapKVPress(0.3)`` on a file
    of other presses): traced too, evaluated in the first module's namespace, filed under its class's file."""
    options = run.stage.options
    if options.press_expr is None or run.expression_used or first is None or first[1].expression is None:
        return None
    path, listed = first
    entry = listed.expression
    home = Path(entry.path).resolve() if entry.path else path
    shown = display_path(home)
    report = next((p for p in run.result.presses if p.name == entry.name and p.path == shown), None)
    if report is None:
        report = PressReport(name=entry.name, path=shown, line=entry.line, claims=run.paper_claims(home, entry.name,
                                                                                                 entry.line))
        run.result.presses.append(report)
    return _Job(report, path, entry, options.press_expr, None)


def trace_presses(result: AuditResult, stage: TraceStage) -> list[str]:
    """Trace every press of ``result`` and set ``press.trace`` (with ``.reference`` if asked).

    What is not the press's doing adds an error entry to ``result.files`` (exit code 2, never 1) and
    leaves the presses it stopped untraced: unusable options, a trace extra that is missing or fails
    to import, a worker that cannot start, a model that cannot be built on ``--device``, a module
    that cannot be imported, a bad ``--press``, a bug of the tracer, and a run in which no press
    could be traced at all. A press that cannot be traced for its own reasons (abstract, needs
    arguments or Hub files) gets a trace with ``status="error"`` and its :class:`Failure`; its
    defects become findings (KVA303, :mod:`kvaudit.acceptance`).

    Returns the tracebacks of the tracer's own failures (for ``--debug``).
    """
    options = stage.options
    run = _Run(result, stage)
    result.traced = TraceSummary(plan=[spec.label for spec in run_plan(options)], grid=options.plan_label(),
                                 learned_attention=options.trained)
    problem = options_problem(options)
    files = _files_to_import(run) if problem is None else {}
    if problem is not None:
        run.error(stage.label, problem)
    elif files:
        _trace_files(run, files)
    return _finish(run)


def worker_count() -> int:
    """Trace workers: one per core this process may use, two at most (each holds torch and a model)."""
    from ..workers import available_cores

    return max(1, min(MAX_WORKERS, available_cores()))


@contextmanager
def open_sessions(options: TraceOptions, count: int) -> Iterator[list[Any]]:
    """``count`` sessions (fewer when :func:`open_session` hands out the same one, as the tests' shared worker)."""
    with ExitStack() as stack:
        sessions = [stack.enter_context(open_session(options)) for _ in range(count)]
        yield list({id(session): session for session in sessions}.values())


def _parallel(sessions: list[Any], items: list[Any], work: Callable[[Any, Any], None]) -> None:
    """``work(session, item)`` for every item, each session taking the next item when it is free (one thread each)."""
    queue = list(reversed(items))
    lock = threading.Lock()
    failures: list[BaseException] = []

    def drain(session: Any) -> None:
        while True:
            with lock:
                if not queue or failures:
                    return
                item = queue.pop()
            try:
                work(session, item)
            except BaseException as error:  # noqa: BLE001 - re-raised in the calling thread
                with lock:
                    failures.append(error)
                return

    threads = [threading.Thread(target=drain, args=(session,), daemon=True) for session in sessions[1:]]
    for thread in threads:
        thread.start()
    drain(sessions[0])
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def _trace_files(run: _Run, files: dict[Path, str]) -> None:
    from .parent.client import WorkerError

    options = run.stage.options
    show = run.stage.progress and sys.stderr.isatty()
    with open_sessions(options, worker_count()) as sessions:
        started: dict[int, Any] = {}
        failed: list[WorkerError] = []

        def start(session: Any, _: object) -> None:
            session.use(options)
            try:
                started[id(session)] = session.model_info()
            except WorkerError as error:
                failed.append(error)

        with _status("starting the trace workers (torch, transformers, kvpress, model)…", show):
            _parallel(sessions, [None] * len(sessions), start)
        sessions = [session for session in sessions if id(session) in started]
        if not sessions:
            run.error(run.stage.label, f"the trace worker failed to start: {failed[0]}")
            return
        assert run.result.traced is not None
        run.result.traced.model = started[id(sessions[0])]
        run.result.traced.timings = dict(sessions[0].worker_timings)
        listed: dict[Path, ListReply] = {}
        _parallel(sessions, list(files.items()),
                  lambda session, item: listed.__setitem__(item[0], session.list_classes(str(item[0]), item[1], None)))
        jobs: list[_Job] = []
        first: tuple[Path, ListReply] | None = None
        for path, display in files.items():
            reply = listed[path]
            if reply.failure is not None:
                pressed = any(Path(p.path).resolve() == path for p in run.result.presses)
                if reply.failure is Failure.INTERNAL:
                    run.error(display, f"{display}: internal error in the tracer: {reply.error}", reply.traceback)
                elif pressed or path in run.stage.named or path in run.stage.selectors:
                    run.error(display, reply.error or f"cannot import {display}")
                else:  # a helper module of the folder that does not import: no press was expected there
                    run.notes.append(f"{display}: not imported to look for presses at run time: {reply.error}")
                continue
            first = first or (path, reply)
            jobs.extend(_jobs_of(run, path, display, reply))
        extra = _expression_job(run, first)
        jobs.extend([extra] if extra is not None else [])
        stopped: list[PressTrace] = []  # the model cannot be built here: no press can run

        with _progress(len(jobs), show) as step:
            def trace(session: Any, job: _Job) -> None:
                step(job.report.name)
                if stopped:
                    _untraced(run, job, stopped[0].message or "", stopped[0].failure or Failure.SETUP)
                    return
                setup = _trace_job(run, session, job)
                if setup is not None:
                    stopped.append(setup)

            _parallel(sessions, jobs, trace)


def _untraced(run: _Run, job: _Job, message: str, failure: Failure) -> PressTrace:
    """The trace of a press that never ran (not a press at run time, or no press can run here): every claim not-run."""
    from .child.claimcheck import requested_not_run

    report = job.report
    report.trace = PressTrace(report.name, report.path, "error", message, failure=failure,
                              claims=requested_not_run(run.claim_requests(report, job.entry), message))
    return report.trace


def _trace_job(run: _Run, session: Any, job: _Job) -> PressTrace | None:
    """Trace one press; its trace when no press can run any more (the model cannot be built here), else None."""
    report = job.report
    if job.entry is None:
        _untraced(run, job, f"{report.name} is not a kvpress press at run time (no BasePress base)", Failure.BUILD)
        return None
    requests = run.claim_requests(report, job.entry)
    options = run.stage.options
    reference = run.reference_claims if options.compare_reference else []
    reply: TraceReply = session.trace(str(job.path), display_path(job.path), None, job.class_name, job.press_expr,
                                      requests, reference)
    if reply.failure is Failure.SETUP:  # the options or the machine: said once, for the whole run
        assert reply.trace is not None
        run.error(report.path, f"no press could be traced: {reply.error}")
        return _untraced(run, job, reply.trace.message or "", Failure.SETUP)
    if reply.failure is not None:
        run.error(report.path, reply.error or reply.failure.reason, reply.traceback)
        if reply.failure is not Failure.INTERNAL:
            return None
    assert reply.trace is not None
    reply.trace.path = report.path  # matched by the static path, as the static report wrote it
    report.trace = reply.trace
    return None


def nothing_traced(traces: Sequence[PressTrace]) -> str | None:
    """``no press could be traced: REASON`` when some press was tried and none ran, else None.

    Like a folder that holds no press, a run that traced nothing must not pass a CI gate as clean.
    """
    if not traces or any(t.status == "ok" or t.defects for t in traces):
        return None
    failed = next((t for t in traces if t.status == "error"), None)
    return f"no press could be traced: {failed.name}: {failed.message}" if failed is not None else None


def _finish(run: _Run) -> list[str]:
    result = run.result
    if not run.errors:
        traced = [p.trace for p in result.presses if p.trace is not None]
        reason = nothing_traced(traced)
        if reason is not None:
            run.error(next(p.path for p in result.presses if p.trace is not None), reason)
    traced_paths = {p.path for p in result.presses if p.trace is not None}
    # A folder the static stage found no press in, whose presses only the run time saw.
    result.files = [f for f in result.files if not (f.status == "error" and f.message is not None
                                                      and f.message.endswith(": no press classes found")
                                                      and any(t.startswith(f.path.rstrip("/") + "/")
                                                              for t in traced_paths))]
    result.files.extend(sorted(run.errors, key=lambda f: (f.path, f.message or "")))  # whichever worker said it first
    result.notes.extend(run.notes)
    result.sort()
    return run.tracebacks
