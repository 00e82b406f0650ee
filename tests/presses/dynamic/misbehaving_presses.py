"""One file, three presses: one raises (→ crash), one hangs (→ timeout), one works.

Tracing the file must report the first two and still trace the third.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from kvpress import BasePress, KnormPress


@dataclass
class RaisingPress(BasePress):
    """Raises on the first compressed layer."""

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        raise RuntimeError(f"boom on layer {module.layer_idx}")


@dataclass
class HangingPress(BasePress):
    """Never returns."""

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        while True:
            time.sleep(0.05)


@dataclass
class WellBehavedKnormPress(KnormPress):
    """A plain ScorerPress subclass: traced after its two neighbours misbehaved."""
