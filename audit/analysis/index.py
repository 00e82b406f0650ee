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


def module_name_of(path: Path) -> str:
    """Dotted module name of ``path``, climbing while parent folders are packages."""
    parts = [] if path.stem == "__init__" else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").exists() and folder.name.isidentifier():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts)


@dataclass(eq=False)
class ClassInfo:
    """A top-level class of one file, indexed from the ``ast`` tree."""

    name: str
    tree: ast.ClassDef
    source: SourceFile
    bases: list[str]
    is_target: bool  # defined in a file the user asked for (not an inherited base's file)
    occurrence: int = 0  # how many top-level classes of the same name come before it
    # A str is a base whose source was not found, as ``module.Class`` (kvpress when not installed,
    # a configured press base from a framework that is not installed here).
    resolved_bases: list[ClassInfo | str] = field(default_factory=list)

    @property
    def line(self) -> int:
        return self.tree.lineno

    @cached_property
    def node(self) -> cst.ClassDef:
        """The libcst tree of this class (parses the file with libcst on first use)."""
        same_name = [s for s in self.source.module.body if isinstance(s, cst.ClassDef) and s.name.value == self.name]
        return same_name[self.occurrence]

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


def _source_root(info: ModuleInfo) -> Path:
    """The folder that holds ``info``'s top-level package (or the file itself)."""
    root = info.source.path.resolve().parent
    for _ in range(info.name.count(".") + (info.source.path.stem == "__init__")):
        root = root.parent
    return root


class ProjectIndex:
    """All classes of the run, plus the files of the bases they import."""

    def __init__(self, sources: list[SourceFile], press_bases: tuple[PressBase, ...] = ()) -> None:
        self.press_bases = tuple(press_bases)
        self.modules: list[ModuleInfo] = [_index_module(s, is_target=True) for s in sources]
        self._by_name: dict[str, ModuleInfo] = {}
        for info in self.modules:
            self._by_name.setdefault(info.name, info)
        self._aux_failed: set[str] = set()
        # Bases are followed into the run's own source trees and into kvpress, never into
        # torch or transformers: a press cannot inherit BasePress from there, and parsing
        # them would cost more than the whole audit.
        self._roots = sorted({str(_source_root(info)) for info in self.modules})
        for info in list(self.modules):
            for cls in info.classes.values():
                cls.resolved_bases = [self._resolve_base(info, base) for base in cls.bases]
                cls.resolved_bases = [b for b in cls.resolved_bases if b is not None]

    # -- module lookup -------------------------------------------------------------------
    def _module(self, name: str) -> ModuleInfo | None:
        if name in self._by_name:
            return self._by_name[name]
        if name in self._aux_failed:
            return None
        path = resolve_module(name) if name.split(".")[0] == KVPRESS else resolve_module(name, self._roots)
        try:
            if path is None:
                raise SourceError("not found")
            source = load_source(path)
        except SourceError:
            self._aux_failed.add(name)
            return None
        info = _index_module(source, is_target=False, name=name)
        self._by_name[name] = info
        for cls in info.classes.values():
            cls.resolved_bases = [b for b in (self._resolve_base(info, base) for base in cls.bases) if b is not None]
        return info

    def _lookup(self, module_name: str, class_name: str, hops: int = 0) -> ClassInfo | None:
        info = self._module(module_name)
        if info is None or hops > _MAX_REEXPORT_HOPS:
            return None
        if class_name in info.classes:
            return info.classes[class_name]
        if class_name in info.imports:  # a re-export, e.g. `from kvpress import ChunkKVPress`
            module, name = info.imports[class_name]
            if name is not None:
                return self._lookup(module, name, hops + 1)
        return None

    def _resolve_base(self, info: ModuleInfo, base: str) -> ClassInfo | str | None:
        head, _, rest = base.partition(".")
        if not rest and head in info.classes:
            return info.classes[head]
        if head not in info.imports:
            return None
        module, name = info.imports[head]
        if name is not None and not rest:  # from m import C
            found = self._lookup(module, name)
            module_of_name = module
            class_name = name
        elif name is None and rest:  # import m; m.sub.C
            module_of_name, _, class_name = f"{module}.{rest}".rpartition(".")
            found = self._lookup(module_of_name, class_name)
        else:  # from m import sub; sub.C
            module_of_name, _, class_name = f"{module}.{name}.{rest}".rpartition(".")
            found = self._lookup(module_of_name, class_name)
        if found is not None:
            return found
        # Not found: remember where it comes from (a configured press base may name it).
        return f"{module_of_name}.{class_name}"

    # -- names, functions, configured bases ------------------------------------------------
    def module_of(self, source: SourceFile) -> ModuleInfo | None:
        """The module record of a file the index holds."""
        return next((info for info in self._by_name.values() if info.source is source), None)

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
        if not function or "." in function or not self._in_run(module_name):
            return None
        target = self._module(module_name)
        return (target.source, function) if target is not None and function in target.functions else None

    def _in_run(self, module_name: str) -> bool:
        # A module of the run's own packages, or a file beside the run's files; never a
        # third-party library (torch is not read, even when the run is in site-packages).
        if module_name in self._by_name or module_name.split(".")[0] in self._packages:
            return True
        path = resolve_module(module_name, self._roots)
        return path is not None and not _THIRD_PARTY.intersection(path.parts)

    @cached_property
    def _packages(self) -> frozenset[str]:
        return frozenset(info.name.split(".")[0] for info in self.modules if "." in info.name)

    def press_model(self, cls: ClassInfo) -> PressBase:
        """How ``cls`` works as a press: kvpress's model, or that of the configured base it derives from."""
        return self._configured_base(cls, frozenset()) or KVPRESS_MODEL

    def _configured_base(self, cls: ClassInfo, seen: frozenset[int]) -> PressBase | None:
        if not self.press_bases or id(cls) in seen:
            return None
        for base in cls.resolved_bases:
            qualified = base if isinstance(base, str) else f"{self._module_name(base)}.{base.name}"
            found = next((b for b in self.press_bases if b.matches(qualified)), None)
            if found is None and isinstance(base, ClassInfo):
                found = self._configured_base(base, seen | {id(cls)})
            if found is not None:
                return found
        return None

    def _module_name(self, cls: ClassInfo) -> str:
        info = self.module_of(cls.source)
        return info.name if info is not None else module_name_of(cls.source.path)

    @cached_property
    def _kvpress_installed(self) -> bool:
        return resolve_module(KVPRESS) is not None

    @property
    def unloaded_modules(self) -> frozenset[str]:
        """Modules a base was looked up in that could not be found or read (kvaudit.inherited reports kvpress's)."""
        return frozenset(self._aux_failed)

    # -- queries -------------------------------------------------------------------------
    def is_press(self, cls: ClassInfo, seen: frozenset[int] = frozenset()) -> bool:
        """True when ``cls`` inherits, directly or not, from kvpress's BasePress."""
        if id(cls) in seen:
            return False
        if self._configured_base(cls, frozenset()) is not None:
            return True
        for base in cls.resolved_bases:
            if isinstance(base, str):
                # kvpress is not installed here: trust kvpress press names imported from it.
                if base.split(".")[0] == KVPRESS and base.endswith("Press") and not self._kvpress_installed:
                    return True
            elif base.is_root or self.is_press(base, seen | {id(cls)}):
                return True
        return False

    def unknown_bases(self, source: SourceFile) -> list[tuple[str, str]]:
        """(class, base) for classes of ``source`` that derive from a kvpress name the installed
        kvpress does not have: kvaudit cannot read what they inherit, so they are not audited."""
        info = self.module_of(source)
        if info is None or not self._kvpress_installed:
            return []
        return [(cls.name, base) for cls in info.classes.values() if not self.is_press(cls)
                for base in cls.resolved_bases if isinstance(base, str) and base.split(".")[0] == KVPRESS]

    def presses(self) -> list[ClassInfo]:
        """Press classes defined in the target files, in file then source order."""
        return [cls for info in self.modules for cls in info.classes.values() if self.is_press(cls)]

    def mro(self, cls: ClassInfo) -> list[ClassInfo]:
        """Approximate method resolution order over the classes we have source for."""
        order: list[ClassInfo] = []

        def visit(node: ClassInfo) -> None:
            if any(node is seen for seen in order):
                return
            order.append(node)
            for base in node.resolved_bases:
                if isinstance(base, ClassInfo):
                    visit(base)

        visit(cls)
        return order
