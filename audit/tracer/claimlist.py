"""The claims of each press class of some files, found statically (stdlib ``ast``, no torch).

The parent sends them with each trace request, so that ``kvaudit trace`` checks exactly the claims
``kvaudit check`` finds (the cited paper, inherited citations, ``claim-overrides``); the worker
child adds the contract claims of the class's kvpress bases (:mod:`kvaudit.tracer.child.claimcheck`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..analysis.index import ProjectIndex
from ..claims import claims_for
from ..config import ClaimOverride, apply_claim_overrides
from ..mechanism import contract_claims, contract_label
from ..model import NOT_RUN, Claim, ClaimCheck
from ..source import SourceError, display_path, load_source


def claim_wire(claim: Claim) -> dict[str, str]:
    """One claim as the worker reads it: the mechanism, the paper's registry key, who claims it."""
    return {"id": claim.id, "paper": claim.paper, "label": claim.origin.paper_label or claim.origin.summary}


def claims_by_class(
    paths: Sequence[Path],
    forced: Sequence[str] = (),
    overrides: Sequence[ClaimOverride] = (),
    root: Path | None = None,
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """``(resolved path, class name) -> claims`` for every press class defined in ``paths``.

    Files that cannot be read or parsed are left out: the trace reports them on its own.
    """
    sources = []
    for path in dict.fromkeys(Path(p).resolve() for p in paths):
        try:
            sources.append(load_source(path, display_path(path)))
        except (SourceError, OSError):
            continue
    index = ProjectIndex(sources)
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for press in index.presses():
        try:
            claims = claims_for(press, index, list(forced))
        except (RecursionError, SourceError):
            continue
        claims = apply_claim_overrides(press.name, press.source.display, press.line, claims, list(overrides), root)
        wired = [claim_wire(c) for c in claims]
        try:
            bases = [cls.name for cls in index.mro(press)]
        except RecursionError:
            bases = []
        wired += contract_wire(bases, {c.id for c in claims})
        found[(str(Path(press.source.path).resolve()), press.name)] = wired
    return found


def contract_wire(class_names: Sequence[str], taken: set[str]) -> list[dict[str, str]]:
    """The contract claims of a press whose MRO holds ``class_names`` (as far as the source shows it)."""
    return [{"id": mechanism.id, "paper": "", "label": contract_label(base), "contract": base}
            for mechanism, base, _ in contract_claims(class_names) if mechanism.id not in taken]


def not_run_checks(claims: Sequence[dict[str, Any]], reason: str) -> list[ClaimCheck]:
    """``not-run`` checks for claims the worker never reached (the child hung, died or failed)."""
    return [ClaimCheck(c["id"], c.get("label", ""), NOT_RUN, f"not run: {reason}") for c in claims]
