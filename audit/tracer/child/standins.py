"""Seeded local stand-ins for the files kvpress's presses load from the Hugging Face Hub.

Runs in a worker child. Nine presses of kvpress 0.5.5 load a learned part made for a named model:
Q-filters, DuoAttention head patterns, a KVzap surrogate, Fast KVzip gates, RestoreKV embeddings and
adapters, ExpectedAttention statistics, a LU-KV budget curve, or the model's tokenizer. kvaudit runs
offline on a tiny model that has no name, so those loads fail. A stand-in gives the press a learned
part of the right shape, drawn from a fixed seed, so that the selection mechanism *around* it runs
and its claims are checked; the learned values themselves stay ``not-checkable``.

Each stand-in is injected into one press instance through the press's own attributes, never by
patching kvpress's code: a field the press fills lazily is pre-filled (``gates``, ``_budget_curves``),
or the loader the press calls on itself (``self.load_q_filters(...)``) is shadowed on the instance.
The press's own ``post_init_from_model`` still runs, with what the loader returned. A load the
stand-in does not cover (DuoAttention's ``on_the_fly_scoring``, which reads a Hub dataset) still
fails, and the tracer reports the plain Hub reason.

``rules/presses.toml`` names the stand-in of each press (``stand-in = "q-filters"``); torch and
kvpress are imported only when a stand-in is built.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ...model import HOLDS, NOT_APPLICABLE, NOT_CHECKABLE, VIOLATED, ClaimCheck, PressTrace
from .settings import stand_in_for

SEED = 0  # every stand-in is drawn from this seed: the same press sees the same learned part every time
# DuoAttention's released patterns (mit-han-lab/duo-attention attn_patterns/*/config.json).
DUO_SINK, DUO_RECENT = 128, 256
RESTORE_TOKENS = 8  # RestoreKV's restore tokens (kvpress's docstring: "n=8 restore tokens")
GATE_DIM, GATE_SINK = 16, 16  # Fast KVzip's released gates: q{group}_dim16_sink16
CURVE_TARGETS = 99  # LU-KV curves: one row per target ratio 0.01 .. 0.99
TOKENIZER_VOCAB = 400  # the local byte-level tokenizer of kvaudit.tinymodel


@dataclass(frozen=True)
class Applied:
    """One stand-in put into one press: what it is, and what it stands in for (the learned part)."""

    kind: str
    description: str  # "random Q-filters (8 layers × 2 KV heads × 32 channels), seed 0"
    learned: str  # "the Q-filters trained for a named model (nthngdy/<model>_qfilt)"
    not_checkable: tuple[str, ...] = ()  # claims of the traced press that would judge the learned values


@dataclass
class Shapes:
    """What a stand-in needs of the model: its sizes, dtype and device."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    vocab: int
    dtype: Any
    device: Any

    @classmethod
    def of(cls, model: Any) -> Shapes:
        config = model.config
        heads = int(config.num_attention_heads)
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        hidden = int(config.hidden_size)
        head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
        return cls(int(config.num_hidden_layers), heads, kv_heads, head_dim, hidden, int(config.vocab_size),
                   model.dtype, model.device)

    def __str__(self) -> str:
        return f"{self.layers} layers × {self.kv_heads} KV heads"


def _generator(seed: int) -> Any:
    import torch

    return torch.Generator().manual_seed(seed)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Modules that draw their initial weights from torch's global generator: seed it, then put it back."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# ---------------------------------------------------------------------------------------------
# The learned parts, one factory per kind (plain tensors and modules of the right shapes)
# ---------------------------------------------------------------------------------------------


def random_q_filters(shapes: Shapes, seed: int = SEED) -> Any:
    """Unit vectors, one per (layer, KV head): Q-filters are sign-fixed singular vectors of the queries."""
    import torch

    filters = torch.randn(shapes.layers, shapes.kv_heads, shapes.head_dim, generator=_generator(seed))
    return filters / filters.norm(dim=-1, keepdim=True)


def random_head_pattern(shapes: Shapes, seed: int = SEED) -> tuple[int, int, Any]:
    """DuoAttention's pattern: sink and recent sizes (the released ones), a gate value in [0, 1) per (layer, KV head)."""
    import numpy as np

    scores = np.random.default_rng(seed).random((shapes.layers, shapes.kv_heads))
    return DUO_SINK, DUO_RECENT, scores


def random_kvzap_surrogate(shapes: Shapes, model_type: str, seed: int = SEED) -> Any:
    """KVzap's surrogate: per layer, a linear map or a 2-layer MLP from the hidden state to one score per KV head."""
    from kvpress.presses.kvzap_press import KVzapConfig, KVzapModel

    hidden_dim = None if model_type == "linear" else shapes.hidden
    config = KVzapConfig(input_dim=shapes.hidden, output_dim=shapes.kv_heads, n_modules=shapes.layers,
                         hidden_dim=hidden_dim)
    with _seeded(seed):
        surrogate = KVzapModel(config)
    return surrogate.to(shapes.device, dtype=shapes.dtype).eval()


def random_fastkvzip_gates(shapes: Shapes, seed: int = SEED) -> list[Any]:
    """Fast KVzip's gates, one per layer (low-rank query/key projections of the hidden state, learned sink keys)."""
    import torch
    from kvpress.presses.fastkvzip_press import FastKVzipGate

    gates = []
    with _seeded(seed):
        for index in range(shapes.layers):
            gate = FastKVzipGate(index, shapes.hidden, shapes.kv_heads, shapes.heads // shapes.kv_heads, shapes.dtype,
                                 GATE_DIM, GATE_SINK)
            with torch.no_grad():  # the trained sink keys are not zero; the default init leaves them so
                gate.k_base.normal_()
            gates.append(gate.to(shapes.device))
    return gates


def random_budget_curve(shapes: Shapes, seed: int = SEED) -> Any:
    """A LU-KV budget curve ``[99, layers, KV heads]``: row t prunes (t+1)% on average, spread over the heads.

    Each row's mean is exactly its target ratio, so the press's global budget is the one asked for;
    how it is shared between layers and heads is random (the trained curve is what the paper learns).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    curve = np.empty((CURVE_TARGETS, shapes.layers, shapes.kv_heads))
    for row in range(CURVE_TARGETS):
        target = (row + 1) / 100
        spread = rng.uniform(-1.0, 1.0, (shapes.layers, shapes.kv_heads))
        spread -= spread.mean()
        reach = np.abs(spread).max() or 1.0
        curve[row] = target + spread * min(target, 1 - target) / reach
    return np.clip(curve, 0.0, 1.0)  # rounding only: the spread stays within [0, 1] by construction


def random_query_stats(shapes: Shapes, seed: int = SEED) -> Any:
    """ExpectedAttention's statistics: per (layer, head), a mean and a positive-definite covariance of the queries."""
    import torch
    from kvpress.presses.expected_attention_with_stats import ExpectedAttentionStats

    generator = _generator(seed)
    stats = ExpectedAttentionStats(num_layers=shapes.layers, num_heads=shapes.heads, head_dim=shapes.head_dim,
                                   dataset_name="stand-in", model_name="stand-in", num_samples=0, sample_seq_len=0,
                                   n_sink=0)
    factor = torch.randn(shapes.layers, shapes.heads, shapes.head_dim, shapes.head_dim, generator=generator)
    with torch.no_grad():
        stats.query_mean.copy_(torch.randn(shapes.layers, shapes.heads, shapes.head_dim, generator=generator))
        stats.query_cov.copy_(factor @ factor.transpose(-1, -2) / shapes.head_dim
                              + 0.1 * torch.eye(shapes.head_dim))
    return stats


def random_restore_embeddings(shapes: Shapes, scale: float, seed: int = SEED) -> Any:
    """RestoreKV's restore tokens: ``RESTORE_TOKENS`` input embeddings of the model's width and scale."""
    import torch

    embeddings = torch.randn(RESTORE_TOKENS, shapes.hidden, generator=_generator(seed)) * scale
    return embeddings.to(shapes.device, dtype=shapes.dtype)


def local_tokenizer(vocab: int) -> Any:
    """The byte-level BPE tokenizer of :mod:`kvaudit.tinymodel`, trained locally (deterministic, no download)."""
    from ...tinymodel import build_local_tokenizer

    return build_local_tokenizer(vocab_size=min(TOKENIZER_VOCAB, vocab))


# ---------------------------------------------------------------------------------------------
# Putting them into a press
# ---------------------------------------------------------------------------------------------


class StandIns:
    """The stand-ins of one trace job: injects them into fresh presses, holds what they need on disk.

    A context manager: the temporary folder of a stand-in tokenizer is removed on leaving.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.shapes = Shapes.of(model)
        self.applied: list[Applied] = []
        self._folder: str | None = None

    def __enter__(self) -> StandIns:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def equip(self, factory: Callable[[], Any]) -> Callable[[], Any]:
        """A factory of the same presses, each with the stand-ins of every press nested in it."""

        def build() -> Any:
            press = factory()
            self.put_into(press)
            return press

        return build

    def put_into(self, press: Any) -> list[Applied]:
        """Put the stand-in of each press reachable from ``press`` that has one; record what was put."""
        from .build import reachable_presses

        found = []
        # The tokenizer first: it renames the model, and other stand-ins name their files after it.
        nested = [(p, settings) for p in reachable_presses(press) if (settings := stand_in_for(type(p))) is not None]
        nested.sort(key=lambda item: item[1].stand_in not in TOKENIZER_KINDS)
        for holder, settings in nested:
            applied = FACTORIES[settings.stand_in](self, holder)
            if applied is None:  # a load the stand-in does not cover: the press reports it
                continue
            applied = Applied(applied.kind, applied.description, applied.learned, settings.not_checkable)
            found.append(applied)
            if applied not in self.applied:
                self.applied.append(applied)
        return found

    # -- one function per kind: (self, press) -> Applied | None --------------------------------

    def q_filters(self, press: Any) -> Applied:
        filters = random_q_filters(self.shapes)
        press.load_q_filters = lambda model_name: filters  # QFilterPress.post_init_from_model calls it on itself
        return Applied("q-filters",
                       f"random unit Q-filters ({self.shapes} × {self.shapes.head_dim} channels), seed {SEED}",
                       "the Q-filters trained for a named model (nthngdy/<model>_qfilt)")

    def head_pattern(self, press: Any) -> Applied | None:
        if press.on_the_fly_scoring:  # scores computed from a Hub dataset and the model's tokenizer: not covered
            return None
        pattern = random_head_pattern(self.shapes)
        press.load_attention_pattern = lambda model: pattern
        return Applied("head-pattern", f"random DuoAttention gate values ({self.shapes}), sink {DUO_SINK} and recent "
                                       f"{DUO_RECENT} as released, seed {SEED}",
                       "the head pattern trained for a named model (mit-han-lab/duo-attention attn_patterns)")

    def kvzap_surrogate(self, press: Any) -> Applied:
        # KVzapPress.post_init_from_model loads only when the name it derives differs from the one it holds.
        press.kvzap_model_name = f"nvidia/KVzap-{press.model_type}-{self.model.config.name_or_path.split('/')[-1]}"
        press.kvzap_model = random_kvzap_surrogate(self.shapes, press.model_type)
        kind = "linear map" if press.model_type == "linear" else f"2-layer MLP (width {self.shapes.hidden})"
        return Applied("kvzap-surrogate", f"random KVzap surrogate, a {kind} per layer ({self.shapes}), seed {SEED}",
                       "the surrogate trained to approximate KVzip+ (nvidia/KVzap-<type>-<model>)")

    def fastkvzip_gates(self, press: Any) -> Applied:
        press.gates = _Labelled(random_fastkvzip_gates(self.shapes), f"<{self.shapes.layers} stand-in gates>")
        return Applied("fastkvzip-gates", f"random Fast KVzip gates ({self.shapes}, rank {GATE_DIM}, {GATE_SINK} sink "
                                          f"keys), seed {SEED}",
                       "the gates trained on KVzip scores for a named model (Jang-Hyun/Fast-KVzip)")

    def budget_curve(self, press: Any) -> Applied:
        press._budget_curves = random_budget_curve(self.shapes)
        return Applied("budget-curve", f"random LU-KV budget curve ({CURVE_TARGETS} ratios × {self.shapes}; each "
                                       f"ratio's mean is the ratio), seed {SEED}",
                       "the budget curve profiled offline for a named model and scorer (baidu-baige/LU-KV)")

    def query_stats(self, press: Any) -> Applied | None:
        if press.stats_folder is not None:  # the user's own local statistics: nothing to stand in for
            return None
        stats = random_query_stats(self.shapes)
        press._maybe_load_stats_from_hub = lambda model: stats
        return Applied("query-stats", f"random query statistics (mean and covariance per layer and head, "
                                      f"{self.shapes.layers} layers × {self.shapes.heads} heads), seed {SEED}",
                       "the query statistics measured on a dataset for a named model (alessiodevoto/exp_att_stats_*)")

    def tokenizer(self, press: Any) -> Applied | None:
        if self._tokenizer_loads():
            return None
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="kvaudit-tokenizer-")
            local_tokenizer(self.shapes.vocab).save_pretrained(self._folder)
            # KVzipPress loads AutoTokenizer.from_pretrained(model.config.name_or_path): this child's copy
            # of the model is named after the folder (the worker's model keeps its own config).
            self.model.config.name_or_path = self._folder
        return Applied("tokenizer", f"a local byte-level tokenizer ({min(TOKENIZER_VOCAB, self.shapes.vocab)} ids, "
                                    "no chat template)",
                       "the model's own tokenizer (the reconstruction prompt means something only to a trained model)")

    def restore(self, press: Any) -> Applied:
        tokenizer = self.tokenizer(press)  # RestoreKVPress is a KVzipPress: it loads the model's tokenizer too
        model = self.model
        model_name = model.config.name_or_path.split("/")[-1]
        # RestoreKVPress.post_init_from_model loads only when the name it derives differs from the one it holds.
        press.restore_model_name = f"higokri/RestoreKV-{model_name}{'_plus' if press.kvzip_plus_normalization else ''}"
        scale = float(model.get_input_embeddings().weight.detach().float().std())
        press.restore_embeddings = random_restore_embeddings(self.shapes, scale)
        self._restore_adapter(press.adapter_name)
        return Applied("restore", f"random RestoreKV restore embeddings ({RESTORE_TOKENS} × {self.shapes.hidden}) and "
                                  f"a LoRA adapter at its initial state (B = 0), seed {SEED}"
                                  + (f"; {tokenizer.description}" if tokenizer is not None else ""),
                       "the restore embeddings and LoRA adapters trained by self-distillation "
                       "(higokri/RestoreKV-<model>)")

    # -- helpers -------------------------------------------------------------------------------

    def _tokenizer_loads(self) -> bool:
        """Whether the model's own tokenizer loads from its folder (a ``--model`` folder that has one)."""
        import os

        name = self.model.config.name_or_path
        if self._folder is not None and name == self._folder:
            return False
        if not name or not os.path.isdir(name):
            return False
        from transformers import AutoTokenizer

        try:
            AutoTokenizer.from_pretrained(name, local_files_only=True)
        except Exception:  # noqa: BLE001 - no tokenizer there: the stand-in's
            return False
        return True

    def _restore_adapter(self, name: str) -> None:
        """A LoRA adapter named as RestoreKV's, on this child's model, disabled (the press enables it for its pass)."""
        if name in getattr(self.model, "peft_config", {}):
            return
        from peft import LoraConfig

        with _seeded(SEED):
            config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
            self.model.add_adapter(config, adapter_name=name)
        self.model.disable_adapters()


class _Labelled(list):
    """A list whose repr is a label: the press's repr (the trace's ``config``) stays one short line."""

    def __init__(self, items: list, label: str) -> None:
        super().__init__(items)
        self.label = label

    def __repr__(self) -> str:
        return self.label


TOKENIZER_KINDS = ("tokenizer", "restore")
FACTORIES: dict[str, Callable[[StandIns, Any], Applied | None]] = {
    "q-filters": StandIns.q_filters,
    "head-pattern": StandIns.head_pattern,
    "kvzap-surrogate": StandIns.kvzap_surrogate,
    "fastkvzip-gates": StandIns.fastkvzip_gates,
    "budget-curve": StandIns.budget_curve,
    "query-stats": StandIns.query_stats,
    "tokenizer": StandIns.tokenizer,
    "restore": StandIns.restore,
}


# ---------------------------------------------------------------------------------------------
# Marking the trace
# ---------------------------------------------------------------------------------------------


def mark(trace: PressTrace, applied: list[Applied]) -> PressTrace:
    """Say in the trace that it ran with stand-ins: the press's ``stand_in``, each claim checked that way,
    and the claims that would judge the learned values ``not-checkable``, with the reason.

    A press that never ran (it still reached for the Hub, where no stand-in covers its load) keeps its
    plain reason, and nothing is marked.
    """
    if not applied or not (trace.runs or trace.defects):
        return trace
    trace.stand_in = "; ".join(item.description for item in applied)
    learned = {claim: item for item in applied for claim in item.not_checkable}
    claims = []
    for check in trace.claims:
        item = learned.get(check.id)
        if item is not None:
            check = ClaimCheck(check.id, check.paper, NOT_CHECKABLE,
                               f"not checkable: its rule judges {item.learned}, which kvaudit replaced with a stand-in "
                               f"({item.description})")
        elif check.verdict in (HOLDS, VIOLATED, NOT_APPLICABLE):  # judged on the runs, so on the stand-ins
            check.stand_in = True
        claims.append(check)
    trace.claims = claims
    return trace

