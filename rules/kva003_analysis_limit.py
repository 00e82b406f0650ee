"""KVA003 analysis-limit: the flow pass stopped following a call chain, so a verdict may miss what lies past it."""

from __future__ import annotations

from collections.abc import Iterator

from ..analysis.flow import MAX_DEPTH
from ..model import Finding, Severity
from ..rule import PressContext, Rule


def _chain(depth: int) -> str:
    """A press whose ``compress`` reaches ``score()`` only through ``depth`` nested helper calls."""
    helpers = "".join(
        f"\n    def step{i}(self, module, keys):\n        return self.step{i + 1}(module, keys)\n" for i in range(depth))
    return f'''
from dataclasses import dataclass
from kvpress.presses.base_press import BasePress


@dataclass
class DeepHelpersPress(BasePress):
    """ChunkKV (arXiv 2502.00299), scoring at the end of a long chain of helpers."""

    n_reuse: int = 2

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        return self.step0(module, keys)
{helpers}
    def step{depth}(self, module, keys):
        if module.layer_idx % self.n_reuse == 0:
            self.indices = self.score(module, keys).topk(4).indices
        return keys.gather(2, self.indices), keys.gather(2, self.indices)
'''


class AnalysisLimit(Rule):
    """
    kvaudit's flow pass follows ``self.method()`` and ``super()`` calls from the press's
    entry method (``forward_hook`` or ``compress``) up to 12 calls deep. Past that
    depth it stops, so that a pathological hierarchy (a chain of thousands of subclasses
    each calling ``super()``) costs bounded time and never a recursion error. What lies
    past the cut is not seen: a ``score()`` call there, or the reading of an index cache,
    is missing from the evidence, and the verdict of a claimed mechanism may be wrong.

    This finding names the first method the pass did not enter. Real presses stay far
    from the limit (kvpress's own reach at most four calls deep).

    What to do: nothing, if the verdict looks right; else flatten the call chain.
    """

    id = "KVA003"
    name = "analysis-limit"
    severity = Severity.INFO
    message = f"the flow pass stopped following calls {MAX_DEPTH} deep; the verdict may be incomplete"

    VALID = [_chain(3)]
    INVALID = [_chain(MAX_DEPTH + 2)]

    def check(self, ctx: PressContext) -> Iterator[Finding]:
        # The flow pass runs only for presses whose claims need it: never start it here.
        if "flow" not in vars(ctx) or not ctx.flow.cut_calls:
            return
        first = ctx.flow.cut_calls[0]
        more = len(ctx.flow.cut_calls) - 1
        also = f" (and {more} more)" if more else ""
        yield self.finding(ctx, ctx.press.line,
                           f"{ctx.press.name}: the flow pass follows calls {MAX_DEPTH} deep and did not enter "
                           f"`{first}`{also}; evidence past it is not seen, so the verdict may be incomplete")
