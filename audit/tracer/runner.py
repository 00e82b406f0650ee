"""Trace one press: the prefill plan on one instance, fresh re-runs for stale checks, verdicts.

Runs inside a forked worker child; returns a :class:`kvaudit.model.PressTrace`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

from ..model import Defect, PressTrace, TraceRun
from ..tinymodel import make_input_ids
from . import verdicts
from .build import BuildError, one_line
from .instrument import Instrumentation
from .keptindices import kept_positions
from .observations import LayerObservation, RunObservation
from .options import RunSpec

PressFactory = Callable[[], Any]


def observe_prefill(model: nn.Module, press: Any, spec: RunSpec, instrumented: bool = True) -> RunObservation:
    """Run one prefill of ``spec`` through ``press`` and observe every layer.

    The press's exception, if any, is caught and kept as the observation's ``error``.
    """
    device = next(model.parameters()).device
    input_ids = make_input_ids(spec.tokens, spec.batch, spec.seed, model.config.vocab_size).to(device)
    observation = RunObservation(tokens=spec.tokens, batch=spec.batch, seed=spec.seed)
    torch.manual_seed(spec.seed)  # presses that draw random numbers (RandomPress) repeat themselves
    cache = DynamicCache()
    instrumentation = Instrumentation(model, press)
    try:
        with torch.no_grad(), instrumentation.before_press() as recorder:
            with press(model), instrumentation.after_press(recorder):
                started = time.perf_counter()
                model(input_ids=input_ids, past_key_values=cache, use_cache=True)
                observation.prefill_time_s = time.perf_counter() - started
    except BaseException as error:  # noqa: BLE001 - the press raised (sys.exit() too): a finding, not a tracer failure
        observation.error = one_line(error)
        observation.exception_type = type(error).__name__
        return observation

    modules = instrumentation.modules
    for index, record in enumerate(recorder.layers):
        layer = cache.layers[index] if index < len(cache.layers) else None
        if layer is None or record.original_keys is None:
            observation.layers.append(LayerObservation(score_calls=record.score_calls, kept=(), original_length=0))
            continue
        masked = getattr(modules[index], "masked_key_indices", None)
        kept, lengths, unmatched = kept_positions(
            record.original_keys, record.original_values, layer.keys, layer.values, masked
        )
        observation.layers.append(
            LayerObservation(
                score_calls=record.score_calls,
                kept=kept,
                original_length=record.original_keys.shape[2],
                score_time_s=record.score_time_s,
                compress_time_s=record.compress_time_s,
                unmatched=unmatched,
                kept_lengths=lengths,
            )
        )
    return observation


def to_trace_run(observation: RunObservation) -> TraceRun:
    """The findings-model view of one completed prefill."""
    layers = observation.layers
    return TraceRun(
        tokens=observation.tokens,
        batch=observation.batch,
        score_calls=[layer.score_calls for layer in layers],
        kept=[layer.kept_count for layer in layers],
        reused_from=verdicts.reused_from(observation),
        compressed=[layer.compressed for layer in layers],
        jaccard=[None if j is None else round(j, 4) for j in verdicts.adjacent_jaccard(observation)],
        score_time_s=sum(layer.score_time_s for layer in layers),
        compress_time_s=sum(layer.compress_time_s for layer in layers),
        prefill_time_s=observation.prefill_time_s,
        jaccard_matrix=verdicts.jaccard_matrix(observation),
        layer_score_time_s=[layer.score_time_s for layer in layers],
        layer_compress_time_s=[layer.compress_time_s for layer in layers],
    )


def _fresh(model: nn.Module, factory: PressFactory, spec: RunSpec) -> RunObservation:
    try:
        return observe_prefill(model, factory(), spec)
    except BuildError as error:
        return RunObservation(tokens=spec.tokens, batch=spec.batch, seed=spec.seed, error=str(error))


def trace_press(
    model: nn.Module,
    factory: PressFactory,
    plan: list[RunSpec],
    name: str,
    path: str,
) -> PressTrace:
    """Trace the press built by ``factory``: every prefill of ``plan`` on one instance.

    A prefill that shares indices with an earlier one, or fails after earlier ones passed, is
    re-run on a freshly built press: if the fresh press behaves differently, the instance carried
    indices across prefills (``stale-indices``); otherwise a failure is a plain ``crash``.
    """
    trace = PressTrace(name=name, path=path, status="ok")
    try:
        press = factory()
    except BuildError as error:
        trace.status, trace.message = "error", str(error)
        return trace
    try:
        trace.config = " ".join(repr(press).split())
    except BaseException as error:  # noqa: BLE001 - the press's own __repr__: its fault, not a tracer failure
        trace.config = f"<{type(press).__name__}: repr() raised {one_line(error)}>"

    observations: list[RunObservation] = []
    for number, spec in enumerate(plan, start=1):
        observation = observe_prefill(model, press, spec)
        observations.append(observation)
        if not observation.ok:
            trace.status = "error"
            if number == 1 and observation.exception_type == "NotImplementedError":
                trace.message = f"abstract press, not traced: {observation.error}"
                break
            trace.message = f"prefill {number} ({spec.label}) raised: {observation.error}"
            stale = verdicts.stale_failure_defect(number, observation, _fresh(model, factory, spec)) if number > 1 else None
            trace.defects.append(stale or Defect(verdicts.CRASH, trace.message))
            break
        if number > 1:
            matches = verdicts.layers_matching_earlier(observation, observations[:-1])
            if matches:
                stale = verdicts.stale_defect(number, observation, matches, _fresh(model, factory, spec))
                if stale is not None:
                    trace.defects.append(stale)

    completed = [o for o in observations if o.ok]
    trace.runs = [to_trace_run(o) for o in completed]
    if completed:
        trace.verdicts, trace.reasons, more = verdicts.analyse(completed)
        trace.defects.extend(more)
    trace.defects.sort(key=lambda d: (d.id, d.message))
    return trace
