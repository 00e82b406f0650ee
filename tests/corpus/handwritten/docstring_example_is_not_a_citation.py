# Hand-written for kvaudit: the usage example in the docstring names another press; that is code, not a
# citation, so the forced claim applies (kvpress's ComposedPress and ThinKPress do this).
# expect: ExampleDocPress reuse=missing fires=KVA101 claim=option
"""Nothing cited here."""

from dataclasses import dataclass

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress


@dataclass
class ExampleDocPress(BasePress):
    """
    Wraps a scorer.

    Example:
    ```python
    press = ExampleDocPress(SnapKVPress(0.5))
    ```

    or, in one line, press = ExampleDocPress(press=SnapKVPress(compression_ratio=0.5))

    >>> ExampleDocPress(SnapKVPress(0.25))
    """

    press: ScorerPress = None

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        index = scores.topk(keys.shape[2] // 2, dim=-1).indices.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        return keys.gather(2, index), values.gather(2, index)
