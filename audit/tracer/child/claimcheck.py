"""The claims a traced press is held to, and their checks (pure Python; runs in the worker child).

Which claims a press has is decided in the kvaudit process (:mod:`kvaudit.claims`: its paper's,
the configuration's, ``--claim``, its kvpress bases' contracts) and sent with the request
(:class:`kvaudit.tracer.wire.ClaimRequest`). Here each one is only looked up: its mechanism, and the
parameters its claimant (the paper, or the contract) publishes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...mechanism import CheckContext, Mechanism, all_mechanisms, mechanism_by_id
from ...model import NOT_CHECKABLE, NOT_RUN, ClaimCheck
from ..observations import RunObservation
from ..wire import ClaimRequest


@dataclass(frozen=True)
class ClaimToCheck:
    """One claim of one press: the mechanism, the claimant's parameters, who claims it."""

    mechanism: Mechanism
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    not_checkable: str = ""  # why a tiny model cannot show it (the claimant says so)


def claims_to_check(requested: Sequence[ClaimRequest]) -> list[ClaimToCheck]:
    """The requested claims, in the conformance matrix's order (an unknown id is skipped)."""
    found: dict[str, ClaimToCheck] = {}
    for item in requested:
        mechanism = mechanism_by_id(item.id)
        if mechanism is None or mechanism.id in found:
            continue
        claimant = mechanism.contracts.get(item.contract) if item.contract else mechanism.papers.get(item.paper)
        found[mechanism.id] = ClaimToCheck(mechanism, dict(claimant.params) if claimant else {},
                                           item.label or item.paper or "forced",
                                           claimant.not_checkable if claimant else "")
    order = {m.id: number for number, m in enumerate(all_mechanisms())}
    return sorted(found.values(), key=lambda c: order.get(c.mechanism.id, len(order)))


def check_claims(claims: Sequence[ClaimToCheck], runs: Sequence[RunObservation], failures: Sequence[str],
                 probes: Sequence[RunObservation] = ()) -> list[ClaimCheck]:
    """Every claim's check on the completed runs (and the probes); a check that fails is reported, never raised."""
    checks = []
    for claim in claims:
        if claim.not_checkable:  # said with its reason, never judged from what a tiny model cannot show
            checks.append(ClaimCheck(claim.mechanism.id, claim.label, NOT_CHECKABLE,
                                     f"not checkable on a tiny model: {claim.not_checkable}"))
            continue
        missing = absent_structure(claim, runs)
        if missing:  # never a verdict from a structure the model does not have
            checks.append(ClaimCheck(claim.mechanism.id, claim.label, NOT_CHECKABLE,
                                     f"not checkable on the trained model: {missing}"))
            continue
        context = CheckContext(runs=[run for run in runs if run.ok], params=claim.params, failures=list(failures),
                               probes=list(probes))
        try:
            checks.append(claim.mechanism.check(context, claim.label))
        except Exception as error:  # noqa: BLE001 - a bug in one check must not hide the others
            checks.append(ClaimCheck(claim.mechanism.id, claim.label, NOT_RUN,
                                     f"not run: the check failed ({type(error).__name__}: {error})"))
    return checks


def absent_structure(claim: ClaimToCheck, runs: Sequence[RunObservation]) -> str:
    """Why a claim that relies on learned structure (``relies_on``: sinks, induction heads) cannot be judged on the
    trained model, which does not show it; "" when it can (random weights: the claim's mechanics are judged)."""
    needed = claim.params.get("relies_on")
    structure = next((run.facts.get("model_structure") for run in runs if run.facts.get("model_structure")), None)
    if not needed or not structure or structure.get(needed):
        return ""
    return f"the paper relies on {needed}, and the model shows none ({structure.get('why-not-' + needed, 'absent')})"


def not_run(claims: Sequence[ClaimToCheck], reason: str) -> list[ClaimCheck]:
    """Every claim marked ``not-run`` with one reason (the press could not be built or traced); a claim a tiny
    model cannot show stays ``not-checkable``, with its own reason."""
    return [ClaimCheck(claim.mechanism.id, claim.label, NOT_CHECKABLE,
                       f"not checkable on a tiny model: {claim.not_checkable}") if claim.not_checkable
            else ClaimCheck(claim.mechanism.id, claim.label, NOT_RUN, f"not run: {reason}") for claim in claims]


def requested_not_run(requested: Sequence[ClaimRequest], reason: str) -> list[ClaimCheck]:
    """``not-run`` checks for the claims of a request the child never answered (it hung, died or failed)."""
    return not_run(claims_to_check(requested), reason)


@dataclass(frozen=True)
class Needs:
    """What the checks of a press read beyond the grid's observations."""

    scores: bool  # score() outputs of the prefill
    facts: tuple[str, ...]  # press attributes, by name
    probes: bool  # the probes (a repeated prompt, batch rows alone)
    references: tuple[ClaimToCheck, ...] = ()  # claims whose formula is recomputed from score()'s inputs
    channels: tuple[ClaimToCheck, ...] = ()  # claims that read key-channel pruning
    similarity: bool = False  # the similarity probes (a model with learned attention only)
    quality: bool = False  # the quality probes (a model with learned attention only)


def needs(claims: Sequence[ClaimToCheck]) -> Needs:
    """What the checks of ``claims`` read (facts: every mechanism's, so that reports can show them)."""
    facts = sorted({name for mechanism in all_mechanisms() for name in mechanism.facts} | {"compression_ratio"})
    references = tuple(claim for claim in claims if claim.mechanism.needs_reference and not claim.not_checkable)
    channels = tuple(claim for claim in claims if claim.mechanism.needs_channels and not claim.not_checkable)
    return Needs(scores=any(claim.mechanism.needs_scores for claim in claims) or bool(references),
                 facts=tuple(facts), probes=any(claim.mechanism.needs_probes for claim in claims),
                 references=references, channels=channels,
                 similarity=any(claim.mechanism.needs_similarity and not claim.not_checkable for claim in claims),
                 quality=any(claim.mechanism.needs_quality and not claim.not_checkable for claim in claims))


def channel_function(claims: Sequence[ClaimToCheck], facts: Callable[[], dict[str, Any]]) -> Any:
    """The recorder's hook for key-channel criteria (one claim's: a press prunes by one rule), or None."""
    if not claims:
        return None
    claim = claims[0]

    def recompute(inputs: Any) -> Any:
        try:
            return claim.mechanism.reference_channels(inputs, {**claim.params, **facts()})
        except Exception:  # noqa: BLE001 - a criterion that does not fit this model: none
            return None

    return recompute


def reference_function(claims: Sequence[ClaimToCheck], facts: Callable[[], dict[str, Any]]) -> Any:
    """The recorder's hook: each claim's formula on a ``score()`` call's inputs (None when no claim has one).

    The formula reads the paper's parameters, overridden by the press's own ``facts()`` (its window,
    its kernel, the learned tensors it loaded: the rule is checked on the press as configured). A formula that fails is left out for
    that call (its check then says the formula could not be recomputed), never raised into the
    press's forward.
    """
    if not claims:
        return None

    def recompute(inputs: Any) -> dict[str, Any]:
        found = {}
        settings = facts()
        for claim in claims:
            try:
                value = claim.mechanism.reference_scores(inputs, {**claim.params, **settings})
            except Exception:  # noqa: BLE001 - a formula that does not fit this model: no reference
                value = None
            if value is not None:
                found[claim.mechanism.id] = value
        return found

    return recompute
