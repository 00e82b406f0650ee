"""Every rule's embedded examples, run as tests (as Fixit does).

Dynamic rules (KVA301, KVA302) find nothing statically: their examples are traced in
tests/test_claims_catalogue.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kvaudit.engine import run_check
from kvaudit.rule import all_rules

CASES = [
    pytest.param(rule, kind, number, code, id=f"{rule.id}-{kind}-{number}")
    for rule in all_rules()
    if not rule.dynamic
    for kind, examples in (("valid", rule.VALID), ("invalid", rule.INVALID))
    for number, code in enumerate(examples, start=1)
]


def test_every_rule_has_examples_and_docs() -> None:
    for rule in all_rules():
        assert rule.VALID and rule.INVALID, f"{rule.id} needs valid and invalid examples"
        assert rule.documentation(), f"{rule.id} needs a docstring"
        assert rule.id.startswith("KVA") and rule.message


@pytest.mark.parametrize(("rule", "kind", "number", "code"), CASES)
def test_rule_example(rule, kind: str, number: int, code: str, tmp_path: Path) -> None:
    path = tmp_path / f"example_{rule.id.lower()}_{kind}_{number}.py"
    path.write_text(code.lstrip("\n"), encoding="utf-8")
    result = run_check([str(path)])
    assert not result.has_errors, result.files
    fired = [f for f in result.findings if f.rule == rule.id]
    if kind == "invalid":
        assert fired, f"{rule.id} should fire on its invalid example #{number}"
    else:
        assert not fired, f"{rule.id} fired on its valid example #{number}: {fired}"
