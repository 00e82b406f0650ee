"""Which mechanisms a press claims: the paper it cites, looked up in ``rules/papers.toml``.

A citation is an arXiv id (bare or inside an arxiv.org URL) or one of the paper's names.
It is looked for, in this order, in the class docstring, the module docstring, the
module's comments and the class name; the first place that cites a registered paper
decides, so a SnapKV press in a ChunkKV module stays quiet.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from .analysis.index import ClassInfo, ProjectIndex, docstring_constant
from .model import Claim

REGISTRY = "papers.toml"  # a data file of kvaudit.rules, read with importlib.resources
FORCED_SOURCE = "forced by --claim"


@dataclass(frozen=True)
class Paper:
    """One registered paper: what it claims and the defaults it publishes."""

    key: str
    title: str
    arxiv: str
    names: tuple[str, ...]
    claims: dict[str, str]  # claim id -> where in the paper
    defaults: dict[str, object]

    @property
    def pattern(self) -> re.Pattern[str]:
        alternatives = [re.escape(self.arxiv)] + [rf"(?<![A-Za-z0-9]){re.escape(n)}" for n in self.names]
        return re.compile("|".join(alternatives))

    @property
    def label(self) -> str:
        return f"{self.names[0]} (arXiv {self.arxiv})"


@cache
def load_registry() -> tuple[Paper, ...]:
    data = tomllib.loads((files(f"{__package__}.rules") / REGISTRY).read_text(encoding="utf-8"))
    return tuple(
        Paper(
            key=key,
            title=entry["title"],
            arxiv=entry["arxiv"],
            names=tuple(entry.get("names", ())),
            claims=dict(entry.get("claims", {})),
            defaults=dict(entry.get("defaults", {})),
        )
        for key, entry in data.items()
    )


def known_claims() -> set[str]:
    return {claim for paper in load_registry() for claim in paper.claims}


def _first_citation(text: str) -> tuple[Paper, int] | None:
    hits = [(m.start(), paper) for paper in load_registry() if (m := paper.pattern.search(text))]
    if not hits:
        return None
    offset, paper = min(hits, key=lambda hit: hit[0])
    return paper, offset


def _comment_lines(text: str) -> list[tuple[int, str]]:
    comments = []
    for number, line in enumerate(text.splitlines(), start=1):
        code, hash_sign, comment = line.partition("#")
        # Skip a '#' that may sit inside a string literal.
        if hash_sign and "'" not in code and '"' not in code:
            comments.append((number, comment))
    return comments


def find_paper(press: ClassInfo) -> tuple[Paper, str, int] | None:
    """The paper ``press`` cites, where, and on which line (read from the ``ast`` index)."""
    source = press.source
    docstrings = (("class docstring", press.docstring_node()), ("module docstring", docstring_constant(source.tree.body)))
    for where, node in docstrings:
        if node is None:
            continue
        raw = source.segment(node.lineno, node.end_lineno or node.lineno)
        found = _first_citation(raw)
        if found:
            paper, offset = found
            return paper, where, node.lineno + raw.count("\n", 0, offset)
    for number, comment in _comment_lines(source.text):
        found = _first_citation(comment)
        if found:
            return found[0], "comment", number
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


def claims_for(press: ClassInfo, index: ProjectIndex, forced: list[str]) -> list[Claim]:
    """The claims of ``press``: its paper's, or the ``--claim`` ones when it cites nothing."""
    cited = find_paper_in_hierarchy(press, index)
    if cited is not None:
        paper, where, line = cited
        return [Claim(id=claim, source=f"{where}: {paper.label}", line=line, paper=paper.key)
                for claim in sorted(paper.claims)]
    return [Claim(id=claim, source=FORCED_SOURCE, line=press.line, paper="") for claim in sorted(set(forced))]
