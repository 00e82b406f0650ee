"""What a trace is run with: the model, the prefills and the limits.

Plain stdlib so that the CLI and ``kvaudit check`` can build options without importing torch.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

# The defaults `--help` shows live in kvaudit.defaults, which imports nothing; explained there.
from ..mechanism import ALONE, REPEAT  # the probes' kinds, which the checks read
from ..defaults import (
    DEFAULT_DECODE_STEPS,
    DEFAULT_MEMORY_SHARE,
    DEFAULT_RATIOS,
    DEFAULT_TIMEOUT_S,
    DEFAULT_TOKENS,
    LONG_FACTOR,
)

ARCHES = ("llama", "qwen2", "qwen3", "mistral")
DTYPES = ("float32", "bfloat16", "float16")

DEFAULT_SEED = 0
TRAINED = "trained"  # --model trained: kvaudit's tiny trained model (kvaudit.trained)

# What tracing needs beyond the static audit (the `trace` extra), and how to get it.
TRACE_PACKAGES = ("torch", "transformers", "kvpress", "psutil")  # psutil: the press's process tree and CPU time
INSTALL_TRACE = "pip install 'kvaudit[trace]'"
# The environment variable that tells the worker which process is its parent (kvaudit).
PARENT_ENV = "KVAUDIT_WORKER_PARENT"


def missing_trace_extra() -> str | None:
    """A one-line reason when a package of the ``trace`` extra is missing, else None. Imports nothing."""
    for name in TRACE_PACKAGES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"tracing needs {name}, which is not installed; add the trace extra: {INSTALL_TRACE}"
    return None


def broken_trace_extra(name: str, error: str) -> str:
    """The one line for a package of the ``trace`` extra that is installed but fails to import."""
    return (f"tracing needs {name}, which is installed but fails to import ({error}); "
            f"repair or reinstall the trace extra: {INSTALL_TRACE}")


def physical_memory() -> int:
    """The machine's RAM in bytes (0 when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, AttributeError):
        return 0


def default_memory_limit() -> int:
    return int(physical_memory() * DEFAULT_MEMORY_SHARE)


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_memory_limit(text: str) -> int:
    """``4G``, ``512MiB``, ``1.5g``, ``25%`` (of RAM) or a byte count; ``0``/``none`` means no limit.

    Raises
    ------
    ValueError
        With a one-line reason.
    """
    value = text.strip().lower()
    if value in ("0", "none", "off", "unlimited"):
        return 0
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(%|[kmgt]?)(?:i?b)?", value)
    if match is None:
        raise ValueError("give a size such as 4G, 512M or 25% (of RAM), or 0 for no limit")
    number, unit = float(match.group(1)), match.group(2)
    size = int(number / 100 * physical_memory()) if unit == "%" else int(number * _UNITS[unit])
    if size <= 0:
        raise ValueError("must be more than 0 bytes (0 alone means no limit)")
    return size


def format_bytes(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


@dataclass
class TraceOptions:
    """Options of one trace session (one worker process, one model).

    Parameters
    ----------
    arch : str
        Architecture of the embedded tiny model: llama, qwen2, qwen3 or mistral.
    layers : int
        Number of decoder layers of the embedded model.
    tokens : int
        Length of the first prefill; the batch run uses ``tokens`` too.
    long_tokens : int | None
        Length of the second prefill (longer than the first); None: ``8 × tokens``.
    ratios : tuple[float, ...]
        The compression ratios of the grid: each one gets a fresh press instance and the three
        prefills. A press with no ratio to set runs the prefills once.
    decode_steps : int
        Greedy decoding steps after each prefill, inside ``with press(model):`` (0: none).
    model_path : str | None
        A local Hugging Face folder to load instead of the embedded model (never downloads);
        ``"trained"`` names kvaudit's tiny trained model (:mod:`kvaudit.trained`), whose prompts are
        windows of its held-out text instead of random ids.
    device : str
        Torch device, ``cpu`` by default.
    dtype : str
        float32, bfloat16 or float16.
    timeout : float
        CPU seconds one press may use (build, prefills and checks; its processes together) before it is
        killed; an idle press is killed after as many seconds of wall time, any press at the wall-clock
        ceiling (:func:`kvaudit.defaults.wall_ceiling`).
    press_expr : str | None
        An expression that builds the press, evaluated with kvpress's and the module's names.
    compare_reference : bool
        Also trace ``kvaudit.reference.ChunkKVReusePress`` with the same scorer, ratio and chunk length.
    seed : int
        Seed of the embedded model's weights and of the prompt tokens.
    memory_limit : int
        Bytes one press may allocate on top of the worker's address space (``RLIMIT_AS``, CPU
        only); 0 means no limit. Default: half the machine's RAM.
    """

    arch: str = "llama"
    layers: int = 8
    tokens: int = DEFAULT_TOKENS
    long_tokens: int | None = None
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    decode_steps: int = DEFAULT_DECODE_STEPS
    model_path: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    timeout: float = DEFAULT_TIMEOUT_S
    press_expr: str | None = None
    compare_reference: bool = False
    seed: int = DEFAULT_SEED
    memory_limit: int = field(default_factory=default_memory_limit)
    # Extra environment for the worker (tests use it); HF_HUB_OFFLINE=1 is always set.
    worker_env: dict[str, str] = field(default_factory=dict)

    @property
    def trained(self) -> bool:
        """Whether the model is kvaudit's tiny trained model (``--model trained``): its weights learned attention."""
        return self.model_path == TRAINED

    @property
    def model_folder(self) -> str | None:
        """The folder the model loads from (the trained model's package data for ``trained``), else None."""
        if self.trained:
            from ..trained import trained_model_path

            return str(trained_model_path())
        return self.model_path

    def validate(self) -> str | None:
        """Return a one-line reason when the options are unusable, else None."""
        if self.trained:
            from ..trained import checksum_problems

            problems = checksum_problems()
            return f"--model trained: the committed model is damaged ({'; '.join(problems)})" if problems else None
        if self.model_path is not None and not Path(self.model_path).is_dir():
            # Checked here: transformers would take a missing folder for a Hub repo id and fail obscurely.
            problem = "not a folder" if Path(self.model_path).exists() else "no such folder"
            return f"--model {self.model_path}: {problem} (give a local Hugging Face model folder)"
        if self.model_path is None and self.arch not in ARCHES:
            return f"unknown --arch {self.arch!r}; choose one of {', '.join(ARCHES)}"
        if self.dtype not in DTYPES:
            return f"unknown --dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}"
        if self.layers < 1:
            return "--layers must be at least 1"
        if self.tokens < 8:
            return "--tokens must be at least 8"
        if self.long_tokens is not None and self.long_tokens <= self.tokens:
            return f"--long-tokens ({self.long_tokens}) must exceed --tokens ({self.tokens})"
        if not self.ratios or any(not 0 <= r < 1 for r in self.ratios):
            return "--ratios must be compression ratios in [0, 1), e.g. 0.5,0.8,0.9"
        if self.decode_steps < 0:
            return "--decode-steps must be 0 or more"
        if self.timeout <= 0:
            return "--timeout must be positive"
        if self.memory_limit < 0:
            return "--memory-limit must not be negative"
        return None

    def model_key(self) -> tuple:
        """What the worker's model depends on: a shared session rebuilds it when this changes."""
        return (self.arch, self.layers, self.model_path, self.device, self.dtype, self.seed)

    @property
    def second_tokens(self) -> int:
        return self.long_tokens if self.long_tokens is not None else LONG_FACTOR * self.tokens

    def with_plan(self, tokens: int, long_tokens: int | None, ratios: tuple[float, ...], decode_steps: int,
                  seed: int) -> TraceOptions:
        """These options with another run plan (a shared worker may serve several; :class:`kvaudit.tracer.wire.Plan`)."""
        from dataclasses import replace

        return replace(self, tokens=tokens, long_tokens=long_tokens, ratios=tuple(ratios), decode_steps=decode_steps,
                       seed=seed)

    def plan_label(self) -> str:
        """One line: the prefills, the ratios and the decoding steps."""
        prefills = ", ".join(spec.label for spec in run_plan(self))
        ratios = ", ".join(f"{r:g}" for r in self.ratios)
        return (f"prefills (tokens×rows) {prefills} at compression ratios {ratios}, "
                f"each followed by {self.decode_steps} decoding steps")


@dataclass(frozen=True)
class RunSpec:
    """One prefill of the plan: its length, batch size and prompt seed.

    ``rows`` takes only these rows of a ``prompt_batch``-row prompt (a batch row run alone);
    ``rng_seed`` seeds torch's global generator before the run (default: ``seed``).
    """

    tokens: int
    batch: int
    seed: int
    rows: tuple[int, ...] | None = None
    prompt_batch: int | None = None
    rng_seed: int | None = None

    @property
    def label(self) -> str:
        return f"{self.tokens}×{self.batch}"




def probe_plan(plan: list[RunSpec]) -> list[tuple[str, RunSpec]]:
    """The probes of a run plan, each with its kind (:data:`REPEAT`, :data:`ALONE`)."""
    first = plan[0]
    probes = [(REPEAT, RunSpec(first.tokens, 1, first.seed, rng_seed=first.seed + 7919))]
    batch = next((spec for spec in plan if spec.batch > 1), None)
    if batch is not None:
        probes += [(ALONE, RunSpec(batch.tokens, 1, batch.seed, rows=(row,), prompt_batch=batch.batch))
                   for row in range(batch.batch)]
    return probes


def run_plan(options: TraceOptions) -> list[RunSpec]:
    """The prefills every press goes through, in order, on one press instance (per ratio).

    Why this order: the second prefill is longer than the first, so indices left over from the
    first stay in range and a stale cache keeps them silently instead of failing. The batch run
    has the first run's length but other prompts, so a selection that ignores the input can be
    told apart from one that reads row 0 only. With the defaults these are the catalogue's
    prompts: 512 and 4096 tokens, and batch 2 for the checks that are per row.
    """
    first = options.tokens
    return [
        RunSpec(tokens=first, batch=1, seed=options.seed),
        RunSpec(tokens=options.second_tokens, batch=1, seed=options.seed + 1),
        RunSpec(tokens=first, batch=2, seed=options.seed + 2),
    ]
