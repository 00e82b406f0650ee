"""Reading and parsing one source file, with every failure turned into a one-line message.

Two parses, each where it pays:
- CPython's ``ast`` checks the syntax and indexes classes, bases, imports and docstrings
  of every file (about 0.1 s for kvpress's 46 files, with exact line numbers);
- libcst, the analyzer's tree, is built lazily, only for files whose presses a rule or a
  claim actually inspects (parsing all 46 files with libcst alone costs about 0.5 s).
Node positions (libcst's PositionProvider, about 1 s for those files) are resolved later
still: only for files that report evidence or findings.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import libcst as cst
from libcst.metadata import CodeRange, MetadataWrapper, PositionProvider


class SourceError(Exception):
    """A file that cannot be audited; ``str(err)`` is the one-line reason."""


class EmptySourceError(SourceError):
    """A file with nothing in it: bad input when named, a normal sight inside a package."""


@dataclass(eq=False)
class SourceFile:
    """One file: its text, its ``ast`` tree, and (lazily) its libcst module and positions."""

    path: Path
    display: str
    text: str
    tree: ast.Module = field(repr=False)
    _positions: dict | None = field(default=None, repr=False)

    @cached_property
    def module(self) -> cst.Module:
        """The libcst tree; raises :class:`SourceError` if libcst cannot parse the file."""
        try:
            return cst.parse_module(self.text)
        except cst.ParserSyntaxError as err:
            reason = re.sub(r"^(parser error: )?(error at \d+:\d+: )?", "", str(err.message).splitlines()[0])
            raise SourceError(f"syntax error at line {err.raw_line}, column {err.raw_column + 1}: {reason}") from None
        except RecursionError:
            raise SourceError("too deeply nested to parse") from None

    @cached_property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    def position(self, node: cst.CSTNode) -> CodeRange:
        if self._positions is None:
            wrapper = MetadataWrapper(self.module, unsafe_skip_copy=True)
            self._positions = wrapper.resolve(PositionProvider)
        return self._positions[node]

    def line_of(self, node: cst.CSTNode) -> int:
        return self.position(node).start.line

    def segment(self, first_line: int, last_line: int) -> str:
        """Source lines ``first_line..last_line`` (1-based, inclusive)."""
        return "\n".join(self.lines[first_line - 1 : last_line])


SNIPPET_WIDTH = 72


def one_line(code: str, width: int = SNIPPET_WIDTH) -> str:
    """Source text on one line, shortened for messages."""
    code = " ".join(code.split())
    return code if len(code) <= width else code[: width - 1] + "…"


def display_path(path: Path) -> str:
    """How every output names a file: relative to the working directory when inside it, else absolute."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


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
    """Check the syntax of ``text`` or raise :class:`SourceError` with a one-line reason.

    CPython refuses code nested past its limits with a clean error, where libcst can
    exhaust the C stack; a file that passes here is safe to hand to libcst later.
    """
    if not text.strip():
        raise EmptySourceError("empty file")
    try:
        tree = ast.parse(text, filename=display)
    except SyntaxError as err:
        if "too many" in str(err.msg) or "nested" in str(err.msg):
            raise SourceError(f"too deeply nested to parse (line {err.lineno}): {err.msg}") from None
        raise SourceError(f"syntax error at line {err.lineno}, column {err.offset or 1}: {err.msg}") from None
    except (RecursionError, MemoryError):
        raise SourceError("too deeply nested to parse") from None
    except ValueError as err:  # e.g. source that holds NUL characters after decoding
        raise SourceError(f"cannot parse: {err}") from None
    return SourceFile(path=path, display=display, text=text, tree=tree)


def load_source(path: Path, display: str | None = None) -> SourceFile:
    """Read and parse ``path``; raises :class:`SourceError` on any bad input."""
    return parse_source(path, display or display_path(path), read_text(path))
