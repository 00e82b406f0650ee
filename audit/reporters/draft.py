"""An issue draft for a press's upstream tracker: one finding, its numbers, its source lines, its reproduction.

Written beside each standalone reproduction (:mod:`kvaudit.repro`) as ``<press>-<finding>.md``:

* a title, and the versions the finding was seen with;
* the paper's rule, with where the paper states it (the mechanism's :class:`~kvaudit.mechanism.Claimant`);
* what the press does: the trace's message and numbers (or the defect's messages);
* the source lines responsible: the press's static findings that point at them (``file:line`` and an
  excerpt), or its static evidence, or its class when no rule flags a line;
* the reproduction command (and how to check a fixed press with ``--press``);
* for an accepted deviation, the documentation the acceptance quotes.

Like every reporter it decides nothing: it renders what the result model and the plan hold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..mechanism import mechanism_by_id
from ..repro import ACCEPTED_KIND, DEFECT_KIND, title
from .markdown import _cell, _excerpt, _value, _where, stable_path

if TYPE_CHECKING:
    from ..model import PressReport
    from ..repro import Reproduction


def render_draft(item: Reproduction, static: PressReport | None, versions: str) -> str:
    """The whole draft, as Markdown text."""
    out = [f"# {title(item)}", "", f"*Versions:* {versions}.", ""]
    out += ["## The rule", ""]
    if item.kind == DEFECT_KIND:
        out += [f"{item.statement[:1].upper()}{item.statement[1:]}.", ""]
    elif item.check is not None:
        mechanism = mechanism_by_id(item.finding)
        where = f": {item.claimant.where}" if item.claimant is not None else ""
        out += [f"*Claimed by* {item.check.paper}{where}.", "",
                f"*kvaudit checks:* {mechanism.title if mechanism else item.finding}.", ""]
        if mechanism is not None:
            out += [_first_paragraph(mechanism.documentation()), ""]
    out += ["## What the press does", ""]
    if item.check is not None:
        check = item.check
        out += [f"Built as `{item.expression}` on kvaudit's tiny model: {check.message}", "",
                "| expected | measured | where | runs |", "| --- | --- | --- | --- |",
                f"| {_cell(_value(check.expected))} | {_cell(_value(check.measured))} | {_where(check.where)} | "
                f"{', '.join(f'{v} {k}' for k, v in check.runs.items()) or '—'} |", ""]
    else:
        out += [f"Built as `{item.expression}` on kvaudit's tiny model:", ""]
        out += [f"- {_cell(defect.message)}" for defect in item.defects] + [""]
    out += ["## Source lines responsible", "", *source_lines(item, static), ""]
    out += ["## Reproduction", ""]
    if item.stand_in is not None:
        out += [f"No standalone reproduction: {item.press} loads learned files from the Hugging Face Hub, and kvaudit "
                f"ran it on seeded stand-ins for them ({item.stand_in}), which a script without kvaudit cannot "
                f"rebuild. kvaudit's own trace shows it: `kvaudit trace <module>::{item.press}`.", ""]
    elif item.script is None:
        out += [f"No standalone reproduction yet: the rule of `{item.finding}` has no plain-code form in kvaudit "
                "(its module defines no `repro_rule`). kvaudit's own trace shows it: "
                f"`kvaudit trace <module>::{item.press}`.", ""]
    else:
        name = item.script.name
        out += ["One file, importing only torch, transformers and kvpress (no kvaudit). It rebuilds kvaudit's "
                "tiny model from its config and seed, runs the cell of the grid that shows the finding"
                + _cell_text(item) + ", checks the rule, prints `expected` and `observed`, and exits 1 when the "
                "rule is broken, 0 when it holds.", "", "```bash", f"python {name}",
                f'python {name} --press "EXPR"   # a fixed or another press; kvpress\'s names are in scope', "```",
                ""]
    if item.kind == ACCEPTED_KIND and item.check is not None:
        out += ["## Documented deviation", "",
                "The audit accepts this deviation (`[[tool.kvaudit.accept]]`) because the press documents it:", "",
                f"> {item.check.accepted}", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def _first_paragraph(text: str) -> str:
    return " ".join(text.strip().split("\n\n", 1)[0].split())


def _cell_text(item: Reproduction) -> str:
    cell = item.cell
    if cell is None:
        return ""
    rows = f"{cell.tokens} tokens × {cell.batch} row{'s' if cell.batch > 1 else ''}"
    if item.kind == DEFECT_KIND:  # a defect names no run: the script walks the grid's ratios, as the tracer did
        ratios = ", ".join("none" if r is None else f"{r:g}" for r in cell.ratios)
        prompts = ", ".join(f"{t}×{b}" for t, b, _ in cell.plan) if item.finding != "batch-row-0" else rows
        return f" (prefills {prompts}, at ratios {ratios}, each ratio on a fresh press)"
    return f" ({rows}" + (f" at ratio {cell.ratio:g})" if cell.ratio is not None else ")")


def source_lines(item: Reproduction, static: PressReport | None) -> list[str]:
    """The static findings that point at the lines responsible, else the press's evidence, else its class."""
    report = static or item.report
    wanted = set(item.rule.rules) if item.rule is not None else set()
    lines: list[str] = []
    for finding in report.findings:
        if finding.rule in wanted:
            lines.append(f"- `{stable_path(finding.path)}:{finding.line}` ({finding.rule}): {finding.message}")
            lines += ["  " + line for line in _excerpt(finding.path, finding.line)]
    if not lines and item.finding in report.verdicts:
        for evidence in report.evidence:
            path = evidence.path or report.path
            lines.append(f"- `{stable_path(path)}:{evidence.line}` ({evidence.kind}): {evidence.detail}")
            lines += ["  " + line for line in _excerpt(path, evidence.line)]
    if not lines:
        lines.append(f"kvaudit's static rules flag no line for this finding; the press is defined at "
                     f"`{stable_path(report.path)}:{report.line}`:")
        lines += ["", *_excerpt(report.path, report.line)]
    return lines
