"""The findings model: the one structure every reporter renders.

The engine (static analyzer, tracer, reference comparison) fills an :class:`AuditResult`;
the terminal view, JSON, Markdown, SARIF and GitHub annotations are all plain functions of it.
Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, get_args

from .codec import UNSET, UnsetType


class Severity(str, Enum):
    """Finding severity, ordered: ``info < warning < error``."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "error": 2}[self.value]


# Claim ids (mechanisms a paper can claim). Every mechanism lives in rules/claim_*.py; this one is
# named here too because the static reuse analysis and its rules (KVA101-104) are built around it.
LAYER_INDEX_REUSE = "layer-index-reuse"

# Dynamic verdicts of a claim (kvaudit.mechanism): what the tracer measured against the paper's rule.
HOLDS, VIOLATED, NOT_APPLICABLE, NOT_RUN = "holds", "violated", "not-applicable", "not-run"
# A claim a tiny model cannot show (it needs trained weights, a real tokenizer, a paper kvaudit could not
# read): said with the reason, never silently absent, never a verdict from an absent structure.
NOT_CHECKABLE = "not-checkable"
# The verdicts as a type, for typed records on disk (the claims baseline), and as a tuple, in this order.
ClaimVerdict = Literal["holds", "violated", "not-applicable", "not-run", "not-checkable"]
CLAIM_VERDICTS: tuple[str, ...] = get_args(ClaimVerdict)
assert CLAIM_VERDICTS == (HOLDS, VIOLATED, NOT_APPLICABLE, NOT_RUN, NOT_CHECKABLE)

# Static verdicts for layer-index-reuse.
IMPLEMENTED, PARTIAL, MISSING = "implemented", "partial", "missing"
# Dynamic verdicts for layer-index-reuse.
OBSERVED, NOT_OBSERVED = "observed", "not-observed"

# Evidence kinds.
REUSE_PARAMETER = "reuse-parameter"
LAYER_CHECK = "layer-check"
INDEX_CACHE = "index-cache"
GUARDED_SCORE = "guarded-score"
# State kept per layer (a container keyed by the layer's own index): explains why it is not reuse.
PER_LAYER_STATE = "per-layer-state"
# Data read from another layer's entry (`d[layer_idx - 1]`, a group leader's): what is shared, and how.
CROSS_LAYER_READ = "cross-layer-read"
EVIDENCE_KINDS = (REUSE_PARAMETER, LAYER_CHECK, INDEX_CACHE, GUARDED_SCORE, PER_LAYER_STATE, CROSS_LAYER_READ)


@dataclass(frozen=True)
class Evidence:
    """One piece of source evidence for (or against) a claimed mechanism."""

    kind: str
    line: int
    detail: str
    path: str | None = None  # set only when the line lies in another file (an inherited base)


@dataclass(frozen=True)
class Finding:
    """A rule violation at one line of one file."""

    rule: str
    severity: Severity
    line: int
    message: str
    path: str
    column: int = 1
    press: str | None = None
    # Where the finding's node ends (1-based line; 1-based column just past the node, as in SARIF).
    end_line: int | None = None
    end_column: int | None = None


# Where a claim comes from (ClaimOrigin.kind).
CITATION = "citation"  # the press (or a base class) cites a registered paper
CONFIG_OVERRIDE = "config"  # a `claim-overrides` entry of the configuration file added it
OPTION = "option"  # `kvaudit check --claim` forced it
CONTRACT = "contract"  # a kvpress base class in the press's MRO promises it to every subclass


@dataclass(frozen=True)
class ClaimOrigin:
    """Who makes a claim, kept as parts so that no message has to take a string apart."""

    kind: str  # CITATION | CONFIG_OVERRIDE | OPTION | CONTRACT
    # "class docstring", "inherited from ChunkKVPress (class docstring)", "kvaudit.toml claim-overrides[0]",
    # "--claim", or the kvpress base class whose contract it is ("ScorerPress")
    place: str
    paper: str = ""  # registry key of the paper whose claim it is, e.g. "chunkkv"; "" when unknown
    paper_label: str = ""  # "ChunkKV (arXiv 2502.00299)"

    @property
    def source(self) -> str:
        """One line: where the claim was found or who forced it (the JSON ``source`` field)."""
        if self.kind == CITATION:
            return f"{self.place}: {self.paper_label}"
        return f"forced by {self.place}"

    @property
    def contract(self) -> str:
        """The kvpress base class whose contract makes the claim ("" for any other origin)."""
        return self.place if self.kind == CONTRACT else ""

    @property
    def summary(self) -> str:
        """Who makes the claim, for a sentence: the cited paper, or the option or file entry that forced it."""
        if self.kind == CITATION:
            return self.paper_label
        return self.place + (f", claim of {self.paper_label}" if self.paper_label else "")


@dataclass(frozen=True)
class Claim:
    """A mechanism a press claims: through the paper it cites, a configuration override or ``--claim``."""

    id: str
    line: int
    origin: ClaimOrigin

    @property
    def source(self) -> str:
        return self.origin.source

    @property
    def paper(self) -> str:
        return self.origin.paper

    def holds(self, press: str) -> str:
        """``press`` and who holds it to the claim, ending where the mechanism's name follows:
        "ChunkKVPress cites ChunkKV (arXiv 2502.00299), which claims" or "PlainPress is held by --claim to"."""
        if self.origin.kind == CITATION:
            return f"{press} cites {self.origin.paper_label}, which claims"
        return f"{press} is held by {self.origin.place} to"


# How a press names a paper without being held to its claims (PaperMention.kind).
RELATION = "relation"  # a passing mention: "related to H2O", "e.g. SnapKV's attention weights"
UNREGISTERED = "unregistered-citation"  # an explicit citation of a paper the registry does not know


@dataclass(frozen=True)
class PaperMention:
    """A paper the press's documentation names that gives it no claims: a passing mention
    (``phrase`` says which), or its citation of an arXiv id the registry does not have."""

    kind: str  # RELATION | UNREGISTERED
    label: str  # "H2O (arXiv 2306.14048)", "arXiv 2509.00388"
    place: str  # "class docstring", "inherited from KVzipPress (class docstring)"
    line: int
    paper: str = ""  # the registry key of a registered paper ("h2o"); "" for an unknown one
    phrase: str = ""  # what makes it a passing mention: "related to", "e.g."

    @property
    def text(self) -> str:
        """One line for the terminal and the report."""
        if self.kind == RELATION:
            return (f'mentions {self.label} ("{self.phrase}", {self.place}, line {self.line}): '
                    "a relation, not a citation; no claims taken from it")
        return f"cites {self.label} ({self.place}, line {self.line}), which the registry does not know"


@dataclass(frozen=True)
class Defect:
    """A dynamic defect seen by the tracer (stale-indices, batch-row-0, crash)."""

    id: str
    message: str


@dataclass
class ClaimCheck:
    """One claim of one press, checked on the tracer's grid: the verdict and the numbers behind it.

    ``expected`` and ``measured`` are what the paper's rule gives and what the press did, in the
    run that departs most from the rule (a violation) or a representative one; each is a number, a
    list of numbers or a short string. ``where`` locates that run: any of ``ratio``, ``length``,
    ``batch``, ``row``, ``layer``, ``head``, ``step``. ``runs`` counts the grid's runs by verdict.
    ``figures`` hold plot data for the report: ``title``, ``kind`` (line, step, bar or heatmap),
    ``x_label``, ``y_label``, and ``x`` with ``series`` (name -> values), or ``matrix`` for a heatmap.

    Fields are declared in the order of the ``kvaudit.trace/2`` contract (``kvaudit.codec`` writes
    them so); the keyword-only ones keep ``ClaimCheck(id, paper, verdict, message)`` positional.
    """

    id: str
    paper: str  # who claims it: "SnapKV (arXiv 2404.14469)", or a kvpress contract
    verdict: str  # holds | violated | not-applicable | not-run | not-checkable
    expected: Any = field(default=None, kw_only=True)
    measured: Any = field(default=None, kw_only=True)
    where: dict[str, Any] = field(default_factory=dict, kw_only=True)
    accepted: str | None = field(default=None, kw_only=True)  # the reason of the acceptance that covers it
    # True when checked on a press that ran with stand-ins for its Hub files (PressTrace.stand_in); left out otherwise.
    stand_in: bool | UnsetType = field(default=UNSET, kw_only=True)
    message: str = ""
    runs: dict[str, int] = field(default_factory=dict, kw_only=True)
    figures: list[dict[str, Any]] | UnsetType = field(default=UNSET, kw_only=True)  # left out when none

    @property
    def open_violation(self) -> bool:
        """Violated and not accepted: what gates CI."""
        return self.verdict == VIOLATED and self.accepted is None


@dataclass
class RunTimings:
    """Wall-clock seconds of one prefill (never part of a byte-stable output)."""

    prefill_s: float = 0.0
    score_s: float = 0.0  # in the press's score() calls
    compress_s: float = 0.0  # in the press's forward hook, i.e. compress()
    layer_score_s: list[float] = field(default_factory=list)
    layer_compress_s: list[float] = field(default_factory=list)
    # Repeated timings of this prefill, each on a fresh press (only when presses are compared):
    # their spread says which differences are noise.
    repeat_prefill_s: list[float] | UnsetType = UNSET
    repeat_score_s: list[float] | UnsetType = UNSET


@dataclass
class TraceRun:
    """What one prefill did, layer by layer.

    ``jaccard`` compares layer l with l-1 (None for layer 0), ``jaccard_matrix`` every pair of layers
    (the ChunkKV paper's Figure 2). ``ratio`` is the compression ratio of the run (None when the press
    has no ratio to set); ``decode_lengths`` the cache length per layer after each decoding step
    ([step][layer], batch row 0, mean over heads). Timings live apart, under ``timings``.
    """

    tokens: int
    batch: int
    score_calls: list[int]
    kept: list[int]
    reused_from: list[int | None]
    compressed: list[bool] = field(default_factory=list)
    jaccard: list[float | None] = field(default_factory=list)
    jaccard_matrix: list[list[float]] = field(default_factory=list)
    ratio: float | None = None
    compress_calls: list[int] = field(default_factory=list)
    decode_lengths: list[list[int]] = field(default_factory=list)
    timings: RunTimings = field(default_factory=RunTimings)


class Failure(str, Enum):
    """Why something could not be traced: decided where it happened, carried as this value, never re-read from text.

    The press's own doing: ``crash`` (it raised, hung or died: a defect), ``pretrained`` (it needs files
    made for a named pretrained model), ``abstract`` (an abstract press), ``build`` (it cannot be built
    with defaults). Not the press's: ``input`` (the target does not import, a bad ``--press``),
    ``setup`` (the model cannot be built with these options on this machine), ``internal`` (a bug of
    kvaudit's tracer).
    """

    CRASH = "crash"
    PRETRAINED = "pretrained"
    ABSTRACT = "abstract"
    BUILD = "build"
    INPUT = "input"
    SETUP = "setup"
    INTERNAL = "internal"

    @property
    def is_defect(self) -> bool:
        """Only a crash is the press's fault on the tiny model; the other kinds are limits of the setting."""
        return self is Failure.CRASH

    @property
    def reason(self) -> str:
        """How a report says it, in a few words."""
        return FAILURE_REASONS[self]


FAILURE_REASONS = {
    Failure.PRETRAINED: "needs files made for a named pretrained model (a download from the Hugging Face Hub; "
                        "kvaudit runs offline, HF_HUB_OFFLINE=1)",
    Failure.ABSTRACT: "abstract press, not traced",
    Failure.BUILD: "cannot be built with defaults (a wrapper or an abstract base; pass --press)",
    Failure.CRASH: "raised on the tiny model",
    Failure.INPUT: "bad input",
    Failure.SETUP: "cannot run with these options on this machine",
    Failure.INTERNAL: "internal error in the tracer",
}


@dataclass
class PressTrace:
    """The tracer's account of one press: its runs, its claims checked, and defects.

    Fields are declared in the order of the ``kvaudit.trace/2`` contract. ``failure`` says why a
    press with ``status="error"`` did not trace (left out otherwise); ``reference`` is the reference
    press run with the same scorer, when asked (left out otherwise).
    """

    name: str
    path: str
    status: str  # "ok" | "error"
    message: str | None = None
    failure: Failure | UnsetType = UNSET
    config: str | None = None  # the built press (its repr)
    settings: str | None = None  # why the catalogue built or ran it as it did (rules/presses.toml), if it did
    # The seeded stand-ins that replaced its Hub files (kvaudit.tracer.child.standins); left out when none.
    stand_in: str | UnsetType = UNSET
    claims: list[ClaimCheck] = field(default_factory=list)
    runs: list[TraceRun] = field(default_factory=list)
    defects: list[Defect] = field(default_factory=list)
    reference: PressTrace | UnsetType = UNSET

    def claim(self, claim_id: str) -> ClaimCheck | None:
        return next((c for c in self.claims if c.id == claim_id), None)

    @property
    def verdicts(self) -> dict[str, str]:
        """Claim id -> dynamic verdict (holds, violated, not-applicable, not-run)."""
        return {c.id: c.verdict for c in self.claims}


@dataclass
class PressReport:
    """Everything known about one press class."""

    name: str
    path: str
    line: int
    claims: list[Claim] = field(default_factory=list)
    verdicts: dict[str, str] = field(default_factory=dict)
    evidence: list[Evidence] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    trace: PressTrace | None = None
    # Papers its documentation names without citing them, or cites without the registry knowing them.
    mentions: list[PaperMention] = field(default_factory=list)
    # Where the class ends (its `class` statement to its last line): the region of the trace's findings.
    column: int = 1
    end_line: int | None = None
    end_column: int | None = None

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.path, self.line, self.name)


@dataclass(frozen=True)
class FileStatus:
    """Whether one input file could be audited; ``message`` says why not."""

    path: str
    status: str  # "ok" | "error"
    message: str | None = None


# Why a press-like class was not analysed (UnanalysedClass.reason).
BASE_NOT_IN_RUN = "not-in-run"  # its base is in a module that is neither in the run nor in kvpress
BASE_NOT_IN_KVPRESS = "not-in-kvpress"  # its base is a kvpress name that the installed kvpress lacks


@dataclass
class UnanalysedClass:
    """A class that looks like a press but derives from a base kvaudit cannot read: it is not audited."""

    path: str
    name: str
    line: int
    base: str  # the base's dotted name, as imported
    reason: str  # BASE_NOT_IN_RUN | BASE_NOT_IN_KVPRESS

    @property
    def why(self) -> str:
        """``its base X is not in ...``: what keeps the class from being analysed."""
        where = "the run, nor in kvpress" if self.reason == BASE_NOT_IN_RUN else "the installed kvpress"
        return f"its base {self.base} is not in {where}"


@dataclass
class ModelInfo:
    """The model the tracer ran presses on."""

    arch: str | None = None
    layers: int | None = None
    source: str | None = None  # "embedded tiny llama, …, built locally (HF_HUB_OFFLINE=1)" or a folder


@dataclass
class TraceSummary:
    """What the trace stage adds to a run: the model, the grid and the acceptances that covered nothing."""

    model: ModelInfo | None = None
    plan: list[str] = field(default_factory=list)  # the prefills, "512×1" each
    grid: str = ""  # the prefills, ratios and decoding steps in one line
    unused_acceptances: list[str] = field(default_factory=list)
    learned_attention: bool = False  # the model is kvaudit's tiny trained model (--model trained)
    # Worker start-up (imports of torch/transformers/kvpress, model build): timings, never compared.
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class AuditResult:
    """The findings model: files, presses and every finding, in a stable order.

    ``traced`` is set when the trace stage ran (``kvaudit trace``, ``check --trace``, ``report``).
    """

    files: list[FileStatus] = field(default_factory=list)
    presses: list[PressReport] = field(default_factory=list)
    # Findings not tied to a press (suppression comments, configuration).
    extra_findings: list[Finding] = field(default_factory=list)
    # Lines for the user that are neither findings nor errors, e.g. why `--claim` left a press alone.
    notes: list[str] = field(default_factory=list)
    # Warnings about the run as a whole, each said once: the audit is incomplete (kvpress's source unreadable).
    warnings: list[str] = field(default_factory=list)
    traced: TraceSummary | None = None
    # Press-like classes whose base cannot be read (each has its line in `warnings` too).
    unanalysed: list[UnanalysedClass] = field(default_factory=list)

    @property
    def findings(self) -> list[Finding]:
        found = [f for p in self.presses for f in p.findings] + list(self.extra_findings)
        return sorted(found, key=lambda f: (f.path, f.line, f.rule, f.message))

    @property
    def has_errors(self) -> bool:
        return any(f.status == "error" for f in self.files)

    def sort(self) -> None:
        """Put everything in a deterministic order (output must be byte-stable)."""
        self.files.sort(key=lambda f: f.path)
        self.presses.sort(key=lambda p: p.key)
        for press in self.presses:
            press.findings.sort(key=lambda f: (f.line, f.rule, f.message))
            press.evidence.sort(key=lambda e: (e.path or "", e.line, e.kind, e.detail))
        self.extra_findings.sort(key=lambda f: (f.path, f.line, f.rule, f.message))
        self.unanalysed.sort(key=lambda u: (u.path, u.line, u.name, u.base))
