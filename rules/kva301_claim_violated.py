"""KVA301 claim-violated: the tracer measured a departure from a claim of the press's paper."""

from __future__ import annotations

from ..model import Severity
from ..rule import Rule
from .claim_observation_window import ObservationWindow
from .claim_score_formula import ScoreFormula


class ClaimViolated(Rule):
    """
    ``kvaudit check --trace`` ran the press on the tiny model and one of the mechanisms its paper
    claims (or its kvpress base class promises) does not hold: the message gives the numbers the
    paper's rule expects beside those measured, and where (ratio, prompt length, layer, head,
    decoding step). The finding sits at the press's class line. ``kvaudit rules`` and
    docs/claims.md list the mechanisms and their tolerances.

    What to do: fix the press so that the invariant holds, or, when the press departs from the
    paper on purpose and says so, accept the deviation with its reason in ``[[tool.kvaudit.accept]]``
    (press, claim, reason): it then shows as accepted and no longer gates CI.
    """

    id = "KVA301"
    name = "claim-violated"
    severity = Severity.ERROR
    message = "the press departs from a mechanism its paper claims (measured on the tiny model)"
    dynamic = True

    # A press that meets every claim of its paper (SnapKV's window and formula) and kvpress's contracts.
    VALID = list(ScoreFormula.VALID)
    INVALID = list(ObservationWindow.INVALID)
