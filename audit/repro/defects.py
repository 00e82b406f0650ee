"""The tracer's defects (``crash``, ``batch-row-0``, ``stale-indices``) as plain code, for the reproductions.

A defect has no mechanism module (the tracer decides it: :mod:`kvaudit.tracer.verdicts`), so its rule
lives here, in the form of :meth:`kvaudit.mechanism.Mechanism.repro_rule`. A defect carries no cell
of the grid, only a message: its script walks the grid's ratios (``RATIOS``, each on a fresh press) as
the tracer did, and stops at the first one that shows it.
"""

from __future__ import annotations

from ..mechanism import ReproRule
from ..tracer.verdicts import BATCH_ROW_0, CRASH, STALE_INDICES

CRASH_RULE = '''
def check(model, new_press):
    """A press runs kvaudit's grid without raising: for each ratio, a fresh press takes the grid's prefills in
    order (each followed by DECODE_STEPS greedy steps) under ATTENTION; the first prompt also under
    ALSO_ATTENTION, when the tracer ran one."""
    runs = [(ATTENTION, ratio, number, prompt) for ratio in RATIOS for number, prompt in enumerate(PLAN, start=1)]
    if ALSO_ATTENTION is not None:
        runs.append((ALSO_ATTENTION, RATIOS[0], 1, PLAN[0]))
    press = None
    for attention, ratio, number, (tokens, rows, seed) in runs:
        if number == 1:
            press = new_press(ratio)  # one press per ratio takes the prefills in order
        model.set_attn_implementation(attention)
        ratio_text = "" if ratio is None else f", ratio {ratio:g}"
        label = f"prefill {number} ({tokens}x{rows}{ratio_text}, {attention} attention) or its decoding steps"
        try:
            prefill(model, press, make_prompt(tokens, rows, seed), decode_steps=DECODE_STEPS, seed=seed)
        except Exception as error:  # noqa: BLE001 - the press raised: the finding
            return False, "the grid runs without raising", f"{label} raised {type(error).__name__}: {error}"
        finally:
            model.set_attn_implementation(ATTENTION)
    return True, "the grid runs without raising", f"all {len(runs)} prefills and their decoding steps ran"
'''

BATCH_ROW_0_RULE = '''
def check(model, new_press):
    """kvpress's BasePress contract: each row of a batch is compressed by its own prompt. Rows holding different
    prompts that keep identical positions on every compressed layer follow one row's selection (row 0), unless
    the selection reads no prompt at all (another prompt, alone, keeps those very positions too)."""
    for ratio in RATIOS:
        batch = prefill(model, new_press(ratio), make_prompt(TOKENS, BATCH, PROMPT_SEED))
        single = prefill(model, new_press(ratio), make_prompt(TOKENS, 1, PLAN[0][2]))
        compressed, identical, like_single = [], [], []
        for layer in range(len(batch.keys)):
            kept = kept_positions(batch, layer)
            if all(len(head) == TOKENS for row in kept for head in row):
                continue  # not compressed
            compressed.append(layer)
            if all(row == kept[0] for row in kept[1:]):
                identical.append(layer)
            if kept_positions(single, layer)[0] == kept[0]:
                like_single.append(layer)
        if compressed and identical == compressed and like_single != compressed:
            ratio_text = "" if ratio is None else f" at ratio {ratio:g}"
            return (False, f"the {BATCH} rows (different prompts) keep positions of their own",
                    f"{TOKENS}x{BATCH}{ratio_text}: they keep identical positions on all {len(compressed)} "
                    "compressed layers, which another prompt alone does not keep")
    return True, f"the {BATCH} rows keep positions of their own", "they differ on some compressed layer at every ratio"
'''

STALE_INDICES_RULE = '''
def check(model, new_press):
    """A press's selection belongs to its prompt: on one press, each prefill of the grid (in order) keeps what a
    fresh press keeps for the same prompt, on the layers whose positions equal an earlier prefill's; a prefill
    that raises only after earlier ones is stale state too."""
    for ratio in RATIOS:
        press, earlier = new_press(ratio), []
        for number, (tokens, rows, seed) in enumerate(PLAN, start=1):
            ids = make_prompt(tokens, rows, seed)
            try:
                run = prefill(model, press, ids, seed=seed)
            except Exception as error:  # noqa: BLE001 - stale state only if a fresh press passes
                try:
                    prefill(model, new_press(ratio), ids, seed=seed)
                except Exception:  # noqa: BLE001 - a fresh press raises too: a crash, not stale state
                    break
                return (False, "each prefill behaves as on a fresh press",
                        f"prefill {number} ({tokens}x{rows}) raised after earlier ones ({error}); a fresh press passes")
            kept = [kept_positions(run, layer)[0] for layer in range(len(run.keys))]
            matching = [layer for layer, positions in enumerate(kept) if positions in earlier]
            if matching:
                fresh = prefill(model, new_press(ratio), ids, seed=seed)
                stale = [layer for layer in matching if kept_positions(fresh, layer)[0] != kept[layer]]
                if stale:
                    return (False, "each prefill keeps what a fresh press keeps",
                            f"prefill {number} ({tokens}x{rows}) kept an earlier prefill's positions on layers "
                            f"{stale}; a fresh press keeps others")
            earlier += [positions for positions in kept if any(len(head) < tokens for head in positions)]
    return True, "each prefill keeps what a fresh press keeps", "no prefill kept an earlier one's positions"
'''

RULES = {
    CRASH: ReproRule(CRASH_RULE),
    BATCH_ROW_0: ReproRule(BATCH_ROW_0_RULE, rules=("KVA201",)),
    STALE_INDICES: ReproRule(STALE_INDICES_RULE, rules=("KVA104",)),
}
# What each defect breaks, in one line (the drafts' rule), and how a title says the press does it.
TITLES = {
    CRASH: "raises on kvaudit's tiny model",
    BATCH_ROW_0: "applies batch row 0's selection to every row of a batch",
    STALE_INDICES: "keeps the indices of an earlier prompt",
}
STATEMENTS = {
    CRASH: "a press runs kvaudit's grid (every prefill and its decoding steps) without raising",
    BATCH_ROW_0: "kvpress's BasePress contract: each row of a batch is compressed by its own prompt",
    STALE_INDICES: "a press's selection belongs to its prompt: a prefill keeps what a fresh press keeps",
}


def defect_rule(defect_id: str) -> ReproRule | None:
    return RULES.get(defect_id)
