"""KVA001 unused-suppression: a ``# kvaudit: ignore[...]`` id that silenced nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..model import Finding, Severity
from ..rule import PressContext, Rule

if TYPE_CHECKING:
    from ..suppression import Suppression


class UnusedSuppression(Rule):
    """
    A suppression comment names a rule that reported nothing on the line it covers, or
    names no rule at all (a typo such as ``KVA1O1``). Like Ruff's RUF100: a stale
    suppression hides the next real finding on that line, and an unknown id hides nothing
    while looking as if it did.

    A suppression covers its own line; one alone on its line also covers the next code
    line. Ids of rules that did not run on the file (``--select``, ``--ignore``,
    ``per-path-ignores``) are not reported.

    What to do: delete the suppression (or the stale id), or move it to the finding's line.
    This rule is applied after all the others (``audit/suppression.py``); its findings
    belong to no press.
    """

    id = "KVA001"
    name = "unused-suppression"
    severity = Severity.WARNING
    message = "a suppression comment silences no finding"

    VALID = [
        '''
from dataclasses import dataclass
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class ChunkKVNoReuse(BasePress):
    """ChunkKV (arXiv 2502.00299), knowingly without layer-wise index reuse."""

    press: ScorerPress = None
    chunk_length: int = 10

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        # kvaudit: ignore[KVA101] reuse is planned, see the tracking issue
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        indices = scores.topk(8, dim=-1).indices
        return keys.gather(2, indices), values.gather(2, indices)
''',
    ]
    INVALID = [
        '''
from dataclasses import dataclass
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class SnapLike(ScorerPress):
    """Scores by key norm; claims nothing, so KVA101 never fires here."""

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        return -keys.norm(dim=-1)  # kvaudit: ignore[KVA101] stale
''',
        '''
from dataclasses import dataclass
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class Typo(ScorerPress):
    """A suppression naming a rule that does not exist."""

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        return -keys.norm(dim=-1)  # kvaudit: ignore[KVA1O1]
''',
    ]

    def check(self, ctx: PressContext) -> Iterator[Finding]:
        return iter(())  # applied by kvaudit.suppression after the other rules

    @classmethod
    def at(cls, path: str, sup: Suppression, rule_id: str, known: bool) -> Finding:
        if known:
            lines = sorted(sup.covers)
            where = f"line {lines[0]}" if len(lines) == 1 else f"lines {lines[0]} and {lines[-1]}"
            message = f"unused suppression: no {rule_id} finding on {where}; remove `{rule_id}` from `{sup.text}`"
        else:
            message = f"suppression names unknown rule `{rule_id}` (`kvaudit rules` lists them): it silences nothing"
        return Finding(rule=cls.id, severity=cls.severity, line=sup.line, column=sup.column, message=message,
                       path=path)
