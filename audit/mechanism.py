"""Mechanisms: what a paper claims, as data, with one dynamic check each.

A mechanism lives in one module under ``rules/`` (``rules/claim_<id>.py``), like a rule. It has

* an ``id`` (``observation-window``) and a one-line ``title``;
* the papers that claim it (``papers``: registry key -> :class:`Claimant`, with where in the paper
  and the paper's parameters), and the kvpress base classes whose contract claims it for every
  subclass (``contracts``: ``ScorerPress`` -> :class:`Claimant`);
* a dynamic invariant: :meth:`Mechanism.check_run` judges one run of the tracer's grid (one
  compression ratio, one prompt length, one batch size) from plain observations
  (:mod:`kvaudit.tracer.observations`), with the tolerance its docstring states; :meth:`check`
  folds the runs into one :class:`kvaudit.model.ClaimCheck`;
* optionally, static evidence (:meth:`static_evidence`), read by ``kvaudit check``;
* ``VALID`` and ``INVALID`` examples: press modules that meet the claim and that break it. The test
  suite traces every one of them (Fixit style, as rules' examples are audited).

Nothing else knows a mechanism by name: the engine, the tracer and the reporters loop over
:func:`all_mechanisms` and over the checks they produce. Importing this module never imports torch.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar

from .model import HOLDS, NOT_APPLICABLE, NOT_RUN, VIOLATED, ClaimCheck, Evidence

if TYPE_CHECKING:
    from .tracer.observations import RunObservation
    from .rule import PressContext

MODULE_PREFIX = "claim_"  # rules/claim_*.py hold the mechanisms

# Probes: prefills on fresh presses beside the grid, that the contracts of every press read
# (kvaudit.tracer.options.probe_plan runs them; CheckContext.probes holds them).
REPEAT = "repeat"  # the first prompt again, with another global random seed: is the selection deterministic?
ALONE = "alone"  # each row of the batch prompt on its own: does a row keep what it keeps in the batch?
# On a model with learned attention only: prompts run by the press (SIMILAR) and by the token-level scorer it
# wraps (SIMILAR_TOKEN), for comparing how similar adjacent layers' selections are.
SIMILAR, SIMILAR_TOKEN = "similarity", "similarity-token"
# On a model with learned attention only: the next-token loss of a held-out continuation after the prefix was
# kept whole (QUALITY_FULL), compressed by the press (QUALITY_PRESS), and by the press with reuse switched off
# (QUALITY_NO_REUSE) and with twice its reuse (QUALITY_MORE_REUSE: n_reuse 4 for ChunkKV's 2); the loss is the
# probe's ``facts["loss"]`` and, for the reuse variants, the reuse parameter it ran with ``facts["n_reuse"]``.
QUALITY_FULL, QUALITY_PRESS, QUALITY_NO_REUSE = "quality-full", "quality-press", "quality-no-reuse"
QUALITY_MORE_REUSE = "quality-more-reuse"


@dataclass(frozen=True)
class Claimant:
    """Who claims a mechanism and how: where in the paper (or contract), and its parameters.

    ``not_checkable`` says why a tiny model cannot show the claim (trained weights, a real tokenizer,
    a paper kvaudit could not read): the claim is then reported ``not-checkable`` with that reason.
    """

    where: str
    params: dict[str, Any] = field(default_factory=dict)
    not_checkable: str = ""


@dataclass(frozen=True)
class RunResult:
    """The verdict of one run of the grid, with the numbers that back it.

    ``gap`` says how far the run departs from the rule (in the rule's own unit), so that the worst
    violation heads the claim. ``where`` adds what the run does not say itself (layer, head, row,
    step); the run's ratio, length and batch are added by :meth:`Mechanism.check`.
    """

    verdict: str  # holds | violated | not-applicable
    message: str
    expected: Any = None
    measured: Any = None
    where: dict[str, Any] = field(default_factory=dict)
    gap: float = 0.0
    figure: dict[str, Any] | None = None


def holds(message: str, expected: Any = None, measured: Any = None, **where: Any) -> RunResult:
    return RunResult(HOLDS, message, expected, measured, where)


def violated(message: str, expected: Any, measured: Any, gap: float = 1.0, figure: dict | None = None,
             **where: Any) -> RunResult:
    return RunResult(VIOLATED, message, expected, measured, where, gap, figure)


def not_applicable(message: str) -> RunResult:
    return RunResult(NOT_APPLICABLE, message)


@dataclass(frozen=True)
class ReproRule:
    """A mechanism's rule as plain code, for the standalone reproduction scripts (:mod:`kvaudit.repro`).

    ``code`` defines ``check(model, new_press) -> (holds, expected, observed)``: ``holds`` is True, False,
    or None when the rule does not apply to the press here; ``expected`` and ``observed`` are one line each.
    ``new_press(ratio=RATIO)`` builds a fresh press. The code reads only torch, kvpress, the script's
    constants (``TOKENS``, ``BATCH``, ``PROMPT_SEED``, ``RATIO``, ``PARAMS``, ``DECODE_STEPS``, ...) and the
    harness every script holds (``kvaudit/repro/harness.py``: ``make_prompt``, ``prefill``,
    ``kept_positions``, ``setting``, ``visible``). Keep it short: a reader follows it in a minute.
    ``rules`` are the static rules whose findings point at the source lines responsible.
    """

    code: str
    rules: tuple[str, ...] = ()


@dataclass
class CheckContext:
    """What a check reads: the completed runs of the grid, the claimant's parameters, the failures.

    ``runs`` are in plan order; runs of the same ratio ran on one press instance, in the order
    (short × 1, long × 1, short × 2) of :func:`kvaudit.tracer.options.run_plan`.
    """

    runs: list[RunObservation]
    params: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # one line per run that raised
    # Prefills beside the grid on fresh presses (kvaudit.tracer.options.probe_plan): the first prompt
    # repeated, each batch row alone. Only the mechanisms that ask for them (``needs_probes``) read them.
    probes: list[RunObservation] = field(default_factory=list)

    def sequences(self) -> list[list[RunObservation]]:
        """The runs grouped by ratio (each group ran on one press instance), in plan order."""
        groups: dict[float | None, list[RunObservation]] = {}
        for run in self.runs:
            groups.setdefault(run.ratio, []).append(run)
        return list(groups.values())


def setting(run: RunObservation, params: dict[str, Any], *names: str, default: Any = None) -> Any:
    """The press's own value of the first attribute in ``names`` it has, else the paper's parameter.

    The press's value wins: the invariant is checked against the press as configured; a press
    default that departs from the paper's is a static finding (KVA202), not a broken invariant.
    """
    for name in names:
        value = run.facts.get(name)
        if value is not None:
            return value
    for name in names:
        if name in params:
            return params[name]
    return default


def layers_missing_rows(run: RunObservation) -> list[int]:
    """Layers whose cache holds fewer batch rows than the prompt had: the press dropped whole rows."""
    return [index for index, layer in enumerate(run.layers) if layer.kept and len(layer.lengths) < run.batch]


def ratio_of(run: RunObservation) -> float | None:
    """The compression ratio the press reports after the prefill, else the one the run set."""
    reported = run.facts.get("compression_ratio")
    return reported if isinstance(reported, (int, float)) and not isinstance(reported, bool) else run.ratio


class Mechanism:
    """Base class of every mechanism (see the module docstring)."""

    id: ClassVar[str]
    name: ClassVar[str]  # how sentences name it: "layer-wise index reuse"
    title: ClassVar[str]  # the invariant in one line
    order: ClassVar[int] = 100  # column order in the conformance matrix
    papers: ClassVar[dict[str, Claimant]] = {}
    contracts: ClassVar[dict[str, Claimant]] = {}
    facts: ClassVar[tuple[str, ...]] = ()  # press attributes the check reads (searched in nested presses)
    learned_facts: ClassVar[tuple[str, ...]] = ()  # learned tensors of the press a formula reads (Q-filters)
    needs_scores: ClassVar[bool] = False  # the check reads score() outputs
    needs_decode: ClassVar[bool] = False  # the check reads the decoding steps
    needs_probes: ClassVar[bool] = False  # the check reads the probes (CheckContext.probes)
    # The check reads the similarity probes (the press and its nested scorer on several held-out prompts),
    # which run on a model with learned attention only (--model trained).
    needs_similarity: ClassVar[bool] = False
    # The check reads the quality probes (continuation loss; a model with learned attention only).
    needs_quality: ClassVar[bool] = False
    # The check reads a formula recomputed from each score() call's inputs (reference_scores, below).
    needs_reference: ClassVar[bool] = False
    # The check reads which key channels each kept position lost (LayerObservation.pruned_channels) and a
    # per-channel criterion recomputed from the layer's inputs (reference_channels, below).
    needs_channels: ClassVar[bool] = False
    # How far a number of a check's ``expected``/``measured`` may move between two audits before
    # ``kvaudit diff`` calls it changed, in the numbers' own unit: the rule's stated tolerance (0: exact).
    diff_tolerance: ClassVar[float] = 0.0
    VALID: ClassVar[list[str]] = []  # press modules that meet the claim (their first press class is traced)
    INVALID: ClassVar[list[str]] = []  # press modules that break it

    # -- dynamic ------------------------------------------------------------------------------

    @property
    def needs_learned_attention(self) -> bool:
        """Whether the check is only judged on a model whose attention was learned (``--model trained``)."""
        return self.needs_similarity or self.needs_quality

    def check_run(self, run: RunObservation, ctx: CheckContext) -> RunResult:
        """Judge one completed run; subclasses implement this (or :meth:`check` as a whole)."""
        raise NotImplementedError

    def check(self, ctx: CheckContext, paper: str) -> ClaimCheck:
        """Fold the runs: violated if any run is; holds if some run is judged and none violated."""
        if not ctx.runs:
            reason = ctx.failures[0] if ctx.failures else "no run completed"
            return ClaimCheck(self.id, paper, NOT_RUN, f"not run: {reason}")
        judged = [(run, self.check_run(run, ctx)) for run in ctx.runs]
        counts = {verdict: sum(1 for _, r in judged if r.verdict == verdict) for verdict in (HOLDS, VIOLATED, NOT_APPLICABLE)}
        counts = {k: v for k, v in counts.items() if v}
        if ctx.failures:
            counts[NOT_RUN] = len(ctx.failures)
        # Runs the rule could not judge are said, never hidden (a budget below the window, no lazy layer…).
        skipped = [(run, result) for run, result in judged if result.verdict == NOT_APPLICABLE]
        aside = f"; not applicable in {len(skipped)} (e.g. {skipped[0][0].where}: {skipped[0][1].message})" if skipped else ""
        bad = [(run, result) for run, result in judged if result.verdict == VIOLATED]
        if bad:
            run, worst = max(bad, key=lambda item: item[1].gap)
            others = f"; {len(bad)} of {len(judged)} runs depart from the rule" if len(judged) > 1 else ""
            return self._claim(paper, VIOLATED, f"{worst.message} ({run.where}){others}{aside}", run, worst, counts)
        good = [(run, result) for run, result in judged if result.verdict == HOLDS]
        if good:
            run, result = good[-1]  # the last one: the longest prompt of the last ratio, the most demanding
            runs = f"in all {len(good)} runs it applies to" if len(good) > 1 else "in the one run it applies to"
            return self._claim(paper, HOLDS, f"{result.message} ({run.where}); holds {runs}{aside}", run, result, counts)
        run, result = judged[0]
        return ClaimCheck(self.id, paper, NOT_APPLICABLE, result.message, runs=counts)

    def _claim(self, paper: str, verdict: str, message: str, run: RunObservation, result: RunResult,
               counts: dict[str, int]) -> ClaimCheck:
        where: dict[str, Any] = {"ratio": run.ratio, "length": run.tokens, "batch": run.batch}
        where.update(result.where)
        check = ClaimCheck(self.id, paper, verdict, message, expected=result.expected, measured=result.measured,
                           where={k: v for k, v in where.items() if v is not None}, runs=counts)
        if result.figure:
            check.figures = [result.figure]
        return check

    def reference_scores(self, inputs: Any, params: dict[str, Any]) -> Any | None:
        """The paper's rule recomputed from one ``score()`` call's inputs, in the worker child.

        ``inputs`` is a :class:`kvaudit.tracer.child.inputs.ScoreInputs` (float64 keys, values,
        queries, attention); returns a (batch, kv_heads, length) tensor, kept per layer as
        ``LayerObservation.references[self.id]``, or None when the claimant has no formula. Only
        mechanisms with ``needs_reference`` are asked; they import torch inside this method.
        """
        return None

    def reference_channels(self, inputs: Any, params: dict[str, Any]) -> Any | None:
        """The paper's per-channel criterion recomputed from a layer's inputs before the press ran (worker child).

        Returns a (batch, kv_heads, head_dim) tensor, kept as ``LayerObservation.channel_reference``, or None.
        Only mechanisms with ``needs_channels`` are asked.
        """
        return None

    def repro_rule(self, params: dict[str, Any]) -> ReproRule | None:
        """The rule as plain code for a standalone reproduction (:class:`ReproRule`), given the claimant's
        parameters; None: no standalone reproduction yet (the issue draft says so)."""
        return None

    # -- static -------------------------------------------------------------------------------

    def static_evidence(self, ctx: PressContext) -> StaticResult | None:
        """A static verdict and line-level evidence, for mechanisms that have them."""
        return None

    def expected_observation(self, static: str) -> str | None:
        """What the tracer should see given a static verdict (None: the verdicts are not comparable)."""
        return None

    def observation(self, check: ClaimCheck) -> str:
        """The word for what the tracer saw, in the vocabulary of :meth:`expected_observation`."""
        return check.verdict

    @classmethod
    def documentation(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")


@dataclass
class StaticResult:
    """A mechanism's static verdict, its evidence, and the analysis rules may read."""

    verdict: str
    evidence: list[Evidence]
    analysis: Any = None


@cache
def all_mechanisms() -> tuple[Mechanism, ...]:
    """One instance of every mechanism under ``rules/claim_*.py``, in matrix order."""
    from . import rules as rules_package

    found: dict[str, Mechanism] = {}
    for info in pkgutil.iter_modules(rules_package.__path__):
        if not info.name.startswith(MODULE_PREFIX):
            continue
        module = importlib.import_module(f"{rules_package.__name__}.{info.name}")
        for value in vars(module).values():
            if (inspect.isclass(value) and issubclass(value, Mechanism) and value is not Mechanism
                    and value.__module__ == module.__name__):
                found[value.id] = value()
    return tuple(sorted(found.values(), key=lambda m: (m.order, m.id)))


def mechanism_by_id(claim_id: str) -> Mechanism | None:
    return next((m for m in all_mechanisms() if m.id == claim_id), None)


def contract_claims(class_names: Sequence[str]) -> list[tuple[Mechanism, str, Claimant]]:
    """Mechanisms claimed by the contract of a kvpress base class among ``class_names`` (a press's MRO)."""
    found = []
    for mechanism in all_mechanisms():
        for base, claimant in mechanism.contracts.items():
            if base in class_names:
                found.append((mechanism, base, claimant))
                break
    return found


def contract_label(base: str) -> str:
    return f"the kvpress {base} contract"


# -- small helpers the checks share --------------------------------------------------------------


def spans(positions: Iterable[int], limit: int | None = 4, shortest: int = 2) -> str:
    """``[0, 1, 2, 3, 9]`` → ``"0–3, 9"``; long lists are cut after ``limit`` spans (None: never).

    A run of consecutive numbers becomes ``a–b`` when it holds at least ``shortest`` of them;
    shorter runs are listed one by one (layers read better as ``4, 5`` than ``4–5``).
    """
    ordered = sorted(set(positions))
    parts: list[str] = []
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        if end - start + 1 >= shortest and end > start:
            parts.append(f"{ordered[start]}–{ordered[end]}")
        else:
            parts.extend(str(n) for n in ordered[start : end + 1])
        start = end + 1
    if limit is None or len(parts) <= limit:
        return ", ".join(parts)
    return ", ".join(parts[:limit]) + f", … ({len(parts) - limit} more spans)"


def format_layers(layers: Iterable[int]) -> str:
    """``[0, 1, 2, 3, 5]`` → ``"0–3, 5"``: layer lists in one-line messages (runs of three or more joined)."""
    return spans(layers, limit=None, shortest=3)


def tie_tolerance(scores: Sequence[float]) -> float:
    """Scores this close count as tied: top-k may order them either way (float32 rounding)."""
    finite = [abs(s) for s in scores if s == s and abs(s) != float("inf")]
    return 1e-6 * (max(finite) if finite else 1.0) + 1e-12


def head_where(layer: int, row: int, head: int, batch: int) -> dict[str, int]:
    """``where`` keys for one layer, row and head (the row only when the run has several)."""
    where = {"layer": layer, "head": head}
    if batch > 1:
        where["row"] = row
    return where


def row_name(row: int, batch: int) -> str:
    return f" row {row}" if batch > 1 else ""


def set_jaccard(a: Iterable[int], b: Iterable[int]) -> float:
    """Jaccard similarity of two sets of kept positions (1.0 for two empty sets)."""
    first, second = set(a), set(b)
    union = len(first | second)
    return len(first & second) / union if union else 1.0
