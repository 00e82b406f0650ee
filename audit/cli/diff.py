"""``kvaudit diff OLD NEW``: what changed between two audits (kvaudit.diff), in the terminal, Markdown or JSON.

Exit codes: 0 nothing got worse; 1 something got worse (a claim became violated, a defect appeared,
a violation lost its acceptance, a new press with either); 2 bad input: a file that is missing, not
JSON or not a kvaudit document of a schema it reads, or two audits traced on different models or grids
(unless ``--allow-mismatch``). One line on stderr, never a traceback. Light at import: the
diff and its views load inside the command.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from . import app

if TYPE_CHECKING:
    from ..diff import AuditDiff
from .options import Debug, fail, internal_errors


class DiffFormat(str, Enum):
    terminal = "terminal"
    markdown = "markdown"
    json = "json"


@app.command("diff")
def diff(
    old: Path = typer.Argument(..., metavar="OLD.json", help="The earlier audit: kvaudit trace --format json "
                               "(kvaudit.trace/2), check --trace --format json, or a claims baseline."),
    new: Path = typer.Argument(..., metavar="NEW.json", help="The later audit, of the same kinds."),
    output_format: DiffFormat = typer.Option(DiffFormat.terminal, "--format", "-f",
                                             help="terminal, markdown (a pull-request comment) or json (kvaudit.diff/1)."),
    title: Optional[str] = typer.Option(None, "--title", help="Heading of the Markdown view "
                                        "(default: kvaudit diff: OLD → NEW)."),
    allow_mismatch: bool = typer.Option(False, "--allow-mismatch", help="Compare audits traced on different models or "
                                        "grids (a warning instead of exit 2)."),
    ignore_removed: bool = typer.Option(False, "--ignore-removed", help="Do not list presses only OLD has (NEW traced "
                                        "some presses only, e.g. those a pull request changed)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="FILE", dir_okay=False,
                                          help="Write the view to FILE instead of stdout."),
    debug: Debug = False,
) -> None:
    """Compare two audits: claims that became violated or hold, presses added or removed, acceptances, numbers, defects."""
    from ..diff import DiffInputError, diff_files
    from ..exitcodes import FINDINGS, OK
    from ..source import printable

    with internal_errors(f"{old}, {new}", debug):
        try:
            result = diff_files(old, new, allow_mismatch=allow_mismatch, ignore_removed=ignore_removed)
        except DiffInputError as err:
            raise fail(printable(str(err))) from None
        if output_format is not DiffFormat.json:  # JSON carries them; the other views say them on stderr as well
            for warning in result.warnings:
                typer.echo(printable(f"warning: {warning}"), err=True)
        if output_format is DiffFormat.terminal and output is None:
            from ..reporters.console import console
            from ..reporters.diff_terminal import render_diff_terminal

            render_diff_terminal(result, console())
        else:
            text = _render(result, output_format, title)
            if output is None:
                sys.stdout.write(text)
            else:
                try:
                    output.write_text(text, encoding="utf-8")
                except OSError as err:
                    raise fail(printable(f"cannot write {output}: {err.strerror or err}")) from None
    raise typer.Exit(FINDINGS if result.worse else OK)


def _render(result: AuditDiff, output_format: DiffFormat, title: str | None) -> str:
    if output_format is DiffFormat.json:
        from ..reporters.diff_json import render_diff_json

        return render_diff_json(result)
    if output_format is DiffFormat.markdown:
        from ..reporters.diff_markdown import render_diff_markdown

        return render_diff_markdown(result, title)
    # terminal to a file: the plain text a pipe gets
    import io

    from ..reporters.console import console
    from ..reporters.diff_terminal import render_diff_terminal

    buffer = io.StringIO()
    render_diff_terminal(result, console(file=buffer, color_system=None))
    return buffer.getvalue()

