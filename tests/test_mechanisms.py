"""Every mechanism's invariant on hand-made observations: one that meets it, one that breaks it, the numbers.

Pure Python, no torch: the checks of rules/claim_*.py read plain observations.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from kvaudit.claims import load_registry
from kvaudit.mechanism import CheckContext, all_mechanisms, mechanism_by_id
from kvaudit.model import HOLDS, NOT_APPLICABLE, NOT_RUN, VIOLATED
from kvaudit.tracer.observations import LayerObservation, RunObservation, StepObservation

L = 16  # prompt length of the hand-made runs


def layer(kept, heads: int = 2, rows: int = 1, length: int = L, scores=None, lengths=None, memory=(0, 0),
          decode=()) -> LayerObservation:
    """A layer that kept ``kept`` (a list per head, or one list for every head) on every row."""
    per_head = kept if kept and isinstance(kept[0], (list, tuple, range)) else [kept] * heads
    row = tuple(tuple(sorted(h)) for h in per_head)
    return LayerObservation(score_calls=1, kept=(row,) * rows, original_length=length, scores=scores,
                            kept_lengths=lengths or (), memory=memory, decode=tuple(decode))


def run(layers, ratio: float | None = 0.5, batch: int = 1, facts=None, steps: int = 0) -> RunObservation:
    return RunObservation(tokens=L, batch=batch, seed=0, layers=list(layers), ratio=ratio, facts=facts or {},
                          decode_steps=steps)


def check(claim: str, runs, params=None, paper: str = "Paper"):
    return mechanism_by_id(claim).check(CheckContext(runs=list(runs), params=params or {}), paper)


def test_every_claim_module_defines_one_documented_mechanism() -> None:
    """Found from rules/claim_*.py, never listed here: a new mechanism touches only its own module."""
    import pkgutil

    import kvaudit.rules

    modules = sorted(info.name for info in pkgutil.iter_modules(kvaudit.rules.__path__) if info.name.startswith("claim_"))
    mechanisms = all_mechanisms()
    assert sorted(type(m).__module__.rsplit(".", 1)[1] for m in mechanisms) == modules  # one each
    assert len({m.id for m in mechanisms}) == len(mechanisms)
    assert [m.id for m in mechanisms] == [m.id for m in sorted(mechanisms, key=lambda m: (m.order, m.id))]
    for mechanism in mechanisms:
        assert mechanism.documentation() and mechanism.name and mechanism.title
        assert mechanism.papers or mechanism.contracts
        assert mechanism.VALID and mechanism.INVALID, f"{mechanism.id} needs a press that meets it and one that breaks it"
        assert set(mechanism.papers) <= {paper.key for paper in load_registry()}


def test_the_registry_reads_claims_from_the_mechanisms() -> None:
    papers = {paper.key: paper for paper in load_registry()}
    for mechanism in all_mechanisms():
        for key, claimant in mechanism.papers.items():
            assert papers[key].claims[mechanism.id] == claimant.where
    assert all(claim in {m.id for m in all_mechanisms()} for paper in papers.values() for claim in paper.claims)
    assert papers["cam"].label == "CaM (openreview.net/forum?id=LCTmppB165)"


def test_no_completed_run_is_not_run_with_the_reason() -> None:
    result = mechanism_by_id("kept-fraction").check(CheckContext(runs=[], failures=["prefill 1 raised: boom"]), "P")
    assert result.verdict == NOT_RUN and "boom" in result.message


# -- chunk-selection --------------------------------------------------------------------------


def test_chunk_selection_holds_on_whole_top_chunks() -> None:
    kept = [*range(0, 4), *range(8, 12)]  # chunks 0 and 2 of 4, K = int(4 × 0.5) = 2
    scores = ((tuple(1.0 if p < 4 or 8 <= p < 12 else 0.0 for p in range(L)),) * 2,)
    result = check("chunk-selection", [run([layer(kept, scores=scores)], facts={"chunk_length": 4})])
    assert result.verdict == HOLDS


def test_chunk_selection_breaks_on_partial_chunks_with_numbers() -> None:
    result = check("chunk-selection", [run([layer([0, 1, 2, 3, 8, 9])], facts={"chunk_length": 4})])
    assert result.verdict == VIOLATED and (result.expected, result.measured) == (8, 6)
    assert "positions 10–11 missing" in result.message and result.where["layer"] == 0


def test_chunk_selection_breaks_on_the_chunk_count_and_on_heads_and_on_rank() -> None:
    one = check("chunk-selection", [run([layer(range(4))], facts={"chunk_length": 4})])
    assert one.verdict == VIOLATED and "the paper's rule gives 2 chunks of 4 (8 positions)" in one.message
    heads = check("chunk-selection", [run([layer([range(8), range(8, 16)])], facts={"chunk_length": 4})])
    assert heads.verdict == VIOLATED and "KV heads keep different positions" in heads.message
    # chunk 1 scores best but chunks 0 and 2 are kept
    scores = ((tuple(5.0 if 4 <= p < 8 else 1.0 for p in range(L)),) * 2,)
    rank = check("chunk-selection", [run([layer([*range(4), *range(8, 12)], scores=scores)], facts={"chunk_length": 4})])
    assert rank.verdict == VIOLATED and "dropped chunk 1 scores 10" in rank.message  # head-summed, as the paper sums heads


# -- observation-window -----------------------------------------------------------------------


def test_observation_window() -> None:
    facts = {"window_size": 4}
    assert check("observation-window", [run([layer([0, 1, 2, 3, 12, 13, 14, 15])], facts=facts)]).verdict == HOLDS
    broken = check("observation-window", [run([layer([0, 1, 2, 3, 4, 12, 13, 15])], facts=facts)])
    assert broken.verdict == VIOLATED and (broken.expected, broken.measured) == (4, 3)
    assert "dropped 14" in broken.message and broken.figures[0]["kind"] == "step"
    short = check("observation-window", [run([layer([13, 14])], facts=facts)])
    assert short.verdict == NOT_APPLICABLE and "budget is below the window" in short.message
    # a budget below w in one run is said beside a verdict from the others
    mixed = check("observation-window", [run([layer([13, 14])], facts=facts),
                                          run([layer([0, 12, 13, 14, 15])], facts=facts)])
    assert mixed.verdict == HOLDS and "not applicable in 1" in mixed.message


# -- attention-sinks --------------------------------------------------------------------------


def test_attention_sinks() -> None:
    assert check("attention-sinks", [run([layer([0, 1, 12, 13, 14, 15])], facts={"n_sink": 2})]).verdict == HOLDS
    sinkless = check("attention-sinks", [run([layer([0, 11, 12, 13, 14, 15])], facts={"n_sink": 2})])
    assert sinkless.verdict == VIOLATED and sinkless.expected == [2, 4] and sinkless.measured == [1, 5]
    # SimLayerKV states its recent count: one short is a violation
    short = check("attention-sinks", [run([layer([0, 1, 13, 14, 15])], facts={"n_initial": 2, "n_recent": 4})])
    assert short.verdict == VIOLATED and (short.expected, short.measured) == ([2, 4], [2, 3])


# -- recent-window ----------------------------------------------------------------------------


def test_recent_window() -> None:
    assert check("recent-window", [run([layer([0, 2, 4, 6, 12, 13, 14, 15])])], {"share": 0.5}).verdict == HOLDS
    broken = check("recent-window", [run([layer(range(8))])], {"share": 0.5})
    assert broken.verdict == VIOLATED and (broken.expected, broken.measured) == (4, 0)


# -- pyramid-budget ---------------------------------------------------------------------------


def budgets_run(budgets, ratio=0.5):
    return run([layer(range(L - n, L)) for n in budgets], ratio=ratio)


def test_pyramid_budget() -> None:
    assert check("pyramid-budget", [budgets_run([12, 10, 6, 4])], {"beta": 2}).verdict == HOLDS  # sum 32 = 4 × 8
    flat = check("pyramid-budget", [budgets_run([8, 8, 8, 8])], {"beta": 2})
    assert flat.verdict == VIOLATED and flat.measured == [8, 8, 8, 8] and flat.expected == [12, 9, 7, 4]
    assert "the budget is flat" in flat.message and flat.figures[0]["series"]["measured"] == [8, 8, 8, 8]
    rising = check("pyramid-budget", [budgets_run([10, 12, 6, 4])], {"beta": 2})
    assert rising.verdict == VIOLATED and "layer 1 keeps 12 positions, more than layer 0 (10)" in rising.message
    total = check("pyramid-budget", [budgets_run([14, 12, 10, 8])], {"beta": 2})
    assert total.verdict == VIOLATED and (total.expected, total.measured) == (32, 44)


# -- head-budget ------------------------------------------------------------------------------


def heads_run(counts):
    return run([LayerObservation(1, ((tuple(range(c)) for c in counts),), L, kept_lengths=(tuple(counts),))
                for _ in range(2)])


def test_head_budget() -> None:
    assert check("head-budget", [heads_run((12, 4))], {"alpha_safeguard": 0.2}).verdict == HOLDS
    equal = check("head-budget", [heads_run((8, 8))], {"alpha_safeguard": 0.2})
    assert equal.verdict == VIOLATED and equal.measured == [8, 8] and "same count" in equal.message
    floor = check("head-budget", [heads_run((16, 0))], {"alpha_safeguard": 0.2})
    assert floor.verdict == VIOLATED and (floor.expected, floor.measured) == (1, 0)
    total = check("head-budget", [heads_run((12, 6))], {"alpha_safeguard": 0.2})
    assert total.verdict == VIOLATED and (total.expected, total.measured) == (16, 18)


# -- score-topk -------------------------------------------------------------------------------


def test_score_topk() -> None:
    scores = ((tuple(float(p) for p in range(L)),) * 2,)
    assert check("score-topk", [run([layer(range(8, 16), scores=scores)])]).verdict == HOLDS
    worst = check("score-topk", [run([layer(range(8), scores=scores)])])
    assert worst.verdict == VIOLATED and (worst.expected, worst.measured) == (8, 0)
    assert "kept position 0 scores 0" in worst.message
    # ties at the threshold may go either way
    tied = ((tuple(1.0 for _ in range(L)),) * 2,)
    assert check("score-topk", [run([layer(range(8), scores=tied)])]).verdict == HOLDS


# -- kept-fraction ----------------------------------------------------------------------------


def test_kept_fraction() -> None:
    memory = (2 * 2 * L * 4, 2 * 2 * 8 * 4)
    assert check("kept-fraction", [run([layer(range(8), memory=memory)])]).verdict == HOLDS
    over = check("kept-fraction", [run([layer(range(12))])])
    assert over.verdict == VIOLATED and (over.expected, over.measured) == (0.5, 0.75)
    # masked entries leave attention but not memory: AdaKV keeps 100% of the cache while reporting 0.5
    masked = LayerObservation(1, ((tuple(range(8)), tuple(range(8))),), L, kept_lengths=((8, 8),),
                              memory=(2 * 2 * L * 4, 2 * 2 * L * 4))
    memory_kept = check("kept-fraction", [run([masked], facts={"compression_ratio": 0.5})])
    assert memory_kept.verdict == VIOLATED and (memory_kept.expected, memory_kept.measured) == (0.5, 1.0)
    assert "100.0% of its keys' and values' memory" in memory_kept.message
    assert check("kept-fraction", [run([layer(range(8))], ratio=None)]).verdict == NOT_APPLICABLE


# -- decode-compression -----------------------------------------------------------------------


def step(length: int) -> StepObservation:
    return StepObservation(rows=((length, length),), masked=((0, 0),))


def decode_run(prefill: int, lengths, compressed: bool = True, facts=None) -> RunObservation:
    kept = range(prefill) if compressed else range(L)
    return run([layer(kept, length=L if compressed else prefill, decode=[step(n) for n in lengths])],
               steps=len(lengths), facts=facts)


def test_decode_compression_fixed_size() -> None:
    assert check("decode-compression", [decode_run(8, [8] * 8)], {"mode": "fixed-size"}).verdict == HOLDS
    grows = check("decode-compression", [decode_run(8, range(9, 17))], {"mode": "fixed-size"})
    assert grows.verdict == VIOLATED and (grows.expected, grows.measured) == (8, 16)
    assert "grew from 8 entries after the prefill to 16 after 8 decoding steps" in grows.message
    few = check("decode-compression", [decode_run(8, [8] * 3)], {"mode": "fixed-size"})
    assert few.verdict == NOT_APPLICABLE and "only 3 decoding steps" in few.message


def test_decode_compression_interval_and_evicts() -> None:
    facts = {"compression_interval": 4, "target_size": 6}
    good = check("decode-compression", [decode_run(16, [17, 18, 19, 6, 7, 8, 9, 6], compressed=False, facts=facts)],
                 {"mode": "interval"})
    assert good.verdict == HOLDS and "steps 4, 8" in good.message
    never = check("decode-compression", [decode_run(16, range(17, 25), compressed=False, facts=facts)],
                  {"mode": "interval"})
    assert never.verdict == VIOLATED and "never compressed" in never.message
    wrong = check("decode-compression", [decode_run(16, [17, 18, 19, 9, 10, 11, 12, 9], compressed=False,
                                                    facts=facts)], {"mode": "interval"})
    assert wrong.verdict == VIOLATED and (wrong.expected, wrong.measured) == (6, 9)
    evicts = check("decode-compression", [decode_run(8, [9, 9, 10, 10, 11, 11, 12, 12])], {"mode": "evicts"})
    assert evicts.verdict == HOLDS
    keeps = check("decode-compression", [decode_run(8, range(9, 17))], {"mode": "evicts"})
    assert keeps.verdict == VIOLATED


@pytest.mark.parametrize("mechanism", all_mechanisms(), ids=lambda m: m.id)
def test_every_check_survives_a_run_without_layers(mechanism) -> None:
    result = mechanism.check(CheckContext(runs=[run([])]), "P")
    assert result.verdict in (NOT_APPLICABLE, VIOLATED, HOLDS)


def test_a_flat_budget_in_kvpress_fallback_range_says_so_and_is_still_violated() -> None:
    from kvaudit.rules.claim_pyramid_budget import kvpress_pyramid

    # kvpress's condition on the committed report's grid (window_size 64, beta 20): only ratio 0.5 builds a pyramid
    for length in (512, 4096):
        assert kvpress_pyramid(length, 0.5, 64, 20)[2]
        assert not kvpress_pyramid(length, 0.8, 64, 20)[2] and not kvpress_pyramid(length, 0.9, 64, 20)[2]
    assert [round(n) for n in kvpress_pyramid(512, 0.8, 64, 20)[:2]] == [200, 5]
    # L = 16 at ratio 0.75: a pyramid from 6 down to 2 does not fit above window_size 4: kvpress's fallback
    flat = check("pyramid-budget", [run([layer(range(12, 16))] * 4, ratio=0.75, facts={"window_size": 4})], {"beta": 2})
    assert flat.verdict == VIOLATED and "the budget is flat" in flat.message
    assert "documented fallback of kvpress's PyramidKVPress" in flat.message and "window_size (4)" in flat.message
    assert "from 6 down to 2 positions" in flat.message
    # the same flat budget where kvpress would build its pyramid: no excuse is offered
    plain = check("pyramid-budget", [run([layer(range(12, 16))] * 4, ratio=0.75, facts={"window_size": 1})], {"beta": 2})
    assert plain.verdict == VIOLATED and "fallback" not in plain.message
    unknown = check("pyramid-budget", [budgets_run([8, 8, 8, 8])], {"beta": 2})  # no window_size: nothing said
    assert unknown.verdict == VIOLATED and "fallback" not in unknown.message


# -- kept-fraction: the press's granularity ----------------------------------------------------


def test_kept_fraction_of_a_chunked_press_is_judged_by_whole_chunks() -> None:
    # L = 16, ratio 0.5: budget 8; chunks of 3 (the last one holds 1): K = 2 or 3 -> 6, 9, 4 (2 + short) or 7.
    facts = {"chunk_length": 3}
    for kept in (range(6), range(9), [0, 1, 2, 15], range(7)):
        assert check("kept-fraction", [run([layer(kept)], facts=facts)]).verdict == HOLDS, list(kept)
    odd = check("kept-fraction", [run([layer(range(5))], facts=facts)])
    assert odd.verdict == VIOLATED and "not explained by the chunking" in odd.message and odd.measured == 5
    # its observe window of 2 may come on top of the chunks
    assert check("kept-fraction", [run([layer(range(11))], facts={**facts, "window_size": 2})]).verdict == HOLDS


def test_kept_fraction_of_a_press_that_compresses_each_chunk_on_its_own_is_rounded_chunk_by_chunk() -> None:
    # FINCH's ChunkPress scores each chunk of 3 separately (6 score() calls for L = 16): chunks 3,3,3,3,3,1 at
    # ratio 0.5 keep 1 or 2 each and 0 or 1 of the last, so 5 to 11 in all (kvpress 0.5.5: 408 of 4096 at 0.9).
    facts = {"chunk_length": 3}
    for kept in (range(5), range(8), range(11)):
        result = check("kept-fraction", [run([replace(layer(kept), score_calls=6)], facts=facts)])
        assert result.verdict == HOLDS and "compresses on its own" in result.message, list(kept)
    result = check("kept-fraction", [run([replace(layer(range(4)), score_calls=6)], facts=facts)])
    assert result.verdict == VIOLATED and "compresses each chunk of 3 on its own, which gives 5–11" in result.message


# -- batch-independence and deterministic (contracts read the probes) --------------------------


def probe(kind: str, layers, rows=None, ratio=0.5) -> RunObservation:
    observation = run(layers, ratio=ratio)
    observation.probe, observation.rows = kind, rows
    return observation


def test_batch_independence_compares_each_row_with_the_row_alone() -> None:
    together = run([layer([[0, 1, 2, 3], [4, 5, 6, 7]], rows=2)], batch=2)
    together.layers[0] = LayerObservation(score_calls=1, original_length=L,
                                          kept=(((0, 1, 2, 3), (4, 5, 6, 7)), ((8, 9, 10, 11), (12, 13, 14, 15))))
    alone = [probe("alone", [layer([[0, 1, 2, 3], [4, 5, 6, 7]])], rows=(0,)),
             probe("alone", [layer([[8, 9, 10, 11], [12, 13, 14, 15]])], rows=(1,))]
    mechanism = mechanism_by_id("batch-independence")
    assert mechanism.check(CheckContext(runs=[together], probes=alone), "P").verdict == HOLDS
    # row 1 keeps what row 0 chose: a different selection from the one it makes alone
    copied = run([layer([[0, 1, 2, 3], [4, 5, 6, 7]], rows=2)], batch=2)
    result = mechanism.check(CheckContext(runs=[copied], probes=alone), "P")
    assert result.verdict == VIOLATED and result.measured == 0.0 and result.where["row"] == 1
    assert "1 of 2 (layer, row) pairs" in result.message and "batch-row-0" in result.message
    no_batch = mechanism.check(CheckContext(runs=[run([layer(range(8))])], probes=alone), "P")
    assert no_batch.verdict == NOT_APPLICABLE


def test_deterministic_compares_the_first_prompt_run_again() -> None:
    first = run([layer(range(8))])
    mechanism = mechanism_by_id("deterministic")
    same = mechanism.check(CheckContext(runs=[first], probes=[probe("repeat", [layer(range(8))])]), "P")
    assert same.verdict == HOLDS
    other = mechanism.check(CheckContext(runs=[first], probes=[probe("repeat", [layer(range(4, 12))])]), "P")
    assert other.verdict == VIOLATED and other.measured == round(4 / 12, 4) and "take a seed" in other.message


def test_batch_independence_does_not_judge_a_press_that_is_random_for_the_same_prompt() -> None:
    # RandomPress, Compactor's sketches: the batch row differs from the row alone, but so does the row run twice
    first = run([layer(range(8))])
    copied = run([layer([[0, 1, 2, 3], [4, 5, 6, 7]], rows=2)], batch=2)
    alone = [probe("alone", [layer([[8, 9, 10, 11], [12, 13, 14, 15]])], rows=(0,))]
    mechanism = mechanism_by_id("batch-independence")
    random = [*alone, probe("repeat", [layer(range(4, 12))])]
    result = mechanism.check(CheckContext(runs=[first, copied], probes=random), "P")
    assert result.verdict == NOT_APPLICABLE and "`deterministic` is violated" in result.message
    steady = [*alone, probe("repeat", [layer(range(8))])]
    assert mechanism.check(CheckContext(runs=[first, copied], probes=steady), "P").verdict == VIOLATED


def test_layer_similarity_holds_breaks_or_says_inconclusive_by_the_spread() -> None:
    def similarity(kind: str, seed: int, layers) -> RunObservation:
        observation = run([layer(kept) for kept in layers])
        observation.probe, observation.seed = kind, seed
        return observation

    same, apart, overlap = [range(8), range(8)], [range(8), range(8, 16)], [range(8), range(4, 12)]  # J 1, 0, 1/3
    first = run([layer(range(8))], facts={"trained_weights": True})

    def verdict(press_layers, token_layers):
        probes = [similarity("similarity", seed, press_layers[seed]) for seed in range(4)]
        probes += [similarity("similarity-token", seed, token_layers[seed]) for seed in range(4)]
        return mechanism_by_id("layer-similarity").check(CheckContext(runs=[first], probes=probes), "P")

    assert verdict([same] * 4, [apart] * 4).verdict == HOLDS
    assert verdict([apart] * 4, [same] * 4).verdict == VIOLATED
    # gaps +2/3, -1/3, +2/3, -1/3: a mean inside the spread is no verdict either way
    mixed = verdict([same, apart, same, apart], [overlap] * 4)
    assert mixed.verdict == NOT_APPLICABLE and "inconclusive" in mixed.message


# -- score-formula ------------------------------------------------------------------------------


def test_score_formula_compares_top_k_with_the_recomputed_formula() -> None:
    press_scores = tuple(float(p) for p in range(L))
    same = tuple(2.0 * p for p in range(L))  # another scale, the same ranking
    reversed_ = tuple(float(-p) for p in range(L))
    params = {"formula": "key-norm"}

    def with_reference(reference) -> RunObservation:
        observed = run([layer(range(8, 16), scores=((press_scores,) * 2,))])
        observed.layers[0].references["score-formula"] = ((reference,) * 2,)
        return observed

    assert check("score-formula", [with_reference(same)], params).verdict == HOLDS
    broken = check("score-formula", [with_reference(reversed_)], params)
    assert broken.verdict == VIOLATED and broken.measured == 0.0 and "key-norm formula" in broken.message
    unknown = check("score-formula", [with_reference(same)], {"formula": "no-such"})
    assert unknown.verdict == NOT_APPLICABLE


def test_top_agreement_counts_ties_with_the_cut_either_way() -> None:
    from kvaudit.rules.claim_score_formula import top_agreement

    assert top_agreement([3.0, 2.0, 1.0, 0.0], [3.0, 1.0, 1.0, 0.0], 2) == 1.0  # position 1 ties with 2
    assert top_agreement([3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0], 2) == 0.0


# -- protected-positions and layer-budget -------------------------------------------------------


def test_protected_positions() -> None:
    params = {"first": ("n_sink",), "last": ("window_size",)}
    facts = {"n_sink": 2, "window_size": 3}
    assert check("protected-positions", [run([layer([0, 1, 5, 9, 13, 14, 15])], facts=facts)], params).verdict == HOLDS
    lost = check("protected-positions", [run([layer([0, 5, 6, 9, 13, 14, 15])], facts=facts)], params)
    assert lost.verdict == VIOLATED and (lost.expected, lost.measured) == ([2, 3], [1, 3]) and "1" in lost.message
    # a press of one of the method's scorers (Compactor's LeverageScorePress) is not held to the method's positions
    parts = {**params, "scorer_parts": {"LeverageScorePress": "approximate_leverage_scores"}}
    scorer = check("protected-positions", [run([layer([0, 5, 6, 9, 13, 14, 15])],
                                               facts={**facts, "press_class": "LeverageScorePress"})], parts)
    assert scorer.verdict == NOT_APPLICABLE and "approximate_leverage_scores" in scorer.message
    method = check("protected-positions", [run([layer([0, 5, 6, 9, 13, 14, 15])],
                                               facts={**facts, "press_class": "CompactorPress"})], parts)
    assert method.verdict == VIOLATED


def test_layer_budget() -> None:
    uneven = run([layer(range(10)), layer(range(6))])  # 16 of 32 entries per head: one budget, split unevenly
    assert check("layer-budget", [uneven]).verdict == HOLDS
    even = check("layer-budget", [run([layer(range(8)), layer(range(8))])])
    assert even.verdict == VIOLATED and "split evenly" in even.message
    over = check("layer-budget", [run([layer(range(12)), layer(range(10))])])
    assert over.verdict == VIOLATED and over.measured == round(22 / 32, 4)
    # a batch of 2 of which the press kept one row: kept-fraction's finding, not a budget the rule can read
    dropped = check("layer-budget", [run([layer(range(10)), layer(range(6))], batch=2)])
    assert dropped.verdict == NOT_APPLICABLE and "dropped whole rows" in dropped.message


# -- channel-pruning --------------------------------------------------------------------------


def test_channel_pruning() -> None:
    criterion = (0.1, 0.5, 0.2, 0.9)  # channels 0 and 2 have the least energy
    params = {"recent": 2}

    def pruned(lost, whole) -> RunObservation:
        observed = run([layer(range(L))], facts={"key_channel_compression_ratio": 0.5})
        observed.layers[0] = LayerObservation(score_calls=0, kept=((tuple(range(L)),),), original_length=L,
                                              pruned_channels=((tuple(lost),),), whole=((tuple(whole),),),
                                              channel_reference=((criterion,),))
        return observed

    assert check("channel-pruning", [pruned([0, 2], [14, 15])], params).verdict == HOLDS
    wrong = check("channel-pruning", [pruned([0, 1], [14, 15])], params)
    assert wrong.verdict == VIOLATED and "channels 1" in wrong.message
    recent = check("channel-pruning", [pruned([0, 2], [])], params)
    assert recent.verdict == VIOLATED and "of the last 2 positions" in recent.message
    count = check("channel-pruning", [pruned([0], [14, 15])], params)
    assert count.verdict == VIOLATED and (count.expected, count.measured) == (2, 1)


def test_a_claim_the_tiny_model_cannot_show_is_not_checkable_with_the_reason() -> None:
    from kvaudit.mechanism import Claimant
    from kvaudit.model import NOT_CHECKABLE
    from kvaudit.tracer.child.claimcheck import ClaimToCheck, check_claims, not_run

    claim = ClaimToCheck(mechanism_by_id("kept-fraction"), {}, "Paper", "the scores come from trained filters")
    (checked,) = check_claims([claim], [run([layer(range(8))])], [])
    assert checked.verdict == NOT_CHECKABLE and "trained filters" in checked.message
    (stopped,) = not_run([claim], "the press could not run")
    assert stopped.verdict == NOT_CHECKABLE  # never turned into not-run
    assert Claimant("somewhere", not_checkable="why").not_checkable == "why"
