"""Measure kvaudit against the corpus: each `# expect:` line (or kvpress-0.5.5.toml entry) is one
case, right when every clause holds. Used by tests/test_corpus.py and benchmarks/bench_corpus.py.

Clauses: reuse=<verdict>, fires=R1,R2, quiet=R1, not=RULE:snippet (no finding of RULE mentions the
snippet), evidence=kind1,kind2, not-evidence=kind|layer-group (no "(layer-group test)" line),
claim=citation|config|option (origin kind of the layer-index-reuse claim), press=no.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from kvaudit.config import ClaimOverride, load_config
from kvaudit.engine import CheckOptions, run_check
from kvaudit.model import LAYER_INDEX_REUSE, AuditResult, PressReport

CORPUS = Path(__file__).resolve().parent
CONFIG = CORPUS / "kvaudit.toml"
# Each folder is audited on its own (forks hold same-named modules); kvpress is the installed package.
RUNS = sorted([*(p for p in (CORPUS / "forks").iterdir() if p.is_dir()),
               *(p for p in (CORPUS / "research").iterdir() if p.is_dir()), CORPUS / "mlx", CORPUS / "mlx_early",
               CORPUS / "handwritten"])
_EXPECT = re.compile(r"^# expect: (\S+)(.*)$", re.MULTILINE)


@dataclass
class Case:
    where: str  # the file (or "kvpress 0.5.5")
    press: str
    clauses: list[str]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _options() -> CheckOptions:
    config = load_config(CONFIG)
    return CheckOptions(forced_claims=[LAYER_INDEX_REUSE], claim_overrides=config.claim_overrides,
                        config_root=config.root, press_bases=tuple(config.press_bases))


def _judge(case: Case, report: PressReport | None) -> None:
    for clause in case.clauses:
        key, _, value = clause.partition("=")
        if key == "press":
            if (report is not None) != (value != "no"):
                case.problems.append(f"press={'yes' if report else 'no'}")
            continue
        if report is None:
            case.problems.append("not audited as a press")
            return
        fired = {f.rule for f in report.findings}
        if key == "reuse" and report.verdicts.get(LAYER_INDEX_REUSE) != value:
            case.problems.append(f"reuse={report.verdicts.get(LAYER_INDEX_REUSE)}")
        elif key == "fires":
            case.problems += [f"{rule} silent" for rule in value.split(",") if rule not in fired]
        elif key == "quiet":
            case.problems += [f"{rule} fired" for rule in value.split(",") if rule in fired]
        elif key == "not":
            rule, _, snippet = value.partition(":")
            case.problems += [f"{rule} on {snippet}" for f in report.findings
                              if f.rule == rule and snippet.strip("`") in f.message]
        elif key == "evidence":
            kinds = {e.kind for e in report.evidence}
            case.problems += [f"no {kind} evidence" for kind in value.split(",") if kind not in kinds]
        elif key == "not-evidence":
            for kind in value.split(","):
                bad = [e for e in report.evidence
                       if (kind == "layer-group" and "(layer-group test)" in e.detail) or e.kind == kind]
                case.problems += [f"{kind} evidence at line {e.line}" for e in bad]
        elif key == "claim":
            claim = next((c for c in report.claims if c.id == LAYER_INDEX_REUSE), None)
            if claim is None or claim.origin.kind != value:
                case.problems.append(f"claim={claim.origin.kind if claim else None}")


def _by_file(result: AuditResult) -> dict[tuple[str, str], PressReport]:
    return {(Path(p.path).resolve().as_posix(), p.name): p for p in result.presses}


def corpus_cases() -> list[Case]:
    """The corpus files' cases, judged."""
    cases: list[Case] = []
    options = _options()
    for run in RUNS:
        reports = _by_file(run_check([str(run)], options))
        for path in sorted(run.rglob("*.py")):
            for match in _EXPECT.finditer(path.read_text(encoding="utf-8")):
                case = Case(path.relative_to(CORPUS).as_posix(), match.group(1), match.group(2).split())
                _judge(case, reports.get((path.resolve().as_posix(), case.press)))
                cases.append(case)
    return cases


def kvpress_cases() -> list[Case]:
    """The installed kvpress 0.5.5's presses, under --claim layer-index-reuse."""
    expected = tomllib.loads((CORPUS / "kvpress-0.5.5.toml").read_text(encoding="utf-8"))["expect"]
    # --claim reaches the presses that cite no paper; the override (as the corpus's kvaudit.toml does)
    # adds the claim to the ones that cite a registered paper claiming something else (CaM, DMS, SimLayerKV).
    everyone = ClaimOverride(path=None, cls="*", add=(LAYER_INDEX_REUSE,), origin="the corpus harness")
    result = run_check(["kvpress.presses"], CheckOptions(forced_claims=[LAYER_INDEX_REUSE], claim_overrides=[everyone]))
    reports = {p.name: p for p in result.presses}
    cases = []
    for name, clauses in expected.items():
        case = Case("kvpress 0.5.5", name, clauses.split())
        _judge(case, reports.get(name))
        cases.append(case)
    implemented = [p.name for p in result.presses if p.verdicts.get(LAYER_INDEX_REUSE) == "implemented"]
    none_implemented = Case("kvpress 0.5.5", "(every press)", ["reuse!=implemented"])
    none_implemented.problems = [f"{name} implemented" for name in implemented]
    return [*cases, none_implemented]
