"""Import the target module and list its press classes (runs inside a forked worker child).

This executes the user's code, so it only ever runs in a child process of the worker.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

from ..wire import ClassEntry


def _package_name(file: Path) -> tuple[str | None, Path | None]:
    """The dotted name of ``file`` inside its package tree, and the folder that holds the top package."""
    parts = [file.stem] if file.name != "__init__.py" else []
    folder = file.parent
    if not (folder / "__init__.py").exists():
        return None, None
    while (folder / "__init__.py").exists():
        parts.insert(0, folder.name)
        folder = folder.parent
    if not all(part.isidentifier() for part in parts):
        return None, None
    return ".".join(parts), folder


def _load_from_file(file: Path) -> ModuleType:
    """Load a file as a stand-alone module under a private, collision-free name."""
    digest = hashlib.sha1(str(file).encode()).hexdigest()[:10]
    name = f"_kvaudit_target_{file.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses looks the module up while building the class
    spec.loader.exec_module(module)
    return module


def _put_first_on_path(folder: Path) -> None:
    """Make ``folder`` the first place imports look, as ``python FILE`` does with the file's folder.

    A folder already on ``sys.path`` (site-packages, say) keeps its place: moving it first could
    shadow the standard library.
    """
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def _module_root(file: Path, module_name: str) -> Path:
    """The folder from which ``module_name`` (found at ``file``) is imported."""
    depth = module_name.count(".") + (1 if file.name == "__init__.py" else 0)
    return file.parents[min(depth, len(file.parents) - 1)]


def import_target(path: str, module_name: str | None) -> ModuleType:
    """Import the target: by its dotted name when known, else by path.

    The folder the target is imported from comes first on ``sys.path``, so that the target's own
    imports (``import rules``, ``from utils import x``) find the user's modules beside it, as
    ``python FILE`` would: the worker itself puts nothing there (it runs with ``python -P``).
    A file inside a package is imported under its package name (relative imports work and its
    classes subclass the one installed ``BasePress``); a loose file is loaded on its own.
    """
    file = Path(path).resolve()
    if module_name:
        if importlib.util.find_spec(module_name.partition(".")[0]) is None:
            # kvaudit found it where the worker does not look (beside the working directory, say).
            _put_first_on_path(_module_root(file, module_name))
        return importlib.import_module(module_name)
    dotted, root = _package_name(file)
    _put_first_on_path(root if dotted and root is not None else file.parent)
    if dotted and root is not None:
        try:
            module = importlib.import_module(dotted)
        except ModuleNotFoundError as error:
            # The package name is shadowed or not importable from here: load the file itself.
            if error.name and dotted.startswith(error.name):
                return _load_from_file(file)
            raise
        if getattr(module, "__file__", None) and Path(module.__file__).resolve() == file:
            return module
    return _load_from_file(file)


def _line_of(cls: type) -> int:
    try:
        return inspect.getsourcelines(cls)[1]
    except (OSError, TypeError):
        return 0


def class_entry(cls: type) -> ClassEntry:
    """What the parent needs to know of a class: where it is, whether it is a press, its MRO's names."""
    from kvpress import BasePress

    try:
        path = inspect.getsourcefile(cls) or ""
    except TypeError:
        path = ""
    # BasePress itself is the root the presses derive from, not a press: the static index says the same.
    is_press = issubclass(cls, BasePress) and cls is not BasePress
    return ClassEntry(name=cls.__name__, line=_line_of(cls), is_press=is_press,
                      mro=tuple(base.__name__ for base in cls.__mro__), path=path)


def list_classes(module: ModuleType) -> list[ClassEntry]:
    """Classes defined in ``module`` (not imported into it), in source order."""
    found = [class_entry(obj) for name, obj in vars(module).items()
             if isinstance(obj, type) and obj.__module__ == module.__name__ and obj.__name__ == name]
    return sorted(found, key=lambda info: (info.line, info.name))
