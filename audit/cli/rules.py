"""``kvaudit rules [ID]``: list the rules, or show one rule's documentation and examples."""

from __future__ import annotations

from typing import Optional

import typer

from . import app
from .check import BAD_INPUT


@app.command("rules")
def rules_command(rule_id: Optional[str] = typer.Argument(None, help="A rule id such as KVA101.")) -> None:
    """List the rules, or print one rule's documentation and examples."""
    from rich.syntax import Syntax
    from rich.table import Table
    from rich.text import Text

    from ..reporters.console import console as make_console
    from ..rule import all_rules, rule_by_id

    console = make_console()
    if rule_id is None:
        table = Table(title="kvaudit rules")
        for column in ("id", "name", "severity", "claim", "summary"):
            # Never cut an id or a name; fold the rest rather than cut it.
            table.add_column(column, no_wrap=column in ("id", "name"), overflow="fold")
        for rule in all_rules():
            # Text, never markup: a rule's text may hold `[...]` (TOML tables, subscripts).
            table.add_row(*(Text(cell) for cell in (rule.id, rule.name, rule.severity.value, rule.claim or "—",
                                                    rule.message)))
        console.print(table)
        return
    rule = rule_by_id(rule_id)
    if rule is None:
        typer.echo(f"error: no rule {rule_id!r}; `kvaudit rules` lists them", err=True)
        raise typer.Exit(BAD_INPUT)
    console.print(Text.assemble((rule.id, "bold"), f" {rule.name} ({rule.severity.value})"))
    console.print(Text(rule.documentation()))
    for title, examples in (("Valid (no finding)", rule.VALID), ("Invalid (finding)", rule.INVALID)):
        for number, code in enumerate(examples, start=1):
            console.rule(f"{title} #{number}")
            console.print(Syntax(code.strip("\n"), "python", theme="ansi_dark"))
