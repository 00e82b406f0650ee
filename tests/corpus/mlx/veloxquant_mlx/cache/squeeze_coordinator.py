# kvaudit test corpus. Provenance: https://github.com/rajveer43/VeloxQuant-MLX,
# veloxquant_mlx/cache/squeeze_coordinator.py, commit a6a72d5988e09bec94ba1744d8631a0a9dd7e301.
# Licence: MIT, Copyright (c) 2026 Rajveer Rathod (the repository's LICENSE: permission to copy and
# modify with this notice kept). Trimmed: the module docstring is shortened and the read-only
# properties are left out; the code of the methods kept is unchanged. Not a press: the shared object
# through which every SqueezeAttentionCache layer reports one scalar and gets its own budget back.
"""SqueezeAttention cross-layer coordinator — one-shot data-driven re-budgeting.

The re-budget is **one-shot at the prefill boundary**: during the first
``update_and_fetch`` (the prompt), each layer reports its concentration score.
Once every attention layer has reported, the coordinator computes the per-layer
budget schedule with ``squeeze_budgets`` and publishes it; each layer then pulls
its resolved budget and applies it to every head's eviction state.
"""

from __future__ import annotations

from veloxquant_mlx.quantizers.squeeze import squeeze_budgets


class SqueezeCoordinator:
    """Shared per-model re-budgeting state for one generation."""

    def __init__(
        self,
        n_layers: int,
        avg_budget: int,
        n_sink: int,
        strength: float,
    ) -> None:
        self._n_layers = int(n_layers)
        self._avg_budget = int(avg_budget)
        self._n_sink = int(n_sink)
        self._strength = float(strength)

        # layer_id -> reported concentration score (None until reported)
        self._concentrations: dict[int, float] = {}
        # layer_id -> resolved budget (populated once all layers have reported)
        self._resolved: dict[int, int] = {}
        self._layer_order: list[int] = []
        self._done = False

    def reset(self) -> None:
        """Clear all reported/resolved state (e.g. between generations)."""
        self._concentrations.clear()
        self._resolved.clear()
        self._layer_order.clear()
        self._done = False

    def report_concentration(self, layer_id: int, concentration: float) -> None:
        """Record a layer's prefill concentration score."""
        if self._done or layer_id in self._concentrations:
            return
        self._concentrations[layer_id] = float(concentration)
        self._layer_order.append(layer_id)

        if len(self._concentrations) >= self._n_layers:
            self._finalize()

    def _finalize(self) -> None:
        """Compute the per-layer budget schedule once every layer has reported."""
        order = sorted(self._concentrations.keys())
        conc_vec = [self._concentrations[lid] for lid in order]
        schedule = squeeze_budgets(
            conc_vec,
            avg_budget=self._avg_budget,
            n_sink=self._n_sink,
            strength=self._strength,
        )
        self._resolved = {lid: schedule[k] for k, lid in enumerate(order)}
        self._done = True

    def resolved_budget(self, layer_id: int) -> int | None:
        """Return the layer's resolved budget, or ``None`` if not yet finalised."""
        if not self._done:
            return None
        return self._resolved.get(layer_id)


__all__ = ["SqueezeCoordinator"]
