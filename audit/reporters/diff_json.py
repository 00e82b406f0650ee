"""``kvaudit diff --format json``: the ``kvaudit.diff/1`` document (docs/ci.md, "kvaudit diff").

Keys: ``schema``, ``old`` and ``new`` (``path``, ``schema``, ``presses``: how many), ``worse`` (the
exit code's answer), ``counts`` (changes by effect: ``worse``, ``better``, ``neutral``), ``warnings``,
and ``changes[]``, each with ``kind``, ``effect``, ``press``, ``claim``, ``paper``, ``defect``, ``old``,
``new`` and ``message`` (:class:`kvaudit.diff.Change`). A plain function of the diff; byte-stable.
"""

from __future__ import annotations

import json
from typing import Any

from ..codec import to_data
from ..diff import BETTER, DIFF_SCHEMA, NEUTRAL, WORSE, AuditDiff


def diff_document(diff: AuditDiff) -> dict[str, Any]:
    return {
        "schema": DIFF_SCHEMA,
        "old": to_data(diff.old),
        "new": to_data(diff.new),
        "worse": diff.worse,
        "counts": {effect: diff.count(effect) for effect in (WORSE, BETTER, NEUTRAL)},
        "warnings": list(diff.warnings),
        "changes": to_data(diff.changes),
    }


def render_diff_json(diff: AuditDiff) -> str:
    return json.dumps(diff_document(diff), indent=2, ensure_ascii=False) + "\n"
