"""Reference implementations of the mechanisms kvaudit checks presses against.

Importing this package imports torch, transformers and kvpress: only the dynamic paths
(tracer, reference comparison, tests, benchmarks) may import it, never the static path.
"""

from .chunkkv_reuse_press import ChunkKVReusePress

__all__ = ["ChunkKVReusePress"]
