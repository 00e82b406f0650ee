"""Standalone reproductions of a trace's findings (``--repro-dir`` of ``kvaudit trace`` and ``kvaudit report``).

For each violated claim (accepted or not) and each defect of the result model, :func:`write_reproductions`
writes ``DIR/<press>-<finding>.py``, a script that imports torch, transformers and kvpress only and checks
the rule on the cell of the grid that shows the finding (:mod:`kvaudit.repro.script`), and beside it
``DIR/<press>-<finding>.md``, an issue draft for the press's upstream tracker
(:mod:`kvaudit.reporters.draft`). The rule's code comes from the claim's own module
(:meth:`kvaudit.mechanism.Mechanism.repro_rule`) or, for a defect, from :mod:`kvaudit.repro.defects`.

Nothing here imports torch: the scripts do, when a reader runs them.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..mechanism import Claimant, Mechanism, ReproRule, contract_label, mechanism_by_id
from ..model import VIOLATED, AuditResult, ClaimCheck, Defect, PressReport
from .defects import STATEMENTS, TITLES, defect_rule
from .defects import __name__ as defect_rules_module
from .script import Cell, ModelSpec, Script, render

if TYPE_CHECKING:
    from ..engine import CheckOptions
    from ..tracer.options import TraceOptions

VIOLATED_KIND, ACCEPTED_KIND, DEFECT_KIND = "violated", "accepted", "defect"


@dataclass
class Reproduction:
    """One finding's script and issue draft (paths as written); ``script`` is None when the finding's rule has
    no plain-code form yet, or when the press ran on kvaudit's stand-ins for its Hub files (the draft says so)."""

    press: str
    finding: str  # a claim id or a defect id
    kind: str  # violated | accepted | defect
    report: PressReport
    draft: Path
    script: Path | None = None
    # What the draft says (kvaudit.reporters.draft reads these).
    check: ClaimCheck | None = None
    defects: list[Defect] = field(default_factory=list)
    claimant: Claimant | None = None
    rule: ReproRule | None = None
    rule_from: str = ""  # the module its code comes from
    params: dict[str, Any] = field(default_factory=dict)  # the claimant's parameters
    statement: str = ""  # the rule in one line
    expression: str = ""
    cell: Cell | None = None
    # The seeded stand-ins the press ran on (PressTrace.stand_in): a script without kvaudit cannot rebuild them.
    stand_in: str | None = None


def is_kvpress(report: PressReport) -> bool:
    from ..reporters.markdown import stable_path

    return stable_path(report.path).startswith("kvpress/")


def press_settings(report: PressReport) -> Any:
    """How the catalogue builds and runs the press (``rules/presses.toml``), for kvpress's own presses."""
    from ..tracer.child.settings import PressSettings, load_settings

    return load_settings().get(report.name, PressSettings(report.name)) if is_kvpress(report) else PressSettings(report.name)


def is_expression(text: str | None) -> bool:
    """Whether ``text`` is a press-building expression a script can eval: calls, names, literals only."""
    if not text:
        return False
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return False
    allowed = (ast.Expression, ast.Call, ast.Name, ast.Load, ast.keyword, ast.Constant, ast.List, ast.Tuple,
               ast.Dict, ast.UnaryOp, ast.USub, ast.Attribute)
    return all(isinstance(node, allowed) for node in ast.walk(tree))


def press_module(report: PressReport) -> str | None:
    """The press's own file, for a press that is not kvpress's (a script loads it for the press's names)."""
    return None if is_kvpress(report) else str(Path(report.path).resolve())


def press_expression(report: PressReport, settings: Any) -> str:
    """The expression that builds the press as the tracer built it: the catalogue's, else the built press's repr."""
    if settings.press:
        return settings.press
    config = report.trace.config if report.trace is not None else None
    return config if is_expression(config) else f"{report.name}()"


def claimant_of(mechanism: Mechanism, report: PressReport, check: ClaimCheck) -> Claimant | None:
    """Who holds the press to the claim: its paper (the static claim's registry key), or a kvpress contract."""
    for claim in report.claims:
        if claim.id == check.id and claim.paper in mechanism.papers:
            return mechanism.papers[claim.paper]
    for base, claimant in mechanism.contracts.items():
        if contract_label(base) == check.paper:
            return claimant
    return next(iter(mechanism.papers.values()), None) if mechanism.papers else None


def _grid(report: PressReport, options: TraceOptions) -> tuple[tuple[tuple[int, int, int], ...], tuple[float | None, ...]]:
    from ..tracer.options import run_plan

    plan = tuple((spec.tokens, spec.batch, spec.seed) for spec in run_plan(options))
    ratios = tuple(dict.fromkeys(run.ratio for run in report.trace.runs)) if report.trace and report.trace.runs else ()
    return plan, ratios or (tuple(options.ratios) if press_settings(report).ratio else (None,))


def claim_cell(check: ClaimCheck, report: PressReport, options: TraceOptions) -> Cell:
    """The run the check names (its ratio, length and rows), with the prompt seed the grid gave it."""
    plan, ratios = _grid(report, options)
    where = check.where
    tokens, batch = where.get("length", plan[0][0]), where.get("batch", 1)
    seed = next((s for t, b, s in plan if t == tokens and b == batch), plan[0][2])
    return Cell(tokens, batch, seed, where.get("ratio"), options.decode_steps, plan, ratios)


def defect_cell(defect_id: str, report: PressReport, options: TraceOptions) -> Cell:
    """A defect names no run: the batch prompt for ``batch-row-0``, else the first; the grid walks the rest."""
    plan, ratios = _grid(report, options)
    batch = next((spec for spec in plan if spec[1] > 1), plan[0]) if defect_id == "batch-row-0" else plan[0]
    return Cell(batch[0], batch[1], batch[2], ratios[0], options.decode_steps, plan, ratios)


def findings(result: AuditResult) -> list[tuple[PressReport, str, str, ClaimCheck | None, list[Defect]]]:
    """(press, finding id, kind, its check, its defects) for every violated claim and every defect, in order."""
    found = []
    for report in result.presses:
        trace = report.trace
        if trace is None:
            continue
        for check in trace.claims:
            if check.verdict == VIOLATED:
                kind = ACCEPTED_KIND if check.accepted is not None else VIOLATED_KIND
                found.append((report, check.id, kind, check, []))
        grouped: dict[str, list[Defect]] = {}
        for defect in trace.defects:
            grouped.setdefault(defect.id, []).append(defect)
        found += [(report, defect_id, DEFECT_KIND, None, defects) for defect_id, defects in grouped.items()]
    return found


def model_spec(options: TraceOptions) -> ModelSpec:
    return ModelSpec(options.arch, options.layers, options.seed, options.dtype, options.device, options.model_path)


def plan_reproductions(result: AuditResult, directory: Path, options: TraceOptions) -> list[Reproduction]:
    """What :func:`write_reproductions` writes, one :class:`Reproduction` per finding (nothing written yet)."""
    planned = []
    stems: set[str] = set()
    for report, finding, kind, check, defects in findings(result):
        settings = press_settings(report)
        stem = f"{report.name}-{finding}"
        stem = next(f"{stem}-{n}" for n in range(2, len(stems) + 3) if f"{stem}-{n}" not in stems) \
            if stem in stems else stem  # two presses of one name (in two files)
        stems.add(stem)
        item = Reproduction(report.name, finding, kind, report, directory / f"{stem}.md", check=check,
                            defects=defects, expression=press_expression(report, settings))
        if check is not None:
            mechanism = mechanism_by_id(check.id)
            item.claimant = claimant_of(mechanism, report, check) if mechanism is not None else None
            params = dict(item.claimant.params) if item.claimant is not None else {}
            item.rule = mechanism.repro_rule(params) if mechanism is not None else None
            item.statement = mechanism.title if mechanism is not None else check.id
            item.cell = claim_cell(check, report, options)
            item.rule_from = mechanism.__module__ if mechanism is not None else ""
            item.params = params
        else:
            item.rule = defect_rule(finding)
            item.statement = STATEMENTS.get(finding, finding)
            item.cell = defect_cell(finding, report, options)
            item.rule_from = defect_rules_module
        trace = report.trace
        if trace is not None and isinstance(trace.stand_in, str):
            item.stand_in = trace.stand_in
        elif item.rule is not None:
            item.script = directory / f"{stem}.py"
        planned.append(item)
    return planned


def script_of(item: Reproduction, options: TraceOptions, versions: str) -> Script:
    """The script of one planned reproduction."""
    assert item.rule is not None and item.cell is not None and item.script is not None
    settings = press_settings(item.report)
    return Script(
        press=item.press, finding=item.finding, title=title(item), rule_from=item.rule_from,
        expression=item.expression, module=press_module(item.report), ratio_attribute=settings.ratio,
        cell=item.cell, rule=item.rule.code, attention=settings.attention or "sdpa",
        also_attention=settings.also_attention, decode_inside=settings.decode_inside, params=item.params,
        model=model_spec(options), versions=versions, filename=item.script.name)


def title(item: Reproduction) -> str:
    """One line naming the press, the finding and who claims the rule."""
    if item.kind == DEFECT_KIND:
        return f"{item.press} {TITLES.get(item.finding, item.finding)} (`{item.finding}`)"
    mechanism = mechanism_by_id(item.finding)
    name = mechanism.name if mechanism is not None else item.finding
    verb = "departs, as it documents, from" if item.kind == ACCEPTED_KIND else "breaks"
    claimant = f", as claimed by {item.check.paper}" if item.check is not None else ""
    return f"{item.press} {verb} {name} (`{item.finding}`){claimant}"


def versions_line() -> str:
    """kvaudit, kvpress, transformers and torch, as installed here (the report's header says the same)."""
    from .. import __version__
    from ..cli.report import _installed

    return (f"kvaudit {__version__}; kvpress {_installed('kvpress')}; transformers {_installed('transformers')}; "
            f"torch {_installed('torch')}")


def write_reproductions(result: AuditResult, directory: Path, options: TraceOptions,
                        reread: CheckOptions | None = None) -> list[Reproduction]:
    """Write a script and an issue draft for every finding of ``result`` into ``directory``.

    ``reread``: for a run whose static rules were off (``kvaudit trace``), how it read its files: the files of
    the presses with findings are read again with the static rules on, so that each draft can quote the
    source lines responsible. Raises OSError when ``directory`` cannot be written.
    """
    from ..reporters.draft import render_draft

    planned = plan_reproductions(result, directory, options)
    static = static_reports(planned, reread)
    versions = versions_line()
    directory.mkdir(parents=True, exist_ok=True)
    for item in planned:
        if item.script is not None:
            item.script.write_text(render(script_of(item, options, versions)), encoding="utf-8")
        item.draft.write_text(render_draft(item, static.get((item.report.path, item.press), item.report), versions),
                              encoding="utf-8")
    return planned


def static_reports(planned: Sequence[Reproduction], reread: CheckOptions | None) -> dict[tuple[str, str], PressReport]:
    """The presses' static findings and evidence, read again with the static rules on (``reread``'s files)."""
    if reread is None or not planned:
        return {}
    from ..engine import run_check

    paths = sorted({item.report.path for item in planned})
    options = replace(reread, static_rules=True, jobs=1)
    again = run_check(paths, options)
    return {(report.path, report.name): report for report in again.presses}
