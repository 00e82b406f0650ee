"""Defaults the command line shows in ``--help``, in a module that imports nothing.

``kvaudit --help`` must not import the engine, libcst or the tracer's package just to
print a default; the modules that use these values import them from here.
"""

from __future__ import annotations

# The embedded default target of `kvaudit check`: the installed kvpress ChunkKVPress.
DEFAULT_TARGET = "kvpress.presses.chunkkv_press"

# Files larger than this are refused with one line, never read (README: "size cap").
# 16 MiB is well above any hand-written module (kvpress's largest is 20 KB; generated
# protobuf modules reach a few MB) and bounds the memory one file's trees can take.
DEFAULT_MAX_FILE_BYTES = 16 * 1024 * 1024

# Default first-prefill length of a trace. Long enough that SnapKV's 64-token observation window is a
# small part of the kept budget: at 256 tokens, kvpress's ChunkKV on random weights keeps the very same
# chunks on several adjacent layers by coincidence, which would look like index sharing.
DEFAULT_TOKENS = 512
# The catalogue's grid: the second prefill is 8 × the first (512 and 4096 tokens), each compression
# ratio gets a fresh press, and each prefill is followed by greedy decoding steps.
LONG_FACTOR = 8
DEFAULT_RATIOS = (0.5, 0.8, 0.9)
DEFAULT_DECODE_STEPS = 8
# --timeout: CPU seconds a press's processes may use together (kvaudit.tracer.worker.clock); an idle
# press (a hang) is stopped after as many seconds of wall time, and any press at the wall-clock
# ceiling, WALL_CEILING_FACTOR times as many: a press that needs the whole limit on a quiet machine
# still finishes when the machine is three times as busy.
DEFAULT_TIMEOUT_S = 120.0
WALL_CEILING_FACTOR = 3.0


def wall_ceiling(timeout: float) -> float:
    """The wall-clock seconds kvaudit waits for a press traced under ``--timeout timeout``, whatever it does."""
    return WALL_CEILING_FACTOR * timeout


# A traced press may allocate at most this share of the machine's RAM (on top of the worker's model).
DEFAULT_MEMORY_SHARE = 0.5


# The embedded tiny model's shape (kvaudit.tinymodel builds it; the reproductions kvaudit writes rebuild it
# from these same values, in scripts that never import kvaudit). 4096 ids: a prompt of up to 4096 tokens
# (the catalogue's long prompt) can use each id once, so that no two positions of layer 0 hold identical
# values (values carry no RoPE): a row matched on its value alone (re-rotated keys) has one candidate.
VOCAB_SIZE = 4096
TINY_MODEL = {"hidden_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 256,
              "max_position_embeddings": 65536}
