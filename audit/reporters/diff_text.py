"""What the views of ``kvaudit diff`` say about each change, in plain words (shared by terminal and Markdown).

Plain functions of :class:`kvaudit.diff.AuditDiff`; the terminal view styles these parts with rich,
the Markdown view escapes and emphasises them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..diff import (
    ACCEPTANCE_CHANGED,
    BECAME_HOLDS,
    BECAME_VIOLATED,
    BETTER,
    CLAIM_ADDED,
    CLAIM_REMOVED,
    CONFIG_CHANGED,
    DEFECT_APPEARED,
    DEFECT_DISAPPEARED,
    NUMBERS_CHANGED,
    PRESS_ADDED,
    PRESS_REMOVED,
    STATUS_CHANGED,
    TRACE_CHANGED,
    VERDICT_CHANGED,
    WORSE,
    AuditDiff,
    Change,
)
from ..model import FAILURE_REASONS, Failure

# The sections of every view, in order: what got worse first. Each lists the changes of its kinds.
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Claims that became violated", (BECAME_VIOLATED,)),
    ("Defects that appeared", (DEFECT_APPEARED,)),
    ("Changed acceptances", (ACCEPTANCE_CHANGED,)),
    ("New presses", (PRESS_ADDED,)),
    ("Removed presses", (PRESS_REMOVED,)),
    ("Claims that became holds", (BECAME_HOLDS,)),
    ("Defects that disappeared", (DEFECT_DISAPPEARED,)),
    ("Changed numbers (beyond the claim's tolerance)", (NUMBERS_CHANGED,)),
    ("Changed traces (what the prefills did per layer)", (TRACE_CHANGED,)),
    ("Other changes", (VERDICT_CHANGED, CLAIM_ADDED, CLAIM_REMOVED, STATUS_CHANGED, CONFIG_CHANGED)),
)
MARKS = {WORSE: "✗", BETTER: "✓"}  # neutral: "·"
WHERE_ORDER = ("ratio", "length", "batch", "row", "layer", "head", "step")


@dataclass
class Described:
    """One change in words: who (press, and claim or defect), what happened, and the details."""

    mark: str
    press: str
    subject: str  # "observation-window (SnapKV (arXiv 2404.14469))", "defect crash", or ""
    transition: str  # "holds → violated", "new press", …
    details: list[str] = field(default_factory=list)


def value(data: Any, limit: int = 12) -> str:
    """A number, list or string of a check, short."""
    if data is None:
        return "—"
    if isinstance(data, float):
        return f"{data:g}"
    if isinstance(data, list):
        shown = ", ".join(value(v) for v in data[:limit])
        return f"[{shown}{', …' if len(data) > limit else ''}]"
    return str(data)


def where(place: dict[str, Any] | None) -> str:
    place = place or {}
    return ", ".join(f"{key} {value(place[key])}" for key in WHERE_ORDER if key in place)


def runs(counts: dict[str, int] | None) -> str:
    return ", ".join(f"{verdict} {n}" for verdict, n in (counts or {}).items()) or "—"


def verdict(state: dict[str, Any] | None) -> str:
    """A claim's verdict on one side, or ``not claimed``."""
    if state is None:
        return "not claimed"
    return state["verdict"] + (" (accepted)" if state["verdict"] == "violated" and state.get("accepted") else "")


def _numbers(state: dict[str, Any] | None) -> str:
    if state is None or "expected" not in state:
        return ""
    if state["expected"] is None and state["measured"] is None:
        return ""
    at = where(state.get("where"))
    return f"expected {value(state['expected'])}, measured {value(state['measured'])}" + (f" ({at})" if at else "")


def _press_summary(state: dict[str, Any]) -> str:
    claims: dict[str, str] = state.get("claims", {})
    if state.get("status") != "ok":
        head = f"not traced: {_failure_reason(state.get('failure'))}"
    else:
        head = "traced"
    by_verdict: dict[str, list[str]] = {}
    for claim, word in claims.items():
        by_verdict.setdefault(word, []).append(claim)
    parts = [f"{word} {', '.join(ids)}" for word, ids in sorted(by_verdict.items())]
    defects = state.get("defects") or []
    text = f"{head}; {len(claims)} claim(s)" + (f": {'; '.join(parts)}" if parts else "")
    return text + (f"; defects: {', '.join(defects)}" if defects else "")


def _failure_reason(failure: str | None) -> str:
    try:
        return FAILURE_REASONS[Failure(failure)]
    except ValueError:
        return failure or "no reason recorded"


def _accepted(state: dict[str, Any] | None) -> str:
    if state is None or not state.get("accepted"):
        return "not accepted"
    return f"accepted ({state['accepted']})"


def describe(change: Change) -> Described:
    """The words for one change."""
    mark = MARKS.get(change.effect, "·")
    if change.claim is not None:
        subject = f"{change.claim} ({change.paper})" if change.paper else change.claim
        details: list[str] = []
        if change.kind == ACCEPTANCE_CHANGED:
            transition = f"{verdict(change.new)}: {_accepted(change.old)} → {_accepted(change.new)}"
        elif change.kind == NUMBERS_CHANGED:
            transition = f"{verdict(change.new)}, other numbers"
        else:
            transition = f"{verdict(change.old)} → {verdict(change.new)}"
            if change.kind == BECAME_VIOLATED and change.new and change.new.get("accepted"):
                details.append(f"accepted: {change.new['accepted']}")
        if change.kind == NUMBERS_CHANGED:
            old, new = change.old or {}, change.new or {}
            for key in ("expected", "measured"):
                if old.get(key) != new.get(key):
                    details.append(f"{key} {value(old.get(key))} → {value(new.get(key))}")
            if old.get("where") != new.get("where"):
                details.append(f"where {where(old.get('where')) or '—'} → {where(new.get('where')) or '—'}")
            if old.get("runs") != new.get("runs"):
                details.append(f"runs {runs(old.get('runs'))} → {runs(new.get('runs'))}")
        else:
            before, after = _numbers(change.old), _numbers(change.new)
            if after:
                details.append(f"now {after}")
            if before and before != after:
                details.append(f"was {before}")
        if change.message:
            details.append(change.message)
        return Described(mark, change.press, subject, transition, details)
    if change.defect is not None:
        appeared = change.kind == DEFECT_APPEARED
        return Described(mark, change.press, f"defect {change.defect}", "appeared" if appeared else "disappeared",
                         [change.message] if change.message else [])
    if change.kind == CONFIG_CHANGED:
        return Described(mark, change.press, "", "built differently",
                         [f"{(change.old or {}).get('config')} → {(change.new or {}).get('config')}"])
    if change.kind == TRACE_CHANGED:
        return Described(mark, change.press, "", "the trace changed", _trace_details(change.old or {}, change.new or {}))
    if change.kind == PRESS_ADDED:
        return Described(mark, change.press, "", "new press", [_press_summary(change.new or {})])
    if change.kind == PRESS_REMOVED:
        return Described(mark, change.press, "", "removed", [f"it was {_press_summary(change.old or {})}"])
    old, new = change.old or {}, change.new or {}
    details = [change.message] if change.message else []
    return Described(mark, change.press, "", f"{_status(old)} → {_status(new)}", details)


def _trace_details(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    details = []
    if old.get("prefills") != new.get("prefills"):
        details.append(f"prefills completed: {old.get('prefills')} → {new.get('prefills')}")
    run = new.get("run")
    if run is not None:
        ratio = f" at ratio {value(run['ratio'])}" if run.get("ratio") is not None else ""
        details.append(f"{new.get('changed')} of {new.get('prefills')} prefills differ; the first, "
                       f"{run['prefill']}×{run['batch']}{ratio}:")
        details += [f"{name} {value(old.get(name), 16)} → {value(new.get(name), 16)}"
                    for name in ("score_calls", "compress_calls", "kept", "reused_from", "compressed", "decode_lengths")
                    if name in new]
    return details


def _status(state: dict[str, Any]) -> str:
    if state.get("status") == "ok":
        return "traced"
    failure = state.get("failure")
    return f"not traced ({failure})" if failure else "not traced"


def counts_line(diff: AuditDiff) -> str:
    """``2 worse, 1 better, 3 other changes`` (or ``no change``)."""
    if not diff.changes:
        return "no change"
    worse, better = diff.count(WORSE), diff.count(BETTER)
    other = len(diff.changes) - worse - better
    return f"{worse} worse, {better} better, {other} other change{'' if other == 1 else 's'}"


def sides_line(diff: AuditDiff) -> str:
    """Which documents were compared, and on what (when both sides say the same)."""
    line = (f"{diff.old.presses} presses of {diff.old.path} ({diff.old.schema}) against "
            f"{diff.new.presses} of {diff.new.path} ({diff.new.schema})")
    if diff.old.model and diff.old.model == diff.new.model:
        line += f"; model: {diff.old.model}"
    if diff.old.grid and diff.old.grid == diff.new.grid:
        line += f"; {diff.old.grid}"
    return line


def verdict_line(diff: AuditDiff) -> str:
    """The one-sentence answer: did anything get worse?"""
    if not diff.changes:
        return "Nothing changed: every verdict, acceptance, number and defect is the same."
    if diff.worse:
        return f"Something got worse ({counts_line(diff)})."
    return f"Nothing got worse ({counts_line(diff)})."


def sections(diff: AuditDiff) -> list[tuple[str, list[Change]]]:
    """The non-empty sections, in order, with their changes."""
    found = []
    for title, kinds in SECTIONS:
        changes = diff.of_kind(*kinds)
        if changes:
            found.append((title, changes))
    return found
