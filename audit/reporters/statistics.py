"""``--statistics``: how many findings each rule produced, most frequent first (as Ruff's)."""

from __future__ import annotations

import json
from collections import Counter

from ..model import AuditResult
from ..rule import rule_by_id


def rule_counts(result: AuditResult) -> list[tuple[str, str, int]]:
    """(rule id, rule name, count), by count then id."""
    counts = Counter(finding.rule for finding in result.findings)
    rows = []
    for rule_id, count in counts.items():
        rule = rule_by_id(rule_id)
        rows.append((rule_id, rule.name if rule is not None else "", count))
    return sorted(rows, key=lambda row: (-row[2], row[0]))


def render_statistics(result: AuditResult) -> str:
    """``COUNT  ID  name`` lines (nothing when there is no finding)."""
    rows = rule_counts(result)
    width = max((len(str(count)) for _, _, count in rows), default=1)
    return "".join(f"{count:>{width}}  {rule_id}  {name}\n" for rule_id, name, count in rows)


def render_statistics_json(result: AuditResult) -> str:
    rows = [{"code": rule_id, "name": name, "count": count} for rule_id, name, count in rule_counts(result)]
    return json.dumps(rows, indent=2) + "\n"
