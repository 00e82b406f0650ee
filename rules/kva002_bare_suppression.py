"""KVA002 bare-suppression: ``# kvaudit: ignore`` without rule ids is rejected."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..model import Finding, Severity
from ..rule import PressContext, Rule

if TYPE_CHECKING:
    from ..suppression import Suppression


class BareSuppression(Rule):
    """
    A suppression comment that names no rule (``# kvaudit: ignore``, ``# kvaudit: ignore[]``,
    ``# kvaudit: ignore KVA101`` without brackets). A blanket suppression would silence
    every present and future finding on the line, including ones nobody has read, so
    kvaudit rejects it: it suppresses nothing and is reported itself.

    What to do: name the rules, comma-separated, and say why:
    ``# kvaudit: ignore[KVA201, KVA203] batch size is always 1 here``.
    """

    id = "KVA002"
    name = "bare-suppression"
    severity = Severity.ERROR
    message = "a suppression comment without rule ids suppresses nothing"

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
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)  # kvaudit: ignore[KVA101] planned
        indices = scores.topk(8, dim=-1).indices
        return keys.gather(2, indices), values.gather(2, indices)
''',
    ]
    INVALID = [
        '''
from dataclasses import dataclass
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class ChunkKVNoReuse(BasePress):
    """ChunkKV (arXiv 2502.00299) hiding its finding behind a blanket suppression."""

    press: ScorerPress = None
    chunk_length: int = 10

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)  # kvaudit: ignore
        indices = scores.topk(8, dim=-1).indices
        return keys.gather(2, indices), values.gather(2, indices)
''',
    ]

    def check(self, ctx: PressContext) -> Iterator[Finding]:
        return iter(())  # applied by kvaudit.suppression after the other rules

    @classmethod
    def at(cls, path: str, sup: Suppression) -> Finding:
        hint = f" (found `{sup.reason}` outside brackets)" if sup.ids is None and sup.reason else ""
        message = (f"`{sup.text}` names no rule{hint}: it suppresses nothing; "
                   f"write `# kvaudit: ignore[KVA101] reason`")
        return Finding(rule=cls.id, severity=cls.severity, line=sup.line, column=sup.column, message=message,
                       path=path)
