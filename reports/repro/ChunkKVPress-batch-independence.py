#!/usr/bin/env python3
"""ChunkKVPress breaks batch independence (`batch-independence`), as claimed by the kvpress BasePress contract

A standalone reproduction written by kvaudit (kvaudit 0.1.0; kvpress 0.5.5; transformers 5.2.0; torch
2.13.0+cpu). It imports torch, transformers and kvpress only. It rebuilds kvaudit's tiny model from
its config and seed, runs the press on the cell of kvaudit's grid that shows the finding, and checks
the rule with the code that follows the constants (written by kvaudit.rules.claim_batch_independence).

    python ChunkKVPress-batch-independence.py                 # the press kvaudit traced
    python ChunkKVPress-batch-independence.py --press "EXPR"  # another press, e.g. a fixed one (kvpress's names in scope)

It prints what the rule expects and what the press did (`expected`, `observed`), and exits 1 when
the rule is broken, 0 when it holds (or does not apply), 2 when it cannot check (a bad --press).
"""

import argparse
import contextlib
import importlib.util
import math
import os
import sys
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded

import kvpress  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import DynamicCache  # noqa: E402

# -- what kvaudit traced --------------------------------------------------------------------------
# the press kvaudit traced (kvpress's names in scope)
PRESS = 'ChunkKVPress(press=SnapKVPress(compression_ratio=0.5, window_size=64, kernel_size=5), chunk_length=20)'
PRESS_MODULE = None  # the press's own file, when not kvpress's (its names in scope too)
RATIO_ATTRIBUTE = 'compression_ratio'  # the grid sets its ratio on this attribute
RATIO = 0.9  # the grid cell: its compression ratio (None: the press has none)
TOKENS = 512  # its prompt: length
BATCH = 2  # rows
PROMPT_SEED = 2  # and seed
ATTENTION = 'sdpa'  # the attention implementation the press ran under
ALSO_ATTENTION = None  # another one the tracer also ran the first prompt under (None: none)
DECODE_STEPS = 8  # greedy decoding steps after a prefill
DECODE_INSIDE = True  # decode inside `with press(model):`, as kvpress's pipeline
PLAN = [(512, 1, 0), (4096, 1, 1), (512, 2, 2)]  # the grid's prefills, in order on one press: (tokens, rows, seed)
RATIOS = [0.5, 0.8, 0.9]  # the grid's ratios, each on a fresh press
PARAMS = {}  # the paper's parameters, where the press has no setting of its own
VOCAB_SIZE = 4096


def build_model():
    """kvaudit's tiny llama: built from a config, random weights drawn after torch.manual_seed(0)."""
    config = transformers.LlamaConfig(
        num_hidden_layers=8, hidden_size=128, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=256, max_position_embeddings=65536, vocab_size=VOCAB_SIZE,
        attn_implementation=ATTENTION)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).to(device='cpu', dtype=torch.float32).eval()


# -- the rule (written by kvaudit.rules.claim_batch_independence) ------------------------------
def check(model, new_press):
    """kvpress's BasePress contract: one row's prompt cannot change another row's cache. Each row of a batch of
    different prompts keeps, on every layer and KV head, what it keeps when compressed alone on a fresh press:
    as many positions, and the same ones (Jaccard at least 0.95: batched and single forwards may round
    differently and swap near-tied positions at the edge of the budget)."""
    ids = make_prompt(TOKENS, BATCH, PROMPT_SEED)
    first, again = (prefill(model, new_press(), ids[:1], seed=seed) for seed in (PROMPT_SEED, PROMPT_SEED + 7919))
    if any(kept_positions(first, layer) != kept_positions(again, layer) for layer in range(len(first.keys))):
        return (None, "each row keeps what it keeps alone",
                "the same prompt run twice keeps other positions: a row's difference in the batch cannot be told "
                "from the press's randomness, so the rule does not apply")
    together = prefill(model, new_press(), ids)
    batch_kept = [kept_positions(together, layer) for layer in range(len(together.keys))]
    worst = None
    for row in range(BATCH):
        alone = prefill(model, new_press(), ids[row:row + 1])
        for layer in range(len(alone.keys)):
            for head, own in enumerate(kept_positions(alone, layer)[0]):
                kept = batch_kept[layer][row][head]
                jaccard = len(set(kept) & set(own)) / max(1, len(set(kept) | set(own)))
                if worst is None or (len(kept) == len(own), jaccard) < worst[:2]:
                    worst = (len(kept) == len(own), jaccard, f"layer {layer} row {row} head {head}: {len(kept)} "
                             f"positions kept in the batch, {len(own)} alone, Jaccard {jaccard:.3f}")
    same_count, jaccard, where = worst
    return (same_count and jaccard >= 0.95, "each row keeps what it keeps alone (equal counts, Jaccard >= 0.95)",
            f"the worst layer, row and head: {where}")


# -- the harness: the same in every reproduction kvaudit writes ----------------------------------
# A prefill runs as kvpress's pipeline runs it: inside `with press(model):`. Hooks only copy tensors and
# count calls, so they change nothing the press computes. kvaudit's tracer measures the same way.


def make_prompt(tokens, batch, seed):
    """kvaudit's prompts: random token ids, distinct within a row (no two positions hold the same token)."""
    generator = torch.Generator().manual_seed(seed)
    if tokens > VOCAB_SIZE:
        return torch.randint(0, VOCAB_SIZE, (batch, tokens), generator=generator)
    return torch.stack([torch.randperm(VOCAB_SIZE, generator=generator)[:tokens] for _ in range(batch)])


def build_press(expression=None, ratio=RATIO):
    """`--press EXPR` as given; without it, the press kvaudit traced, at `ratio`. kvpress's names are in scope, and
    the names of the press's own module when it is not kvpress's (they win, as in kvaudit's --press)."""
    namespace = {name: getattr(kvpress, name) for name in dir(kvpress) if not name.startswith("_")}
    if PRESS_MODULE is not None:
        spec = importlib.util.spec_from_file_location("press_module", PRESS_MODULE)
        module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up
        spec.loader.exec_module(module)
        namespace.update(vars(module))
    press = eval(expression or PRESS, namespace)  # noqa: S307 - the reader's own expression
    if expression is None and ratio is not None:
        setattr(press, RATIO_ATTRIBUTE, ratio)
    return press


def nested_presses(press):
    """The press and every press held in its fields (nested, in lists), outermost first."""
    found, pending = [], [press]
    while pending:
        current = pending.pop(0)
        if isinstance(current, kvpress.BasePress) and all(current is not p for p in found):
            found.append(current)
            for value in vars(current).values():
                pending.extend(value if isinstance(value, (list, tuple)) else [value])
    return found


def setting(press, *names, default=None):
    """The press's own value of the first of `names` it (or a nested press) has, else `default`."""
    for holder in nested_presses(press):
        for name in names:
            value = getattr(holder, name, None)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return value
    return default


class Run:
    """One prefill: the cache the press left and, per layer, what the press was given and did."""

    def __init__(self, layers):
        self.keys, self.values = [None] * layers, [None] * layers  # the cache before the press's hook ran
        self.inputs = [None] * layers  # (hidden_states, position_embeddings) the layer's attention was given
        self.score_calls = [0] * layers  # outermost score() calls during the prefill
        self.scores = [None] * layers  # the last score() output: (batch, kv_heads, length)
        self.masked = [None] * layers  # kvpress's masked_key_indices: entries attention no longer sees
        self.lengths = []  # [step][layer]: entries attention sees (batch row 0, KV head 0); step 0: the prefill
        self.cache = None
        self.decoding = False


def prefill(model, press, ids, decode_steps=0, seed=None):
    """Run `ids` through `press`, then `decode_steps` greedy steps; return a Run."""
    torch.manual_seed(PROMPT_SEED if seed is None else seed)  # a press that draws random numbers repeats itself
    attention = [layer.self_attn for layer in model.model.layers]
    for module in attention:
        module.masked_key_indices = None  # kvpress leaves the masks of an earlier run on the module
    run = Run(len(attention))

    def before_press(module, args, kwargs, output):  # registered first, so it runs before the press's hook
        i = module.layer_idx
        if run.keys[i] is None:  # the prefill's forward only
            layer = kwargs["past_key_values"].layers[i]
            run.keys[i], run.values[i] = layer.keys.clone(), layer.values.clone()
            run.inputs[i] = (kwargs["hidden_states"], kwargs["position_embeddings"])

    hooks = [m.register_forward_hook(before_press, with_kwargs=True, prepend=True) for m in attention]
    wrapped, depth = [], [0]
    for holder in nested_presses(press):  # count score() calls: an instance attribute shadows the method
        if callable(getattr(type(holder), "score", None)):
            def score(*args, _original=holder.score, **kwargs):
                depth[0] += 1
                try:
                    output = _original(*args, **kwargs)
                finally:
                    depth[0] -= 1
                module = args[0] if args else kwargs["module"]
                if depth[0] == 0 and not run.decoding:  # a scorer calling another counts once
                    run.score_calls[module.layer_idx] += 1
                    run.scores[module.layer_idx] = output.detach().double().clone()
                return output

            object.__setattr__(holder, "score", score)
            wrapped.append(holder)
    run.cache = DynamicCache()
    try:
        with torch.no_grad():
            with press(model):
                out = model(input_ids=ids, past_key_values=run.cache, use_cache=True, logits_to_keep=1)
            run.masked = [m.masked_key_indices for m in attention]
            run.lengths.append([visible(run, i, m.masked_key_indices) for i, m in enumerate(attention)])
            run.decoding = True
            with press(model) if DECODE_INSIDE else contextlib.nullcontext():  # kvpress's pipeline decodes so
                for step in range(decode_steps):
                    token = out.logits[:, -1].argmax(-1, keepdim=True)
                    position = torch.full_like(token, ids.shape[1] + step)
                    out = model(input_ids=token, past_key_values=run.cache, position_ids=position, use_cache=True,
                                logits_to_keep=1)
                    run.lengths.append([visible(run, i, m.masked_key_indices) for i, m in enumerate(attention)])
    finally:
        for hook in hooks:
            hook.remove()
        for holder in wrapped:
            vars(holder).pop("score", None)
    return run


def visible(run, layer, masked, row=0, head=0):
    """Entries of `layer`'s cache attention sees in one batch row and KV head: rows minus the masked ones."""
    rows = run.cache.layers[layer].keys.shape[2]
    if masked is None:
        return rows
    return rows - int(((masked[0] == row) & (masked[1] == head)).sum())


def match_rows(before, after):
    """For each row of `after`, the position of the identical row of `before` (-1: none is identical)."""
    position = {tuple(row): p for p, row in enumerate(before.tolist())}
    return [position.get(tuple(row), -1) for row in after.tolist()]


def row_positions(run, layer):
    """positions[row][head][i]: the prompt position of row i of `layer`'s cache (-1: no position is identical).

    A row is found by its key: keys carry their position (RoPE), so no two are alike. Where the press changed
    the keys (re-rotated them, zeroed channels), by its value.
    """
    keys, values = run.cache.layers[layer].keys, run.cache.layers[layer].values
    positions = []
    for b in range(keys.shape[0]):
        heads = []
        for h in range(keys.shape[1]):
            found = match_rows(run.keys[layer][b, h], keys[b, h])
            if -1 in found:
                by_value = match_rows(run.values[layer][b, h], values[b, h])
                found = [p if p >= 0 else v for p, v in zip(found, by_value)]
            heads.append(found)
        positions.append(heads)
    return positions


def kept_positions(run, layer):
    """kept[row][head]: the sorted prompt positions the press left in `layer`'s cache; entries kvpress masks
    (masked_key_indices) are dropped ones."""
    masked = set()
    if run.masked[layer] is not None:
        masked = set(zip(*(index.tolist() for index in run.masked[layer])))
    return [[sorted(p for i, p in enumerate(rows) if p >= 0 and (b, h, i) not in masked) for h, rows in enumerate(heads)]
            for b, heads in enumerate(row_positions(run, layer))]


def queries(model, run, layer):
    """The layer's queries (float64, batch x query heads x length x head_dim), as its attention computed them."""
    module = model.model.layers[layer].self_attn
    hidden, (cos, sin) = run.inputs[layer]
    q = module.q_proj(hidden).view(*hidden.shape[:2], -1, module.head_dim)
    if hasattr(module, "q_norm"):  # Qwen3 normalises queries per head before the rotary embedding
        q = module.q_norm(q)
    q = q.transpose(1, 2).double()
    half = q.shape[-1] // 2
    rotated = torch.cat((-q[..., half:], q[..., :half]), dim=-1)
    return q * cos.double().unsqueeze(1) + rotated * sin.double().unsqueeze(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--press", metavar="EXPR", help="a press to check instead, e.g. "
                        '"SnapKVPress(compression_ratio=0.5)" (kvpress\'s names are in scope)')
    expression = parser.parse_args().press
    try:
        build_press(expression)
    except Exception as error:  # noqa: BLE001 - a bad expression: one line, exit 2
        print(f"error: bad --press expression {expression!r}: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # as kvaudit's tracer: the same arithmetic, run after run
    model = build_model()
    try:
        holds, expected, observed = check(model, lambda ratio=RATIO: build_press(expression, ratio))
    except Exception:  # noqa: BLE001 - the press raised where the rule reads it: not a verdict (exit 2)
        traceback.print_exc()
        print("error: the press raised before the rule could be checked", file=sys.stderr)
        return 2
    print(f"expected: {expected}")
    print(f"observed: {observed}")
    if holds is None:  # the rule does not apply to this press (the check says why): nothing is broken
        print("the rule does not apply")
        return 0
    print("the rule holds" if holds else "the rule is broken")
    return 0 if holds else 1


if __name__ == "__main__":
    sys.exit(main())
