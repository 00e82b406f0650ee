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
import errno
import os
import re
import stat
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from .defaults import DEFAULT_MAX_FILE_BYTES

if TYPE_CHECKING:
    import libcst as cst
    from libcst.metadata import CodeRange
else:
    from .lazy_libcst import cst



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
            from libcst.metadata import MetadataWrapper, PositionProvider

            wrapper = MetadataWrapper(self.module, unsafe_skip_copy=True)
            self._positions = wrapper.resolve(PositionProvider)
        return self._positions[node]

    def line_of(self, node: cst.CSTNode) -> int:
        return self.position(node).start.line

    def span_of(self, node: cst.CSTNode | ast.AST) -> Span:
        """Where ``node`` (of either tree) starts and ends, in 1-based lines and code-point columns."""
        if isinstance(node, ast.AST):
            start = getattr(node, "lineno", 1)
            end = getattr(node, "end_lineno", None) or start
            return Span(start, self._column(start, getattr(node, "col_offset", 0)),
                        end, self._column(end, getattr(node, "end_col_offset", None) or 0))
        code_range = self.position(node)
        return Span(code_range.start.line, code_range.start.column + 1, code_range.end.line, code_range.end.column + 1)

    def _column(self, line: int, byte_offset: int) -> int:
        # ast counts UTF-8 bytes; SARIF and editors count code points.
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        return len(text.encode("utf-8")[:byte_offset].decode("utf-8", errors="ignore")) + 1

    def segment(self, first_line: int, last_line: int) -> str:
        """Source lines ``first_line..last_line`` (1-based, inclusive)."""
        return "\n".join(self.lines[first_line - 1 : last_line])


@dataclass(frozen=True)
class Span:
    """A region of a file: 1-based lines, 1-based columns; ``end_column`` is exclusive (as in SARIF)."""

    line: int
    column: int
    end_line: int
    end_column: int


SNIPPET_WIDTH = 72


def one_line(code: str, width: int = SNIPPET_WIDTH) -> str:
    """Source text on one line, shortened for messages."""
    code = " ".join(code.split())
    return code if len(code) <= width else code[: width - 1] + "…"


def display_path(path: Path) -> str:
    """How every output names a file: relative to the working directory when inside it, else absolute."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError on Python 3.11): show the path as given
        resolved = Path(os.path.abspath(path))
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


_FILE_KINDS = ((stat.S_ISDIR, "is a directory"), (stat.S_ISFIFO, "not a regular file (FIFO)"),
               (stat.S_ISCHR, "not a regular file (character device)"),
               (stat.S_ISBLK, "not a regular file (block device)"), (stat.S_ISSOCK, "not a regular file (socket)"))


def irregular_kind(mode: int) -> str | None:
    """Why a file of this ``st_mode`` cannot be read as source; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((reason for test, reason in _FILE_KINDS if test(mode)), "not a regular file")


def os_reason(err: OSError) -> str:
    """A short reason for an ``OSError`` raised on a path."""
    if err.errno == errno.ELOOP:
        return "symbolic link loop"
    if err.errno == errno.ENOENT:
        return "no such file or directory (or a broken symbolic link)"
    if err.errno == errno.ENAMETOOLONG:
        return "file name too long"
    return f"cannot read: {err.strerror or err}"


def format_size(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}".replace(".0 ", " ")
    return f"{size} bytes"


def read_capped(path: Path, max_bytes: int | None) -> bytes:
    """The bytes of the regular file ``path``, or :class:`SourceError`.

    Anything but a regular file (FIFO, device, socket, directory) is refused from its
    ``stat`` alone, without being opened: reading ``/dev/zero`` or a FIFO would never end.
    A file over ``max_bytes`` (None or 0: no cap) is refused before it is read.
    """
    try:
        info = os.stat(path)
    except OSError as err:
        raise SourceError(os_reason(err)) from None
    kind = irregular_kind(info.st_mode)
    if kind is not None:
        raise SourceError(kind)
    if max_bytes and info.st_size > max_bytes:
        raise SourceError(f"too large ({format_size(info.st_size)}; the size cap is {format_size(max_bytes)}, "
                          "see --max-file-size)")
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO since the stat, open() must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise SourceError(os_reason(err)) from None
    with open(fd, "rb", closefd=True) as handle:
        kind = irregular_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise SourceError(kind)
        try:
            data = handle.read(max_bytes + 1) if max_bytes else handle.read()
        except OSError as err:
            raise SourceError(os_reason(err)) from None
    if max_bytes and len(data) > max_bytes:  # it grew since the stat
        raise SourceError(f"too large (over the size cap of {format_size(max_bytes)}, see --max-file-size)")
    return data


def read_text(path: Path, max_bytes: int | None = DEFAULT_MAX_FILE_BYTES) -> str:
    """Read ``path`` as UTF-8 text or raise :class:`SourceError` with the reason."""
    raw = read_capped(path, max_bytes)
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


def load_source(path: Path, display: str | None = None, max_bytes: int | None = DEFAULT_MAX_FILE_BYTES) -> SourceFile:
    """Read and parse ``path``; raises :class:`SourceError` on any bad input."""
    return parse_source(path, display or display_path(path), read_text(path, max_bytes))
