"""Instrumentation of one prefill: score() calls, hook timings, and the cache before compression.

* ``score()`` is wrapped on the instance of every scoring press reachable from the traced press
  (an instance attribute shadows the class method; removed afterwards). Only outermost calls are
  counted, so a scorer that calls a nested scorer counts once.
* A forward hook registered *before* the press's own hook (``prepend=True``) copies each layer's
  keys and values right after attention wrote them, and stamps the time. A second hook registered
  *after* the press's hook stamps the time again: the gap is the press's hook, i.e. ``compress()``.
* The compressed cache is read once the prefill is over (see :mod:`kvaudit.tracer.keptindices`).

The hooks only copy tensors and read clocks; index matching happens after the timed prefill.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .build import scoring_presses


@dataclass
class LayerRecord:
    """Raw data of one layer during one prefill."""

    score_calls: int = 0
    score_time_s: float = 0.0
    compress_time_s: float = 0.0
    hook_started: float | None = None
    original_keys: torch.Tensor | None = None
    original_values: torch.Tensor | None = None


@dataclass
class PrefillRecorder:
    """Collects :class:`LayerRecord` s while hooks and score() wrappers fire."""

    layers: list[LayerRecord]
    depth: int = 0  # >0 while inside a score() call: nested calls are not counted again
    stray_score_calls: int = 0  # score() calls whose module carries no layer_idx
    handles: list[Any] = field(default_factory=list)

    def record_score(self, module: Any, seconds: float) -> None:
        layer_idx = getattr(module, "layer_idx", None)
        if isinstance(layer_idx, int) and 0 <= layer_idx < len(self.layers):
            record = self.layers[layer_idx]
            record.score_calls += 1
            record.score_time_s += seconds
        else:
            self.stray_score_calls += 1


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The attention module of every decoder layer, in order (as kvpress finds them)."""
    language_model = model.model.language_model if hasattr(model.model, "language_model") else model.model
    return [layer.self_attn for layer in language_model.layers]


def _wrap_score(press: Any, recorder: PrefillRecorder) -> None:
    original = press.score  # bound method (or an earlier instance attribute)

    def score(*args: Any, **kwargs: Any) -> Any:
        if recorder.depth:
            return original(*args, **kwargs)
        module = args[0] if args else kwargs.get("module")
        recorder.depth += 1
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            recorder.depth -= 1
            recorder.record_score(module, time.perf_counter() - started)

    score.__kvaudit_wrapped__ = original  # type: ignore[attr-defined]
    object.__setattr__(press, "score", score)


def _unwrap_score(press: Any, had_instance_attribute: bool, previous: Any) -> None:
    if had_instance_attribute:
        object.__setattr__(press, "score", previous)
    else:
        press.__dict__.pop("score", None)


class Instrumentation:
    """Instrument one press on one model for one prefill at a time.

    Usage::

        instrumentation = Instrumentation(model, press)
        with instrumentation.before_press() as recorder, press(model), instrumentation.after_press(recorder):
            model(input_ids, past_key_values=cache)
    """

    def __init__(self, model: nn.Module, press: Any) -> None:
        self.modules = attention_modules(model)
        self.scorers = scoring_presses(press)

    @contextmanager
    def before_press(self) -> Iterator[PrefillRecorder]:
        """Wrap score() and register the hooks that must run before the press's hook."""
        recorder = PrefillRecorder(layers=[LayerRecord() for _ in self.modules])
        saved = [("score" in scorer.__dict__, scorer.__dict__.get("score")) for scorer in self.scorers]
        for scorer in self.scorers:
            _wrap_score(scorer, recorder)

        def snapshot(module: nn.Module, args: Any, kwargs: dict, output: Any) -> None:
            cache = kwargs.get("past_key_values")
            record = recorder.layers[module.layer_idx]
            if cache is not None and module.layer_idx < len(cache.layers):
                layer = cache.layers[module.layer_idx]
                # A copy: a press may edit the cache tensors in place.
                record.original_keys = layer.keys.detach().clone()
                record.original_values = layer.values.detach().clone()
            record.hook_started = time.perf_counter()

        handles = [m.register_forward_hook(snapshot, with_kwargs=True, prepend=True) for m in self.modules]
        try:
            yield recorder
        finally:
            for handle in handles + recorder.handles:
                handle.remove()
            for scorer, (had, previous) in zip(self.scorers, saved):
                _unwrap_score(scorer, had, previous)

    @contextmanager
    def after_press(self, recorder: PrefillRecorder) -> Iterator[None]:
        """Register the hooks that run after the press's hook (enter inside ``press(model)``)."""

        def stamp(module: nn.Module, args: Any, kwargs: dict, output: Any) -> None:
            record = recorder.layers[module.layer_idx]
            if record.hook_started is not None:
                record.compress_time_s += time.perf_counter() - record.hook_started
                record.hook_started = None

        recorder.handles.extend(m.register_forward_hook(stamp, with_kwargs=True) for m in self.modules)
        yield
