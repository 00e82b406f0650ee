"""Mechanism ``channel-pruning``: the key channels with the least query-key energy are pruned, recent keys exempt."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..mechanism import CheckContext, Claimant, Mechanism, ReproRule, RunResult, head_where, holds, not_applicable, \
    row_name, setting, spans, violated

if TYPE_CHECKING:
    from ..tracer.child.inputs import ScoreInputs
    from ..tracer.observations import RunObservation


class ChannelPruning(Mechanism):
    """
    ThinK prunes key channels, not positions: for each KV head, the criterion of channel ``j`` is the
    mean squared query of the last ``w`` queries in ``j`` times the mean squared key in ``j``; the
    ``int(d · λ)`` channels with the smallest criterion are pruned from the keys, and the most
    recent keys keep every channel (the authors' code: the last ``recent_size`` keys, 32).

    Invariant, on every layer, batch row and KV head, with ``λ`` the press's
    ``key_channel_compression_ratio`` and ``d`` the head dimension:

    * exactly ``int(d · λ)`` channels are pruned, the same on every pruned key;
    * they are the channels with the smallest criterion, recomputed in float64 from the layer's
      hidden states (queries projected and rotated by kvaudit's own code) and keys; channels whose
      criterion ties with the cut count either way;
    * the last ``recent`` positions keep every channel.

    Tolerance: criteria within ``1e-6 ×`` the largest count as tied. Grouped queries: the squared
    queries of a KV head's query heads are averaged (the authors select per query head).
    """

    id = "channel-pruning"
    name = "key-channel pruning"
    title = "the int(d·λ) lowest-energy key channels are pruned, the recent keys left whole"
    order = 68
    papers = {
        "think": Claimant("Section 3 and the authors' code (SalesforceAIResearch/ThinK kv_pruning_utils.py, "
                          "key_pruner_query_driven: criterion mean(q[-32:]²)·mean(k²), the int(d·ratio) smallest "
                          "channels pruned, the last recent_size = 32 keys kept whole)",
                          {"window_size": 32, "recent": 32, "ratio_attribute": "key_channel_compression_ratio"}),
    }
    facts = ("key_channel_compression_ratio", "window_size")
    needs_channels = True

    VALID = [
        '''
"""ThinK (arXiv 2407.21018): prune the key channels with the least query-key energy, keep recent keys whole."""
from dataclasses import dataclass
import torch
from kvpress import BasePress


@dataclass
class RecentSafeChannelPress(BasePress):
    """Zeroes the int(d * ratio) key channels with the least energy, except in the last 32 keys."""

    compression_ratio: float = 0.0  # the grid's ratio, used as the share of key channels pruned
    window_size: int = 32

    @property
    def key_channel_compression_ratio(self) -> float:
        return self.compression_ratio

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        b, length, _ = hidden_states.shape
        heads, dim = module.config.num_attention_heads, module.head_dim
        q = module.q_proj(hidden_states[:, -self.window_size:]).view(b, -1, heads, dim).transpose(1, 2)
        cos, sin = kwargs["position_embeddings"]
        q, _ = apply_rotary_pos_emb(q, q, cos[:, -self.window_size:], sin[:, -self.window_size:])
        q_energy = q.pow(2).mean(dim=2).view(b, keys.shape[1], -1, dim).mean(dim=2)
        energy = q_energy * keys.pow(2).mean(dim=2)
        pruned = energy.topk(int(dim * self.key_channel_compression_ratio), dim=-1, largest=False).indices
        mask = torch.zeros_like(energy, dtype=torch.bool).scatter_(-1, pruned, True)
        keys = keys.clone()
        older = keys[:, :, : max(0, length - 32)]
        keys[:, :, : max(0, length - 32)] = older.masked_fill(mask.unsqueeze(2), 0)
        return keys, values
''',
    ]
    INVALID = [
        '''
"""ThinK (arXiv 2407.21018), pruning the recent keys too."""
from dataclasses import dataclass
import torch
from kvpress import BasePress


@dataclass
class EveryKeyChannelPress(BasePress):
    """Zeroes the int(d * ratio) key channels with the least key energy on every key, recent ones included."""

    compression_ratio: float = 0.0  # the grid's ratio, used as the share of key channels pruned
    window_size: int = 32

    @property
    def key_channel_compression_ratio(self) -> float:
        return self.compression_ratio

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        dim = keys.shape[-1]
        energy = keys.pow(2).mean(dim=2)
        pruned = energy.topk(int(dim * self.key_channel_compression_ratio), dim=-1, largest=False).indices
        return keys.scatter(-1, pruned.unsqueeze(2).expand(-1, -1, keys.shape[2], -1), 0), values
''',
    ]

    def reference_channels(self, inputs: ScoreInputs, params: dict[str, Any]) -> Any | None:
        """mean over the last ``window_size`` queries of q² (per KV head: its query heads averaged) × mean of k²."""
        window = min(int(params.get("window_size", 32)), inputs.length)
        queries = inputs.queries[:, :, -window:]  # (batch, heads, window, head_dim)
        energy = inputs.per_kv_head(queries.pow(2).mean(dim=2))
        return energy * inputs.k.pow(2).mean(dim=2)

    def check_run(self, run: RunObservation, ctx: CheckContext) -> RunResult:
        ratio = setting(run, ctx.params, ctx.params.get("ratio_attribute", "key_channel_compression_ratio"))
        recent = int(ctx.params.get("recent", 32))
        if not isinstance(ratio, (int, float)) or isinstance(ratio, bool):
            return not_applicable("the press states no key-channel ratio")
        judged = 0
        for index, layer in enumerate(run.layers):
            if not layer.pruned_channels or not layer.exact:
                continue
            length = layer.original_length
            for row, heads in enumerate(layer.pruned_channels):
                for head, lost in enumerate(heads):
                    kept = layer.kept[row][head] if row < len(layer.kept) and head < len(layer.kept[row]) else ()
                    if not kept:
                        continue
                    judged += 1
                    where = head_where(index, row, head, run.batch)
                    who = f"layer {index}{row_name(row, run.batch)} head {head}"
                    dim = len(layer.channel_reference[row][head]) if layer.channel_reference else None
                    if dim is not None:
                        expected = int(dim * ratio)
                        if len(lost) != expected:
                            return violated(f"{who} pruned {len(lost)} key channels; the rule prunes int({dim} × "
                                            f"{ratio:g}) = {expected}", expected, len(lost),
                                            gap=abs(len(lost) - expected) / dim, **where)
                        wrong = _not_lowest(layer.channel_reference[row][head], lost)
                        if wrong:
                            return violated(f"{who} pruned channels {spans(wrong)}, which are not among the "
                                            f"{expected} with the least query-key energy", 0, len(wrong),
                                            gap=len(wrong) / max(1, expected), **where)
                    whole = set(layer.whole[row][head]) if layer.whole else set()
                    tail = [p for p in kept if p >= length - recent]
                    pruned_tail = [p for p in tail if p not in whole]
                    if lost and pruned_tail:
                        return violated(f"{who} pruned the key channels of {len(pruned_tail)} of the last {recent} "
                                        f"positions ({spans(pruned_tail)}); the rule keeps the recent keys whole",
                                        recent, recent - len(pruned_tail), gap=len(pruned_tail) / recent, **where)
        if not judged:
            return not_applicable("no layer kept keys whose channels could be compared")
        return holds(f"every head prunes int(d × {ratio:g}) channels of least query-key energy and keeps the last "
                     f"{recent} keys whole", recent, recent)

    def repro_rule(self, params: dict[str, Any]) -> ReproRule:
        return ReproRule('''
def check(model, new_press):
    """ThinK: per KV head, the int(d * ratio) key channels with the least query-key energy are zeroed, the same
    on every pruned key, and the last `recent` keys keep every channel. The energy of channel j: the mean of
    q_j^2 over the last window_size queries (averaged over the KV head's query heads) times the mean of k_j^2.
    Energies within 1e-6 of the largest count as tied."""
    press = new_press()
    run = prefill(model, press, make_prompt(TOKENS, BATCH, PROMPT_SEED))
    ratio = setting(press, PARAMS["ratio_attribute"])
    if ratio is None:
        return None, "pruned key channels", f"the press has no {PARAMS['ratio_attribute']}: the rule does not apply"
    window = setting(press, "window_size", default=PARAMS["window_size"])
    recent = PARAMS["recent"]
    for layer in range(len(run.keys)):
        before, after = run.keys[layer], run.cache.layers[layer].keys
        batch, kv_heads, length, dim = before.shape
        q_energy = queries(model, run, layer)[:, :, -window:].pow(2).mean(dim=2)
        energy = q_energy.view(batch, kv_heads, -1, dim).mean(dim=2) * before.double().pow(2).mean(dim=2)
        for row, heads in enumerate(row_positions(run, layer)):
            for head, positions in enumerate(heads):
                rows = [i for i, p in enumerate(positions) if p >= 0]
                was = before[row, head, [positions[i] for i in rows]]
                zeroed = (after[row, head, rows] == 0) & (was != 0)  # (kept rows, channels) the press zeroed
                lost = zeroed.any(dim=0).nonzero().flatten().tolist()
                where = f"layer {layer} row {row} head {head}"
                if len(lost) != int(dim * ratio):
                    return False, f"int({dim} x {ratio:g}) = {int(dim * ratio)} channels pruned", f"{where}: {len(lost)}"
                order = energy[row, head].tolist()
                cut = sorted(order)[len(lost) - 1] + 1e-6 * max(map(abs, order)) if lost else None
                if lost and any(order[channel] > cut for channel in lost):
                    return False, f"the {len(lost)} channels of least energy pruned", f"{where}: pruned {lost}"
                pruned_tail = [positions[i] for i, hit in zip(rows, zeroed.any(dim=1).tolist())
                               if hit and positions[i] >= length - recent]
                if pruned_tail:
                    return (False, f"the last {recent} keys keep every channel",
                            f"{where}: the keys of {len(pruned_tail)} of the last {recent} positions lost channels")
    return True, f"int(d x {ratio:g}) lowest-energy channels pruned, the last {recent} keys whole", "so on every head"
''')


def _not_lowest(criterion: tuple[float, ...], lost: tuple[int, ...]) -> list[int]:
    """The pruned channels that are not among the ``len(lost)`` smallest by ``criterion`` (ties count either way)."""
    if not lost:
        return []
    cut = sorted(criterion)[len(lost) - 1]
    tolerance = 1e-6 * max(abs(value) for value in criterion)
    return [channel for channel in lost if criterion[channel] > cut + tolerance]
