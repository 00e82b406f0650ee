"""Terminal views of the tracer: ``kvaudit trace``, and the panel ``kvaudit check --trace`` shows.

Plain functions of the findings model (and of :class:`kvaudit.tracer.TraceReport`); rich only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..model import LAYER_INDEX_REUSE, NOT_OBSERVED, OBSERVED, PARTIAL, AuditResult, PressTrace, TraceRun
from ..tracer.compare import verdict_pairs

if TYPE_CHECKING:
    from ..tracer import TraceReport

VERDICT_STYLE = {OBSERVED: "bold green", PARTIAL: "bold yellow", NOT_OBSERVED: "bold red"}


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _verdict_text(verdict: str | None) -> Text:
    if verdict is None:
        return Text("n/a", style="dim")
    return Text(verdict, style=VERDICT_STYLE.get(verdict, "bold"))


def _layer_table(run: TraceRun, reference: TraceRun | None) -> Table:
    """Per-layer facts of one prefill, with the reference press's beside them when given."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    table.add_column("layer", justify="right")
    table.add_column("score()", justify="right")
    table.add_column("kept", justify="right")
    table.add_column("reused from", justify="right")
    table.add_column("Jaccard l-1", justify="right")
    if reference is not None:
        table.add_column("│", justify="center", style="dim")
        table.add_column("ref score()", justify="right")
        table.add_column("ref kept", justify="right")
        table.add_column("ref reused from", justify="right")
    for layer in range(len(run.score_calls)):
        compressed = run.compressed[layer] if layer < len(run.compressed) else True
        jaccard = run.jaccard[layer] if layer < len(run.jaccard) else None
        reused = run.reused_from[layer]
        row = [
            str(layer),
            str(run.score_calls[layer]),
            f"{run.kept[layer]}" + ("" if compressed else " (all)"),
            "–" if reused is None else str(reused),
            "–" if jaccard is None else f"{jaccard:.2f}",
        ]
        if reference is not None:
            has = layer < len(reference.score_calls)
            ref_reused = reference.reused_from[layer] if has else None
            row += [
                "│",
                str(reference.score_calls[layer]) if has else "–",
                str(reference.kept[layer]) if has else "–",
                "–" if ref_reused is None else str(ref_reused),
            ]
        table.add_row(*row)
    return table


def _timing_line(label: str, run: TraceRun) -> Text:
    return Text(
        f"{label}: score() {_ms(run.score_time_s)} · compress {_ms(run.compress_time_s)} "
        f"· prefill {_ms(run.prefill_time_s)}",
        style="dim",
    )


def press_section(trace: PressTrace, show_path: bool = True) -> RenderableType:
    """Everything about one traced press: status, verdict and why, defects, layer table, timings."""
    parts: list[RenderableType] = []
    title = Text(trace.name, style="bold cyan")
    if show_path:
        title.append(f"  {trace.path}", style="dim")
    parts.append(title)
    if trace.config:
        parts.append(Text(f"  built: {trace.config}", style="dim"))
    if trace.status != "ok" and trace.message:
        parts.append(Text(f"  error: {trace.message}", style="red"))
    for claim, verdict in sorted(trace.verdicts.items()):
        line = Text(f"  {claim}: ")
        line.append_text(_verdict_text(verdict))
        reason = trace.reasons.get(claim)
        if reason:
            line.append(f" — {reason}")
        parts.append(line)
    for defect in trace.defects:
        parts.append(Text(f"  defect {defect.id}: {defect.message}", style="bold red"))
    reference = trace.reference
    if reference is not None:
        line = Text(f"  reference {reference.name}: ")
        line.append_text(_verdict_text(reference.verdicts.get(LAYER_INDEX_REUSE)))
        if reference.status != "ok":
            line.append(f" — {reference.message}", style="red")
        elif reference.reasons.get(LAYER_INDEX_REUSE):
            line.append(f" — {reference.reasons[LAYER_INDEX_REUSE]}")
        parts.append(line)
        for defect in reference.defects:
            parts.append(Text(f"  reference defect {defect.id}: {defect.message}", style="red"))
    if trace.runs:
        first = trace.runs[0]
        ref_first = reference.runs[0] if reference is not None and reference.runs else None
        heading = f"  prefill {first.tokens}×{first.batch} (tokens×rows), layer by layer"
        parts.append(Text(heading + (", beside the reference" if ref_first else ""), style="bold"))
        parts.append(_layer_table(first, ref_first))
        for index, run in enumerate(trace.runs):
            parts.append(_timing_line(f"  prefill {run.tokens}×{run.batch}", run))
            if reference is not None and index < len(reference.runs):
                parts.append(_timing_line("    reference", reference.runs[index]))
    return Group(*parts)


def render_trace_report(report: TraceReport, console: Console) -> None:
    """The ``kvaudit trace`` terminal view: the traces, then one ``error: …`` line per problem.

    With nothing traced (bad input only), the error lines are all there is.
    """
    if report.traces:
        _render_traces(report, console)
    for message in report.error_lines:
        console.print(Text(f"error: {message}", style="bold red"), soft_wrap=True)


def _render_traces(report: TraceReport, console: Console) -> None:
    if report.model:
        model = report.model
        console.print(Text(f"model: {model['source']}", style="dim"))
        console.print(
            Text(
                f"{model['layers']} layers; prefills {', '.join(report.plan)} (tokens×rows), in this order, "
                "on one press instance",
                style="dim",
            )
        )
    for trace in report.traces:
        console.print()
        console.print(press_section(trace))
    defects = sum(len(t.defects) for t in report.traces)
    untraced = sum(1 for t in report.traces if t.status != "ok" and not t.defects)
    summary = f"{len(report.traces)} press(es) traced, {defects} defect(s)"
    if untraced:
        summary = f"{len(report.traces)} press(es), {untraced} not traced, {defects} defect(s)"
    console.print()
    console.print(Text(summary, style="bold red" if defects else "bold"))


def render_trace_panel(console: Console, result: AuditResult) -> None:
    """``kvaudit check --trace``: static and dynamic verdicts side by side, disagreements flagged.

    Mapping: implemented ↔ observed, partial ↔ partial, missing ↔ not-observed
    (:data:`kvaudit.tracer.compare.STATIC_TO_DYNAMIC`).
    """
    pairs = verdict_pairs(result)
    if not pairs:
        return
    table = Table(title="layer-index-reuse: static vs dynamic", title_justify="left", header_style="bold")
    table.add_column("press")
    table.add_column("static")
    table.add_column("dynamic")
    table.add_column("")
    for pair in pairs:
        flag = Text(pair.explanation, style="bold red" if not pair.agrees else "green" if pair.comparable else "dim")
        table.add_row(pair.press, pair.static or "n/a", _verdict_text(pair.dynamic), flag)
    console.print(table)
    disagreeing = [pair for pair in pairs if not pair.agrees]
    if disagreeing:
        console.print(Text(f"{len(disagreeing)} disagreement(s) between source and behaviour", style="bold red"))
    for press in result.presses:
        if press.trace is not None:
            console.print()
            console.print(press_section(press.trace, show_path=False))
