"""``kvaudit diff OLD NEW``: what changed between two audits of the same presses.

Both sides are read into a :class:`Snapshot` (the presses' traces, and the model and grid they ran
on) from any of three documents:

* ``kvaudit.trace/2`` (``kvaudit trace --format json``): everything, numbers included;
* ``kvaudit.check/1`` from ``kvaudit check --trace --format json``: the traces its presses carry (it
  records no model or grid, so those cannot be compared, and a warning says so); a check document
  without traces is bad input;
* ``kvaudit.claims-baseline/1`` (``kvaudit trace --write-baseline``, :mod:`kvaudit.claims_baseline`):
  verdicts, acceptances and defects, no numbers.

Each press entry is rebuilt with :func:`kvaudit.codec.from_data`, the converter that wrote it.
Presses are matched by class name (the path differs between installations), or by name and path
when one document holds two presses of one name. :func:`compare` lists the changes; each one is
``worse`` (it would fail a gate that passed before), ``better``, or ``neutral``:

==================== ============================================================== ===========
kind                 what                                                           effect
==================== ============================================================== ===========
became-violated      a claim's verdict turned ``violated`` (or a new claim is)      worse; neutral when accepted
defect-appeared      a defect (crash, stale-indices, batch-row-0) the press lacked  worse
acceptance-changed   the ``[[accept]]`` reason covering a violation changed          worse when a violation lost its acceptance; better when one gained it
press-added          a press only NEW has                                           worse when it has an open violation or a defect
press-removed        a press only OLD has                                           neutral
became-holds         a claim's verdict turned ``holds``                             better when it was violated
defect-disappeared   a defect the press had is gone                                 better
numbers-changed      same verdict, but ``expected``/``measured`` moved by more than neutral
                     the mechanism's ``diff_tolerance``, or the runs per verdict
trace-changed        what a prefill did per layer (``score()`` and ``compress()`` calls,  neutral
                     kept entries, reuse, decoding lengths) changed, or how many
                     prefills completed
verdict-changed      any other verdict change (to not-applicable or not-run)        neutral
claim-added          a claim only NEW holds the press to (not violated)             neutral
claim-removed        a claim only OLD held the press to                             neutral
status-changed       traced ↔ not traced (and why)                                  neutral
config-changed       the press was built differently (its repr: a new parameter)    neutral
==================== ============================================================== ===========

Nothing here imports torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .codec import CodecError, from_data
from .mechanism import mechanism_by_id
from .model import HOLDS, VIOLATED, ClaimCheck, PressTrace
from .source import SourceError, read_capped

DIFF_SCHEMA = "kvaudit.diff/1"
TRACE_SCHEMA = "kvaudit.trace/2"  # kvaudit.reporters.trace_json.SCHEMA (a test checks they agree)
CHECK_SCHEMA = "kvaudit.check/1"  # kvaudit.reporters.json_report.SCHEMA
MAX_DOCUMENT_BYTES = 256 << 20  # a full trace of kvpress.presses is a few MB

WORSE, BETTER, NEUTRAL = "worse", "better", "neutral"

# Change kinds, in the order the views list them (what got worse first).
BECAME_VIOLATED = "became-violated"
DEFECT_APPEARED = "defect-appeared"
ACCEPTANCE_CHANGED = "acceptance-changed"
PRESS_ADDED = "press-added"
PRESS_REMOVED = "press-removed"
BECAME_HOLDS = "became-holds"
DEFECT_DISAPPEARED = "defect-disappeared"
NUMBERS_CHANGED = "numbers-changed"
TRACE_CHANGED = "trace-changed"
VERDICT_CHANGED = "verdict-changed"
CLAIM_ADDED = "claim-added"
CLAIM_REMOVED = "claim-removed"
STATUS_CHANGED = "status-changed"
CONFIG_CHANGED = "config-changed"
KINDS = (BECAME_VIOLATED, DEFECT_APPEARED, ACCEPTANCE_CHANGED, PRESS_ADDED, PRESS_REMOVED, BECAME_HOLDS,
         DEFECT_DISAPPEARED, NUMBERS_CHANGED, TRACE_CHANGED, VERDICT_CHANGED, CLAIM_ADDED, CLAIM_REMOVED, STATUS_CHANGED,
         CONFIG_CHANGED)


class DiffInputError(Exception):
    """A document that cannot be compared (unreadable, not JSON, another schema, a mismatch); ``str()`` is one line."""


@dataclass
class Snapshot:
    """One side of a diff: the traces of one audit and what they ran on.

    ``model`` (``arch``, ``layers``, ``source``), ``plan`` and ``grid`` are None where the document
    does not record them (``kvaudit.check/1``). ``numbers`` is False for a claims baseline, which
    keeps verdicts only: its numbers are never compared.
    """

    path: str
    schema: str
    presses: dict[str, PressTrace]
    model: dict[str, Any] | None = None
    plan: list[str] | None = None
    grid: str | None = None
    errors: list[str] = field(default_factory=list)  # targets the audit could not trace
    numbers: bool = True


@dataclass(frozen=True)
class Side:
    """What the views say about one document."""

    path: str
    schema: str
    presses: int
    model: str | None = None  # the model's description, where the document records one
    grid: str | None = None


@dataclass(frozen=True)
class Change:
    """One difference between OLD and NEW.

    ``old`` and ``new`` hold the state on each side: for a claim ``verdict``, ``accepted``,
    ``expected``, ``measured``, ``where`` and ``runs``; for a press ``status``, ``failure``,
    ``message``, ``claims`` (id -> verdict, accepted violations as ``violated (accepted)``) and
    ``defects``; None on the side that lacks it. ``message`` is the newest one-line account (the
    claim's or the defect's message, or why a press did not trace).
    """

    kind: str
    effect: str  # worse | better | neutral
    press: str
    claim: str | None = None
    paper: str | None = None
    defect: str | None = None
    old: dict[str, Any] | None = None
    new: dict[str, Any] | None = None
    message: str = ""


@dataclass
class AuditDiff:
    """The result of :func:`compare`: both sides, the warnings about them, and the changes."""

    old: Side
    new: Side
    warnings: list[str]
    changes: list[Change]

    def count(self, effect: str) -> int:
        return sum(1 for change in self.changes if change.effect == effect)

    @property
    def worse(self) -> bool:
        """Something got worse: the exit code is 1."""
        return any(change.effect == WORSE for change in self.changes)

    def of_kind(self, *kinds: str) -> list[Change]:
        return [change for change in self.changes if change.kind in kinds]


# -- reading ---------------------------------------------------------------------------------------


def read_document(path: Path, shown: str) -> dict[str, Any]:
    """The JSON object in ``path``; :class:`DiffInputError` (one line) when it cannot be read or parsed."""
    try:
        raw = read_capped(path, MAX_DOCUMENT_BYTES)
    except SourceError as err:
        raise DiffInputError(f"{shown}: {str(err).replace(', see --max-file-size', '')}") from None
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise DiffInputError(f"{shown}: not a kvaudit JSON document (not UTF-8 text)") from None
    except RecursionError:
        raise DiffInputError(f"{shown}: not a kvaudit JSON document (nested too deeply)") from None
    except ValueError as err:
        raise DiffInputError(f"{shown}: not a kvaudit JSON document (invalid JSON: {str(err).splitlines()[0][:120]})") \
            from None
    if not isinstance(document, dict):
        raise DiffInputError(f"{shown}: not a kvaudit JSON document (a JSON {type(document).__name__}, not an object)")
    return document


def load_snapshot(path: Path, shown: str | None = None) -> Snapshot:
    """Read one side of a diff from ``path``; :class:`DiffInputError` when it is not one of the documents above."""
    from .claims_baseline import SCHEMA as BASELINE_SCHEMA, snapshot_of_baseline

    shown = shown if shown is not None else str(path)
    document = read_document(path, shown)
    schema = document.get("schema")
    if schema == TRACE_SCHEMA:
        return _trace_snapshot(document, shown)
    if schema == CHECK_SCHEMA:
        return _check_snapshot(document, shown)
    if schema == BASELINE_SCHEMA:
        return snapshot_of_baseline(document, shown)
    named = f"schema {str(schema)[:60]!r}" if isinstance(schema, str) else "no \"schema\" key"
    raise DiffInputError(f"{shown}: {named}; kvaudit diff reads {TRACE_SCHEMA} (kvaudit trace --format json), "
                         f"{CHECK_SCHEMA} with traces (kvaudit check --trace --format json) or {BASELINE_SCHEMA}")


def _list(document: dict[str, Any], key: str, shown: str) -> list[Any]:
    value = document.get(key, [])
    if not isinstance(value, list):
        raise DiffInputError(f"{shown}: \"{key}\" is not a list")
    return value


def _press(entry: Any, where: str, shown: str) -> PressTrace:
    try:
        return from_data(entry, PressTrace)
    except CodecError as err:
        raise DiffInputError(f"{shown}: {where} is not a press trace ({err})") from None


def _trace_snapshot(document: dict[str, Any], shown: str) -> Snapshot:
    model = document.get("model")
    if not isinstance(model, dict):
        raise DiffInputError(f"{shown}: \"model\" is not an object")
    plan, grid = _list(document, "plan", shown), document.get("grid")
    traces = [_press(entry, f"presses[{n}]", shown) for n, entry in enumerate(_list(document, "presses", shown))]
    errors = [str(e) for e in _list(document, "errors", shown)]
    return Snapshot(shown, TRACE_SCHEMA, keyed(traces), {k: model.get(k) for k in ("arch", "layers", "source")},
                    [str(p) for p in plan], grid if isinstance(grid, str) else None, errors)


def _check_snapshot(document: dict[str, Any], shown: str) -> Snapshot:
    traces = []
    for number, press in enumerate(_list(document, "presses", shown)):
        if isinstance(press, dict) and "trace" in press:
            traces.append(_press(press["trace"], f"presses[{number}].trace", shown))
    if not traces:
        raise DiffInputError(f"{shown}: a {CHECK_SCHEMA} document without traces; write it with "
                             "kvaudit check --trace --format json, or use kvaudit trace --format json")
    errors = [str(f.get("message")) for f in _list(document, "files", shown)
              if isinstance(f, dict) and f.get("status") == "error"]
    return Snapshot(shown, CHECK_SCHEMA, keyed(traces), errors=errors)


def keyed(traces: list[PressTrace]) -> dict[str, PressTrace]:
    """Each trace under its press's key: the class name, or ``Name (path)`` when the name is not unique."""
    names = [trace.name for trace in traces]
    if len(set(names)) == len(names):
        return {trace.name: trace for trace in traces}
    from .reporters.markdown import stable_path  # (it loads the tracer's comparisons: only when needed)

    return {(trace.name if names.count(trace.name) == 1 else f"{trace.name} ({stable_path(trace.path)})"): trace
            for trace in traces}


# -- comparing -------------------------------------------------------------------------------------


def mismatches(old: Snapshot, new: Snapshot) -> tuple[list[str], list[str]]:
    """Why the two sides may not be comparable: (errors, warnings).

    Errors: another model (architecture or layer count) or another grid (prefills, ratios, decoding
    steps): every number, and so many verdicts, would differ for that alone. Warnings: the model's
    description differs with the same architecture and layers (a ``--model`` folder on another
    machine); a side that records no model or grid; targets one side could not trace.
    """
    errors: list[str] = []
    warnings: list[str] = []
    if old.model is not None and new.model is not None:
        shape = [(key, old.model.get(key), new.model.get(key)) for key in ("arch", "layers")]
        differ = [f"{key} {a!r} → {b!r}" for key, a, b in shape if a != b]
        if differ:
            errors.append(f"different models ({', '.join(differ)})")
        elif None not in (old.model.get("source"), new.model.get("source")) and \
                old.model.get("source") != new.model.get("source"):  # a baseline records none
            warnings.append(f"the model is described differently ({old.model.get('source')!r} → "
                            f"{new.model.get('source')!r}); compared anyway")
    if old.plan is not None and new.plan is not None and (old.plan != new.plan or old.grid != new.grid):
        errors.append(f"different grids ({old.grid or old.plan!r} → {new.grid or new.plan!r})")
    for side in (old, new):
        if side.model is None:
            warnings.append(f"{side.path}: a {side.schema} document records no model or grid; kvaudit diff cannot "
                            "tell whether both sides were traced alike")
        if side.errors:
            more = f" (and {len(side.errors) - 1} more)" if len(side.errors) > 1 else ""
            warnings.append(f"{side.path}: {len(side.errors)} target(s) could not be traced: "
                            f"{str(side.errors[0])[:200]}{more}")
    if old.presses and new.presses and not set(old.presses) & set(new.presses):
        warnings.append("the two sides have no press in common (were the same targets traced?)")
    return errors, warnings


def compare(old: Snapshot, new: Snapshot, *, allow_mismatch: bool = False, ignore_removed: bool = False) -> AuditDiff:
    """The changes from ``old`` to ``new``; :class:`DiffInputError` on a mismatch unless ``allow_mismatch``.

    ``ignore_removed`` leaves out the presses only OLD has (NEW traced some presses only, e.g. those
    a pull request changed).
    """
    errors, warnings = mismatches(old, new)
    if errors and not allow_mismatch:
        raise DiffInputError(f"{old.path} and {new.path} are not comparable: {'; '.join(errors)} "
                             "(--allow-mismatch compares them anyway)")
    warnings = [f"{error}; compared anyway (--allow-mismatch)" for error in errors] + warnings
    numbers = old.numbers and new.numbers
    changes: list[Change] = []
    for key in sorted(set(old.presses) | set(new.presses)):
        before, after = old.presses.get(key), new.presses.get(key)
        if after is None:
            if not ignore_removed:
                changes.append(Change(PRESS_REMOVED, NEUTRAL, key, old=press_state(before), message=before.message or ""))
        elif before is None:
            bad = any(c.open_violation for c in after.claims) or bool(after.defects)
            changes.append(Change(PRESS_ADDED, WORSE if bad else NEUTRAL, key, new=press_state(after),
                                  message=after.message or ""))
        else:
            changes += _press_changes(key, before, after, numbers)
    order = {kind: n for n, kind in enumerate(KINDS)}
    changes.sort(key=lambda c: (order[c.kind], c.press, c.claim or "", c.defect or ""))
    return AuditDiff(_side(old), _side(new), warnings, changes)


def _side(snapshot: Snapshot) -> Side:
    model = snapshot.model or {}
    shown = model.get("source") or (f"{model.get('arch')}, {model.get('layers')} layers" if model.get("arch") else None)
    return Side(snapshot.path, snapshot.schema, len(snapshot.presses), shown, snapshot.grid)


def _press_changes(key: str, before: PressTrace, after: PressTrace, numbers: bool) -> list[Change]:
    changes: list[Change] = []
    if before.status != after.status or before.failure != after.failure:
        changes.append(Change(STATUS_CHANGED, NEUTRAL, key, old=press_state(before), new=press_state(after),
                              message=after.message or ""))
    if before.config and after.config and before.config != after.config:  # a baseline records none
        changes.append(Change(CONFIG_CHANGED, NEUTRAL, key, old={"config": before.config},
                              new={"config": after.config}))
    old_claims = {c.id: c for c in before.claims}
    new_claims = {c.id: c for c in after.claims}
    ids = [c.id for c in after.claims] + [c.id for c in before.claims if c.id not in new_claims]
    for claim_id in ids:
        change = _claim_change(key, old_claims.get(claim_id), new_claims.get(claim_id), numbers)
        if change is not None:
            changes.append(change)
    if numbers:
        moved = trace_change(key, before, after)
        if moved is not None:
            changes.append(moved)
    old_defects = {d.id: d for d in before.defects}
    new_defects = {d.id: d for d in after.defects}
    changes += [Change(DEFECT_APPEARED, WORSE, key, defect=d, message=new_defects[d].message)
                for d in new_defects if d not in old_defects]
    changes += [Change(DEFECT_DISAPPEARED, BETTER, key, defect=d, message=old_defects[d].message)
                for d in old_defects if d not in new_defects]
    return changes


def _claim_change(key: str, before: ClaimCheck | None, after: ClaimCheck | None, numbers: bool) -> Change | None:
    check = after or before
    assert check is not None
    common = {"claim": check.id, "paper": check.paper, "old": claim_state(before, numbers) if before else None,
              "new": claim_state(after, numbers) if after else None}
    if after is None:
        return Change(CLAIM_REMOVED, NEUTRAL, key, message=before.message, **common)
    was_open = before is not None and before.open_violation
    if before is None or before.verdict != after.verdict:
        if after.verdict == VIOLATED:
            return Change(BECAME_VIOLATED, WORSE if after.open_violation else NEUTRAL, key, message=after.message,
                          **common)
        if before is None:
            return Change(CLAIM_ADDED, NEUTRAL, key, message=after.message, **common)
        if after.verdict == HOLDS:
            return Change(BECAME_HOLDS, BETTER if before.verdict == VIOLATED else NEUTRAL, key,
                          message=after.message, **common)
        return Change(VERDICT_CHANGED, NEUTRAL, key, message=after.message, **common)
    if before.accepted != after.accepted:
        effect = WORSE if after.open_violation and not was_open else BETTER if was_open and not after.open_violation \
            else NEUTRAL
        return Change(ACCEPTANCE_CHANGED, effect, key, message=after.message, **common)
    if numbers and numbers_moved(before, after):
        return Change(NUMBERS_CHANGED, NEUTRAL, key, message=after.message, **common)
    return None


def numbers_moved(before: ClaimCheck, after: ClaimCheck) -> bool:
    """``expected`` or ``measured`` moved by more than the mechanism's ``diff_tolerance``, or the runs per verdict changed."""
    mechanism = mechanism_by_id(after.id)
    tolerance = mechanism.diff_tolerance if mechanism is not None else 0.0
    return (_moved(before.expected, after.expected, tolerance) or _moved(before.measured, after.measured, tolerance)
            or before.runs != after.runs)


# What a prefill did, layer by layer, that is exact (counts and indices; the Jaccard figures derive from them).
RUN_FIELDS = ("score_calls", "compress_calls", "kept", "reused_from", "compressed", "decode_lengths")


def trace_change(key: str, before: PressTrace, after: PressTrace) -> Change | None:
    """The per-layer facts of the press's prefills that changed (the first such prefill, and how many), or None."""
    differ = []
    for number, (a, b) in enumerate(zip(before.runs, after.runs)):
        fields = [name for name in RUN_FIELDS if getattr(a, name) != getattr(b, name)]
        if fields or (a.tokens, a.batch, a.ratio) != (b.tokens, b.batch, b.ratio):
            differ.append((number, a, b, fields))
    if not differ and len(before.runs) == len(after.runs):
        return None

    def state(trace: PressTrace, run: Any, fields: list[str]) -> dict[str, Any]:
        place = {"prefill": run.tokens, "batch": run.batch, "ratio": run.ratio} if run is not None else None
        return {"prefills": len(trace.runs), "changed": len(differ), "run": place,
                **{name: getattr(run, name) for name in fields if run is not None}}

    if differ:
        number, a, b, fields = differ[0]
        old, new = state(before, a, fields), state(after, b, fields)
    else:
        old, new = state(before, None, []), state(after, None, [])
    return Change(TRACE_CHANGED, NEUTRAL, key, old=old, new=new)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _moved(a: Any, b: Any, tolerance: float) -> bool:
    """Numbers (and lists of them, element by element) beyond ``tolerance``; anything else when unequal."""
    if _number(a) and _number(b):
        return abs(a - b) > tolerance or (a != a) != (b != b)  # NaN on one side only is a change
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return any(_moved(x, y, tolerance) for x, y in zip(a, b))
    return a != b


def claim_state(check: ClaimCheck, numbers: bool = True) -> dict[str, Any]:
    """A claim on one side of a change (the ``old``/``new`` of :class:`Change`)."""
    state: dict[str, Any] = {"verdict": check.verdict, "accepted": check.accepted}
    if numbers:
        state.update(expected=check.expected, measured=check.measured, where=dict(check.where), runs=dict(check.runs))
    return state


def press_state(trace: PressTrace) -> dict[str, Any]:
    """A press on one side of a change: its status, why it did not trace, its verdicts and defects."""
    failure = trace.failure.value if hasattr(trace.failure, "value") else None
    return {"status": trace.status, "failure": failure, "message": trace.message,
            "claims": {c.id: c.verdict + (" (accepted)" if c.verdict == VIOLATED and c.accepted else "")
                       for c in trace.claims},
            "defects": [d.id for d in trace.defects]}


def diff_files(old: Path, new: Path, *, allow_mismatch: bool = False, ignore_removed: bool = False,
               shown: tuple[str, str] | None = None) -> AuditDiff:
    """Read both files and compare them (the whole of ``kvaudit diff`` but the views)."""
    names = shown or (str(old), str(new))
    return compare(load_snapshot(old, names[0]), load_snapshot(new, names[1]), allow_mismatch=allow_mismatch,
                   ignore_removed=ignore_removed)
