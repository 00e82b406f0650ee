"""A baseline for claims: record today's verdicts, then fail only on claims that get worse.

``kvaudit trace … --baseline FILE --write-baseline`` writes every traced press's claim verdicts,
acceptances and defects to FILE; ``kvaudit trace … --baseline FILE`` afterwards exits 1 only when
the run is worse than FILE: a claim that is violated (and not accepted) where FILE has it holding,
not run or not at all, a violation that lost its acceptance, a defect FILE does not hold, or a new
press with either. That is :func:`kvaudit.diff.compare` with FILE as the old side; what FILE
already holds (kvpress 0.5.5's known departures, say) no longer fails the gate.

The file is JSON, sorted and byte-stable (no timestamp, no path, no number), meant to be committed::

    {
      "schema": "kvaudit.claims-baseline/1",
      "kvaudit": "0.1.0",
      "model": {"arch": "llama", "layers": 8},
      "plan": ["512×1", "4096×1", "512×2"],
      "grid": "prefills (tokens×rows) 512×1, 4096×1, 512×2 at compression ratios 0.5, 0.8, 0.9, …",
      "presses": [
        {"name": "ChunkKVPress", "status": "ok", "failure": null,
         "claims": [{"id": "chunk-selection", "paper": "ChunkKV (arXiv 2502.00299)", "verdict": "violated",
                     "accepted": null}, …],
         "defects": ["batch-row-0"]}
      ]
    }

Presses are keyed by class name (``Name (path)`` when a run holds two of one name), as the diff
keys them; claims by id. The model and grid are recorded so that a baseline written on another
grid is refused (exit 2) rather than compared. ``kvaudit diff`` also reads the file as either side.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from . import __version__
from .codec import CodecError, from_data, to_data
from .diff import BETTER, PRESS_ADDED, WORSE, AuditDiff, DiffInputError, Snapshot, compare, keyed, mismatches, read_document
from .model import AuditResult, ClaimCheck, ClaimVerdict, Defect, Failure, PressTrace

if TYPE_CHECKING:
    from .tracer.options import TraceOptions

SCHEMA = "kvaudit.claims-baseline/1"



@dataclass
class BaselineClaim:
    id: str
    paper: str
    verdict: ClaimVerdict
    accepted: Optional[str] = None  # the acceptance's reason, when one covered the violation


@dataclass
class BaselinePress:
    name: str  # the press's key: its class name, or "Name (path)" when the run holds two of one name
    status: str  # ok | error
    failure: Optional[Failure] = None  # why it did not trace (status error)
    claims: list[BaselineClaim] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)


@dataclass
class BaselineModel:
    arch: Optional[str] = None
    layers: Optional[int] = None


@dataclass
class ClaimsBaseline:
    """The file's records, in the order its keys are written (kvaudit.codec reads and writes them)."""

    schema: str
    kvaudit: str
    model: BaselineModel
    plan: list[str]
    grid: str
    presses: list[BaselinePress]


@dataclass(frozen=True)
class Gate:
    """What a baseline did to a run: the exit code's part and the lines that say why."""

    diff: AuditDiff
    held: int  # open violations and defects of the run that the baseline holds (not counted)

    @property
    def worse(self) -> bool:
        return self.diff.worse


def baseline_of(result: AuditResult) -> ClaimsBaseline:
    """Today's verdicts, acceptances and defects of every traced press of ``result``, sorted."""
    traced = result.traced
    model = traced.model if traced is not None else None
    traces = [press.trace for press in result.presses if press.trace is not None]
    presses = []
    for key, trace in sorted(keyed(traces).items()):
        failure = trace.failure if isinstance(trace.failure, Failure) else None
        claims = [BaselineClaim(c.id, c.paper, c.verdict, c.accepted) for c in sorted(trace.claims, key=lambda c: c.id)]
        presses.append(BaselinePress(key, trace.status, failure, claims, sorted({d.id for d in trace.defects})))
    return ClaimsBaseline(SCHEMA, __version__, BaselineModel(model.arch if model else None, model.layers if model else None),
                          list(traced.plan) if traced else [], traced.grid if traced else "", presses)


def write_claims_baseline(result: AuditResult, path: Path) -> int:
    """Write ``result``'s baseline to ``path``; returns how many presses it holds. Raises OSError."""
    baseline = baseline_of(result)
    text = json.dumps(to_data(baseline), indent=2, ensure_ascii=False) + "\n"
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # a half-written baseline is never committed
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return len(baseline.presses)


def snapshot_of_baseline(document: dict[str, Any], shown: str) -> Snapshot:
    """A baseline document as one side of a diff (verdicts only: its numbers are never compared)."""
    try:
        baseline = from_data(document, ClaimsBaseline)
    except CodecError as err:
        raise DiffInputError(f"{shown}: not a valid {SCHEMA} file ({err})") from None
    presses: dict[str, PressTrace] = {}
    for press in baseline.presses:
        claims = [ClaimCheck(c.id, c.paper, c.verdict, accepted=c.accepted) for c in press.claims]
        trace = PressTrace(press.name, "", press.status, claims=claims, defects=[Defect(d, "") for d in press.defects])
        if press.failure is not None:
            trace.failure = press.failure
        presses[press.name] = trace
    model = {"arch": baseline.model.arch, "layers": baseline.model.layers, "source": None}
    return Snapshot(shown, SCHEMA, presses, model, list(baseline.plan), baseline.grid, numbers=False)


def load_claims_baseline(path: Path) -> Snapshot:
    """Read a claims baseline; :class:`DiffInputError` (one line) when it is missing or not one."""
    if not path.exists() and not path.is_symlink():
        raise DiffInputError(f"{path}: baseline file not found (write it with --write-baseline)")
    document = read_document(path, str(path))
    if document.get("schema") != SCHEMA:
        named = f"schema {str(document.get('schema'))[:60]!r}"
        raise DiffInputError(f"{path}: not a kvaudit claims baseline ({named}, expected {SCHEMA!r}; "
                             "kvaudit check's baselines are kvaudit.baseline/1)")
    return snapshot_of_baseline(document, str(path))


def open_baseline(path: Path, options: TraceOptions) -> Snapshot:
    """The baseline a run with ``options`` gates on, checked before anything is traced; :class:`DiffInputError`
    when it cannot be read or was written for another grid."""
    from .tracer.options import run_plan

    baseline = load_claims_baseline(path)
    plan, grid = [spec.label for spec in run_plan(options)], options.plan_label()
    if baseline.plan != plan or baseline.grid != grid:
        raise DiffInputError(f"{path}: written for another grid ({baseline.grid or baseline.plan}); this run has "
                             f"{grid}; rewrite it with --write-baseline")
    return baseline


def apply_baseline(result: AuditResult, path: Path, baseline: Snapshot | None) -> tuple[int, list[str]]:
    """Write ``result``'s baseline to ``path`` (``baseline`` None) or gate ``result`` on ``baseline``.

    Returns the exit code (2 when a target could not be traced, as without a baseline; else 1 when
    something got worse than the baseline, else 0) and the lines that say why. Raises OSError (the
    file cannot be written) or :class:`DiffInputError` (another model).
    """
    from .exitcodes import BAD_INPUT, FINDINGS, OK
    from .reporters.diff_text import describe

    if baseline is None:
        count = write_claims_baseline(result, path)
        return (BAD_INPUT if result.has_errors else OK), [f"wrote the claims of {count} press(es) to the baseline {path}"]
    applied = gate(result, baseline)
    lines = []
    for change in applied.diff.changes:
        if change.effect == WORSE:
            said = describe(change)
            subject = f" {said.subject}" if said.subject else ""
            more = f" ({said.details[0]})" if change.kind == PRESS_ADDED and said.details else ""
            lines.append(f"worse than the baseline {path}: {said.press}{subject}: {said.transition}{more}")
    better = applied.diff.count(BETTER)
    if applied.held or better:
        note = f"; {better} change(s) for the better (rewrite it with --write-baseline)" if better else ""
        lines.append(f"{applied.held} violated claim(s) and defect(s) the baseline {path} holds not counted{note}")
    if result.has_errors:
        return BAD_INPUT, lines
    return (FINDINGS if applied.worse else OK), lines


def gate(result: AuditResult, baseline: Snapshot) -> Gate:
    """Compare the run with the baseline; :class:`DiffInputError` when it was written for another model or grid."""
    from .model import ModelInfo

    traced = result.traced
    model = traced.model if traced is not None and traced.model is not None else ModelInfo()
    traces = [press.trace for press in result.presses if press.trace is not None]
    current = Snapshot("this run", "run", keyed(traces), {"arch": model.arch, "layers": model.layers, "source": None},
                       list(traced.plan) if traced else [], traced.grid if traced else "")
    errors, _ = mismatches(baseline, current)
    if errors:
        raise DiffInputError(f"{baseline.path}: written for another model or grid ({'; '.join(errors)}); "
                             "rewrite it with --write-baseline")
    diff = compare(baseline, current, ignore_removed=True)
    held = 0
    for key, trace in current.presses.items():
        known = baseline.presses.get(key)
        if known is not None:
            held += sum(1 for c in trace.claims if c.open_violation and (k := known.claim(c.id)) and k.open_violation)
            held += len({d.id for d in trace.defects} & {d.id for d in known.defects})
    return Gate(diff, held)
