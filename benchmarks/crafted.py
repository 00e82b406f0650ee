"""Crafted inputs of issue 9, generated on demand (never committed): the benchmarks and the
regression tests (tests/test_static_robustness.py) build them with these functions.
"""

from __future__ import annotations

from pathlib import Path

HEADER = '''"""A press citing ChunkKV (arXiv 2502.00299)."""
from dataclasses import dataclass

from kvpress.presses.base_press import BasePress
'''

ROOT_PRESS = '''
@dataclass
class P0(BasePress):
    n_reuse: int = 2

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if module.layer_idx % self.n_reuse == 0:
            self.indices = self.score(module, hidden_states, keys, values, attentions, kwargs).topk(4).indices
        return keys.gather(2, self.indices), values.gather(2, self.indices)
'''


def press_chain(classes: int, bodies: bool = True) -> str:
    """One file: ``P0(BasePress)``, then ``P{i}(P{i-1})``, each with a field, an override calling
    ``super()`` and a helper, so that every press's flow pass walks its whole chain (or, without
    ``bodies``, each subclass only ``pass``)."""
    parts = [HEADER, ROOT_PRESS]
    if not bodies:
        parts.extend(f"\n\nclass P{i}(P{i - 1}):\n    pass\n" for i in range(1, classes))
        return "".join(parts)
    for i in range(1, classes):
        parts.append(f'''
@dataclass
class P{i}(P{i - 1}):
    f{i}: int = {i}

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        shift = self.f{i} + module.layer_idx
        return super().compress(module, hidden_states, keys, values, attentions, kwargs)

    def helper{i}(self):
        return self.f{i}
''')
    return "".join(parts)


def press_chain_files(folder: Path, classes: int) -> list[Path]:
    """The chain of :func:`press_chain` with one class per file, each importing its base."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "p0.py"]
    paths[0].write_text(HEADER + ROOT_PRESS, encoding="utf-8")
    for i in range(1, classes):
        path = folder / f"p{i}.py"
        path.write_text(f"from p{i - 1} import P{i - 1}\n\n\nclass P{i}(P{i - 1}):\n    pass\n", encoding="utf-8")
        paths.append(path)
    return paths


def suppressions(lines: int, standalone: bool) -> str:
    """A press, then ``lines`` suppression comments: on code lines, or as one block of comment lines."""
    parts = [HEADER, ROOT_PRESS]
    if standalone:
        parts.extend("# kvaudit: ignore[KVA101] reviewed\n" for _ in range(lines))
        parts.append("LAST = 1\n")
    else:
        parts.extend(f"x{i} = {i}  # kvaudit: ignore[KVA101] reviewed\n" for i in range(lines))
    return "".join(parts)


def large_module(size_bytes: int, with_press: bool) -> str:
    """About ``size_bytes`` of plain functions, with one small press at the top or not."""
    parts = [HEADER, ROOT_PRESS] if with_press else ['"""A large module."""\n']
    total = sum(map(len, parts))
    i = 0
    while total < size_bytes:
        part = f"\n\ndef f{i}(x, y=(1, 2, 3)):\n    return x + y[0] * {i}  # note {i}\n"
        parts.append(part)
        total += len(part)
        i += 1
    return "".join(parts)
