"""libcst, imported on first use.

Importing libcst costs about 0.2 s. ``kvaudit --help``, ``kvaudit rules`` and a check of
files that hold no press never need it, so modules write::

    if TYPE_CHECKING:
        import libcst as cst
    else:
        from ..lazy_libcst import cst

and use ``cst.Name`` as usual: the first attribute read imports libcst. (A plain
``import libcst`` cannot be made lazy: the import system reads the module's ``__spec__``.)
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _LazyModule(ModuleType):
    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)  # later reads are plain attribute reads
        return getattr(module, attr)


cst = _LazyModule("libcst")
