"""KVA302 unused-acceptance: an ``[[accept]]`` entry that covers no violated claim."""

from __future__ import annotations

from ..model import Severity
from ..rule import Rule
from .claim_observation_window import ObservationWindow


class UnusedAcceptance(Rule):
    """
    An acceptance in ``[[tool.kvaudit.accept]]`` names a press and a claim, but no traced press of
    that name has that claim violated: the press was fixed, renamed, or the claim holds. Like an
    unused suppression (KVA001), a stale acceptance would silently cover the next real violation.
    The finding sits at the acceptance's table in the configuration file. Only reported when the
    presses were traced (``kvaudit check --trace``, ``kvaudit trace``, ``kvaudit report``).

    What to do: delete the acceptance, or correct its press name or claim.
    """

    id = "KVA302"
    name = "unused-acceptance"
    severity = Severity.WARNING
    message = "an accepted deviation matches no violated claim"
    dynamic = True
    EXAMPLE_CONFIG = """
[[accept]]
press = "Window*Press"
claim = "observation-window"
reason = "the example drops its window on purpose"
"""

    VALID = list(ObservationWindow.INVALID)  # the window is dropped: the acceptance is used
    INVALID = list(ObservationWindow.VALID)  # the window is kept: the acceptance covers nothing
