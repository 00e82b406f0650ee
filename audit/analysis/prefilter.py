"""A cheap first look at every file: which ones could define a press, before any full parse.

A press is a class whose bases lead, through class names and imports, to kvpress's
``BasePress``. A file can only define one if it has a ``class`` statement one of whose
base names is itself such a class, or an alias of one. So each file is scanned with a
few literal-prefixed regular expressions (about 40 ms for the 44 MB of the transformers
tree, against 10 s for ``ast.parse``): its class names with the words of their bases, and
the ``A as B`` aliases of its import statements. Then the names that may reach a press
are closed over all files at once:

- seeds: ``BasePress``, the word ``kvpress`` (a base written ``kvpress.x.Y``), any word
  ending in ``Press`` (kvpress names its presses so, and an uninstalled kvpress is
  trusted on them), and the name of every press of the installed kvpress;
- a class one of whose base words may reach a press may reach one too, under its name
  (and a class with bases in a file that mentions kvpress is parsed, to say so when it
  derives from a name the installed kvpress does not have);
- an import alias of such a name may reach one too.

Only files with a class that may reach a press are parsed and indexed. The scan over-
approximates (a word is not a binding), never under-approximates: a base is always
written with names that are class names or import aliases somewhere, and the index
resolves nothing else. Bases holding a comment or a string are read with ``tokenize``;
where even that fails, the class counts as a possible press. The scan reads Python's own
lexical rules: any line end (``\r`` alone too), backslash continuations (in ``class`` and
``import`` statements), form feeds as blanks, comments inside parenthesised imports, and
identifiers normalised (NFKC) as CPython normalises them.
"""

from __future__ import annotations

import io
import re
import tokenize
import unicodedata
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..source import normalize_line_ends

ROOT_SEEDS = frozenset({"BasePress", "kvpress"})
PRESS_SUFFIX = "Press"

# Each pattern starts with a literal, so that the regex engine skips ahead with a fast search.
# Python's blanks inside a line (form feed too) and its line continuations (any line end).
_GAP = r"(?:[ \t\f]|\\(?:\r\n?|\n))"
_CLASS = re.compile(rf"class{_GAP}+([^\W\d]\w*){_GAP}*([(:\[])")
# An import's names: up to the closing parenthesis (comments may hold one), or to the end of
# the logical line, backslash continuations included (`from a import \` + `    B as C`).
_IMPORT = re.compile(r"import[ \t\f]*(\((?:[^)#]++|#[^\r\n]*+)*+\)|[^\r\n\\]*+(?:\\(?:\r\n?|\n)?[^\r\n\\]*+)*+)")
_ALIAS = re.compile(r"([^\W\d][\w.]*)(?:\s|\\)+as(?:\s|\\)+([^\W\d]\w*)")
_WORD = re.compile(r"[^\W\d]\w*")
_BASES_END = re.compile(r"[()#'\"]")
_MAX_BASES_CHARS = 4000


@dataclass(frozen=True)
class ClassScan:
    """A ``class`` statement found by the scan: its name and the words of its bases.

    ``words`` is None when the bases could not be read (a comment or string inside them,
    or no closing parenthesis): such a class counts as a possible press.
    """

    name: str
    words: tuple[str, ...] | None


@dataclass(frozen=True)
class TextScan:
    """What the scan of one file found."""

    classes: tuple[ClassScan, ...]
    aliases: tuple[tuple[str, str], ...]  # (imported name, local alias)
    kvpress: bool = False  # the text mentions kvpress (a class may derive from any name imported from it)


def _at_line_start(text: str, position: int) -> bool:
    # Any of Python's line ends: "\r" alone ends a line too (old Mac files, which CPython reads).
    start = max(text.rfind("\n", 0, position), text.rfind("\r", 0, position)) + 1
    return not text[start:position].strip(" \t\f")


def _base_words(text: str, opening: int) -> tuple[str, ...] | None:
    """Words between the parenthesis at ``opening`` and its match; None if that is unclear."""
    depth = 0
    for match in _BASES_END.finditer(text, opening, opening + _MAX_BASES_CHARS):
        char = match.group()
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return tuple(_WORD.findall(text, opening + 1, match.start()))
        else:  # a comment or a string inside the bases: let the tokenizer read them
            return _tokenized_words(text, opening)
    return None


def _tokenized_words(text: str, opening: int) -> tuple[str, ...] | None:
    """The names inside the parenthesis at ``opening``, read with ``tokenize`` (rare, so slow is fine)."""
    readline = io.StringIO(normalize_line_ends(text[opening : opening + _MAX_BASES_CHARS])).readline
    words = []
    depth = 0
    try:
        for token in tokenize.generate_tokens(readline):
            if token.type == tokenize.OP and token.string in "([{":
                depth += 1
            elif token.type == tokenize.OP and token.string in ")]}":
                depth -= 1
                if depth == 0:
                    return tuple(words)
            elif token.type == tokenize.NAME:
                words.append(token.string)
    except (tokenize.TokenError, SyntaxError):
        return None
    return None


def scan_text(text: str) -> TextScan:
    """Scan one file's text for ``class`` statements and import aliases."""
    if not text.isascii() and not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)  # as CPython reads identifiers (`ＭB` is `MB`)
    classes = []
    if "class" in text:
        for match in _CLASS.finditer(text):
            if not _at_line_start(text, match.start()):
                continue
            opening = match.group(2)
            # `class C[T](Base):` (type parameters): its bases are not read here, so it may be a press.
            words = _base_words(text, match.start(2)) if opening == "(" else None if opening == "[" else ()
            classes.append(ClassScan(match.group(1), words))
    aliases = []
    if classes or "import" in text:
        for statement in _IMPORT.finditer(text):
            body = statement.group(1)
            if "as" in body:
                aliases.extend((name.rpartition(".")[2], alias) for name, alias in _ALIAS.findall(body))
    return TextScan(tuple(classes), tuple(aliases), "kvpress" in text)


def may_define_press(scan: TextScan) -> bool:
    """Quick test without the other files: does the file have a class with bases at all?"""
    return any(c.words is None or c.words for c in scan.classes)


def _reaching(scans: Iterable[TextScan], seeds: Iterable[str]) -> set[str]:
    """Every word that may name a press, closed over the classes and aliases of ``scans``."""
    reaching = set(seeds)
    dependents: dict[str, list[str]] = {}  # word -> names that reach a press if the word does
    for scan in scans:
        for cls in scan.classes:
            for word in cls.words or ():
                dependents.setdefault(word, []).append(cls.name)
            if cls.words is None:
                reaching.add(cls.name)
        for name, alias in scan.aliases:
            dependents.setdefault(name, []).append(alias)
    queue = [word for word in dependents if word in reaching or word.endswith(PRESS_SUFFIX)]
    reaching.update(queue)
    while queue:
        for name in dependents.get(queue.pop(), ()):
            if name not in reaching:
                reaching.add(name)
                queue.append(name)
    return reaching


def _may_be_press(cls: ClassScan, reaching: set[str]) -> bool:
    return cls.words is None or any(w in reaching or w.endswith(PRESS_SUFFIX) for w in cls.words)


def press_candidates(scans: Mapping[Hashable, TextScan], seeds: Iterable[str] = ()) -> set[Hashable]:
    """Keys of the files that may define a press (see the module docstring).

    ``seeds`` adds class names that count as press roots besides kvpress's own.
    """
    reaching = _reaching(scans.values(), ROOT_SEEDS | set(seeds) | kvpress_press_names())
    return {key for key, scan in scans.items()
            if any(_may_be_press(cls, reaching) or (scan.kvpress and cls.words) for cls in scan.classes)}


@lru_cache(maxsize=1)
def kvpress_press_names() -> frozenset[str]:
    """The names of the installed kvpress's presses (its source read, never imported).

    A class of the run may derive from any of them; kvpress's other classes (its
    pipeline, configs, helpers) are left out, so that their common names reach nothing.
    """
    from ..targets import find_module

    location = find_module("kvpress")
    scans = []
    for folder in location.folders if location is not None else ():
        for path in sorted(Path(folder).rglob("*.py")):
            try:
                scans.append(scan_text(path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError):
                continue
    reaching = _reaching(scans, ROOT_SEEDS)
    return frozenset(cls.name for scan in scans for cls in scan.classes if _may_be_press(cls, reaching))
