"""Path globs: one syntax (.gitignore's, matched by ``pathspec``) for every pattern kvaudit reads.

``exclude``, ``extend-exclude``, ``per-path-ignores``, ``claim-overrides.path`` and the
``.gitignore`` files of walked trees all go through :func:`compile_globs`, so they share
one set of rules: ``*`` and ``?`` stay inside one path component, ``**`` spans any number
of them, a glob without ``/`` (but a trailing one) matches a name in any folder, a glob
with ``/`` is anchored at the folder the patterns belong to, a trailing ``/`` matches
folders only, ``!`` re-includes.

Python's ``re`` backtracks, and pathspec's regular expressions inherit that: a glob like
``*a*a*a…*b`` against a long file name, or ``**/a/**/a/**/b`` against a deep path, takes
exponential time. :class:`_BoundedPattern` keeps pathspec's parser and rewrites only how
its output repeats: a ``*`` inside a component and a ``**`` between components become
atomic groups that find the leftmost match of the fixed-length piece after them and never
retry it (the piece is followed by another wildcard, so the leftmost match is never worse;
``fnmatch.translate`` does the same since CPython 3.9). Only the last wildcard of a
component, and the last ``**`` of a glob, backtrack, each over one component or one path.
A bad glob (``[z-a].py``) raises :class:`GlobError` when the configuration is loaded,
never while matching.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathspec import GitIgnoreSpec

# What pathspec emits for `*` inside a component (a component's own output never holds a `/`),
# for a leading `**/` and for an inner `/**/`.
_STAR = "[^/]*"
_LEADING_DOUBLE_STAR = "^(?:.+/)?"
_INNER_DOUBLE_STAR = "(?:/.+)?"


class GlobError(ValueError):
    """A glob that cannot be compiled; ``str(err)`` says why in a few words."""


@cache
def _pattern_class() -> type:
    # Built on first use: pathspec is imported only by runs that match paths.
    from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

    class _BoundedPattern(GitIgnoreSpecPattern):
        """pathspec's .gitignore pattern with regular expressions that cannot backtrack without bound."""

        @staticmethod
        def _translate_segment_glob(pattern: str, range_error: Any) -> str:
            regex = GitIgnoreSpecPattern._translate_segment_glob(pattern, range_error)
            pieces = regex.split(_STAR)
            if len(pieces) <= 2:
                return regex  # one star at most: linear already
            # `p0*p1*...*pn` -> p0 (?>[^/]*?p1) ... [^/]*pn: each inner piece is fixed-length, so its
            # leftmost match is never worse than a later one, and an atomic group need not retry it.
            inner = "".join(f"(?>[^/]*?{piece})" for piece in pieces[1:-1] if piece)
            return f"{pieces[0]}{inner}{_STAR}{pieces[-1]}"

        @classmethod
        def pattern_to_regex(cls, pattern: Any) -> tuple[Any, bool | None]:
            regex, include = super().pattern_to_regex(pattern)
            return (_bound_double_stars(regex) if isinstance(regex, str) else regex), include

    return _BoundedPattern


def _bound_double_stars(regex: str) -> str:
    """``^(?:.+/)?B1(?:/.+)?/B2 ... /Bn<end>`` with every block but the last found leftmost, atomically.

    A block (the components between two ``**``) is fixed-length in components; ``(?=/)``
    makes it end on a component boundary, where the next ``**`` takes over.
    """
    head, *blocks = regex.split(_INNER_DOUBLE_STAR)
    if head.startswith(_LEADING_DOUBLE_STAR):
        first = head[len(_LEADING_DOUBLE_STAR):]
        head = f"^(?>(?:[^/]+/)*?{first}(?=/))" if blocks else f"^(?:[^/]+/)*{first}"
    parts = [head]
    for number, block in enumerate(blocks):  # each block starts with "/"
        last = number == len(blocks) - 1
        parts.append(f"(?:/[^/]+)*{block}" if last else f"(?>(?:/[^/]+)*?{block}(?=/))")
    return "".join(parts)


def _check(pattern: str) -> None:
    body = pattern.strip()
    if not body or body.startswith("#"):
        raise GlobError("empty glob" if not body else "a glob cannot start with '#'")
    if "\x00" in pattern:
        raise GlobError("NUL character in glob")


def compile_globs(patterns: Iterable[str], *, strict: bool = True) -> GitIgnoreSpec:
    """A matcher for ``patterns``; raises :class:`GlobError` naming the first bad one.

    ``strict=False`` (for ``.gitignore`` files, which are not ours) drops comments, blank
    lines and bad or too costly patterns instead, as git itself skips what it cannot parse.
    """
    from pathspec import GitIgnoreSpec

    kept = []
    for pattern in patterns:
        try:
            _check(pattern)
            kept.append(_compile_one(pattern))
        except GlobError as err:
            if strict:
                raise GlobError(f"{err}") from None
    return GitIgnoreSpec(kept)


@cache
def _compile_one(pattern: str) -> Any:
    try:
        return _pattern_class()(pattern.removeprefix("./"))
    except (ValueError, re.error) as err:  # pathspec's GitIgnorePatternError is a ValueError
        reason = str(err).split(" found in pattern=")[0].rstrip(".")
        raise GlobError(f"invalid glob: {reason}") from None


def validate_glob(pattern: str) -> None:
    """Raise :class:`GlobError` if ``pattern`` is not a glob kvaudit can match."""
    _check(pattern)
    _compile_one(pattern)


@dataclass(frozen=True)
class GlobSet:
    """Compiled globs and the folder they are relative to."""

    root: Path
    spec: GitIgnoreSpec

    @classmethod
    def of(cls, patterns: Iterable[str], root: Path) -> GlobSet:
        return cls(root, compile_globs(patterns))

    def matches(self, path: Path, is_dir: bool = False) -> bool:
        return self.spec.match_file(relative_key(path, self.root, is_dir))


def relative_key(path: Path, root: Path, is_dir: bool = False) -> str:
    """The string a glob sees for ``path``: relative to ``root`` when inside it, else absolute
    (without its leading ``/``); folders end with ``/``."""
    absolute = Path(path) if Path(path).is_absolute() else Path.cwd() / path
    try:
        key = absolute.relative_to(root).as_posix()
    except ValueError:
        key = absolute.as_posix().lstrip("/")
    if key in ("", "."):
        key = ""
    return key + "/" if is_dir and key else key


# Paths no project has; a glob that matches them all matches every file (``**``, ``*``, ``*.py``).
_ANY_FILE_PROBES = ("kvaudit-probe-9f2c.py", "kvaudit-probe-9f2c/a/b/c/kvaudit-probe-9f2c.py")


def matches_every_file(pattern: str) -> bool:
    """Whether ``pattern`` matches any Python file, wherever it lies (judged on probe paths)."""
    from pathspec import GitIgnoreSpec

    spec = GitIgnoreSpec([_compile_one(pattern)])
    return all(spec.match_file(probe) for probe in _ANY_FILE_PROBES)


def glob_matches(pattern: str, path: str, root: Path | None) -> bool:
    """Whether the single glob ``pattern`` matches the file shown as ``path``."""
    from pathspec import GitIgnoreSpec

    base = root if root is not None else Path.cwd().resolve()
    return GitIgnoreSpec([_compile_one(pattern)]).match_file(relative_key(_absolute(path), base))


def _absolute(path: str) -> Path:
    candidate = Path(path)
    absolute = candidate if candidate.is_absolute() else Path.cwd() / candidate
    try:
        return absolute.resolve()
    except (OSError, RuntimeError):  # a symlink loop: match the path as written
        return absolute
