"""Terminal views of the tracer: ``kvaudit trace``, and the panel ``kvaudit check --trace`` shows.

Plain functions of the findings model; rich only.
Piped (stdout not a terminal), every line comes whole, never wrapped or cut
(:func:`kvaudit.reporters.console.print_unwrapped`), as in ``kvaudit check``'s plain view.
"""

from __future__ import annotations

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..model import (
    HOLDS,
    NOT_APPLICABLE,
    NOT_CHECKABLE,
    NOT_OBSERVED,
    NOT_CHECKABLE,
    NOT_RUN,
    OBSERVED,
    PARTIAL,
    VIOLATED,
    AuditResult,
    ClaimCheck,
    PressTrace,
    TraceRun,
)
from ..source import printable
from ..tracer.compare import verdict_pairs
from .console import print_unwrapped

VERDICT_STYLE = {OBSERVED: "bold green", PARTIAL: "bold yellow", NOT_OBSERVED: "bold red",
                 HOLDS: "bold green", VIOLATED: "bold red", NOT_APPLICABLE: "dim", NOT_RUN: "yellow",
                 NOT_CHECKABLE: "dim"}


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
        f"{label}: score() {_ms(run.timings.score_s)} · compress {_ms(run.timings.compress_s)} "
        f"· prefill {_ms(run.timings.prefill_s)}",
        style="dim",
    )


def claim_line(check: ClaimCheck, indent: str = "  ") -> Text:
    """``observation-window (SnapKV (arXiv 2404.14469)): holds — every compressed layer keeps …``."""
    line = Text(f"{indent}{check.id} ({check.paper}): ")
    line.append_text(_verdict_text(check.verdict))
    if check.accepted is not None:
        line.append(" (accepted)", style="bold cyan")
    if check.stand_in:  # checked on a press that ran with stand-ins for its Hub files
        line.append(" (stand-in)", style="magenta")
    line.append(f" — {check.message}")
    if check.accepted is not None:
        line.append(f" [accepted: {check.accepted}]", style="cyan")
    return line


def press_section(trace: PressTrace, show_path: bool = True) -> RenderableType:
    """Everything about one traced press: status, claims checked, defects, layer table, timings."""
    parts: list[RenderableType] = []
    title = Text(trace.name, style="bold cyan")
    if show_path:
        title.append(f"  {printable(trace.path)}", style="dim")
    parts.append(title)
    if trace.config:
        parts.append(Text(f"  built: {trace.config}", style="dim"))
    if trace.settings:
        parts.append(Text(f"  settings: {trace.settings}", style="dim"))
    if trace.stand_in:
        parts.append(Text(f"  stand-in: {trace.stand_in}", style="magenta"))
    if trace.status != "ok" and trace.message:
        parts.append(Text(printable(f"  error: {trace.message}"), style="red"))
    for check in trace.claims:
        parts.append(claim_line(check))
    for defect in trace.defects:
        parts.append(Text(f"  defect {defect.id}: {defect.message}", style="bold red"))
    reference = trace.reference or None
    if reference is not None:
        line = Text(f"  reference {reference.name}", style="bold")
        if reference.status != "ok":
            line.append(f": {reference.message}", style="red")
        parts.append(line)
        for check in reference.claims:
            parts.append(claim_line(check, indent="    "))
        for defect in reference.defects:
            parts.append(Text(f"    reference defect {defect.id}: {defect.message}", style="red"))
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


def render_trace_report(result: AuditResult, console: Console) -> None:
    """The ``kvaudit trace`` terminal view: the traces, then one ``error: …`` line per problem.

    With nothing traced (bad input only), the error lines are all there is.
    """
    traces = [press.trace for press in result.presses if press.trace is not None]
    if traces:
        _render_traces(result, traces, console)
    for status in result.files:
        if status.status == "error":
            console.print(Text(printable(f"error: {status.message}"), style="bold red"), soft_wrap=True)


def _render_traces(result: AuditResult, traces: list[PressTrace], console: Console) -> None:
    traced = result.traced
    if traced is not None and traced.model is not None:
        model = traced.model
        print_unwrapped(console, Text(f"model: {model.source}", style="dim"))
        plan = traced.grid or "prefills " + ", ".join(traced.plan)
        print_unwrapped(console, Text(f"{model.layers} layers; {plan}; the prefills of one ratio run in this order "
                                      "on one press instance", style="dim"))
    for trace in traces:
        console.print()
        print_unwrapped(console, press_section(trace))
    defects = sum(len(t.defects) for t in traces)
    violated = sum(1 for t in traces for c in t.claims if c.open_violation)
    accepted = sum(1 for t in traces for c in t.claims if c.accepted is not None)
    untraced = sum(1 for t in traces if t.status != "ok" and not t.runs and not t.defects)
    summary = f"{len(traces)} press(es) traced, {violated} violated claim(s), {defects} defect(s)"
    if accepted:
        summary += f", {accepted} accepted deviation(s)"
    if untraced:
        summary += f"; {untraced} not traced"
    console.print()
    print_unwrapped(console, Text(summary, style="bold red" if defects or violated else "bold"))
    for message in traced.unused_acceptances if traced is not None else ():
        console.print(Text(f"warning: {message}", style="yellow"), soft_wrap=True)


def render_trace_panel(console: Console, result: AuditResult) -> None:
    """``kvaudit check --trace``: static and dynamic verdicts side by side, disagreements flagged.

    Each mechanism with static evidence says what the tracer should see (layer-index-reuse:
    implemented ↔ observed, partial ↔ partial, missing ↔ not-observed; :mod:`kvaudit.tracer.compare`).
    """
    pairs = verdict_pairs(result)
    if pairs:
        # Boxed in a terminal; piped, plain columns like the trace tables (no box-drawing characters in a log).
        table = Table(title="static vs dynamic", title_justify="left", header_style="bold",
                      **({} if console.is_terminal else {"box": None, "pad_edge": False, "show_edge": False}))
        table.add_column("press")
        table.add_column("claim")
        table.add_column("static")
        table.add_column("dynamic")
        table.add_column("")
        for pair in pairs:
            flag = Text(pair.explanation, style="bold red" if not pair.agrees else "green" if pair.comparable else "dim")
            # Text cells: a str cell is read as rich markup, and names or paths may hold `[...]`.
            table.add_row(Text(printable(pair.press)), Text(pair.claim), Text(pair.static or "n/a"),
                          _verdict_text(pair.dynamic), flag)
        print_unwrapped(console, table)
        disagreeing = [pair for pair in pairs if not pair.agrees]
        if disagreeing:
            print_unwrapped(console, Text(f"{len(disagreeing)} disagreement(s) between source and behaviour", style="bold red"))
    for press in result.presses:
        if press.trace is not None:
            console.print()
            print_unwrapped(console, press_section(press.trace, show_path=False))
