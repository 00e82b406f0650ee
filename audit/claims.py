"""Which mechanisms a press claims: the paper it cites, looked up in ``rules/papers.toml``.

What each paper claims is declared by the mechanisms (``rules/claim_*.py``, :mod:`kvaudit.mechanism`):
a paper's ``claims`` are the mechanisms that list it.

A citation is an arXiv id (bare or inside an arxiv.org URL) or one of the paper's names.
It is looked for, in this order, in the class docstring, the module docstring, the
module's comments and the class name; the first place that cites a paper decides, so a
SnapKV press in a ChunkKV module stays quiet. Example code in a docstring
(``ComposedPress([SnapKVPress(0.5)])``, doctest lines, an "Examples" section) is usage,
not a citation, and is skipped.

A passing mention is not a citation either: a paper named after "e.g.", "such as",
"unlike", "in contrast to", "related to", "inspired by", "similar to" (and the like), up to
the end of that phrase's clause or of the list it introduces, is a relation. It gives no
claims; it is recorded (:class:`~kvaudit.model.PaperMention`) and shown. An explicit arXiv id
(``arXiv 2509.00388``, ``arxiv.org/abs/...``) of a paper the registry does not know is a
citation all the same: the press cites that paper, not a registered one named later, and
the output says that the registry does not know it.

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
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property, lru_cache
from importlib.resources import files
from typing import TYPE_CHECKING

from .analysis.index import ClassInfo, ProjectIndex, docstring_constant
from .model import CITATION, CONFIG_OVERRIDE, CONTRACT, OPTION, RELATION, UNREGISTERED, Claim, ClaimOrigin, PaperMention
from .source import SourceFile, split_lines

if TYPE_CHECKING:
    from pathlib import Path

    from .config import ClaimOverride

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


# -- citations and passing mentions -----------------------------------------------------------
# An arXiv id in any of the forms papers are cited by: "arXiv 2509.00388", "arXiv:2509.00388v2",
# "https://arxiv.org/abs/2509.00388", "arxiv.org/pdf/2507.08143v1".
_ARXIV = re.compile(r"arxiv(?:\.org/(?:abs|pdf)/|[ \t]*:?[ \t]*)(\d{4}\.\d{4,5})", re.IGNORECASE)
# Phrases after which a paper is named in passing: an example, a contrast, a relation.
_RELATION = re.compile(
    r"(?<![\w-])(e\.g\.|for example|for instance|such as|unlike|as opposed to|in contrast (?:with|to)|"
    r"contrast(?:ed|s)? (?:with|to)|related to|inspired by|similar to|compared? (?:with|to)|cf\.|see also)(?![\w-])",
    re.IGNORECASE)
# Words before a full stop that does not end a sentence.
_ABBREVIATIONS = frozenset({"e.g", "i.e", "cf", "al", "etc", "vs", "fig", "eq", "sec", "no", "resp"})
_BULLET = re.compile(r"^[ \t]*(?:[-*\u2022]|\d+[.)])[ \t]")
_WORD = re.compile(r"[A-Za-z]+")
_BLANK_LINE = re.compile(r"\n[ \t]*(?:\n|$)")


@dataclass(frozen=True)
class _Hit:
    """A paper named in a text: a registered one (``paper``), or an arXiv id it does not have."""

    start: int
    paper: Paper | None
    arxiv: str = ""
    relation: str = ""  # the phrase that makes it a passing mention; "" for a citation

    @property
    def label(self) -> str:
        return self.paper.label if self.paper is not None else f"arXiv {self.arxiv}"


def _scope_end(text: str, start: int) -> int:
    """Where the passing mention that a phrase ending at ``start`` introduces ends: at the end of its
    sentence or clause (a full stop, a semicolon, a blank line, the bracket it sits in closing, a comma
    that goes on with other words than names: "Unlike SnapKV, this press ..."), or, for a phrase
    that ends its line ("such as"), after the bullet list below it."""
    line_end = text.find("\n", start)
    line_end = len(text) if line_end < 0 else line_end
    if not text[start:line_end].strip(" \t:"):
        end = line_end
        while end < len(text):
            following = text.find("\n", end + 1)
            following = len(text) if following < 0 else following
            if not _BULLET.match(text[end + 1 : following]):
                break
            end = following
        if end > line_end:
            return end
    depth = 0
    for i in range(start, len(text)):
        char = text[i]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth < 0:
                return i
        elif depth > 0:
            continue
        elif char == "\n" and _BLANK_LINE.match(text, i):
            return i
        elif char in ".;!?" and (i + 1 == len(text) or text[i + 1].isspace()):
            before = re.search(r"[\w.]*$", text[start:i]).group().lower()
            if char != "." or before not in _ABBREVIATIONS:
                return i
        elif char == ",":
            word = _WORD.match(text[i + 1 :].lstrip())
            if word is not None and word.group().islower() and word.group() not in ("and", "or"):
                return i
    return len(text)


def _hits(text: str) -> list[_Hit]:
    """Every paper ``text`` names, in order, each marked as a citation or a passing mention."""
    registry = load_registry()
    known = {paper.arxiv for paper in registry if paper.arxiv}
    hits = [_Hit(m.start(), paper) for paper in registry for m in paper.pattern.finditer(text)]
    hits += [_Hit(m.start(), None, m.group(1)) for m in _ARXIV.finditer(text) if m.group(1) not in known]
    if not hits:
        return []
    spans = [(m.end(), _scope_end(text, m.end()), m.group(1).lower()) for m in _RELATION.finditer(text)]
    marked = []
    for hit in sorted(hits, key=lambda h: h.start):
        phrase = next((phrase for start, end, phrase in spans if start <= hit.start < end), "")
        marked.append(_Hit(hit.start, hit.paper, hit.arxiv, phrase))
    return marked


@dataclass
class Citations:
    """What a press's own documentation cites first, and the papers it names in passing on the way.

    ``paper`` is None and ``arxiv`` set when the first citation is of an arXiv id the registry
    does not know; both empty when it cites nothing.
    """

    paper: Paper | None = None
    arxiv: str = ""
    where: str = ""
    line: int = 0
    relations: list[PaperMention] = field(default_factory=list)

    @property
    def cites(self) -> bool:
        return self.paper is not None or bool(self.arxiv)


_CITATIONS: weakref.WeakKeyDictionary[ClassInfo, Citations] = weakref.WeakKeyDictionary()


def read_citations(press: ClassInfo) -> Citations:
    """The citation of ``press``'s own class docstring, module docstring, comments or name (the first
    place that cites decides) and the passing mentions in the places read; memoised per class."""
    found = _CITATIONS.get(press)
    if found is None:
        found = _CITATIONS[press] = _read_citations(press)
    return found


# (where, the hit that cites, its line) and the passing mentions of one place.
_Place = tuple[tuple[str, "_Hit", int] | None, list[PaperMention]]


def _scan(where: str, text: str, first_line: int) -> _Place:
    """The first citation of one place (a docstring, a comment) and the passing mentions it holds."""
    cited = None
    relations: list[PaperMention] = []
    for hit in _hits(text):
        line = first_line + text.count("\n", 0, hit.start)
        if hit.relation:
            relations.append(PaperMention(RELATION, hit.label, where, line, hit.paper.key if hit.paper else "",
                                          hit.relation))
        elif cited is None:
            cited = (where, hit, line)
    return cited, relations


# Per file, once: every class of a file, and every press whose bases live in it, reads the same
# module docstring and comments (a file with hundreds of presses must not scan them hundreds of times).
_MODULE_PLACES: weakref.WeakKeyDictionary[SourceFile, list[_Place]] = weakref.WeakKeyDictionary()


def _module_places(source: SourceFile) -> list[_Place]:
    """The module docstring's and each comment's citation and mentions, up to the first place that cites."""
    found = _MODULE_PLACES.get(source)
    if found is None:
        found = []
        node = docstring_constant(source.tree.body)
        texts = [("module docstring", strip_example_code(source.segment(node.lineno, node.end_lineno or node.lineno)),
                  node.lineno)] if node is not None else []
        for where, text, first_line in [*texts, *(("comment", c, n) for n, c in _comment_lines(source.text))]:
            place = _scan(where, text, first_line)
            if place[0] is not None or place[1]:
                found.append(place)
            if place[0] is not None:
                break
        _MODULE_PLACES[source] = found
    return found


def _read_citations(press: ClassInfo) -> Citations:
    result = Citations()
    node = press.docstring_node()
    places = [_scan("class docstring", strip_example_code(press.source.segment(node.lineno, node.end_lineno or node.lineno)),
                    node.lineno)] if node is not None else []
    seen: set[str] = set()
    for cited, relations in [*places, *_module_places(press.source)]:
        for mention in relations:
            if mention.label not in seen:
                seen.add(mention.label)
                result.relations.append(mention)
        if cited is not None:
            where, hit, line = cited
            result.paper, result.arxiv, result.where, result.line = hit.paper, hit.arxiv, where, line
            return result
    # In an identifier a name may follow other words: `MyChunkKVPress` cites ChunkKV.
    named = [paper for paper in load_registry() if any(name in press.name for name in paper.names)]
    if named:
        result.paper, result.where, result.line = named[0], "class name", press.line
    return result


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


def find_paper(press: ClassInfo) -> tuple[Paper, str, int] | None:
    """The registered paper ``press`` cites, where, and on which line (read from the ``ast`` index)."""
    cited = read_citations(press)
    return (cited.paper, cited.where, cited.line) if cited.paper is not None else None


def _nearest_citation(press: ClassInfo, index: ProjectIndex) -> tuple[Citations, str, int] | None:
    """The citation of ``press``, or else of its nearest base class that cites a paper, known or not
    (a press that cites a paper the registry lacks does not inherit its base's): with where and line."""
    cited = read_citations(press)
    if cited.cites:
        return cited, cited.where, cited.line
    for base in index.mro(press)[1:]:
        inherited = read_citations(base)
        if inherited.cites:
            return inherited, f"inherited from {base.name} ({inherited.where})", press.line
    return None


def find_paper_in_hierarchy(press: ClassInfo, index: ProjectIndex) -> tuple[Paper, str, int] | None:
    """The registered paper ``press`` cites, or else the one its nearest citing base class cites."""
    nearest = _nearest_citation(press, index)
    if nearest is None or nearest[0].paper is None:
        return None
    return nearest[0].paper, nearest[1], nearest[2]


def paper_mentions(press: ClassInfo, index: ProjectIndex) -> list[PaperMention]:
    """Papers ``press``'s documentation names in passing, and its citation (its own or inherited) of a
    paper the registry does not know: shown with the press, never a source of claims."""
    mentions = list(read_citations(press).relations)
    nearest = _nearest_citation(press, index)
    if nearest is not None and nearest[0].paper is None:
        cited, where, line = nearest
        if not where.startswith("inherited"):
            line = cited.line
        mentions.append(PaperMention(UNREGISTERED, f"arXiv {cited.arxiv}", where, line))
    return mentions


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
