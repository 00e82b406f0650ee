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

from ..mechanism import all_mechanisms, mechanism_by_id
from ..model import (
    Failure,
    HOLDS,
    IMPLEMENTED,
    MISSING,
    NOT_APPLICABLE,
    NOT_CHECKABLE,
    NOT_RUN,
    PARTIAL,
    VIOLATED,
    CITATION,
    LAYER_INDEX_REUSE,
    AuditResult,
    ClaimCheck,
    Finding,
    PressReport,
    PressTrace,
    TraceRun,
)
from ..rule import rule_by_id
from ..source import split_lines
from ..tracer.compare import verdict_pair
from .figures import figure_key

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
    figures: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # figure_key(press, claim) -> (caption, file)
    figures_note: str | None = None  # why figures are missing, when they are
    header_lines: list[str] = field(default_factory=list)  # versions, model, optional timestamp
    # (press, claim or defect id) -> (script, issue draft), relative to the report (--repro-dir); script None: none yet
    reproductions: dict[tuple[str, str], tuple[str | None, str]] = field(default_factory=dict)


def reproduction_links(reproductions: Iterable, report_dir: Path) -> dict[tuple[str, str], tuple[str | None, str]]:
    """(press, finding) -> the script and the draft of each :class:`kvaudit.repro.Reproduction`, relative to the report."""
    def relative(path: Path) -> str:
        return Path(os.path.relpath(path, report_dir)).as_posix()

    return {(item.press, item.finding): (relative(item.script) if item.script is not None else None,
                                         relative(item.draft)) for item in reproductions}


def _reproduce(ctx: ReportContext, press: str, finding: str) -> str:
    """``[reproduction](…) · [issue draft](…)`` for a finding with a reproduction, else ""."""
    found = ctx.reproductions.get((press, finding))
    if found is None:
        return ""
    script, draft = found
    return (f"[reproduction]({script}) · " if script is not None else "") + f"[issue draft]({draft})"


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
        lines = split_lines(Path(path).read_text(encoding="utf-8"))  # numbered as the finding's line
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


def compared_with_reference(press: PressReport) -> bool:
    """Whether the report sets ``press`` beside the reference reuse press.

    Only for a press that claims layer-wise index reuse (its paper, or ``--claim
    layer-index-reuse``): the reference is ChunkKV with Algorithm 2 around the press's scorer, so
    beside any other press it measures a mechanism the press never claimed. The traces keep the
    reference's runs either way (``--format json``).
    """
    trace = press.trace
    if trace is None or not trace.reference or not trace.runs or not trace.reference.runs:
        return False
    claimed = {c.id for c in press.claims} | {c.id for c in trace.claims}
    return LAYER_INDEX_REUSE in claimed


def _reference_cell(press: PressReport) -> str:
    if not compared_with_reference(press):
        return "—"
    trace = press.trace
    own, ref = trace.runs[0], trace.reference.runs[0]
    return f"score() {sum(own.score_calls)} vs {sum(ref.score_calls)} calls"


def untraced_lines(result: AuditResult) -> list[str]:
    """Presses that could not be traced, grouped by why (the :class:`~kvaudit.model.Failure` each trace carries)."""
    groups: dict[str, list[str]] = {}
    for press in result.presses:
        trace = press.trace
        if trace is None or trace.status == "ok" or trace.runs:
            continue
        message = trace.message or "unknown error"
        reason = (trace.failure or Failure.CRASH).reason  # decided by the tracer, never read back from the text
        shown = message.split(": ", 1)[1] if message.startswith(reason + ": ") else message
        groups.setdefault(reason, []).append(f"  - {press.name}: {_cell(shown)}")
    lines = []
    for group in sorted(groups):
        lines += [f"- {group}:", *groups[group]]
    return lines


# ---------------------------------------------------------------------------------------------
# The conformance matrix, and one section per violation
# ---------------------------------------------------------------------------------------------

MARKS = {HOLDS: "✓", VIOLATED: "✗", NOT_APPLICABLE: "–", NOT_RUN: "not-run", NOT_CHECKABLE: "not-checkable"}


def _mark(check: ClaimCheck) -> str:
    mark = MARKS.get(check.verdict, check.verdict)
    mark = f"{mark} (accepted)" if check.accepted is not None else mark
    return f"{mark} stand-in" if check.stand_in else mark


def _claimed_mechanisms(result: AuditResult) -> list[str]:
    claimed = {c.id for p in result.presses if p.trace is not None for c in p.trace.claims}
    return [m.id for m in all_mechanisms() if m.id in claimed]


def _papers(trace: PressTrace) -> str:
    papers = sorted({c.paper for c in trace.claims if not c.paper.startswith("the kvpress ")})
    return ", ".join(papers) or "—"


def conformance_matrix(result: AuditResult) -> list[str]:
    """Presses × claims: ✓ holds, ✗ violated, – not applicable, not-run; blank: not claimed."""
    columns = _claimed_mechanisms(result)
    traced = [p for p in result.presses if p.trace is not None]
    if not columns or not traced:
        return []
    rows = ["| press | paper | " + " | ".join(f"`{c}`" for c in columns) + " |",
            "| --- | --- | " + " | ".join("---" for _ in columns) + " |"]
    for press in traced:
        checks = {c.id: c for c in press.trace.claims}
        cells = [_mark(checks[c]) if c in checks else "" for c in columns]
        rows.append(f"| {press.name} | {_cell(_papers(press.trace))} | " + " | ".join(cells) + " |")
    return rows


def matrix_legend(result: AuditResult) -> list[str]:
    counts: dict[str, int] = {}
    for press in result.presses:
        for check in press.trace.claims if press.trace is not None else []:
            key = "accepted" if check.accepted is not None else check.verdict
            counts[key] = counts.get(key, 0) + 1
    told = ", ".join(f"{counts[k]} {k}" for k in (HOLDS, VIOLATED, "accepted", NOT_APPLICABLE, NOT_RUN, NOT_CHECKABLE)
                     if counts.get(k))
    return [f"✓ holds · ✗ violated · – not applicable (the grid does not exercise it) · not-run (with the reason "
            f"below) · not-checkable (a tiny model cannot show it: trained weights, a real tokenizer; the reason is "
            f"in the press's section) · blank: not claimed. Claims checked: {told or 'none'}."]


def _value(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        shown = ", ".join("—" if v is None else str(v) for v in value[:12])
        return f"[{shown}{', …' if len(value) > 12 else ''}]"
    return str(value)


def _where(where: dict[str, object]) -> str:
    order = ("ratio", "length", "batch", "row", "layer", "head", "step")
    return ", ".join(f"{key} {where[key]}" for key in order if key in where) or "—"


def violations(result: AuditResult) -> list[tuple[PressReport, ClaimCheck]]:
    return [(press, check) for press in result.presses if press.trace is not None
            for check in press.trace.claims if check.verdict == VIOLATED]


def violation_sections(result: AuditResult, ctx: ReportContext) -> list[str]:
    """One section per violated claim: the numbers, where, the runs, the acceptance, the figures."""
    found = violations(result)
    if not found:
        return []
    out = ["## Violations", "",
           "Each claim below departs from its paper's rule on the tiny model. Numbers are those of the run "
           "that departs most; `runs` counts the grid's runs by verdict.", ""]
    for press, check in found:
        title = f"### {press.name}: `{check.id}` ({check.paper})"
        out += [title + (" — accepted" if check.accepted is not None else ""), ""]
        mechanism = mechanism_by_id(check.id)
        if mechanism is not None:
            out += [f"*The rule:* {mechanism.title}.", ""]
        out += [_cell(check.message), ""]
        out += ["| expected | measured | where | runs |", "| --- | --- | --- | --- |",
                f"| {_cell(_value(check.expected))} | {_cell(_value(check.measured))} | {_where(check.where)} | "
                f"{', '.join(f'{v} {k}' for k, v in check.runs.items()) or '—'} |", ""]
        if check.accepted is not None:
            out += [f"*Accepted:* {check.accepted}", ""]
        links = _reproduce(ctx, press.name, check.id)
        if links:
            out += [f"*Reproduce:* {links}", ""]
        for caption, filename in ctx.figures.get(figure_key(press.name, check.id), []):
            out += [f"![{caption}]({filename})", ""]
    return out


def claim_summary(result: AuditResult) -> list[str]:
    """Which papers' claims the presses do not meet, with numbers; then the accepted deviations."""
    by_paper: dict[str, list[tuple[PressReport, ClaimCheck]]] = {}
    accepted: list[tuple[PressReport, ClaimCheck]] = []
    for press, check in violations(result):
        (accepted if check.accepted is not None else by_paper.setdefault(check.paper, [])).append((press, check))
    lines = []
    if by_paper:
        lines += ["**Claims not met** (violated on the tiny model, not accepted):", ""]
        for paper in sorted(by_paper):
            items = "; ".join(f"{press.name} `{check.id}`: {_short(check.message)}" for press, check in by_paper[paper])
            lines.append(f"- **{paper}**: {items}.")
        lines.append("")
    if accepted:
        lines += ["**Accepted deviations** (violated, documented by the press and accepted in the configuration):", ""]
        for press, check in accepted:
            lines.append(f"- {press.name} `{check.id}` ({check.paper}): {_short(check.message)}. *Why:* {check.accepted}")
        lines.append("")
    return lines


def _short(message: str) -> str:
    """The first clause of a check's message (its numbers), for one-line summaries.

    A clause ends at the first "; " outside parentheses: "(chance 0.035; 4 prompts)" stays whole.
    """
    depth = 0
    for at, char in enumerate(message):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth <= 0 and message.startswith("; ", at):
            return message[:at].rstrip(".")
    return message.rstrip(".")


def static_statements(result: AuditResult) -> list[str]:
    """Plain sentences for each statically judged claim (the mechanisms with static evidence)."""
    verbs = {IMPLEMENTED: "implements", PARTIAL: "only partly implements", MISSING: "has no"}
    lines = []
    for press in result.presses:
        for claim_id, verdict in sorted(press.verdicts.items()):
            mechanism = mechanism_by_id(claim_id)
            claim = next((c for c in press.claims if c.id == claim_id), None)
            if mechanism is None or claim is None:
                continue
            sentence = (f"**{press.name} {verbs.get(verdict, verdict)} {mechanism.name}** (claimed by {claim.origin.summary}): "
                        f"static verdict `{verdict}`")
            check = press.trace.claim(claim_id) if press.trace is not None else None
            if check is not None:
                sentence += f"; traced: `{check.verdict}`, {_short(check.message)}"
            lines.append(f"- {sentence}.")
    return lines


def reference_statements(result: AuditResult) -> list[str]:
    """Time in ``score()`` beside the reference press's (medians of repeated runs), for the presses
    that claim layer-wise index reuse and were traced with it (:func:`compared_with_reference`)."""
    lines = []
    for press in result.presses:
        if not compared_with_reference(press):
            continue
        trace = press.trace
        run, reference = trace.runs[0], trace.reference.runs[0]
        scored, whole = score_time(run), prefill_time(run)
        if whole.value <= 0 or not any(run.score_calls):
            continue  # a press that scores nothing at prefill (a decoding press) has nothing to compare
        lines.append(
            f"- {press.name}: `score()` ran on {sum(1 for c in run.score_calls if c)} of {len(run.score_calls)} layers "
            f"and took {_ms(scored.value)} of a {_ms(whole.value)} prefill ({_share(scored.value, whole.value)})"
            + (f" (medians of {whole.runs} runs)" if whole.spread is not None else "")
            + f"; the reference press with reuse scored on {sum(1 for c in reference.score_calls if c)} layers and "
            f"spent {_ms(score_time(reference).value)}: {compare_times(scored, score_time(reference), whole.value)}."
        )
    return lines


def overview(result: AuditResult) -> str:
    """The summary's first sentence, never empty: what was audited and what the trace found."""
    if not result.presses:
        return "No press class was found in the targets."
    traced = [p for p in result.presses if p.trace is not None]
    if not traced:
        judged = sum(1 for p in result.presses if p.verdicts)
        findings = [f.rule for p in result.presses for f in p.findings]
        told = (f"{len(findings)} finding(s) ({', '.join(sorted(set(findings)))})" if findings
                else "no finding")
        return (f"No press was traced: static audit only. {len(result.presses)} press(es) audited; {judged} with a "
                f"mechanism judged from the source; {told}.")
    ran = [p for p in traced if p.trace.runs or p.trace.defects]
    defects = sum(len(p.trace.defects) for p in traced)
    told = (f" {defects} defect(s) were seen on the tiny model (listed below)." if defects else "")
    checks = [c for p in traced for c in p.trace.claims]
    count = {key: 0 for key in (HOLDS, VIOLATED, "accepted", NOT_APPLICABLE, NOT_RUN, NOT_CHECKABLE)}
    for check in checks:
        key = "accepted" if check.accepted is not None else check.verdict
        count[key] = count.get(key, 0) + 1
    checked = count[HOLDS] + count[VIOLATED] + count["accepted"]
    head = f"{len(ran)} of {len(traced)} press(es) ran on the tiny model"
    if not checks:
        return f"{head}. No claim was checked on the tiny model: no traced press makes a claim kvaudit checks.{told}"
    if not checked:
        return (f"{head}. No claim was checked on the tiny model: none of the {len(checks)} claim(s) could be judged "
                f"({count[NOT_RUN]} not run, {count[NOT_APPLICABLE]} not applicable; the reasons are below).{told}")
    said = (f"{head}. Of the {checked} claim(s) checked, {count[HOLDS]} hold, {count[VIOLATED]} are not met and "
            f"{count['accepted']} are accepted deviations")
    unjudged = [f"{n} {label}" for n, label in ((count[NOT_APPLICABLE], "more are not applicable on the grid"),
                                                (count[NOT_RUN], "could not run (the reasons are below)"),
                                                (count[NOT_CHECKABLE], "cannot be checked on a tiny model")) if n]
    said += f"; {' and '.join(unjudged)}." if unjudged else "."
    if not count[VIOLATED]:
        said += (" Every checked claim holds." if not count["accepted"]
                 else " Every checked claim holds, apart from the accepted deviations.")
    return said + told


def defect_statements(result: AuditResult, ctx: ReportContext | None = None) -> list[str]:
    """One line per dynamic defect (crash, stale-indices, batch-row-0): the tracer's KVA303 findings; with
    reproductions, each ends with the links to its script and issue draft."""
    lines = []
    for press in result.presses:
        for defect in press.trace.defects if press.trace is not None else []:
            links = _reproduce(ctx, press.name, defect.id) if ctx is not None else ""
            lines.append(f"- {press.name} `{defect.id}`: {defect.message}" + (f" ({links})" if links else ""))
    return lines


def summary_lines(result: AuditResult, ctx: ReportContext | None = None) -> list[str]:
    """The whole ``## Summary``: the overview, the claims not met, the accepted deviations, the static
    verdicts, and the time beside the reference press; each list under its own label."""
    lines = [overview(result), "", *claim_summary(result)]
    defects = defect_statements(result, ctx)
    if defects:
        lines += ["**Defects on the tiny model** (KVA303: the press crashed, kept stale indices or selected for "
                  "batch row 0 only):", "", *defects, ""]
    statics = static_statements(result)
    if statics:
        traced = any(p.trace is not None for p in result.presses)
        lines += ["**Static verdicts** (the mechanisms kvaudit judges from the source"
                  + ("; the trace's verdict beside them" if traced else "") + "):", "", *statics, ""]
    references = reference_statements(result)
    if references:
        lines += ["**Time in `score()` beside the reference press** (presses that claim layer-wise index reuse, "
                  "against `kvaudit.reference.ChunkKVReusePress` with the same scorer; first prefill, tiny model, "
                  "CPU):", "", *references, ""]
    return lines


def summary_table(result: AuditResult) -> list[str]:
    """The static audit at a glance: claims, static verdicts (and disagreements with the trace), findings."""
    rows = ["| press | claims (paper) | static verdict | reference comparison | findings |",
            "| --- | --- | --- | --- | --- |"]
    for press in result.presses:
        claims = ", ".join(c.id for c in press.claims) or "—"
        static = ", ".join(f"{claim}: {verdict}" + ("" if verdict_pair(press, claim).agrees else " **(the trace disagrees)**")
                           for claim, verdict in sorted(press.verdicts.items())) or "—"
        findings = ", ".join(sorted({f.rule for f in press.findings})) or "none"
        rows.append(f"| {press.name} | {claims} | {_cell(static)} | {_reference_cell(press)} | {findings} |")
    return rows


def _static_section(press: PressReport, ctx: ReportContext) -> list[str]:
    out = [STATIC_BEGIN.format(name=press.name), f"Defined at {_link(press.path, press.line, ctx)}.", ""]
    if press.mentions:  # papers named without a claim (a passing mention, or a paper the registry lacks)
        out += ["**Papers named, no claims taken.**", *(f"- It {m.text}." for m in press.mentions), ""]
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
    static = _static_findings(press)
    if not static:
        out.append("- none")
    for finding in static:
        out.extend(_finding_lines(finding, ctx))
    out += ["", STATIC_END, ""]
    return out


def _static_findings(press: PressReport) -> list[Finding]:
    """The findings of the source alone; those of the trace (dynamic rules: KVA301) go with the trace."""
    return [f for f in press.findings if not _is_dynamic(f.rule)]


def _is_dynamic(rule_id: str) -> bool:
    rule = rule_by_id(rule_id)
    return rule is not None and rule.dynamic


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
    return _timed(run.timings.repeat_score_s or [], run.timings.score_s)


def prefill_time(run: TraceRun) -> _Timed:
    return _timed(run.timings.repeat_prefill_s or [], run.timings.prefill_s)


def compare_times(mine: _Timed, other: _Timed, whole: float) -> str:
    """How much less (or more) ``other`` took than ``mine``, or that the runs cannot tell.

    One rule: a difference that rounds to 0.0 ms, or that is no larger than the spread of the
    repeated runs (the larger of the two interquartile ranges), is noise on the tiny model. It is
    reported as "no measurable difference", never as a saving.
    """
    difference = mine.value - other.value
    if _ms(abs(difference)) == _ms(0.0):
        return "no measurable difference (the medians differ by less than 0.05 ms)"
    if mine.spread is None or other.spread is None:
        return "a difference one run each cannot tell from noise"
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
    out: list[str] = []
    if trace.settings:
        out += [f"*Traced as configured in `rules/presses.toml`:* {trace.settings}", ""]
    if trace.stand_in:
        out += [f"*Ran with stand-ins for its Hub files:* {_cell(trace.stand_in)}. The claims marked `stand-in` were "
                "checked on them; the learned values themselves are not checkable on the tiny model.", ""]
    if trace.status != "ok":
        out += [f"**Trace.** {'Stopped' if trace.runs else 'The press could not be traced'}: {_cell(trace.message or '')}", ""]
    compared = compared_with_reference(press)
    if trace.config:
        out += [f"**Built as:** `{trace.config}`" + (f"; the reference as `{trace.reference.config}`"
                                                     if compared and trace.reference.config else "")
                + ".", ""]
    if trace.claims:
        out.append("**Claims checked.**")
        for check in trace.claims:
            accepted = f" (accepted: {check.accepted})" if check.accepted is not None else ""
            accepted += " (stand-in)" if check.stand_in else ""
            out.append(f"- `{check.id}` ({check.paper}): **{check.verdict}**{accepted}. {_cell(check.message)}")
        out.append("")
    for pair in (verdict_pair(press, claim) for claim in sorted(press.verdicts)):
        if pair.comparable:
            out += [f"Static and dynamic verdicts of `{pair.claim}`: {pair.explanation}.", ""]
    for defect in trace.defects:
        out.append(f"- defect **{defect.id}**: {_cell(defect.message)}")
    if trace.defects:
        out.append("")
    dynamic = [f for f in press.findings if _is_dynamic(f.rule)]
    if dynamic:
        out.append("**Findings of the trace.**")
        for finding in dynamic:
            out.extend(_finding_lines(finding, ctx))
        out.append("")
    if trace.runs:
        run = trace.runs[0]
        reference = trace.reference.runs[0] if compared else None
        ratio = f", ratio {run.ratio:g}" if run.ratio is not None else ""
        out.append(f"**Trace per layer** (first prefill: {run.tokens} tokens, batch {run.batch}{ratio}"
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
                           f"{_ms(item.timings.compress_s)} | {prefill_time(item).text()} |")
            out.append("")
            out.append(f"`score()` time, reference against {press.name}: "
                       f"{compare_times(score_time(run), score_time(reference), prefill_time(run).value)}; "
                       f"prefill time: {compare_times(prefill_time(run), prefill_time(reference), prefill_time(run).value)}.")
            out.append("")
    return out


def _share(part: float, whole: float) -> str:
    """A percentage; a share that rounds to 0 but is not zero reads "<1%", never "0%"."""
    if whole <= 0:
        return "n/a"
    share = 100 * part / whole
    return "<1%" if 0 < share < 0.5 else f"{share:.0f}%"


def stand_in_legend(result: AuditResult) -> list[str]:
    """What ``stand-in`` beside a verdict means; nothing when no press ran on stand-ins (the report stays as it was)."""
    stood_in = sum(1 for p in result.presses if p.trace is not None and p.trace.stand_in)
    if not stood_in:
        return []
    return [f"`stand-in`: checked on a press that ran with seeded stand-ins for the learned files it loads from "
            f"the Hugging Face Hub ({stood_in} press(es); each press's section names them). The learned values "
            f"themselves are not checkable on a tiny model.", ""]


def trained_model_lines(result: AuditResult) -> list[str]:
    """What kvaudit's tiny trained model can and cannot show, said once in a report traced on it."""
    if result.traced is None or not result.traced.learned_attention:
        return []
    from ..trained import training_log

    final = training_log()["final"]
    locality = final["attention_t512"]["locality"]
    layers = [round(min(row), 2) for row in locality[1:]]
    return [
        "", "## The trained model: what it can and cannot show", "",
        f"These traces ran on kvaudit's tiny trained model (`--model trained`: a {len(locality)}-layer Llama trained on "
        f"the standard library's source; held-out loss {final['heldout_loss']:.2f} nats/token against a unigram "
        f"{final['unigram_loss']:.2f}), its prompts windows of its held-out text. Its attention is learned and local "
        f"(layers 1–{len(locality) - 1} put at least {min(layers):.0%} of it on the last 64 positions, against "
        f"{final['attention_t512']['locality_uniform']:.0%} for uniform attention), so claims about learned attention "
        "(`layer-similarity`, `reuse-quality`) are judged here. It has no attention sinks and no induction heads: "
        "claims whose paper relies on them are `not-checkable`, with that reason, never judged from an absent "
        "structure. Everything else is judged as on random weights.", "",
        *reuse_quality_lines(result),
    ]


def reuse_quality_lines(result: AuditResult) -> list[str]:
    """The reuse-quality table: continuation loss by reuse parameter, for each press (and reference press) whose
    check measured it (on the trained model), from the check's own figure data; nothing when none did."""
    rows = []
    for press in result.presses:
        trace = press.trace
        if trace is None:
            continue
        traced = [(press.name, trace)] + ([(f"reference beside {press.name}", trace.reference)] if trace.reference else [])
        for who, measured in traced:
            check = measured.claim("reuse-quality")
            if check is None or not check.figures:
                continue
            figure = check.figures[0]
            reuse = " / ".join("—" if n is None else str(n) for n in figure["x"])
            for label, means in figure["series"].items():
                spreads = figure["spread"][label]
                cells = " | ".join(_loss_cell(m, sd) for m, sd in zip(means, spreads))
                rows.append(f"| {who} | {label} | {_loss_cell(figure['whole'][label], None)} | {reuse} | {cells} | "
                            f"{check.verdict} |")
    if not rows:
        return []
    return ["### Reuse quality", "",
            "Next-token loss (nats/token, mean ± standard deviation over the held-out prompts) of a 64-token "
            "continuation after the prefix was compressed, with the press's reuse parameter set to 1 (no reuse), "
            "as built, and doubled; the whole prefix beside it. The `reuse-quality` verdict compares the press as "
            "built with no reuse (`benchmarks/bench_reuse_quality.py` measures the reference press on more prompts).",
            "", "| press | ratio | prefix whole | n_reuse | no reuse | as built | twice the reuse | verdict |",
            "| --- | --- | ---: | --- | ---: | ---: | ---: | --- |", *rows, ""]


def _loss_cell(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "—"
    return f"{mean:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")


def render_markdown(result: AuditResult, ctx: ReportContext) -> str:
    """The whole report as Markdown text."""
    out = [f"# {ctx.title}", ""]
    out += [f"- {line}" for line in ctx.header_lines]
    if ctx.targets:
        out.append(f"- targets: {', '.join(f'`{t}`' for t in ctx.targets)}")
    out.append("")
    out += ["## Summary", "", *summary_lines(result, ctx)]
    out += trained_model_lines(result)
    matrix = conformance_matrix(result)
    if matrix:
        out += ["## Conformance matrix", "", *matrix, "", *matrix_legend(result), "", *stand_in_legend(result)]
    untraced = untraced_lines(result)
    if untraced:
        out += ["Presses that were not traced:", "", *untraced, ""]
    errors = [f for f in result.files if f.status == "error"]
    if errors:
        out += ["Targets that could not be audited or traced:", ""]
        out += [f"- {stable_path(f.message or f.path)}" for f in errors] + [""]
    if ctx.figures_note:
        out += [f"*Figures:* {ctx.figures_note}", ""]
    out += violation_sections(result, ctx)
    out += ["## Static audit", "", *summary_table(result), ""]
    for press in result.presses:
        out += [f"## {press.name}", ""]
        out += _static_section(press, ctx)
        out += _dynamic_section(press, ctx)
    return "\n".join(out).rstrip("\n") + "\n"


def static_blocks(markdown: str) -> dict[str, str]:
    """The static block of each press in a rendered report, by press name."""
    pattern = re.compile(r"<!-- kvaudit:static (\S+) -->\n(.*?)<!-- kvaudit:end -->", re.S)
    return {match.group(1): match.group(2) for match in pattern.finditer(markdown)}
