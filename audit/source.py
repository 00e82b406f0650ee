"""Reading and parsing one source file, with every failure turned into a one-line message.

Line numbers come from libcst's PositionProvider, which costs more than the parse itself
(about 1 s for kvpress's 46 files), so it is resolved lazily: only for files that
actually report evidence or findings.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst
from libcst.metadata import CodeRange, MetadataWrapper, PositionProvider

# CPython refuses more than 200 nested brackets; libcst can crash the interpreter on
# far deeper nesting, so such files are refused before libcst sees them.
MAX_BRACKET_DEPTH = 200
_OPENERS, _CLOSERS = "([{", ")]}"


class SourceError(Exception):
    """A file that cannot be audited; ``str(err)`` is the one-line reason."""


def _max_bracket_depth(text: str) -> int:
    # Over-approximates when strings hold unbalanced brackets; the caller double-checks.
    depth = deepest = 0
    for char in re.sub(r"[^()\[\]{}]+", "", text):
        if char in _OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth = max(0, depth - 1)
    return deepest


@dataclass
class SourceFile:
    """One parsed file: its text, its libcst module and (lazily) node positions."""

    path: Path
    display: str
    text: str
    module: cst.Module = field(repr=False)
    _positions: dict | None = field(default=None, repr=False)

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    def position(self, node: cst.CSTNode) -> CodeRange:
        if self._positions is None:
            wrapper = MetadataWrapper(self.module, unsafe_skip_copy=True)
            self._positions = wrapper.resolve(PositionProvider)
        return self._positions[node]

    def line_of(self, node: cst.CSTNode) -> int:
        return self.position(node).start.line

    def class_line(self, node: cst.ClassDef) -> int:
        """Line of ``class Name`` (after decorators), found without resolving positions."""
        name = node.name.value
        matches = [m for m in re.finditer(rf"^[ \t]*class[ \t]+{re.escape(name)}\b", self.text, re.M)]
        if len(matches) == 1:
            return self.text.count("\n", 0, matches[0].start()) + 1
        return self.position(node.name).start.line


def read_text(path: Path) -> str:
    """Read ``path`` as UTF-8 text or raise :class:`SourceError` with the reason."""
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise SourceError("is a directory") from None
    except OSError as err:
        raise SourceError(f"cannot read: {err.strerror or err}") from None
    if b"\x00" in raw:
        raise SourceError("binary file (contains NUL bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SourceError(f"not UTF-8 (invalid byte 0x{raw[err.start]:02x} at offset {err.start})") from None
    return text.removeprefix("\ufeff")


def parse_source(path: Path, display: str, text: str) -> SourceFile:
    """Parse ``text`` with libcst or raise :class:`SourceError` with a one-line reason."""
    if not text.strip():
        raise SourceError("empty file")
    if _max_bracket_depth(text) > MAX_BRACKET_DEPTH:
        try:
            ast.parse(text)
        except (SyntaxError, RecursionError, MemoryError, ValueError) as err:
            raise SourceError(f"too deeply nested to parse: {getattr(err, 'msg', err)}") from None
    try:
        module = cst.parse_module(text)
    except cst.ParserSyntaxError as err:
        raise SourceError(_syntax_error_message(text, err)) from None
    except RecursionError:
        raise SourceError("too deeply nested to parse") from None
    return SourceFile(path=path, display=display, text=text, module=module)


def _syntax_error_message(text: str, err: cst.ParserSyntaxError) -> str:
    # CPython's own parser words syntax errors better and locates them more precisely.
    try:
        ast.parse(text)
    except SyntaxError as py_err:
        return f"syntax error at line {py_err.lineno}, column {py_err.offset or 1}: {py_err.msg}"
    except (RecursionError, MemoryError, ValueError):
        pass
    reason = re.sub(r"^(parser error: )?(error at \d+:\d+: )?", "", str(err.message).splitlines()[0])
    return f"syntax error at line {err.raw_line}, column {err.raw_column + 1}: {reason or 'invalid syntax'}"


def load_source(path: Path, display: str | None = None) -> SourceFile:
    """Read and parse ``path``; raises :class:`SourceError` on any bad input."""
    return parse_source(path, display or str(path), read_text(path))
