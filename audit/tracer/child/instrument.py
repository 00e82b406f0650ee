"""Instrumentation of one run: score() and compress() calls, hook timings, the cache before the press.

* ``score()`` and ``compress()`` are wrapped on the instance of every press reachable from the
  traced press (an instance attribute shadows the class method; removed afterwards). Only
  outermost calls are counted, so a scorer that calls a nested scorer counts once. Each call is
  tagged with the phase it ran in (prefill or a decoding step). On request, the output of the
  outermost ``score()`` of each layer's prefill is kept (the ``score-topk`` and ``chunk-selection``
  checks read it).
* A forward hook registered *before* the press's own hook (``prepend=True``) copies each layer's
  keys and values right after attention wrote them, and stamps the time. A second hook registered
  *after* the press's hook stamps the time again: the gap is the press's hook, i.e. ``compress()``.
  The copy is taken on every forward, the prefill and each decoding step, so every compression
  can be matched against the cache it started from.
* The compressed cache is read once each forward is over (see :mod:`kvaudit.tracer.child.keptindices`).

The hooks only copy tensors and read clocks; index matching happens after the timed prefill.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .build import reachable_presses, scoring_presses
from .inputs import ScoreInputs

PREFILL, DECODE = "prefill", "decode"
# Papers' formulas are recomputed (float64, attention over every query) on prefills up to this long:
# the grid's short prompts. The long prompt would cost seconds per layer and says nothing more.
REFERENCE_MAX_LENGTH = 1024


@dataclass
class LayerRecord:
    """Raw data of one layer during one run (prefill, then decoding steps)."""

    score_calls: int = 0  # prefill
    compress_calls: int = 0  # prefill
    score_time_s: float = 0.0
    compress_time_s: float = 0.0
    hook_started: float | None = None
    original_keys: torch.Tensor | None = None  # the cache before the press, in the last forward
    original_values: torch.Tensor | None = None
    scores: torch.Tensor | None = None  # the last outermost score() output of the prefill
    # Mechanism id -> its formula recomputed from the same call's inputs (float64), when a claim asks.
    references: dict[str, torch.Tensor] = field(default_factory=dict)
    channel_reference: torch.Tensor | None = None  # (batch, kv_heads, head_dim), the paper's channel criterion
    step_score_calls: int = 0  # the current decoding step
    step_compress_calls: int = 0


@dataclass
class RunRecorder:
    """Collects :class:`LayerRecord` s while hooks and wrappers fire."""

    layers: list[LayerRecord]
    capture_scores: bool = False
    # Recomputes the claimed papers' formulas from a score() call's inputs (kvaudit.tracer.child.inputs).
    reference: Callable[[ScoreInputs], dict[str, torch.Tensor]] | None = None
    # Recomputes a paper's per-channel criterion from a layer's inputs, before the press runs on it.
    channels: Callable[[ScoreInputs], torch.Tensor | None] | None = None
    phase: str = PREFILL
    depth: int = 0  # >0 while inside a score() call: nested calls are not counted again
    compress_depth: int = 0
    stray_score_calls: int = 0  # score() calls whose module carries no layer_idx
    handles: list[Any] = field(default_factory=list)

    def _record(self, module: Any) -> LayerRecord | None:
        layer_idx = getattr(module, "layer_idx", None)
        if isinstance(layer_idx, int) and 0 <= layer_idx < len(self.layers):
            return self.layers[layer_idx]
        return None

    def record_score(self, module: Any, seconds: float, output: Any, call: tuple[tuple, dict] | None = None) -> None:
        record = self._record(module)
        if record is None:
            self.stray_score_calls += 1
            return
        if self.phase == PREFILL:
            record.score_calls += 1
            record.score_time_s += seconds
            if self.capture_scores and isinstance(output, torch.Tensor) and output.dim() == 3:
                record.scores = output.detach().to(torch.float64, copy=True).cpu()  # presses edit scores in place
            if self.reference is not None and call is not None:
                inputs = ScoreInputs.of_call(*call)
                if inputs is not None and inputs.length <= REFERENCE_MAX_LENGTH:
                    record.references = {key: value.detach().cpu() for key, value in self.reference(inputs).items()}
        else:
            record.step_score_calls += 1

    def record_compress(self, module: Any) -> None:
        record = self._record(module)
        if record is None:
            return
        if self.phase == PREFILL:
            record.compress_calls += 1
        else:
            record.step_compress_calls += 1

    def start_step(self) -> None:
        """Enter a decoding step: calls from now on are the step's."""
        self.phase = DECODE
        for record in self.layers:
            record.step_score_calls = record.step_compress_calls = 0


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The attention module of every decoder layer, in order (as kvpress finds them)."""
    language_model = model.model.language_model if hasattr(model.model, "language_model") else model.model
    return [layer.self_attn for layer in language_model.layers]


def _wrap(press: Any, method: str, on_call) -> None:
    original = getattr(press, method)  # bound method (or an earlier instance attribute)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return on_call(original, args, kwargs)

    wrapper.__kvaudit_wrapped__ = original  # type: ignore[attr-defined]
    object.__setattr__(press, method, wrapper)


def _unwrap(press: Any, method: str, had_instance_attribute: bool, previous: Any) -> None:
    if had_instance_attribute:
        object.__setattr__(press, method, previous)
    else:
        press.__dict__.pop(method, None)


class Instrumentation:
    """Instrument one press on one model for one run at a time.

    Usage::

        instrumentation = Instrumentation(model, press)
        with instrumentation.before_press() as recorder, press(model), instrumentation.after_press(recorder):
            model(input_ids, past_key_values=cache)
    """

    def __init__(self, model: nn.Module, press: Any, capture_scores: bool = False,
                 reference: Callable[[ScoreInputs], dict[str, torch.Tensor]] | None = None,
                 channels: Callable[[ScoreInputs], torch.Tensor | None] | None = None) -> None:
        self.modules = attention_modules(model)
        self.scorers = scoring_presses(press)
        self.compressors = [p for p in reachable_presses(press) if callable(getattr(p, "compress", None))]
        self.capture_scores = capture_scores
        self.reference = reference
        self.channels = channels

    @contextmanager
    def before_press(self) -> Iterator[RunRecorder]:
        """Wrap score() and compress() and register the hooks that must run before the press's hook."""
        recorder = RunRecorder(layers=[LayerRecord() for _ in self.modules], capture_scores=self.capture_scores,
                               reference=self.reference, channels=self.channels)
        saved = [(p, m, m in p.__dict__, p.__dict__.get(m))
                 for m, presses in (("score", self.scorers), ("compress", self.compressors)) for p in presses]

        def on_score(original, args, kwargs):
            if recorder.depth:
                return original(*args, **kwargs)
            module = args[0] if args else kwargs.get("module")
            recorder.depth += 1
            started = time.perf_counter()
            output = None
            try:
                output = original(*args, **kwargs)
                return output
            finally:
                recorder.depth -= 1
                # The papers' formulas are recomputed after the clock stops: they cost the press nothing.
                recorder.record_score(module, time.perf_counter() - started, output, (args, kwargs))

        def on_compress(original, args, kwargs):
            if recorder.compress_depth:
                return original(*args, **kwargs)
            recorder.compress_depth += 1
            try:
                return original(*args, **kwargs)
            finally:
                recorder.compress_depth -= 1
                recorder.record_compress(args[0] if args else kwargs.get("module"))

        for scorer in self.scorers:
            _wrap(scorer, "score", on_score)
        for compressor in self.compressors:
            _wrap(compressor, "compress", on_compress)

        def snapshot(module: nn.Module, args: Any, kwargs: dict, output: Any) -> None:
            cache = kwargs.get("past_key_values")
            record = recorder.layers[module.layer_idx]
            # The first forward of the prefill (or of a step) only: a press that runs the model again
            # inside its context (KVCompose re-reads the prompt) must not move the starting point.
            if cache is not None and module.layer_idx < len(cache.layers) and record.original_keys is None:
                layer = cache.layers[module.layer_idx]
                # A copy: a press may edit the cache tensors in place.
                record.original_keys = layer.keys.detach().clone()
                record.original_values = layer.values.detach().clone()
                if recorder.channels is not None and recorder.phase == PREFILL and "hidden_states" in kwargs:
                    inputs = ScoreInputs(module, kwargs["hidden_states"], layer.keys, layer.values, None, kwargs)
                    found = recorder.channels(inputs)
                    record.channel_reference = found.detach().cpu() if found is not None else None
            record.hook_started = time.perf_counter()

        handles = [m.register_forward_hook(snapshot, with_kwargs=True, prepend=True) for m in self.modules]
        try:
            yield recorder
        finally:
            for handle in handles + recorder.handles:
                handle.remove()
            for press, method, had, previous in reversed(saved):
                _unwrap(press, method, had, previous)

    @contextmanager
    def after_press(self, recorder: RunRecorder) -> Iterator[None]:
        """Register the hooks that run after the press's hook (enter inside ``press(model)``)."""

        def stamp(module: nn.Module, args: Any, kwargs: dict, output: Any) -> None:
            record = recorder.layers[module.layer_idx]
            if record.hook_started is not None:
                if recorder.phase == PREFILL:
                    record.compress_time_s += time.perf_counter() - record.hook_started
                record.hook_started = None

        handles = [m.register_forward_hook(stamp, with_kwargs=True) for m in self.modules]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
