"""Repeated timings of a prefill: the spread that tells a real difference from noise.

On the tiny model a prefill takes tens of milliseconds, and a forked child pays one-time costs
(copy-on-write page faults) on its first one. So when two presses are compared, the first prefill
is timed again a few times, each on a freshly built press; the report compares medians and calls
a difference smaller than the spread of the repeats "no measurable difference".

Runs inside a forked worker child, like :mod:`kvaudit.tracer.child.runner`.
"""

from __future__ import annotations

from typing import Any

from ...model import TraceRun
from .build import BuildError
from ..options import RunSpec
from .runner import PressFactory, RunSetup, observe_run
from .settings import PressSettings

TIMING_REPEATS = 5


def add_repeat_timings(model: Any, factory: PressFactory, spec: RunSpec, run: TraceRun,
                       repeats: int = TIMING_REPEATS, settings: PressSettings | None = None) -> None:
    """Time ``repeats`` more prefills of ``spec`` (fresh press each, no decoding) into ``run``; stop at the first failure."""
    setup = RunSetup(settings or PressSettings("timing"), attention=model.config._attn_implementation)
    if settings is not None and settings.attention:
        setup.attention = settings.attention
    for _ in range(repeats):
        try:
            observation = observe_run(model, factory(), spec, setup, run.ratio, decode=False)
        except BuildError:
            return
        if not observation.ok:
            return
        timings = run.timings
        timings.repeat_prefill_s = [*(timings.repeat_prefill_s or ()), round(observation.prefill_time_s, 6)]
        timings.repeat_score_s = [*(timings.repeat_score_s or ()),
                                  round(sum(layer.score_time_s for layer in observation.layers), 6)]
