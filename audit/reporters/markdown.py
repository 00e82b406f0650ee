"""Markdown report: the findings model rendered for a reviewer who runs nothing.

It renders the same :class:`AuditResult` as the terminal, JSON and SARIF views; it decides
nothing of its own (verdicts, findings and disagreements all come from the model and
:mod:`kvaudit.tracer.compare`). The same input gives the same bytes: no timestamp unless asked.

Each press's static part sits between ``<!-- kvaudit:static NAME -->`` and
``<!-- kvaudit:end -->`` markers, so a test can regenerate it and compare it byte for byte
with a committed report while the timed, dynamic parts may differ.
"""

from __future__ import annotations

import os
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..model import CITATION, LAYER_INDEX_REUSE, AuditResult, Finding, PressReport, PressTrace, TraceRun
from ..rule import rule_by_id
from ..tracer.compare import verdict_pair

STATIC_BEGIN = "<!-- kvaudit:static {name} -->"
STATIC_END = "<!-- kvaudit:end -->"
EXCERPT_CONTEXT = 1
_SITE_PACKAGES = re.compile(r"^.*?/(?:site|dist)-packages/")


@dataclass
class ReportContext:
    """What the report needs besides the findings model: where it lives, its figures."""

    title: str = "kvaudit report"
    targets: list[str] = field(default_factory=list)
    report_dir: Path = Path(".")
    figures: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # press name -> (caption, file)
    figures_note: str | None = None  # why figures are missing, when they are
    header_lines: list[str] = field(default_factory=list)  # versions, model, optional timestamp
    summary_lines: list[str] = field(default_factory=list)  # plain statements added by the caller


def stable_path(path: str) -> str:
    """Installed files are shown from their package down, the same on every machine."""
    return _SITE_PACKAGES.sub("", path)


def _link(path: str, line: int, ctx: ReportContext) -> str:
    """A link from the report to the line when the file is in the working tree, else plain text."""
    shown = stable_path(path)
    if Path(path).is_absolute() or shown != path:
        return f"`{shown}:{line}`"
    relative = os.path.relpath(path, ctx.report_dir)
    return f"[`{shown}:{line}`]({Path(relative).as_posix()}#L{line})"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _excerpt(path: str, line: int) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    first, last = max(1, line - EXCERPT_CONTEXT), min(len(lines), line + EXCERPT_CONTEXT)
    width = len(str(last))
    body = [f"{'>' if n == line else ' '} {n:>{width}} | {lines[n - 1]}" for n in range(first, last + 1)]
    return ["```text", *body, "```"]


def _what_to_do(rule_id: str) -> str:
    rule = rule_by_id(rule_id)
    if rule is None:
        return ""
    match = re.search(r"What to do:(.*?)(?:\n\s*\n|$)", rule.documentation(), re.S)
    return " ".join(match.group(1).split()) if match else ""


def _dynamic(press: PressReport) -> str:
    if press.trace is None:
        return "not traced"
    if press.trace.status != "ok":
        return f"error: {press.trace.message}"
    return press.trace.verdicts.get(LAYER_INDEX_REUSE, "—")


def _reference_cell(press: PressReport) -> str:
    trace = press.trace
    if trace is None or trace.reference is None or not trace.runs or not trace.reference.runs:
        return "—"
    own, ref = trace.runs[0], trace.reference.runs[0]
    return f"score() {sum(own.score_calls)} vs {sum(ref.score_calls)} calls"


# Messages of presses that stopped because kvaudit runs offline (HF_HUB_OFFLINE=1).
_DOWNLOAD_SIGNS = re.compile(r"Hub|huggingface|Repo id|Checkpoint not in|not released|local cache", re.I)


def untraced_lines(result: AuditResult) -> list[str]:
    """Presses that could not be traced, grouped by why: a download, a required argument, an error."""
    groups: dict[str, list[str]] = {}
    for press in result.presses:
        trace = press.trace
        if trace is None or trace.status == "ok":
            continue
        message = trace.message or "unknown error"
        if _DOWNLOAD_SIGNS.search(message):
            group = "needs a download from the Hugging Face Hub (kvaudit runs offline, HF_HUB_OFFLINE=1)"
        elif "needs a value for" in message or "abstract press" in message:
            group = "cannot be built with defaults (a wrapper or an abstract base; pass --press)"
        else:
            group = "raised on the tiny model"
        groups.setdefault(group, []).append(f"  - {press.name}: {_cell(message)}")
    lines = []
    for group in sorted(groups):
        lines += [f"- {group}:", *groups[group]]
    return lines


def summary_table(result: AuditResult) -> list[str]:
    rows = ["| press | claim | static verdict | dynamic verdict | reference comparison | findings |",
            "| --- | --- | --- | --- | --- | --- |"]
    for press in result.presses:
        claims = ", ".join(c.id for c in press.claims) or "—"
        static = ", ".join(press.verdicts.values()) or "—"
        pair = verdict_pair(press)
        dynamic = _dynamic(press) + ("" if pair.agrees else " **(disagrees)**")
        findings = ", ".join(sorted({f.rule for f in press.findings})) or "none"
        rows.append(f"| {press.name} | {claims} | {static} | {_cell(dynamic)} | {_reference_cell(press)} | {findings} |")
    return rows


def _static_section(press: PressReport, ctx: ReportContext) -> list[str]:
    out = [STATIC_BEGIN.format(name=press.name), f"Defined at {_link(press.path, press.line, ctx)}.", ""]
    if press.claims:
        out.append("**Claim.**")
        for claim in press.claims:
            how = f"cited in the {claim.source}" if claim.origin.kind == CITATION else claim.source
            out.append(f"- `{claim.id}`, {how} (line {claim.line}).")
        out.append("")
        out.append(f"**Static verdict:** {', '.join(press.verdicts.values()) or '—'}.")
        out.append("")
        out.append("**Static evidence.**")
        if not press.evidence:
            out.append("- none found: no layer-group arithmetic, no branch on the layer's position, no index cache, "
                       "no guarded `score()`.")
        for item in press.evidence:
            path = item.path or press.path
            out.append(f"- `{item.kind}` at {_link(path, item.line, ctx)}: {item.detail}")
            out.extend("  " + line for line in _excerpt(path, item.line))
        out.append("")
    else:
        out += ["No claimed mechanism (its paper is not in the registry, or claims nothing kvaudit audits): "
                "no verdict.", ""]
    out.append("**Findings.**")
    if not press.findings:
        out.append("- none")
    for finding in press.findings:
        out.extend(_finding_lines(finding, ctx))
    out += ["", STATIC_END, ""]
    return out


def _finding_lines(finding: Finding, ctx: ReportContext) -> list[str]:
    lines = [f"- **{finding.rule}** ({finding.severity.value}) at {_link(finding.path, finding.line, ctx)}: "
             f"{finding.message}"]
    lines.extend("  " + line for line in _excerpt(finding.path, finding.line))
    advice = _what_to_do(finding.rule)
    if advice:
        lines.append(f"  *What to do:* {advice}")
    return lines


def _fmt(values: Iterable[object]) -> list[str]:
    return ["—" if v is None else str(v) for v in values]


def _trace_table(run: TraceRun, reference: TraceRun | None) -> list[str]:
    header = "| layer | score() calls | kept | reused from |"
    rule = "| --- | --- | --- | --- |"
    if reference is not None:
        header += " reference score() calls | reference kept | reference reused from |"
        rule += " --- | --- | --- |"
    rows = [header, rule]
    for layer, (calls, kept, reused) in enumerate(zip(run.score_calls, run.kept, _fmt(run.reused_from))):
        row = f"| {layer} | {calls} | {kept} | {reused} |"
        if reference is not None and layer < len(reference.score_calls):
            row += f" {reference.score_calls[layer]} | {reference.kept[layer]} | {_fmt(reference.reused_from)[layer]} |"
        rows.append(row)
    return rows


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


@dataclass(frozen=True)
class _Timed:
    """A time as the report states it: the median of the repeated runs when there are some."""

    value: float
    spread: float | None  # interquartile range of the repeats (one slow outlier does not swell it); None for one run
    runs: int

    def text(self) -> str:
        if self.spread is None:
            return _ms(self.value)
        return f"{_ms(self.value)} (median of {self.runs}, interquartile range {_ms(self.spread)})"


def _timed(repeats: list[float], single: float) -> _Timed:
    if len(repeats) < 3:
        return _Timed(single, None, 1)
    first, median, third = statistics.quantiles(repeats, n=4, method="inclusive")
    return _Timed(median, third - first, len(repeats))


def score_time(run: TraceRun) -> _Timed:
    return _timed(run.repeat_score_time_s, run.score_time_s)


def prefill_time(run: TraceRun) -> _Timed:
    return _timed(run.repeat_prefill_time_s, run.prefill_time_s)


def compare_times(mine: _Timed, other: _Timed, whole: float) -> str:
    """How much less (or more) ``other`` took than ``mine``, or that the runs cannot tell.

    A difference no larger than the spread of the repeated runs (the larger of the two
    interquartile ranges) is noise
    on the tiny model: it is reported as "no measurable difference", never as a saving.
    """
    if mine.spread is None or other.spread is None:
        return "a difference one run each cannot tell from noise"
    difference = mine.value - other.value
    spread = max(mine.spread, other.spread)
    if abs(difference) <= spread:
        return (f"no measurable difference (the medians differ by {_ms(abs(difference))}, within the "
                f"{_ms(spread)} interquartile range of the repeated runs)")
    word = "less" if difference > 0 else "more"
    return f"{_ms(abs(difference))} {word} ({_share(abs(difference), whole)} of the prefill)"


def _dynamic_section(press: PressReport, ctx: ReportContext) -> list[str]:
    trace: PressTrace | None = press.trace
    if trace is None:
        return ["**Trace.** Not traced.", ""]
    if trace.status != "ok":
        return [f"**Trace.** The press could not be traced: {trace.message}", ""]
    out = []
    if trace.config:
        out += [f"**Built as:** `{trace.config}`" + (f"; the reference as `{trace.reference.config}`"
                                                     if trace.reference is not None and trace.reference.config else "")
                + ".", ""]
    out.append(f"**Dynamic verdict:** {trace.verdicts.get(LAYER_INDEX_REUSE, '—')}.")
    pair = verdict_pair(press)
    if pair.comparable:
        out.append(f"Static and dynamic verdicts: {pair.explanation}.")
    for defect in trace.defects:
        out.append(f"- defect **{defect.id}**: {defect.message}")
    out.append("")
    if trace.runs:
        run = trace.runs[0]
        reference = trace.reference.runs[0] if trace.reference and trace.reference.runs else None
        out.append(f"**Trace per layer** (first prefill: {run.tokens} tokens, batch {run.batch}"
                   + (", beside the reference reuse press" if reference else "") + ").")
        out.append("")
        out.extend(_trace_table(run, reference))
        out.append("")
        if reference is not None:
            out.append("**Comparison with the reference press** (`kvaudit.reference.ChunkKVReusePress`, same scorer, "
                       "ratio and chunk length):")
            out.append("")
            out.append("| | score() calls | score() time | compress() time | prefill time |")
            out.append("| --- | --- | --- | --- | --- |")
            for label, item in ((press.name, run), ("reference", reference)):
                out.append(f"| {label} | {sum(item.score_calls)} | {score_time(item).text()} | "
                           f"{_ms(item.compress_time_s)} | {prefill_time(item).text()} |")
            out.append("")
            out.append(f"`score()` time, reference against {press.name}: "
                       f"{compare_times(score_time(run), score_time(reference), prefill_time(run).value)}; "
                       f"prefill time: {compare_times(prefill_time(run), prefill_time(reference), prefill_time(run).value)}.")
            out.append("")
    for caption, filename in ctx.figures.get(press.name, []):
        out += [f"![{caption}]({filename})", ""]
    return out


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole > 0 else "n/a"


def key_statements(result: AuditResult) -> list[str]:
    """Plain sentences, with figures, for each press that claims layer-wise index reuse."""
    lines = []
    for press in result.presses:
        verdict = press.verdicts.get(LAYER_INDEX_REUSE)
        if verdict is None:
            continue
        claim = next(c for c in press.claims if c.id == LAYER_INDEX_REUSE)
        has = {"implemented": "implements", "partial": "only partly implements", "missing": "has no"}[verdict]
        sentence = (f"**{press.name} {has} layer-wise index reuse** (claimed by {claim.origin.summary}): "
                    f"static verdict `{verdict}`")
        trace = press.trace
        if trace is not None and trace.status == "ok" and trace.runs:
            run = trace.runs[0]
            scored = sum(1 for calls in run.score_calls if calls)
            sentence += (f"; traced, `score()` ran on {scored} of {len(run.score_calls)} layers "
                         f"(dynamic verdict `{trace.verdicts.get(LAYER_INDEX_REUSE, '—')}`)")
            reference = trace.reference.runs[0] if trace.reference and trace.reference.runs else None
            scored_time, whole = score_time(run), prefill_time(run)
            if whole.value > 0:
                sentence += (f". `score()` took {_ms(scored_time.value)} of a {_ms(whole.value)} prefill "
                             f"({_share(scored_time.value, whole.value)}) on the tiny model"
                             + (f" (medians of {whole.runs} runs)" if whole.spread is not None else ""))
            if reference is not None:
                ref_scored = sum(1 for calls in reference.score_calls if calls)
                sentence += (f"; the reference press with reuse scored on {ref_scored} layers and spent "
                             f"{_ms(score_time(reference).value)} in `score()`: "
                             f"{compare_times(scored_time, score_time(reference), whole.value)}")
        lines.append(f"- {sentence}.")
    return lines


def render_markdown(result: AuditResult, ctx: ReportContext) -> str:
    """The whole report as Markdown text."""
    out = [f"# {ctx.title}", ""]
    out += [f"- {line}" for line in ctx.header_lines]
    if ctx.targets:
        out.append(f"- targets: {', '.join(f'`{t}`' for t in ctx.targets)}")
    out.append("")
    out += ["## Summary", ""]
    out += ctx.summary_lines + ([""] if ctx.summary_lines else [])
    out += summary_table(result) + [""]
    untraced = untraced_lines(result)
    if untraced:
        out += ["Presses that were not traced:", "", *untraced, ""]
    errors = [f for f in result.files if f.status == "error"]
    if errors:
        out += ["Targets that could not be audited:", ""]
        out += [f"- {stable_path(f.message or f.path)}" for f in errors] + [""]
    if ctx.figures_note:
        out += [f"*Figures:* {ctx.figures_note}", ""]
    for press in result.presses:
        out += [f"## {press.name}", ""]
        out += _static_section(press, ctx)
        out += _dynamic_section(press, ctx)
    return "\n".join(out).rstrip("\n") + "\n"


def static_blocks(markdown: str) -> dict[str, str]:
    """The static block of each press in a rendered report, by press name."""
    pattern = re.compile(r"<!-- kvaudit:static (\S+) -->\n(.*?)<!-- kvaudit:end -->", re.S)
    return {match.group(1): match.group(2) for match in pattern.finditer(markdown)}
