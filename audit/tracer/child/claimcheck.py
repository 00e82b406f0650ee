"""Which claims a traced press is held to, and their checks (pure Python; runs in the worker child).

A press claims what its paper claims (found statically by the parent: :mod:`kvaudit.claims`, sent
with the request) and what the contract of each kvpress base class in its MRO claims (found here,
where the class is imported): every ``BasePress`` claims ``kept-fraction``, every ``ScorerPress``
claims ``score-topk``. A paper's claim wins over a contract's for the same mechanism.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ...mechanism import CheckContext, Mechanism, all_mechanisms, contract_claims, contract_label, mechanism_by_id
from ...model import NOT_RUN, ClaimCheck
from ..observations import RunObservation


@dataclass(frozen=True)
class ClaimToCheck:
    """One claim of one press: the mechanism, the claimant's parameters, who claims it."""

    mechanism: Mechanism
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""


def claims_to_check(requested: Sequence[dict[str, str]], class_names: Sequence[str]) -> list[ClaimToCheck]:
    """The paper claims the parent found (``{"id", "paper", "label"}`` each), then the contract claims."""
    found: dict[str, ClaimToCheck] = {}
    for item in requested:
        mechanism = mechanism_by_id(item.get("id", ""))
        if mechanism is None or mechanism.id in found:
            continue
        claimant = mechanism.contracts.get(item["contract"]) if item.get("contract") else mechanism.papers.get(item.get("paper", ""))
        found[mechanism.id] = ClaimToCheck(mechanism, dict(claimant.params) if claimant else {},
                                           item.get("label") or item.get("paper") or "forced")
    for mechanism, base, claimant in contract_claims(class_names):
        found.setdefault(mechanism.id, ClaimToCheck(mechanism, dict(claimant.params), contract_label(base)))
    order = {m.id: number for number, m in enumerate(all_mechanisms())}
    return sorted(found.values(), key=lambda c: order.get(c.mechanism.id, len(order)))


def check_claims(claims: Sequence[ClaimToCheck], runs: Sequence[RunObservation], failures: Sequence[str]) -> list[ClaimCheck]:
    """Every claim's check on the completed runs; a check that fails is reported, never raised."""
    checks = []
    for claim in claims:
        context = CheckContext(runs=[run for run in runs if run.ok], params=claim.params, failures=list(failures))
        try:
            checks.append(claim.mechanism.check(context, claim.label))
        except Exception as error:  # noqa: BLE001 - a bug in one check must not hide the others
            checks.append(ClaimCheck(claim.mechanism.id, claim.label, NOT_RUN,
                                     f"not run: the check failed ({type(error).__name__}: {error})"))
    return checks


def not_run(claims: Sequence[ClaimToCheck], reason: str) -> list[ClaimCheck]:
    """Every claim marked ``not-run`` with one reason (the press could not be built or traced)."""
    return [ClaimCheck(claim.mechanism.id, claim.label, NOT_RUN, f"not run: {reason}") for claim in claims]


def needs(claims: Sequence[ClaimToCheck]) -> tuple[bool, tuple[str, ...]]:
    """Whether any check reads score() outputs, and the press attributes the checks read."""
    scores = any(claim.mechanism.needs_scores for claim in claims)
    facts = sorted({name for mechanism in all_mechanisms() for name in mechanism.facts} | {"compression_ratio"})
    return scores, tuple(facts)
