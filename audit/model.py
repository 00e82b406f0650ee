"""The findings model: the one structure every reporter renders.

The engine (static analyzer, tracer, reference comparison) fills an :class:`AuditResult`;
the terminal view, JSON, Markdown, SARIF and GitHub annotations are all plain functions of it.
Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Severity(str, Enum):
    """Finding severity, ordered: ``info < warning < error``."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "error": 2}[self.value]


# Claim ids (mechanisms a paper can claim).
LAYER_INDEX_REUSE = "layer-index-reuse"

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


@dataclass(frozen=True)
class ClaimOrigin:
    """Who makes a claim, kept as parts so that no message has to take a string apart."""

    kind: str  # CITATION | CONFIG_OVERRIDE | OPTION
    place: str  # "class docstring", "inherited from ChunkKVPress (class docstring)", "kvaudit.toml claim-overrides[0]", "--claim"
    paper: str = ""  # registry key of the paper whose claim it is, e.g. "chunkkv"; "" when unknown
    paper_label: str = ""  # "ChunkKV (arXiv 2502.00299)"

    @property
    def source(self) -> str:
        """One line: where the claim was found or who forced it (the JSON ``source`` field)."""
        if self.kind == CITATION:
            return f"{self.place}: {self.paper_label}"
        return f"forced by {self.place}"

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


@dataclass(frozen=True)
class Defect:
    """A dynamic defect seen by the tracer (stale-indices, batch-row-0, crash)."""

    id: str
    message: str


@dataclass
class TraceRun:
    """What one prefill did, layer by layer."""

    tokens: int
    batch: int
    score_calls: list[int]
    kept: list[int]
    reused_from: list[int | None]
    compressed: list[bool] = field(default_factory=list)
    jaccard: list[float | None] = field(default_factory=list)  # layer l vs l-1; None for layer 0
    score_time_s: float = 0.0
    compress_time_s: float = 0.0
    prefill_time_s: float = 0.0
    # Added by the tracer (issue 4): layer x layer Jaccard of the kept indices (Figure-2-style heatmap),
    # and per-layer timings (score() calls; the press's forward hook, i.e. compress()).
    jaccard_matrix: list[list[float]] = field(default_factory=list)
    layer_score_time_s: list[float] = field(default_factory=list)
    layer_compress_time_s: list[float] = field(default_factory=list)
    # Repeated timings of this prefill, each on a fresh press (only when presses are compared):
    # their spread says which differences are noise.
    repeat_prefill_time_s: list[float] = field(default_factory=list)
    repeat_score_time_s: list[float] = field(default_factory=list)


@dataclass
class PressTrace:
    """The tracer's account of one press: its runs, dynamic verdicts and defects."""

    name: str
    path: str
    status: str  # "ok" | "error"
    message: str | None = None
    runs: list[TraceRun] = field(default_factory=list)
    verdicts: dict[str, str] = field(default_factory=dict)
    defects: list[Defect] = field(default_factory=list)
    reference: PressTrace | None = None  # the reference press run with the same scorer, if asked
    # Added by the tracer (issue 4): the built press (its repr) and one line of why per verdict id.
    config: str | None = None
    reasons: dict[str, str] = field(default_factory=dict)


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

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.path, self.line, self.name)


@dataclass(frozen=True)
class FileStatus:
    """Whether one input file could be audited; ``message`` says why not."""

    path: str
    status: str  # "ok" | "error"
    message: str | None = None


@dataclass
class AuditResult:
    """The findings model: files, presses and every finding, in a stable order."""

    files: list[FileStatus] = field(default_factory=list)
    presses: list[PressReport] = field(default_factory=list)
    # Findings not tied to a press (suppression comments, configuration).
    extra_findings: list[Finding] = field(default_factory=list)
    # Lines for the user that are neither findings nor errors, e.g. why `--claim` left a press alone.
    notes: list[str] = field(default_factory=list)
    # Warnings about the run as a whole, each said once: the audit is incomplete (kvpress's source unreadable).
    warnings: list[str] = field(default_factory=list)

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
