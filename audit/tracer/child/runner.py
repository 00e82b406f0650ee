"""Trace one press: the grid of runs, each a prefill and decoding steps; defects; the claims' checks.

Runs inside a forked worker child; returns a :class:`kvaudit.model.PressTrace`.

The grid: for each compression ratio of the options (or once, when the press has no ratio to set),
a fresh press instance goes through the prefills of :func:`kvaudit.tracer.options.run_plan`, in
order, each followed by greedy decoding steps inside the same ``with press(model):`` (as kvpress's
pipeline decodes). Before every run the model is put back as the press expects it: masks left by
an earlier run (``masked_key_indices``) are cleared and the attention implementation restored.
"""

from __future__ import annotations

import copy
import numbers
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

from ...model import Defect, Failure, PressTrace, RunTimings, TraceRun
from ...tinymodel import make_input_ids
from .. import errors, verdicts
from .build import BuildError, one_line, reachable_presses
from .claimcheck import ClaimToCheck, channel_function, check_claims, needs, not_run, reference_function
from .instrument import Instrumentation, RunRecorder, attention_modules
from .keptindices import map_rows
from ..observations import LayerObservation, RunObservation, StepObservation
from ...mechanism import QUALITY_FULL, QUALITY_MORE_REUSE, QUALITY_NO_REUSE, QUALITY_PRESS, SIMILAR, SIMILAR_TOKEN
from ...rules.claim_layer_index_reuse import REUSE_PARAMETERS
from ..options import RunSpec, TraceOptions, probe_plan, run_plan
from .settings import PressSettings

PressFactory = Callable[[], Any]


@dataclass
class RunSetup:
    """What every run of one press shares."""

    settings: PressSettings
    capture_scores: bool = False
    facts: tuple[str, ...] = ()
    decode_steps: int = 0
    attention: str = "sdpa"
    references: tuple[ClaimToCheck, ...] = ()  # claims whose formula is recomputed from score()'s inputs
    channels: tuple[ClaimToCheck, ...] = ()  # claims that read key-channel pruning
    heldout: bool = False  # prompts from the trained model's held-out text (--model trained)


# ---------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------


def prepare_model(model: nn.Module, attention: str) -> None:
    """Clear what an earlier run may have left: masks on the attention modules, a switched attention."""
    for module in attention_modules(model):
        module.masked_key_indices = None  # kvpress's eager attention never clears them itself
    if model.config._attn_implementation != attention:
        model.set_attn_implementation(attention)


def learned_structure() -> dict[str, str]:
    """What the trained model's attention shows, from the measurements recorded with it: structure -> evidence,
    "" when absent (``kvaudit.trained.measure``: heads with at least 0.2 of their attention there and 10x uniform)."""
    from ...trained import training_log

    final = training_log()["final"]
    sinks = final["attention_t512"]["sink_heads"]
    induction = final["induction_full_vocab"]["induction_heads"]
    largest_sink = max(max(row) for row in final["attention_t512"]["sink"])
    return {
        "sinks": f"{len(sinks)} sink heads" if sinks else "",
        "induction heads": f"{len(induction)} induction heads" if induction else "",
        "locality": "most attention on the last 64 positions",
        "why-not-sinks": f"no head puts 0.2 of its attention on the first position (at most {largest_sink:.3f})",
        "why-not-induction heads": "no head attends from a repeated segment to the token after its first occurrence",
    }


def _ids(tokens: int, batch: int, seed: int, vocab_size: int, heldout: bool) -> torch.Tensor:
    """Random distinct ids (random weights), or a window of the trained model's held-out text."""
    if heldout:
        from ...trained import heldout_prompts

        return heldout_prompts(tokens, batch, seed).long()
    return make_input_ids(tokens, batch, seed, vocab_size)


def prompt_ids(spec: RunSpec, vocab_size: int, setup: RunSetup, press: Any) -> torch.Tensor:
    """The run's prompt (some rows of a batch prompt, for a probe); FINCH's gets its delimiter token
    ``window`` tokens before the end."""
    batch = spec.prompt_batch or spec.batch
    rows = list(spec.rows) if spec.rows is not None else slice(None)
    delimiter = setup.settings.delimiter
    if not delimiter:
        return _ids(spec.tokens, batch, spec.seed, vocab_size, setup.heldout)[rows]
    token = vocab_size - 1
    setattr(press, delimiter["attribute"], token)
    # The other ids stay distinct (a prompt of `tokens - 1` ids below the delimiter's).
    ids = _ids(spec.tokens - 1, batch, spec.seed, vocab_size - 1, setup.heldout)[rows]
    at = spec.tokens - 1 - int(delimiter["window"])
    return torch.cat([ids[:, :at], torch.full((ids.shape[0], 1), token, dtype=ids.dtype), ids[:, at:]], dim=1)


def read_facts(press: Any, names: Sequence[str], learned: Sequence[str] = ()) -> dict[str, Any]:
    """The press's own settings by attribute name (nested presses searched outermost first), and its class.

    ``compression_ratio`` is read on the press itself only: it is the ratio the press reports.
    ``press_class`` is the press's class name (a paper's formula may have parts that presses implement
    on their own). ``learned`` names tensors the press holds (Q-filters, loaded from the Hub or a
    stand-in), read as float64 copies: a formula reads them as inputs, like the model's weights.
    """
    facts: dict[str, Any] = {"press_class": type(press).__name__}
    presses = reachable_presses(press)
    for name in learned:
        value = next((getattr(holder, name, None) for holder in presses
                      if isinstance(getattr(holder, name, None), (torch.Tensor, nn.Module))), None)
        if isinstance(value, torch.Tensor):
            facts[name] = value.detach().to(torch.float64, copy=True).cpu()
        elif value is not None:  # a learned module (KVzap's surrogate): a float64 copy, never the press's own
            facts[name] = copy.deepcopy(value).to(dtype=torch.float64, device="cpu").eval()
    for name in names:
        if name == "press_class":
            continue
        for holder in presses[:1] if name == "compression_ratio" else presses:
            try:
                value = getattr(holder, name)
            except Exception:  # noqa: BLE001 - a property that cannot answer yet (SimLayerKV before a run)
                continue
            if isinstance(value, bool) or isinstance(value, str):
                facts[name] = value
                break
            if isinstance(value, numbers.Number) or (isinstance(value, torch.Tensor) and value.numel() == 1):
                number = float(value)
                facts[name] = int(number) if isinstance(value, numbers.Integral) else number
                break
    return facts


def _scores(record_scores: torch.Tensor | None, shape: torch.Size) -> tuple | None:
    if record_scores is None or tuple(record_scores.shape) != tuple(shape[:3]):
        return None
    return tuple(tuple(tuple(head) for head in row) for row in record_scores.tolist())


def pruned_channels(original_keys: torch.Tensor, keys: torch.Tensor, positions: torch.Tensor) -> tuple[tuple, tuple]:
    """Per [row][head]: the key channels kept rows lost (zeroed where the key at that position was not), and the
    positions whose key lost none."""
    if keys.shape[:2] != original_keys.shape[:2] or keys.shape[-1] != original_keys.shape[-1]:
        return (), ()
    valid = positions >= 0
    before = original_keys.gather(2, positions.clamp(min=0).unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1]))
    zeroed = (keys == 0) & (before != 0) & valid.unsqueeze(-1)
    channels = tuple(tuple(tuple(int(c) for c in torch.nonzero(head).flatten().tolist()) for head in row)
                     for row in zeroed.any(dim=2))
    whole = tuple(tuple(tuple(sorted(int(p) for p, lost, ok in zip(pos, head_lost, head_ok) if ok and not lost))
                        for pos, head_lost, head_ok in zip(row_pos, row_lost, row_ok))
                  for row_pos, row_lost, row_ok in zip(positions.tolist(), zeroed.any(-1).tolist(), valid.tolist()))
    return channels, whole


def _prefill_layers(recorder: RunRecorder, cache: DynamicCache, modules: list[nn.Module], channels: bool = False
                    ) -> tuple[list[LayerObservation], list[torch.Tensor | None]]:
    """Every layer after the prefill, and the position of each of its cache rows (for decoding)."""
    layers: list[LayerObservation] = []
    maps: list[torch.Tensor | None] = []
    for index, record in enumerate(recorder.layers):
        layer = cache.layers[index] if index < len(cache.layers) else None
        if layer is None or record.original_keys is None:
            layers.append(LayerObservation(score_calls=record.score_calls, kept=(), original_length=0,
                                           compress_calls=record.compress_calls))
            maps.append(None)
            continue
        batch, heads, length, _ = record.original_keys.shape
        masked = getattr(modules[index], "masked_key_indices", None)
        row_map = map_rows(record.original_keys, record.original_values, torch.arange(length).expand(batch, heads, length),
                           layer.keys, layer.values, masked)
        maps.append(row_map.positions)
        lost, whole = pruned_channels(record.original_keys, layer.keys, row_map.positions) if channels else ((), ())
        reference = record.channel_reference
        layers.append(LayerObservation(
            score_calls=record.score_calls,
            kept=row_map.kept(),
            original_length=length,
            score_time_s=record.score_time_s,
            compress_time_s=record.compress_time_s,
            unmatched=row_map.unmatched,
            kept_lengths=row_map.lengths(),
            compress_calls=record.compress_calls,
            scores=_scores(record.scores, record.original_keys.shape),
            references={key: found for key, value in record.references.items()
                        if (found := _scores(value, record.original_keys.shape)) is not None},
            pruned_channels=lost,
            whole=whole,
            channel_reference=tuple(tuple(tuple(head) for head in row) for row in reference.tolist())
            if reference is not None and channels else (),
            memory=(record.original_keys.numel() + record.original_values.numel(), layer.keys.numel() + layer.values.numel()),
            ambiguous=row_map.ambiguous,
        ))
    return layers, maps


def _next_position(press: Any, cache: DynamicCache, prompt_positions: int) -> int:
    """Where decoding continues: after the prompt, or after the kept rows when keys were re-rotated (kvpress's pipeline)."""
    from kvpress import FinchPress, KeyRerotationPress

    for nested in reachable_presses(press):
        if isinstance(nested, KeyRerotationPress) or (isinstance(nested, FinchPress) and nested.rerotate_keys):
            return cache.get_seq_length()
    return prompt_positions


def _decode(model: nn.Module, press: Any, cache: DynamicCache, logits: torch.Tensor, recorder: RunRecorder,
            modules: list[nn.Module], maps: list[torch.Tensor | None], observation: RunObservation, steps: int,
            instrumentation: Instrumentation, inside: bool = True) -> None:
    """Greedy decoding steps inside ``with press(model):``; after each, map every layer's rows to positions."""
    if steps <= 0 or not observation.layers:
        return
    prompt = observation.layers[0].original_length
    position = _next_position(press, cache, prompt)
    device = logits.device
    next_ids = logits[:, -1].argmax(-1, keepdim=True)
    per_layer: list[list[StepObservation]] = [[] for _ in observation.layers]
    try:
        context = press(model) if inside else nullcontext()
        with context, instrumentation.after_press(recorder):
            for step in range(steps):
                recorder.start_step()
                for record in recorder.layers:
                    record.original_keys = record.original_values = None
                position_ids = torch.full((next_ids.shape[0], 1), position + step, dtype=torch.long, device=device)
                out = model(input_ids=next_ids, past_key_values=cache, position_ids=position_ids, use_cache=True,
                            logits_to_keep=1)
                for index, record in enumerate(recorder.layers):
                    if maps[index] is None or record.original_keys is None or index >= len(cache.layers):
                        continue
                    layer = cache.layers[index]
                    before = maps[index]
                    if record.original_keys.shape[2] == before.shape[2] + 1:
                        new = torch.full((*before.shape[:2], 1), prompt + step, dtype=before.dtype)
                        before = torch.cat([before, new], dim=2)
                    else:  # the cache changed between steps in a way the tracer did not see: positions unknown
                        before = torch.full((*record.original_keys.shape[:3],), -1, dtype=torch.long)
                    row_map = map_rows(record.original_keys, record.original_values, before, layer.keys, layer.values,
                                       getattr(modules[index], "masked_key_indices", None))
                    maps[index] = row_map.positions
                    per_layer[index].append(StepObservation(
                        rows=row_map.rows(), masked=row_map.masked(), score_calls=record.step_score_calls,
                        compress_calls=record.step_compress_calls,
                        kept=row_map.kept() if step == steps - 1 else (), unmatched=row_map.unmatched))
                observation.decode_steps = step + 1
                next_ids = out.logits[:, -1].argmax(-1, keepdim=True)
    except BaseException as error:  # noqa: BLE001 - the press raised while decoding: a finding, kept with the run
        observation.decode_error = one_line(error)
    observation.layers = [replace(layer, decode=tuple(steps_seen)) for layer, steps_seen in zip(observation.layers, per_layer)]


def observe_run(model: nn.Module, press: Any, spec: RunSpec, setup: RunSetup, ratio: float | None = None,
                decode: bool = True) -> RunObservation:
    """Run one prefill of ``spec`` (then the decoding steps) through ``press`` and observe every layer.

    The prefill runs inside ``with press(model):`` and is observed once the context is left (a press
    may finish its work there: KVCompose compresses on leaving). Decoding runs inside the context
    entered again, as kvpress's pipeline decodes with its decoding presses; every press's hooks
    thus see the decoding steps. The press's exception, if any, is caught and kept as the
    observation's ``error`` (prefill) or ``decode_error`` (decoding).
    """
    prepare_model(model, setup.attention)
    device = next(model.parameters()).device
    input_ids = prompt_ids(spec, model.config.vocab_size, setup, press).to(device)
    observation = RunObservation(tokens=spec.tokens, batch=spec.batch, seed=spec.seed, ratio=ratio)
    # Presses that draw random numbers (RandomPress) repeat themselves; a probe may ask for other draws.
    torch.manual_seed(spec.seed if spec.rng_seed is None else spec.rng_seed)
    cache = DynamicCache()
    learned = tuple(name for claim in setup.references for name in claim.mechanism.learned_facts)

    def facts() -> dict[str, Any]:  # read when the formula runs: a press loads its learned parts on entering
        return read_facts(press, setup.facts, learned)

    instrumentation = Instrumentation(model, press, capture_scores=setup.capture_scores,
                                      reference=reference_function(setup.references, facts),
                                      channels=channel_function(setup.channels, facts))
    modules = instrumentation.modules
    try:
        with torch.no_grad(), instrumentation.before_press() as recorder:
            with press(model), instrumentation.after_press(recorder):
                started = time.perf_counter()
                out = model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
                observation.prefill_time_s = time.perf_counter() - started
            observation.layers, maps = _prefill_layers(recorder, cache, modules, bool(setup.channels))
            observation.facts = read_facts(press, setup.facts)
            observation.facts["trained_weights"] = setup.heldout  # learned attention: checks of learned structure apply
            if setup.heldout:
                observation.facts["model_structure"] = learned_structure()
            _decode(model, press, cache, out.logits, recorder, modules, maps, observation,
                    setup.decode_steps if decode else 0, instrumentation, setup.settings.decode_inside)
    except BaseException as error:  # noqa: BLE001 - the press raised (sys.exit() too): a finding, not a tracer failure
        line = one_line(error)
        model_name = getattr(model.config, "name_or_path", "") or ""
        observation.error = errors.hub_failure(error, line, model_name) or line
        observation.failure = errors.press_failure(error, first_run=True)
    return observation


def _seconds(value: float) -> float:
    return round(value, 6)


def to_trace_run(observation: RunObservation) -> TraceRun:
    """The findings-model view of one completed run (Jaccards to 4 places, timings to the microsecond)."""
    layers = observation.layers
    steps = observation.decode_steps
    return TraceRun(
        tokens=observation.tokens,
        batch=observation.batch,
        score_calls=[layer.score_calls for layer in layers],
        kept=[layer.kept_count for layer in layers],
        reused_from=verdicts.reused_from(observation),
        compressed=[layer.compressed for layer in layers],
        jaccard=[None if j is None else round(j, 4) for j in verdicts.adjacent_jaccard(observation)],
        jaccard_matrix=verdicts.jaccard_matrix(observation),
        ratio=observation.ratio,
        compress_calls=[layer.compress_calls for layer in layers],
        decode_lengths=[[layer.decode[step].length if step < len(layer.decode) else 0 for layer in layers]
                        for step in range(steps)],
        timings=RunTimings(
            prefill_s=_seconds(observation.prefill_time_s),
            score_s=_seconds(sum(layer.score_time_s for layer in layers)),
            compress_s=_seconds(sum(layer.compress_time_s for layer in layers)),
            layer_score_s=[_seconds(layer.score_time_s) for layer in layers],
            layer_compress_s=[_seconds(layer.compress_time_s) for layer in layers],
        ),
    )


# ---------------------------------------------------------------------------------------------
# One press: the grid
# ---------------------------------------------------------------------------------------------


def ratio_axis(press: Any, attribute: str | None, ratios: Sequence[float]) -> list[float | None]:
    """The grid's ratios when ``press`` lets its ratio be set through ``attribute``; else ``[None]``."""
    if attribute is None or not hasattr(type(press), attribute) and attribute not in vars(press):
        return [None]
    try:
        setattr(press, attribute, ratios[0])
    except Exception:  # noqa: BLE001 - a read-only ratio (SimLayerKV, DMS): the press runs once per prompt
        return [None]
    return list(ratios)


def _build(factory: PressFactory, attribute: str | None, ratio: float | None) -> Any:
    press = factory()
    if ratio is not None and attribute is not None:
        setattr(press, attribute, ratio)
    return press


def _fresh(model: nn.Module, factory: PressFactory, spec: RunSpec, setup: RunSetup, ratio: float | None) -> RunObservation:
    try:
        return observe_run(model, _build(factory, setup.settings.ratio, ratio), spec, setup, ratio, decode=False)
    except BuildError as error:
        return RunObservation(tokens=spec.tokens, batch=spec.batch, seed=spec.seed, ratio=ratio, error=str(error))


# Held-out prompts the press and its token-level scorer each run, for the similarity of adjacent layers:
# several, so that a difference can be told from the run-to-run spread.
SIMILARITY_PROMPTS = 4


def token_baseline(press: Any) -> Any | None:
    """The token-level scorer a chunk press wraps (ChunkKV's SnapKV), as a press of its own; None when none."""
    from kvpress import ScorerPress

    nested = [p for p in reachable_presses(press)[1:] if isinstance(p, ScorerPress)]
    return copy.deepcopy(nested[0]) if nested else None


def _similarity_probes(model: nn.Module, factory: PressFactory, options: TraceOptions, setup: RunSetup,
                       ratio: float | None) -> list[RunObservation]:
    """The press, and the scorer it wraps at the same ratio, on :data:`SIMILARITY_PROMPTS` held-out prompts."""
    found = []
    for number in range(SIMILARITY_PROMPTS):
        spec = RunSpec(options.tokens, 1, options.seed + 1000 + number)
        try:  # the scorer comes out of a press built at the ratio: the budget it was given
            pair = ((SIMILAR, _build(factory, setup.settings.ratio, ratio)),
                    (SIMILAR_TOKEN, token_baseline(_build(factory, setup.settings.ratio, ratio))))
        except BuildError:
            return found
        for kind, press in pair:
            if press is None:
                continue
            observation = observe_run(model, press, spec, setup, ratio, decode=False)
            observation.probe = kind
            found.append(observation)
    return found


# The quality probes: held-out prompts, and the continuation whose next-token loss is measured after each.
QUALITY_PROMPTS, CONTINUATION = 4, 64


def _reuse_parameter(press: Any) -> tuple[Any, str] | None:
    """The (press or nested press, attribute) holding the layer-index reuse parameter (``n_reuse`` or an alias)."""
    for holder in reachable_presses(press):
        for name in REUSE_PARAMETERS:
            if isinstance(getattr(holder, name, None), int):
                return holder, name
    return None


def reuse_of(press: Any) -> int | None:
    """The press's reuse parameter; None when it has none."""
    found = _reuse_parameter(press)
    return getattr(*found) if found is not None else None


def with_reuse(press: Any, n_reuse: int) -> Any | None:
    """The press with its reuse parameter set to ``n_reuse`` (1: reuse switched off); None when it has none."""
    found = _reuse_parameter(press)
    if found is None:
        return None
    setattr(*found, n_reuse)
    return press


def continuation_loss(model: nn.Module, press: Any | None, ids: torch.Tensor, prefix: int) -> float:
    """Mean next-token loss (nats) of ``ids[:, prefix:]`` after the first ``prefix`` tokens were prefilled through
    ``press`` (kept whole when None); the continuation is read outside the press's context, as decoding is."""
    cache = DynamicCache()
    with torch.no_grad():
        with press(model) if press is not None else nullcontext():
            out = model(input_ids=ids[:, :prefix], past_key_values=cache, use_cache=True, logits_to_keep=1)
        logits = [out.logits[:, -1]]
        # One token at a time, as decoding reads the cache: layers the press left at different lengths need no mask.
        for position in range(prefix, ids.shape[1] - 1):
            out = model(input_ids=ids[:, position:position + 1], past_key_values=cache, use_cache=True,
                        position_ids=torch.full((ids.shape[0], 1), position, device=ids.device))
            logits.append(out.logits[:, -1])
    stacked = torch.stack(logits, dim=1).float()
    return float(torch.nn.functional.cross_entropy(stacked.flatten(0, 1), ids[:, prefix:].flatten()))


def _quality_probes(model: nn.Module, factory: PressFactory, options: TraceOptions, setup: RunSetup,
                    ratio: float | None) -> list[RunObservation]:
    """The continuation loss after the full prefix, the press's, and the press's without reuse, on held-out text."""
    from ...trained import heldout_prompts

    found = []
    prepare_model(model, setup.attention)
    for number in range(QUALITY_PROMPTS):
        seed = options.seed + 2000 + number
        ids = heldout_prompts(options.tokens + CONTINUATION, 1, seed).long().to(next(model.parameters()).device)
        try:
            built = _build(factory, setup.settings.ratio, ratio)
            reuse = reuse_of(built)
            variants = [(QUALITY_FULL, None, None), (QUALITY_PRESS, built, reuse)]
            if reuse is not None:  # the same press without reuse, and with twice its reuse
                variants += [(kind, with_reuse(_build(factory, setup.settings.ratio, ratio), n), n)
                             for kind, n in ((QUALITY_NO_REUSE, 1), (QUALITY_MORE_REUSE, 2 * reuse))]
        except BuildError:
            return found
        for kind, press, n_reuse in variants:
            observation = RunObservation(tokens=options.tokens, batch=1, seed=seed, ratio=ratio, probe=kind)
            if n_reuse is not None:
                observation.facts["n_reuse"] = n_reuse
            try:
                observation.facts["loss"] = continuation_loss(model, press, ids, options.tokens)
            except Exception as error:  # noqa: BLE001 - the press's failure here is the grid's to report
                observation.error = one_line(error)
            found.append(observation)
    return found


def _other_attention(model: nn.Module, factory: PressFactory, spec: RunSpec, setup: RunSetup, ratio: float | None,
                     attention: str) -> Defect | None:
    """The first prompt, prefill and decoding, under another attention implementation on a fresh press:
    a crash there (a defect that only this implementation shows) names it beside the grid's."""
    other = replace(setup, attention=attention)
    try:
        observation = observe_run(model, _build(factory, setup.settings.ratio, ratio), spec, other, ratio)
    except BuildError:
        return None
    label = _label(1, spec, ratio, attention)
    if not observation.ok:
        message = f"{label} raised: {observation.error} (the grid, under {setup.attention} attention, ran)"
    elif observation.decode_error is not None:
        message = (f"{label}, decoding step {observation.decode_steps + 1} raised: {observation.decode_error} "
                   f"(under {setup.attention} attention it decodes)")
    else:
        return None
    return Defect(verdicts.CRASH, message)


def _label(number: int, spec: RunSpec, ratio: float | None, attention: str) -> str:
    """How a message names a prefill: its number, shape, ratio and the attention it ran under."""
    return f"prefill {number} ({spec.label}" + (f", ratio {ratio:g}" if ratio is not None else "") + f", {attention} attention)"


def trace_press(
    model: nn.Module,
    factory: PressFactory,
    options: TraceOptions,
    name: str,
    path: str,
    claims: Sequence[ClaimToCheck] = (),
    settings: PressSettings | None = None,
) -> PressTrace:
    """Trace the press built by ``factory`` on the grid of ``options`` and check its ``claims``.

    Within one ratio the prefills run on one instance, the way a user would use it. A prefill that
    shares indices with an earlier one, or fails after earlier ones passed, is re-run on a freshly
    built press: if the fresh press behaves differently, the instance carried indices across
    prefills (``stale-indices``); otherwise a failure is a plain ``crash``.
    """
    settings = settings or PressSettings(name=name)
    trace = PressTrace(name=name, path=path, status="ok", settings=settings.why)
    try:
        press = factory()
    except BuildError as error:
        trace.status, trace.message, trace.failure = "error", str(error), Failure.BUILD
        trace.claims = not_run(claims, str(error))
        return trace
    try:
        trace.config = " ".join(repr(press).split())
    except BaseException as error:  # noqa: BLE001 - the press's own __repr__: its fault, not a tracer failure
        trace.config = f"<{type(press).__name__}: repr() raised {one_line(error)}>"

    wanted = needs(claims)
    original_attention = model.config._attn_implementation
    setup = RunSetup(settings, wanted.scores, wanted.facts, options.decode_steps, settings.attention or original_attention,
                     wanted.references, wanted.channels, options.trained)
    plan = [spec for spec in run_plan(options) if settings.batch is None or spec.batch <= settings.batch]
    probes = probe_plan(plan) if wanted.probes else []
    completed: list[RunObservation] = []
    probed: list[RunObservation] = []
    failures: list[str] = []
    defects: dict[str, Defect] = {}
    stop = False  # the press cannot run here at all (abstract, needs a pretrained model's files)
    try:
        for ratio in ratio_axis(press, settings.ratio, options.ratios):
            try:
                instance = _build(factory, settings.ratio, ratio)
            except BuildError as error:
                failures.append(str(error))
                continue
            sequence: list[RunObservation] = []
            for number, spec in enumerate(plan, start=1):
                observation = observe_run(model, instance, spec, setup, ratio)
                label = _label(number, spec, ratio, setup.attention)
                if not observation.ok:
                    kind = observation.failure or Failure.CRASH
                    if number > 1 and kind is Failure.ABSTRACT:  # abstract only if its first prefill raised so
                        kind = Failure.CRASH
                    if number == 1 and not kind.is_defect:  # a limit of the setting, not the press's bug
                        stop = True
                        trace.status, trace.message, trace.failure = "error", f"{kind.reason}: {observation.error}", kind
                        break
                    message = f"{label} raised: {observation.error}"
                    failures.append(message)
                    trace.status, trace.message = "error", trace.message or message
                    trace.failure = Failure.CRASH
                    stale = (verdicts.stale_failure_defect(number, observation, _fresh(model, factory, spec, setup, ratio))
                             if number > 1 else None)
                    defects.setdefault((stale or Defect(verdicts.CRASH, message)).id, stale or Defect(verdicts.CRASH, message))
                    break
                if observation.decode_error is not None:  # the prefill counts; decode-compression reads the error
                    message = f"{label}, decoding step {observation.decode_steps + 1} raised: {observation.decode_error}"
                    defects.setdefault(verdicts.CRASH, Defect(verdicts.CRASH, message))
                if number > 1:
                    matches = verdicts.layers_matching_earlier(observation, sequence)
                    if matches:
                        stale = verdicts.stale_defect(number, observation, matches,
                                                      _fresh(model, factory, spec, setup, ratio))
                        if stale is not None:
                            defects.setdefault(stale.id, stale)
                sequence.append(observation)
            if stop:
                break
            for defect in verdicts.analyse(sequence):
                defects.setdefault(defect.id, defect)
            completed.extend(sequence)
            for kind, spec in probes:
                probe = _fresh(model, factory, spec, setup, ratio)
                probe.probe, probe.rows = kind, spec.rows
                probed.append(probe)
            if wanted.similarity and setup.heldout:
                probed.extend(_similarity_probes(model, factory, options, setup, ratio))
            if wanted.quality and setup.heldout:
                probed.extend(_quality_probes(model, factory, options, setup, ratio))
            if settings.also_attention and ratio == ratio_axis(press, settings.ratio, options.ratios)[0]:
                crash = _other_attention(model, factory, plan[0], setup, ratio, settings.also_attention)
                if crash is not None:
                    defects.setdefault(f"{verdicts.CRASH}:{settings.also_attention}", crash)
    finally:
        prepare_model(model, original_attention)

    trace.runs = [to_trace_run(o) for o in completed]
    trace.defects = sorted(defects.values(), key=lambda d: (d.id, d.message))
    if stop:
        trace.claims = not_run(claims, trace.message or "the press could not run")
    else:
        trace.claims = check_claims(claims, completed, failures, probed)
    return trace
