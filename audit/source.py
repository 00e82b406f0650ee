"""Reading and parsing one source file, with every failure turned into a one-line message.

Two parses, each where it pays:
- CPython's ``ast`` checks the syntax and indexes classes, bases, imports and docstrings
  of every file (about 0.1 s for kvpress's 46 files, with exact line numbers);
- libcst, the analyzer's tree, is built lazily, only for files whose presses a rule or a
  claim actually inspects (parsing all 46 files with libcst alone costs about 0.5 s).
Node positions (libcst's PositionProvider, about 1 s for those files) are resolved later
still: only for files that report evidence or findings. Both are done class by class,
never for a whole large file (see :meth:`SourceFile.class_node`).

libcst parses with the newest Python grammar it knows, whatever interpreter runs kvaudit. A
file that this interpreter's ``ast`` refuses but that grammar accepts (a PEP 701 f-string such
as ``f"{x["k"]}"`` on Python 3.11) is valid code: it is audited, its ``ast`` tree built from a
copy in which each construct too new for this interpreter is replaced, in place and at the
same lines and columns, by an older equivalent (see :func:`_older_syntax`).
"""

from __future__ import annotations

import ast
import errno
import os
import re
import stat
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
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


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@cache
def newest_grammar() -> str:
    """The newest Python grammar libcst knows (``"3.15"`` with libcst 1.9), which every file is parsed with."""
    return max(cst.KNOWN_PYTHON_VERSION_STRINGS, key=_version_key)


@cache
def _parser_config() -> cst.PartialParserConfig:
    return cst.PartialParserConfig(python_version=newest_grammar())


def _running_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _libcst_parse(text: str, first_line: int = 1) -> cst.Module:
    """Parse ``text`` with libcst's newest grammar; raises :class:`SourceError` with the file's line numbers."""
    try:
        return cst.parse_module(text, config=_parser_config())
    except cst.ParserSyntaxError as err:
        line, column, reason = _libcst_error(err)
        raise SourceError(f"syntax error at line {line + first_line - 1}, column {column}: {reason} "
                          f"(parsed as Python {newest_grammar()})") from None
    except RecursionError:
        raise SourceError("too deeply nested to parse") from None


def _libcst_error(err: cst.ParserSyntaxError) -> tuple[int, int, str]:
    """(line, 1-based column, reason) of a libcst parse error: the place its message names, else its raw one."""
    message = str(err.message).splitlines()[0]
    at = re.search(r"error at (\d+):(\d+): ", message)
    reason = re.sub(r"^((parser|tokenizer) error: )?(error at \d+:\d+: )?", "", message)
    if at is not None:
        return int(at.group(1)), int(at.group(2)) + 1, reason
    return err.raw_line, err.raw_column + 1, reason


@dataclass(eq=False)
class _Segment:
    """The libcst tree of a few lines of a file (one top-level class), and its node positions."""

    module: cst.Module
    first_line: int
    positions: Mapping[cst.CSTNode, CodeRange] | None = None

    def resolve(self) -> Mapping[cst.CSTNode, CodeRange]:
        if self.positions is None:
            from libcst.metadata import MetadataWrapper, PositionProvider

            try:
                self.positions = MetadataWrapper(self.module, unsafe_skip_copy=True).resolve(PositionProvider)
            except Exception as err:  # noqa: BLE001
                # libcst's code generator recursed too deep; its position recorder then fails
                # with a KeyError of its own, whose context holds the RecursionError.
                if not isinstance(err, RecursionError) and not _caused_by_recursion(err):
                    raise
                raise SourceError("too deeply nested to analyse") from None
        return self.positions


def _caused_by_recursion(err: BaseException) -> bool:
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, RecursionError):
            return True
        seen.add(id(cause))
        cause = cause.__context__
    return False


@dataclass(eq=False)
class SourceFile:
    """One file: its text, its ``ast`` tree, and (lazily) libcst trees and positions.

    The analyzer reads classes, never a whole module: each class it inspects is parsed
    with libcst on its own (:meth:`class_node`), so that the cost of libcst and of node
    positions follows the size of the presses, not of the file around them (a 10 MB
    file with one small press costs what its ``ast`` parse costs).
    """

    path: Path
    display: str
    text: str
    tree: ast.Module = field(repr=False)
    _positions: dict | None = field(default=None, repr=False)
    _segments: list[_Segment] = field(default_factory=list, repr=False)
    _code: dict[cst.CSTNode, str] = field(default_factory=dict, repr=False)
    _nodes: dict[tuple, cst.CSTNode] = field(default_factory=dict, repr=False)  # parsed top-level definitions
    _unlocated: list[_Segment] = field(default_factory=list, repr=False)  # parsed, positions not yet in _located
    _located: dict[cst.CSTNode, CodeRange] = field(default_factory=dict, repr=False)

    @cached_property
    def module(self) -> cst.Module:
        """The libcst tree of the whole file; raises :class:`SourceError` if libcst cannot parse it.

        Costly on a large file: the analyzer uses :meth:`class_node` instead.
        """
        return _libcst_parse(self.text)

    @cached_property
    def lines(self) -> list[str]:
        return split_lines(self.text)

    def class_node(self, tree: ast.ClassDef, occurrence: int = 0) -> cst.ClassDef:
        """The libcst tree of the top-level class ``tree`` (the ``occurrence``-th class of its name)."""
        return self.top_level_node(tree, occurrence)

    def top_level_node(self, tree: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef, occurrence: int = 0,
                       last: bool = False):
        """The libcst tree of a top-level class or function of this file, given its ``ast`` node.

        Only its own lines are parsed; the whole file only when they cannot be parsed on
        their own. ``occurrence`` (or ``last``) picks among top-level definitions of the
        same name in that fallback.
        """
        memo = (id(tree), occurrence, last)
        if memo in self._nodes:
            return self._nodes[memo]
        self._nodes[memo] = node = self._top_level_node(tree, occurrence, last)
        return node

    def _top_level_node(self, tree, occurrence: int, last: bool):
        kind = cst.ClassDef if isinstance(tree, ast.ClassDef) else cst.FunctionDef
        first = min([tree.lineno, *(d.lineno for d in tree.decorator_list)])
        last_line = tree.end_lineno or tree.lineno
        text = "\n".join(self.lines[first - 1 : last_line]) + "\n"
        try:
            module = _libcst_parse(text, first)
        except SourceError:
            module = None
        if module is not None and len(module.body) == 1 and isinstance(module.body[0], kind) \
                and module.body[0].name.value == tree.name:
            segment = _Segment(module, first)
            self._segments.append(segment)
            self._unlocated.append(segment)
            return module.body[0]
        same_name = [s for s in self.module.body if isinstance(s, kind) and s.name.value == tree.name]
        return same_name[-1] if last else same_name[occurrence]

    def code_for_node(self, node: cst.CSTNode) -> str:
        """The source text of ``node`` (a node of any of this file's libcst trees), memoised."""
        code = self._code.get(node)
        if code is None:
            config = self._segments[0].module if self._segments else self.__dict__.get("module") or cst.Module(body=[])
            code = self._code[node] = config.code_for_node(node)
        return code

    def position(self, node: cst.CSTNode) -> CodeRange:
        found = self._located.get(node)
        if found is None and self._unlocated:
            from libcst.metadata import CodeRange

            # Positions of every class parsed so far, resolved once each, in one table.
            for segment in self._unlocated:
                shift = segment.first_line - 1
                try:
                    resolved = segment.resolve()
                except SourceError as err:  # name the file and line: the press audited may live elsewhere
                    raise SourceError(f"{err} ({self.display}, the class at line {segment.first_line})") from None
                for each, where in resolved.items():
                    self._located[each] = CodeRange((where.start.line + shift, where.start.column),
                                                    (where.end.line + shift, where.end.column))
                segment.positions = None  # the table holds them now
            self._unlocated.clear()
            found = self._located.get(node)
        if found is not None:
            return found
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


_LINE_END = re.compile(r"\r\n|\r|\n")


def split_lines(text: str) -> list[str]:
    """``text`` split at Python's line ends (``\\r\\n``, ``\\r``, ``\\n``), as CPython numbers lines.

    Never ``str.splitlines()``: it also splits at form feeds, ``\\x1c``-``\\x1e``, ``\\x85``
    and U+2028/2029, which would shift every line number after them.
    """
    return _LINE_END.split(text)


def normalize_line_ends(text: str) -> str:
    """``text`` with every Python line end as ``\\n`` (``io.StringIO`` and ``tokenize`` split at ``\\n`` only)."""
    return "\n".join(split_lines(text)) if "\r" in text else text


SNIPPET_WIDTH = 72


def one_line(code: str, width: int = SNIPPET_WIDTH) -> str:
    """Source text on one line, shortened for messages."""
    code = " ".join(code.split())
    return code if len(code) <= width else code[: width - 1] + "…"


def error_line(error: BaseException, width: int = SNIPPET_WIDTH) -> str:
    """``Type: message`` on one line, shortened (``Type`` alone when the message is empty); the
    message reads ``<str() raised>`` when it cannot be made (a user's ``__str__`` that raises, or
    the text of a libcst error that is the repr of a tree too deep to print)."""
    try:
        message = str(error)
    except BaseException:  # noqa: BLE001
        message = "<str() raised>"
    return one_line(f"{type(error).__name__}: {message}" if message else type(error).__name__, width)


# C0 and C1 control characters (ESC, newlines, NEL) and the Unicode line/paragraph separators.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """``text`` with control characters written as Python escapes (``\\n``, ``\\x1b``, ``\\u2028``).

    A file may be named ``a\\nb.py`` or hold an escape sequence: shown raw, such a name would
    split a one-line record (concise, ``error:`` lines) or restyle the user's terminal.
    """
    return _UNPRINTABLE.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def display_path(path: Path, follow_link: bool = True) -> str:
    """How every output names a file: relative to the working directory when inside it, else absolute.

    ``follow_link=False`` names a symbolic link itself (its folder resolved, its own name kept):
    a broken link is reported where the user sees it, not at the target it points to.
    """
    if not follow_link and path.name:
        folder = display_path(path.parent)
        return path.name if folder == "." else f"{folder.rstrip('/')}/{path.name}"
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
            data = _read_up_to(handle, info.st_size, max_bytes or None)
        except OSError as err:
            raise SourceError(os_reason(err)) from None
    if max_bytes and len(data) > max_bytes:  # it grew since the stat
        raise SourceError(f"too large (over the size cap of {format_size(max_bytes)}, see --max-file-size)")
    return data


_GROWTH_CHUNK = 1 << 20


def _read_up_to(handle, expected: int, cap: int | None) -> bytes:
    """The file's bytes, at most ``cap + 1`` (one more tells a file over the cap).

    Read sizes follow the file's size from its ``stat``, never the cap: a cap of 2**63
    (``--max-file-size``) must not become a buffer of that size. A file that grew since
    the stat is read on in 1 MiB steps.
    """
    want = expected + 1 if cap is None else min(expected, cap) + 1
    first = handle.read(want)
    if len(first) < want:  # the end of the file: the usual case, one read
        return first
    data = bytearray(first)
    while cap is None or len(data) <= cap:
        chunk = handle.read(_GROWTH_CHUNK if cap is None else min(_GROWTH_CHUNK, cap + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    return bytes(data)


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
        tree = _parse_newer_syntax(text, display, err)
    except (RecursionError, MemoryError):
        raise SourceError("too deeply nested to parse") from None
    except ValueError as err:  # e.g. source that holds NUL characters after decoding
        raise SourceError(f"cannot parse: {err}") from None
    return SourceFile(path=path, display=display, text=text, tree=tree)


# libcst's native parser overflows the C stack (a crash, not an exception) on code nested a
# thousand or so levels deep, and its time grows much faster than linearly with the length of
# one operator chain (5,000 `+` in one statement: 27 s). CPython stops such code with a clean
# error; but a file it refused for another reason may hold it further on: it is measured first.
_MAX_NESTING = 200  # brackets, as CPython's limit; and `lambda`s in one statement
_MAX_OPERATORS = 1000  # operators and attribute dots in one statement (libcst: about 1 s)
_OPERATORS = frozenset({"+", "-", "*", "/", "%", "@", "&", "|", "^", "<<", ">>", "**", "//", ".", "<", ">", "==",
                        "!=", "<=", ">=", "~", "and", "or", "if", "else", "not", "in", "is", "await"})
_NAIVE_TOKEN = re.compile(r"[(\[{]|[)\]}]|\blambda\b|\\\n|\n|\b(?:and|or|if|else|not|in|is|await)\b|"
                          r"\*\*|//|<<|>>|[<>=!]=|[-+*/%@&|^~<>.]")


def _complexity(text: str) -> tuple[int, int, int]:
    """(deepest nesting, most operators in one statement, its line): what libcst's parser chokes on.

    Read with this interpreter's tokenizer, which knows where strings and comments are (a newer
    f-string it splits into pieces, which changes little here); where it fails, with a scan of the
    raw text that counts what strings and comments hold too (an upper bound).
    """
    import tokenize  # only for files this interpreter refused: not worth its import on start-up

    deepest = depth = lambdas = operators = 0
    most, at = 0, 1
    for kind, token, line in _tokens(text):
        if kind == tokenize.NEWLINE or (kind == tokenize.NL and depth == 0):
            lambdas = operators = 0
        elif token in ("(", "[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (")", "]", "}"):
            depth = max(0, depth - 1)
        elif token == "lambda":
            lambdas += 1
            deepest = max(deepest, lambdas)
        elif token in _OPERATORS and kind in (tokenize.OP, tokenize.NAME):
            operators += 1
            if operators > most:
                most, at = operators, line
    return deepest, most, at


def _tokens(text: str) -> Iterator[tuple[int, str, int]]:
    """(type, string, line) of each token: this interpreter's tokenizer, else a rough scan."""
    import io
    import tokenize

    try:
        found = [(t.type, t.string, t.start[0])
                 for t in tokenize.generate_tokens(io.StringIO(normalize_line_ends(text)).readline)]
    except (tokenize.TokenError, SyntaxError, ValueError):  # IndentationError is a SyntaxError
        found = None
    if found is not None:
        yield from found
        return
    line = 1
    for match in _NAIVE_TOKEN.finditer(normalize_line_ends(text)):
        token = match.group()
        if token == "\n":
            line += 1
            yield tokenize.NL, token, line - 1
        elif token.startswith("\\"):  # a backslash continuation: no token, one more line
            line += 1
        else:
            yield (tokenize.NAME if token[0].isalpha() else tokenize.OP), token, line


def _parse_newer_syntax(text: str, display: str, err: SyntaxError) -> ast.Module:
    """The ``ast`` tree of a file this interpreter's parser refused with ``err``, if the newest
    grammar libcst knows accepts it; else :class:`SourceError` naming that grammar."""
    version = newest_grammar()
    deepest, operators, line = _complexity(text)
    if deepest > _MAX_NESTING:
        raise SourceError(f"too deeply nested to parse (over {_MAX_NESTING} levels; refused by Python "
                          f"{_running_python()} at line {err.lineno}: {err.msg})")
    if operators > _MAX_OPERATORS:
        raise SourceError(f"too complex to parse (a statement of over {_MAX_OPERATORS} operators at line {line}; "
                          f"refused by Python {_running_python()} at line {err.lineno}: {err.msg})")
    try:
        module = cst.parse_module(text, config=_parser_config())
    except cst.ParserSyntaxError as newer:
        # CPython's messages are the clearer ones; but an f-string it calls an error may be valid
        # in newer Pythons, the real error lying elsewhere: then libcst's place is the right one.
        if str(err.msg).startswith("f-string"):
            line, column, reason = _libcst_error(newer)
        else:
            line, column, reason = err.lineno, err.offset or 1, err.msg
        raise SourceError(f"syntax error at line {line}, column {column}: {reason} (parsed as Python {version})") from None
    except RecursionError:
        raise SourceError("too deeply nested to parse") from None
    older = _older_syntax(module, text)
    try:
        return ast.parse(older, filename=display)
    except (SyntaxError, RecursionError, MemoryError, ValueError) as still:
        where = f" at line {still.lineno}" if isinstance(still, SyntaxError) else ""
        raise SourceError(f"valid Python {version}, but uses syntax{where} that kvaudit cannot index on "
                          f"Python {_running_python()}: {getattr(still, 'msg', None) or error_line(still)}") from None


def _older_syntax(module: cst.Module, text: str) -> str:
    """``text`` with each construct too new for this interpreter replaced by an older one at the same
    lines and columns, for the ``ast`` index only (the analysis reads libcst's tree of the real code).

    - f-strings and t-strings (PEP 701 quotes and nesting, PEP 750): an empty string literal;
    - type parameters (PEP 695 ``def f[T]``, ``class C[T]``): blanks;
    - ``type X = ...`` statements (PEP 695): ``pass``.
    """
    from libcst.metadata import MetadataWrapper, PositionProvider

    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    positions = wrapper.resolve(PositionProvider)
    replacements: list[tuple[object, str]] = []

    class Finder(cst.CSTVisitor):
        def visit_FormattedString(self, node: cst.FormattedString) -> bool:
            replacements.append((positions[node], "string"))
            return False  # nested f-strings go with the outer one

        def visit_TemplatedString(self, node) -> bool:
            replacements.append((positions[node], "string"))
            return False

        def visit_TypeParameters(self, node) -> bool:
            replacements.append((positions[node], "blank"))
            return False

        def visit_TypeAlias(self, node) -> bool:
            replacements.append((positions[node], "pass"))
            return False

    wrapper.module.visit(Finder())
    lines = split_lines(text)
    for where, kind in replacements:
        _blank(lines, where.start.line, where.start.column, where.end.line, where.end.column, kind)
    return "\n".join(lines)


def _blank(lines: list[str], first: int, start: int, last: int, end: int, kind: str) -> None:
    """Overwrite lines ``first..last`` (1-based) from column ``start`` to ``end`` (0-based, exclusive)
    with a placeholder of the same shape: line ends stay, so every line number does too."""
    spans = [(n, start if n == first else 0, end if n == last else len(lines[n - 1])) for n in range(first, last + 1)]
    for n, lo, hi in spans:
        lines[n - 1] = lines[n - 1][:lo] + " " * (hi - lo) + lines[n - 1][hi:]
    (n0, lo0, hi0), (n1, _, hi1) = spans[0], spans[-1]

    def put(n: int, column: int, text: str) -> None:
        lines[n - 1] = lines[n - 1][:column] + text + lines[n - 1][column + len(text):]

    if kind == "pass":
        put(n0, lo0, "pass")  # the statement's other lines (inside its brackets) become blank lines
    elif kind == "string" and n0 == n1:
        put(n0, lo0, '""')
    elif kind == "string":  # `("" … )`: inside brackets, the blanked lines between are allowed
        put(n0, lo0, '(""')
        put(n1, hi1 - 1, ")")
    elif n0 != n1:  # type parameters over several lines: continue each line
        for n, _, hi in spans[:-1]:
            if hi > 0:
                put(n, hi - 1, "\\")


def load_source(path: Path, display: str | None = None, max_bytes: int | None = DEFAULT_MAX_FILE_BYTES) -> SourceFile:
    """Read and parse ``path``; raises :class:`SourceError` on any bad input."""
    return parse_source(path, display or display_path(path), read_text(path, max_bytes))
