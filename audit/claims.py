"""Which mechanisms a press claims: the paper it cites, looked up in ``rules/papers.toml``.

What each paper claims is declared by the mechanisms (``rules/claim_*.py``, :mod:`kvaudit.mechanism`):
a paper's ``claims`` are the mechanisms that list it.

A citation is an arXiv id (bare or inside an arxiv.org URL) or one of the paper's names.
It is looked for, in this order, in the class docstring, the module docstring, the
module's comments and the class name; the first place that cites a registered paper
decides, so a SnapKV press in a ChunkKV module stays quiet. Example code in a docstring
(``ComposedPress([SnapKVPress(0.5)])``, doctest lines, an "Examples" section) is usage,
not a citation, and is skipped.

Every claim keeps its origin as parts (:class:`~kvaudit.model.ClaimOrigin`): a citation
(where, which paper), a configuration override (which entry of which file), ``--claim``, or the
contract of a kvpress base class in the press's MRO.

This module is the one place that decides which claims a press is held to: the static audit and
the trace stage both call :func:`press_claims` and :func:`contract_claims`, in the kvaudit process;
the tracer's worker only checks the claims it is sent.
"""

from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import dataclass
from collections.abc import Sequence
from functools import cache, cached_property, lru_cache
from typing import TYPE_CHECKING
from importlib.resources import files

from .analysis.index import ClassInfo, ProjectIndex, docstring_constant

if TYPE_CHECKING:
    from pathlib import Path

    from .config import ClaimOverride
from .model import CITATION, CONFIG_OVERRIDE, CONTRACT, OPTION, Claim, ClaimOrigin
from .source import split_lines

REGISTRY = "papers.toml"  # a data file of kvaudit.rules, read with importlib.resources
FORCED_PLACE = "--claim"


@dataclass(frozen=True)
class Paper:
    """One registered paper: what it claims and the defaults it publishes."""

    key: str
    title: str
    arxiv: str  # "" when the paper has no arXiv id
    names: tuple[str, ...]
    claims: dict[str, str]  # claim id -> where in the paper (from the mechanisms that list the paper)
    defaults: dict[str, object]
    links: tuple[str, ...] = ()  # other identifiers matched literally: a DOI, an OpenReview id

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        alternatives = [re.escape(i) for i in (self.arxiv, *self.links) if i]
        # A name followed by "Press" names a class (`AdaKVPress` in LagKV's docstring), not the paper; a
        # class's own name still cites through find_paper's class-name rule, and subclasses inherit.
        alternatives += [rf"(?<![A-Za-z0-9]){re.escape(n)}(?!Press)" for n in self.names]
        return re.compile("|".join(alternatives))

    @property
    def label(self) -> str:
        return f"{self.names[0]} (arXiv {self.arxiv})" if self.arxiv else f"{self.names[0]} ({self.links[0]})"


@cache
def load_registry() -> tuple[Paper, ...]:
    from .mechanism import all_mechanisms

    data = tomllib.loads((files(f"{__package__}.rules") / REGISTRY).read_text(encoding="utf-8"))
    return tuple(
        Paper(
            key=key,
            title=entry["title"],
            arxiv=entry.get("arxiv", ""),
            names=tuple(entry.get("names", ())),
            claims={m.id: m.papers[key].where for m in all_mechanisms() if key in m.papers},
            defaults=dict(entry.get("defaults", {})),
            links=tuple(entry.get("links", ())),
        )
        for key, entry in data.items()
    )


def paper_by_key(key: str) -> Paper | None:
    return next((paper for paper in load_registry() if paper.key == key), None)


def known_claims() -> set[str]:
    """Every mechanism id (a paper's claim or a kvpress contract's)."""
    from .mechanism import all_mechanisms

    return {mechanism.id for mechanism in all_mechanisms()}


def _first_citation(text: str) -> tuple[Paper, int] | None:
    hits = [(m.start(), paper) for paper in load_registry() if (m := paper.pattern.search(text))]
    if not hits:
        return None
    offset, paper = min(hits, key=lambda hit: hit[0])
    return paper, offset


def _comment_lines(text: str) -> list[tuple[int, str]]:
    comments = []
    for number, line in enumerate(split_lines(text), start=1):
        code, hash_sign, comment = line.partition("#")
        # Skip a '#' that may sit inside a string literal.
        if hash_sign and "'" not in code and '"' not in code:
            comments.append((number, comment))
    return comments


# -- docstring example code ---------------------------------------------------------------
# Usage examples name other presses (`ComposedPress([SnapKVPress(0.5), ...])`): that is code,
# not a citation. These blank it out, keeping line breaks so offsets still give line numbers.

_FENCE = re.compile(r"^\s*(```|~~~)")
_SECTION_UNDERLINE = re.compile(r"^\s*[-=~]{3,}\s*$")
_EXAMPLE_HEADER = re.compile(r"^\s*(Examples?|Usage|Example usage)\s*:?\s*$", re.IGNORECASE)
_INLINE_CALL = re.compile(r"(?<![\w.])[A-Za-z_][\w.]*(?=\()")
_CODE_STATEMENTS = (ast.Assign, ast.AugAssign, ast.Import, ast.ImportFrom, ast.With, ast.For)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _is_code_line(line: str) -> bool:
    """A docstring line that is a Python statement (``press = SnapKVPress(0.5)``), not prose."""
    stripped = line.strip()
    if not stripped or ("(" not in stripped and "=" not in stripped and not stripped.startswith(("import ", "from "))):
        return False
    try:
        tree = ast.parse(stripped)
    except (SyntaxError, ValueError):
        return False
    if len(tree.body) != 1:
        return False
    statement = tree.body[0]
    if isinstance(statement, ast.AnnAssign):
        return statement.value is not None  # `SnapKV: a title` is prose; `x: int = f()` is code
    return isinstance(statement, _CODE_STATEMENTS) or (
        isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call))


def strip_example_code(text: str) -> str:
    """``text`` (a docstring) with its example code blanked out: fenced blocks, doctest lines,
    ``::`` literal blocks, "Examples" sections and lone lines that are Python statements."""
    lines = text.split("\n")
    keep = [True] * len(lines)
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if _FENCE.match(line):  # a fenced block, up to its closing fence
            j = i + 1
            while j < len(lines) and not _FENCE.match(lines[j]):
                j += 1
            for k in range(i, min(j + 1, len(lines))):
                keep[k] = False
            i = j + 1
            continue
        if stripped.startswith((">>>", "... ")) or stripped == "...":
            keep[i] = False
        elif _EXAMPLE_HEADER.match(line) or stripped.endswith("::"):
            # An "Examples" section (numpy: underlined; Google: "Example:") or a reST literal block:
            # what follows, up to the next section header or a dedent below the header, is code.
            header_indent = _indent(line)
            numpy_style = i + 1 < len(lines) and _SECTION_UNDERLINE.match(lines[i + 1])
            j = i + (2 if numpy_style else 1)
            while j < len(lines):
                nxt = lines[j]
                if nxt.strip():
                    if j + 1 < len(lines) and _SECTION_UNDERLINE.match(lines[j + 1]):
                        break  # the next numpy section
                    if not numpy_style and _indent(nxt) <= header_indent:
                        break
                keep[j] = False
                j += 1
            i = j
            continue
        elif _is_code_line(line):
            keep[i] = False
        i += 1
    # What is left is prose; a call written inside it (`..., e.g. ComposedPress([SnapKVPress(0.5)])`)
    # names a class, it does not cite its paper.
    return "\n".join(_INLINE_CALL.sub(lambda m: " " * len(m.group(0)), line) if kept else ""
                     for line, kept in zip(lines, keep))


@lru_cache(maxsize=32)
def _comment_citation(text: str) -> tuple[Paper, str, int] | None:
    # Memoised: every class of a file, and every press whose bases live in it, asks again.
    for number, comment in _comment_lines(text):
        found = _first_citation(comment)
        if found:
            return found[0], "comment", number
    return None


def find_paper(press: ClassInfo) -> tuple[Paper, str, int] | None:
    """The paper ``press`` cites, where, and on which line (read from the ``ast`` index)."""
    source = press.source
    docstrings = (("class docstring", press.docstring_node()), ("module docstring", docstring_constant(source.tree.body)))
    for where, node in docstrings:
        if node is None:
            continue
        raw = strip_example_code(source.segment(node.lineno, node.end_lineno or node.lineno))
        found = _first_citation(raw)
        if found:
            paper, offset = found
            return paper, where, node.lineno + raw.count("\n", 0, offset)
    in_comment = _comment_citation(source.text)
    if in_comment is not None:
        return in_comment
    # In an identifier a name may follow other words: `MyChunkKVPress` cites ChunkKV.
    named = [paper for paper in load_registry() if any(name in press.name for name in paper.names)]
    if named:
        return named[0], "class name", press.line
    return None


def find_paper_in_hierarchy(press: ClassInfo, index: ProjectIndex) -> tuple[Paper, str, int] | None:
    """The paper ``press`` cites, or else the one its nearest base class cites."""
    cited = find_paper(press)
    if cited is not None:
        return cited
    for base in index.mro(press)[1:]:
        inherited = find_paper(base)
        if inherited is not None:
            paper, where, _ = inherited
            return paper, f"inherited from {base.name} ({where})", press.line
    return None


def paper_of_claim(claim: str) -> Paper | None:
    """The registered paper that claims ``claim`` (the first one, in registry order)."""
    return next((paper for paper in load_registry() if claim in paper.claims), None)


def forced_origin(claim: str, place: str, kind: str = OPTION) -> ClaimOrigin:
    """The origin of a claim forced by ``--claim`` or a configuration entry, naming whose claim it is."""
    paper = paper_of_claim(claim)
    return ClaimOrigin(kind=kind, place=place, paper=paper.key if paper else "",
                       paper_label=paper.label if paper else "")


def claims_for(press: ClassInfo, index: ProjectIndex, forced: list[str], notes: list[str] | None = None) -> list[Claim]:
    """The claims of ``press``: its paper's, or the ``--claim`` ones when it cites nothing.

    When ``press`` cites a paper, ``--claim`` leaves it alone; each claim left out that way
    gets a line in ``notes`` saying why, so that the user is never left guessing.
    """
    cited = find_paper_in_hierarchy(press, index)
    if cited is not None:
        paper, where, line = cited
        if notes is not None:
            for claim in sorted(set(forced) - set(paper.claims)):
                notes.append(f"{press.source.display}:{press.line}: --claim {claim} not applied to {press.name}: "
                             f"it cites {paper.label} ({where}, line {line}), which does not claim it; "
                             "--claim only reaches presses that cite no paper (a claim-overrides entry in the "
                             "configuration adds it to any press)")
        return [Claim(id=claim, line=line, origin=ClaimOrigin(CITATION, where, paper.key, paper.label))
                for claim in sorted(paper.claims)]
    return [Claim(id=claim, line=press.line, origin=forced_origin(claim, FORCED_PLACE)) for claim in sorted(set(forced))]


def apply_claim_overrides(press_name: str, press_path: str, press_line: int, claims: list[Claim],
                          overrides: Sequence[ClaimOverride], root: Path | None) -> list[Claim]:
    """``claims`` after the ``claim-overrides`` entries matching this press dropped and added theirs (in file order)."""
    claims = list(claims)
    for override in overrides:
        if not override.matches(press_name, press_path, root):
            continue
        claims = [c for c in claims if c.id not in override.drop]
        present = {c.id for c in claims}
        for claim in override.add:
            if claim not in present:
                claims.append(Claim(id=claim, line=press_line, origin=forced_origin(claim, override.origin, CONFIG_OVERRIDE)))
    return sorted(claims, key=lambda c: c.id)


def press_claims(press: ClassInfo, index: ProjectIndex, forced: Sequence[str] = (),
                 overrides: Sequence[ClaimOverride] = (), root: Path | None = None,
                 notes: list[str] | None = None) -> list[Claim]:
    """The claims of ``press`` from its paper, ``--claim`` and the configuration's ``claim-overrides``."""
    claims = claims_for(press, index, list(forced), notes)
    return apply_claim_overrides(press.name, press.source.display, press.line, claims, overrides, root)


def contract_claims(class_names: Sequence[str], taken: Sequence[Claim] = (), line: int = 0) -> list[Claim]:
    """The claims the kvpress base classes among ``class_names`` (a press's MRO) promise every subclass.

    Every ``BasePress`` keeps ``1 - compression_ratio``, every ``ScorerPress`` the top-k of its own
    ``score()`` (:attr:`kvaudit.mechanism.Mechanism.contracts`). A claim of ``taken`` (the press's
    paper, an override) wins over a contract's for the same mechanism.
    """
    from .mechanism import contract_claims as contracts_of, contract_label

    held = {claim.id for claim in taken}
    return [Claim(mechanism.id, line, ClaimOrigin(CONTRACT, base, "", contract_label(base)))
            for mechanism, base, _ in contracts_of(class_names) if mechanism.id not in held]
