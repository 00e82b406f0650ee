"""Press discovery: which classes inherit, directly or not, from kvpress's ``BasePress``
(or from a press base the project declares in its configuration, see :class:`PressBase`).

Bases are followed through the files of the run, through ``import`` statements, and
into kvpress's own installed source (found on disk, never imported), so that a press
deriving from ``ChunkKVPress`` is analysed together with the methods it inherits.

A base that cannot be found makes no press: when kvpress is installed and a class
derives from a name kvpress does not have (a fork's own press, say), kvaudit cannot
see the methods it inherits, so it does not pretend to audit it. Only when kvpress is
not installed at all are names imported from it trusted.
"""

from __future__ import annotations

import ast
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import libcst as cst
else:  # libcst is imported on first use (start-up cost)
    from ..lazy_libcst import cst

from ..source import SourceError, SourceFile, load_source
from ..targets import resolve_module

ROOT_CLASS = "BasePress"
ROOT_MODULE_SUFFIX = ("kvpress", "presses", "base_press.py")
KVPRESS = "kvpress"
_MAX_REEXPORT_HOPS = 4
_THIRD_PARTY = frozenset({"site-packages", "dist-packages"})
# Libraries whose classes are bases of models and helpers, never of a press (nor is the standard library).
_NO_PRESS_BASES = frozenset({"torch", "transformers", "numpy", "typing_extensions"})
# kvpress's own model of a press: one object hooked on every layer, entered through these methods.
KVPRESS_ENTRY_METHODS = ("forward_hook", "compress")
KVPRESS_LAYER_INDEX = ("layer_idx",)


@dataclass(frozen=True)
class PressBase:
    """A press base a project declares (``[[tool.kvaudit.press-bases]]``): classes deriving
    from ``cls`` are audited as presses, entered through ``entry_methods``, scoring with
    ``score_calls``.

    ``cls`` is dotted (``mlx_lm.models.cache.KVCache``, matched against where the base is
    imported from) or a bare class name. ``layer_index`` names the attributes (and entry-method
    parameters) that hold the layer's own index. ``per_layer_state`` says that the framework builds one
    object per layer (MLX caches), so state kept on ``self`` is per-layer state; kvpress hooks
    one press object on every layer, so its state is shared by all layers.
    """

    cls: str
    entry_methods: tuple[str, ...]
    score_calls: tuple[str, ...] = ()
    layer_index: tuple[str, ...] = KVPRESS_LAYER_INDEX
    per_layer_state: bool = False
    origin: str = ""  # e.g. "pyproject.toml press-bases[0]"

    def matches(self, qualified: str) -> bool:
        """Whether a base known as ``qualified`` (``module.Class``) is this one."""
        if "." in self.cls:
            return qualified == self.cls
        return qualified.rpartition(".")[2] == self.cls


KVPRESS_MODEL = PressBase(f"{KVPRESS}.presses.base_press.{ROOT_CLASS}", KVPRESS_ENTRY_METHODS)


def dotted(expr: ast.expr | cst.BaseExpression) -> str | None:
    """``a.b.C`` for a Name/Attribute chain (of either tree), else None."""
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        head = dotted(expr.value)
        return f"{head}.{expr.attr}" if head else None
    if isinstance(expr, ast.AST):
        return None  # decided without touching libcst, which a file without presses never loads
    if isinstance(expr, cst.Name):
        return expr.value
    if isinstance(expr, cst.Attribute):
        head = dotted(expr.value)
        return f"{head}.{expr.attr.value}" if head else None
    return None


def module_name_of(path: Path, is_package: Callable[[Path], bool] | None = None) -> str:
    """Dotted module name of ``path``, climbing while parent folders are packages."""
    is_package = is_package or _has_init
    parts = [] if path.stem == "__init__" else [path.stem]
    folder = path.parent
    while folder.name.isidentifier() and is_package(folder):
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts)


def _has_init(folder: Path) -> bool:
    try:
        return (folder / "__init__.py").exists()
    except (OSError, ValueError):
        return False


@dataclass(eq=False)
class ClassInfo:
    """A top-level class of one file, indexed from the ``ast`` tree."""

    name: str
    tree: ast.ClassDef
    source: SourceFile
    bases: list[str]
    is_target: bool  # defined in a file the user asked for (not an inherited base's file)
    occurrence: int = 0  # how many top-level classes of the same name come before it
    # Filled on first use by the index (bases are resolved lazily, file by file, as queries need them).
    # A str is a base whose source was not found, as ``module.Class`` (kvpress when not installed,
    # a configured press base from a framework that is not installed here).
    _resolver: Callable[[ClassInfo], list[ClassInfo | str]] | None = field(default=None, repr=False)
    _resolved: list[ClassInfo | str] | None = field(default=None, repr=False)

    @property
    def resolved_bases(self) -> list[ClassInfo | str]:
        """Bases found in the run, in imported files or in kvpress (str: a base not found, ``module.Class``)."""
        if self._resolved is None:
            self._resolved = self._resolver(self) if self._resolver is not None else []
        return self._resolved

    @resolved_bases.setter
    def resolved_bases(self, value: list[ClassInfo | str]) -> None:
        self._resolved = value

    @property
    def line(self) -> int:
        return self.tree.lineno

    @cached_property
    def node(self) -> cst.ClassDef:
        """The libcst tree of this class (only its own lines are parsed, on first use)."""
        return self.source.class_node(self.tree, self.occurrence)

    @property
    def is_root(self) -> bool:
        return self.name == ROOT_CLASS and self.source.path.parts[-3:] == ROOT_MODULE_SUFFIX

    def docstring_node(self) -> ast.Constant | None:
        return docstring_constant(self.tree.body)


def docstring_constant(body: list[ast.stmt]) -> ast.Constant | None:
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        if isinstance(body[0].value.value, str):
            return body[0].value
    return None


@dataclass
class ModuleInfo:
    """Top-level classes and imported names of one file."""

    source: SourceFile
    name: str
    classes: dict[str, ClassInfo]
    imports: dict[str, tuple[str, str | None]]  # local name -> (module, imported name or None)
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)  # top level


def _absolute_module(module_name: str, is_package: bool, relative: int, target: str) -> str:
    if not relative:
        return target
    package = module_name.split(".") if is_package else module_name.split(".")[:-1]
    base = package[: len(package) - (relative - 1)] if relative > 1 else package
    return ".".join([*base, target] if target else base)


def _index_module(source: SourceFile, is_target: bool, name: str | None = None) -> ModuleInfo:
    name = name or module_name_of(source.path)
    is_package = source.path.stem == "__init__"
    classes: dict[str, ClassInfo] = {}
    imports: dict[str, tuple[str, str | None]] = {}
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    seen: dict[str, int] = {}
    for statement in source.tree.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions[statement.name] = statement
        elif isinstance(statement, ast.ClassDef):
            bases = [d for d in (dotted(b) for b in statement.bases) if d]
            occurrence = seen.get(statement.name, 0)
            seen[statement.name] = occurrence + 1
            classes[statement.name] = ClassInfo(statement.name, statement, source, bases, is_target, occurrence)
        elif isinstance(statement, ast.ImportFrom):
            module = _absolute_module(name, is_package, statement.level, statement.module or "")
            for alias in statement.names:
                if alias.name != "*":
                    imports[alias.asname or alias.name] = (module, alias.name)
        elif isinstance(statement, ast.Import):
            for alias in statement.names:
                if alias.asname:
                    imports[alias.asname] = (alias.name, None)
                else:  # `import a.b` binds `a`
                    head = alias.name.split(".")[0]
                    imports[head] = (head, None)
    return ModuleInfo(source, name, classes, imports, functions)


def source_root(path: Path, module_name: str) -> Path:
    """The folder that holds the top-level package of the file ``path`` (or the file itself)."""
    root = (path if path.is_absolute() else path.resolve()).parent
    for _ in range(module_name.count(".") + (path.stem == "__init__")):
        root = root.parent
    return root


class ProjectIndex:
    """All classes of the run, plus the files of the bases they import.

    ``sources`` are the parsed files whose classes are audited. ``owners`` maps every
    module name of the run to the files that provide it (one per source tree, sorted), so
    that files left unparsed by the prefilter, or audited by another worker, are read
    when a base is looked up in them; ``roots`` are the run's source trees. Both default
    to what ``sources`` alone give.

    A module is looked up as CPython would for the importing file of the run: in that file's
    own source tree first (its script folder, or the folder above its top package), then in
    the run's other trees (in sorted order). So ``from base import X`` in ``a/sub.py`` reads
    ``a/base.py`` even when ``b/base.py`` is in the run too, whatever the order of the targets.

    Bases are resolved lazily and every walk over the class graph is iterative and
    memoised: a chain of thousands of classes costs time linear in its length, and no
    recursion limit.
    """

    def __init__(self, sources: list[SourceFile], press_bases: tuple[PressBase, ...] = (),
                 owners: dict[str, list[Path]] | None = None, roots: list[str] | None = None) -> None:
        self.press_bases = tuple(press_bases)
        self.modules: list[ModuleInfo] = []
        self._owners: dict[str, list[Path]] = {name: list(paths) for name, paths in (owners or {}).items()}
        self._by_path: dict[Path, ModuleInfo] = {}  # every file indexed: the run's and the bases' files
        self._by_source: dict[int, ModuleInfo] = {}  # id(SourceFile) -> its record, for module_of
        self._homes: dict[int, str | None] = {}  # id(ModuleInfo) -> its source tree (files of the run only)
        self._found: dict[tuple[str, str | None], ModuleInfo | None] = {}  # (module, importer's tree) -> record
        self._failed_paths: set[Path] = set()
        self._aux_failed: set[str] = set()
        # Target files that could not be read when a base was looked up in them: path -> reason.
        self.load_errors: dict[Path, str] = {}
        # Files read outside the run's targets (kvpress's source, a base's file), and every module
        # looked up on disk with the folders searched (None: sys.path) and the file found (None:
        # none): a cache entry holds only while each lookup still finds the same file.
        self.aux_paths: set[Path] = set()
        self.module_lookups: dict[tuple[str, tuple[str, ...] | None], str | None] = {}
        for source in sources:
            self.add_source(source)
        # Bases are followed into the run's own source trees and into kvpress, never into
        # torch or transformers: a press cannot inherit BasePress from there, and parsing
        # them would cost more than the whole audit.
        self._roots = roots if roots is not None else sorted(
            {str(source_root(info.source.path, info.name)) for info in self.modules})
        self._press_memo: dict[int, bool] = {}
        self._configured_memo: dict[int, PressBase | None] = {}
        # The flow pass's walks of methods, shared by the presses of the run (analysis/flow.py).
        self.flow_walks: dict[tuple, list] = {}
        self.flow_methods: dict[int, list] = {}
        self.flow_annotations: dict[int, list] = {}
        self.flow_loops: dict[int, bool] = {}
        self._mro_memo: dict[int, list[ClassInfo]] = {}

    def add_source(self, source: SourceFile) -> ModuleInfo:
        """Index one more file of the run, whose classes are audited."""
        info = _index_module(source, is_target=True)
        self.modules.append(info)
        owners = self._owners.setdefault(info.name, [])
        if source.path not in owners:
            owners.append(source.path)
            owners.sort()
        self._register(info, source.path, home=True)
        return info

    def _register(self, info: ModuleInfo, path: Path, home: bool) -> None:
        self._by_path.setdefault(path, info)
        self._by_source[id(info.source)] = info
        # Only a file of the run searches its own tree first; kvpress's files (in site-packages)
        # must not lead the lookups of their imports into transformers or torch.
        self._homes[id(info)] = str(source_root(info.source.path, info.name)) if home else None
        self._attach(info)

    def _attach(self, info: ModuleInfo) -> None:
        for cls in info.classes.values():
            cls._resolver = lambda c, info=info: [b for b in (self._resolve_base(info, base) for base in c.bases)
                                                  if b is not None]

    # -- module lookup -------------------------------------------------------------------
    def _resolve(self, name: str, search: list[str] | None) -> Path | None:
        """``resolve_module``, remembered with its answer (for the cache)."""
        path = resolve_module(name, search)
        self.module_lookups[(name, tuple(search) if search is not None else None)] = \
            str(path) if path is not None else None
        return path

    def _resolve_from(self, name: str, home: str | None) -> Path | None:
        """Module ``name`` on disk: in ``home`` first, then in the run's trees (sorted). Two lookups, not
        one over ``[home, *others]``: the cache then records one search list per tree, not one per pair."""
        found = self._resolve(name, [home]) if home is not None else None
        return found if found is not None else self._resolve(name, list(self._roots))

    def _owner_root(self, path: Path, name: str) -> str:
        return str(source_root(path, name))

    def _locate(self, name: str, home: str | None) -> tuple[Path | None, bool]:
        """The file of module ``name`` for a file of source tree ``home``, and whether it is one of the run."""
        owners = self._owners.get(name, [])
        own = next((path for path in owners if home is not None and self._owner_root(path, name) == home), None)
        if own is not None:
            return own, True
        if name.split(".")[0] == KVPRESS:
            return (owners[0], True) if owners else (self._resolve(name, None), False)
        if home is not None:
            found = self._resolve(name, [home])  # a file beside it that the run did not name
            if found is not None:
                return found, False
        if owners:
            return owners[0], True
        return self._resolve(name, list(self._roots)), False  # (home, searched above, holds none)

    def _module(self, name: str, near: ModuleInfo | None = None) -> ModuleInfo | None:
        """The record of module ``name`` as imported by ``near`` (None: from no particular file)."""
        home = self._homes.get(id(near)) if near is not None else None
        key = (name, home)
        if key in self._found:
            return self._found[key]
        path, is_target = self._locate(name, home)
        info = self._load(name, path, is_target)
        self._found[key] = info
        return info

    def _load(self, name: str, path: Path | None, is_target: bool) -> ModuleInfo | None:
        if path is not None and path in self._by_path:
            return self._by_path[path]
        if path is None or path in self._failed_paths:
            self._aux_failed.add(name)
            return None
        if not is_target:
            self.aux_paths.add(path)
        try:
            source = load_source(path)
        except SourceError as err:
            if is_target:
                self.load_errors[path] = str(err)
            self._failed_paths.add(path)
            self._aux_failed.add(name)
            return None
        info = _index_module(source, is_target=is_target, name=name)
        self._register(info, path, home=is_target)
        return info

    def _lookup(self, module_name: str, class_name: str, near: ModuleInfo | None) -> ClassInfo | None:
        # Re-exports, e.g. `from kvpress import ChunkKVPress`, are followed a few hops.
        for _ in range(_MAX_REEXPORT_HOPS + 1):
            info = self._module(module_name, near)
            if info is None:
                return None
            if class_name in info.classes:
                return info.classes[class_name]
            if class_name not in info.imports:
                return None
            module_name, name = info.imports[class_name]
            if name is None:
                return None
            class_name = name
            near = info  # the re-exporting file's own imports
        return None

    def _resolve_base(self, info: ModuleInfo, base: str) -> ClassInfo | str | None:
        head, _, rest = base.partition(".")
        if not rest and head in info.classes:
            return info.classes[head]
        if head not in info.imports:
            return None
        module, name = info.imports[head]
        if name is not None and not rest:  # from m import C
            found = self._lookup(module, name, info)
            module_of_name = module
            class_name = name
        elif name is None and rest:  # import m; m.sub.C
            module_of_name, _, class_name = f"{module}.{rest}".rpartition(".")
            found = self._lookup(module_of_name, class_name, info)
        else:  # from m import sub; sub.C
            module_of_name, _, class_name = f"{module}.{name}.{rest}".rpartition(".")
            found = self._lookup(module_of_name, class_name, info)
        if found is not None:
            return found
        # Not found: remember where it comes from (a configured press base may name it).
        return f"{module_of_name}.{class_name}"

    # -- names, functions, configured bases ------------------------------------------------
    def module_of(self, source: SourceFile) -> ModuleInfo | None:
        """The module record of a file the index holds."""
        return self._by_source.get(id(source))

    def resolve_class(self, source: SourceFile, name: str) -> ClassInfo | None:
        """The class ``name`` (``C`` or ``m.C``) means in ``source``, if its source is reachable."""
        info = self.module_of(source)
        found = self._resolve_base(info, name) if info is not None else None
        return found if isinstance(found, ClassInfo) else None

    def resolve_function(self, source: SourceFile, name: str) -> tuple[SourceFile, str] | None:
        """The top-level function ``name`` (``f`` or ``module.f``) means in ``source``: defined
        there or imported from another file of the run (never from kvpress or elsewhere)."""
        info = self.module_of(source)
        if info is None:
            return None
        head, _, rest = name.partition(".")
        if not rest and head in info.functions:
            return info.source, head
        if head not in info.imports:
            return None
        module, imported = info.imports[head]
        module_name, function = (module, imported) if imported is not None and not rest else (
            (f"{module}.{imported}" if imported else module), rest)
        if not function or "." in function or not self._in_run(module_name, info):
            return None
        target = self._module(module_name, info)
        return (target.source, function) if target is not None and function in target.functions else None

    def _in_run(self, module_name: str, near: ModuleInfo) -> bool:
        # A module of the run's own packages, or a file beside the run's files; never a
        # third-party library (torch is not read, even when the run is in site-packages).
        if module_name in self._owners or module_name.split(".")[0] in self._packages:
            return True
        path = self._resolve_from(module_name, self._homes.get(id(near)))
        return path is not None and not _THIRD_PARTY.intersection(path.parts)

    @cached_property
    def _packages(self) -> frozenset[str]:
        # Every module of the run, parsed up front or not (the prefilter, the workers).
        return frozenset(name.split(".")[0] for name in self._owners if "." in name)

    def press_model(self, cls: ClassInfo) -> PressBase:
        """How ``cls`` works as a press: kvpress's model, or that of the configured base it derives from."""
        return self._configured_base(cls, frozenset()) or KVPRESS_MODEL

    def _configured_base(self, cls: ClassInfo, seen: frozenset[int] = frozenset()) -> PressBase | None:
        """The configured press base ``cls`` derives from: depth first, each base checked before
        its own bases (iterative, memoised per class)."""
        if not self.press_bases:
            return None
        memo = self._configured_memo
        if id(cls) in memo:
            return memo[id(cls)]
        found: PressBase | None = None
        path: list[ClassInfo] = [cls]
        on_path = {id(cls)}
        stack = [iter(cls.resolved_bases)]
        while stack and found is None:
            base = next(stack[-1], None)
            if base is None:
                done = path.pop()
                on_path.discard(id(done))
                stack.pop()
                memo.setdefault(id(done), None)
                continue
            qualified = base if isinstance(base, str) else f"{self._module_name(base)}.{base.name}"
            found = next((b for b in self.press_bases if b.matches(qualified)), None)
            if found is None and isinstance(base, ClassInfo) and id(base) not in on_path:
                if id(base) in memo:
                    found = memo[id(base)]
                else:
                    path.append(base)
                    on_path.add(id(base))
                    stack.append(iter(base.resolved_bases))
        if found is not None:
            for node in path:
                memo[id(node)] = found
        return found

    def _module_name(self, cls: ClassInfo) -> str:
        info = self.module_of(cls.source)
        return info.name if info is not None else module_name_of(cls.source.path)

    @cached_property
    def _kvpress_installed(self) -> bool:
        return self._resolve(KVPRESS, None) is not None

    @property
    def unloaded_modules(self) -> frozenset[str]:
        """Modules a base was looked up in that could not be found or read (kvaudit.inherited reports kvpress's)."""
        return frozenset(self._aux_failed)

    # -- queries -------------------------------------------------------------------------
    def is_press(self, cls: ClassInfo) -> bool:
        """True when ``cls`` inherits, directly or not, from kvpress's BasePress (or a configured press base).

        A breadth-first search over resolved bases, memoised: when it finds the root, the
        classes on the path to it are presses; when it does not, none of the classes it
        visited is.
        """
        memo = self._press_memo
        if id(cls) in memo:
            return memo[id(cls)]
        if self._configured_base(cls) is not None:
            memo[id(cls)] = True
            return True
        parent: dict[int, ClassInfo | None] = {id(cls): None}
        visited = [cls]
        queue = deque([cls])
        while queue:
            node = queue.popleft()
            for base in node.resolved_bases:
                if isinstance(base, str):
                    # kvpress is not installed here: trust kvpress press names imported from it.
                    reaches = base.split(".")[0] == KVPRESS and base.endswith("Press") and not self._kvpress_installed
                else:
                    reaches = base.is_root or memo.get(id(base)) is True
                if reaches:
                    step: ClassInfo | None = node
                    while step is not None:  # every class on the path reaches the root too
                        memo[id(step)] = True
                        step = parent[id(step)]
                    return True
                if isinstance(base, ClassInfo) and id(base) not in parent and id(base) not in memo:
                    parent[id(base)] = node  # (memo holds only False here)
                    visited.append(base)
                    queue.append(base)
        for node in visited:
            memo[id(node)] = False
        return False

    def unreadable_bases(self, source: SourceFile) -> list[tuple[ClassInfo, str, bool]]:
        """(class, base, in kvpress) for each class of ``source`` that is not a press and derives, itself or
        through a base in the run, from a base kvaudit cannot read, so that it cannot tell whether the class
        is a press: a kvpress name the installed kvpress does not have (in kvpress: True), or a class of a
        module found neither in the run nor beside its files (False; never the standard library's, torch's
        or transformers', which hold no press base). Whether such a class looks like a press is the caller's
        question."""
        info = self.module_of(source)
        if info is None:
            return []
        found: list[tuple[ClassInfo, str, bool]] = []
        unreadable: set[str] | None = None
        for cls in info.classes.values():
            if self.is_press(cls):  # (resolves the bases: every lookup below has been made)
                continue
            if unreadable is None:
                unreadable = self._unreadable_modules()
                kvpress_unread = any(name.split(".")[0] == KVPRESS for name in unreadable)
            seen: set[str] = set()
            for node in self.mro(cls):
                for base in node.resolved_bases:
                    if not isinstance(base, str) or base in seen:
                        continue
                    seen.add(base)
                    module, _, _ = base.rpartition(".")
                    top = base.split(".")[0]
                    if top == KVPRESS:
                        # Not when a file of kvpress was found but could not be read: the name may be
                        # in it (a warning of the run says so, kvaudit.inherited).
                        if self._kvpress_installed and not kvpress_unread:
                            found.append((cls, base, True))
                    elif (module in self._aux_failed and module not in unreadable
                          and top not in _NO_PRESS_BASES and top not in sys.stdlib_module_names):
                        found.append((cls, base, False))
        return found

    def _unreadable_modules(self) -> set[str]:
        """Modules that could not be read although their file is there (a file of the run, or one a lookup
        found); the other modules that failed were not found at all."""
        there = {name for (name, _), path in self.module_lookups.items() if path is not None}
        return self._aux_failed & (there | set(self._owners))

    def presses(self) -> list[ClassInfo]:
        """Press classes defined in the target files, in file then source order."""
        return [cls for info in self.modules for cls in info.classes.values() if self.is_press(cls)]

    def mro(self, cls: ClassInfo) -> list[ClassInfo]:
        """Approximate method resolution order over the classes we have source for.

        Depth-first, left to right, each class once (at its first visit); iterative.
        """
        cached = self._mro_memo.get(id(cls))
        if cached is not None:
            return list(cached)
        order: list[ClassInfo] = []
        seen: set[int] = set()
        stack = [cls]
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            order.append(node)
            stack.extend(base for base in reversed(node.resolved_bases) if isinstance(base, ClassInfo))
        self._mro_memo[id(cls)] = order
        return list(order)
