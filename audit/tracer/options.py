"""What a trace is run with: the model, the prefills and the limits.

Plain stdlib so that the CLI and ``kvaudit check`` can build options without importing torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

ARCHES = ("llama", "qwen2", "qwen3", "mistral")
DTYPES = ("float32", "bfloat16", "float16")

# Default first-prefill length. Long enough that SnapKV's 64-token observation window is a small
# part of the kept budget: at 256 tokens, kvpress's ChunkKV on random weights keeps the very same
# chunks on several adjacent layers by coincidence, which would look like index sharing.
DEFAULT_TOKENS = 512
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_SEED = 0


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
        Length of the first prefill; the second is 1.5 times longer; the batch run uses ``tokens``.
    model_path : str | None
        A local Hugging Face folder to load instead of the embedded model (never downloads).
    device : str
        Torch device, ``cpu`` by default.
    dtype : str
        float32, bfloat16 or float16.
    timeout : float
        Seconds one press may take (build, prefills and checks) before it is killed.
    press_expr : str | None
        An expression that builds the press, evaluated with kvpress's and the module's names.
    compare_reference : bool
        Also trace ``kvaudit.reference.ChunkKVReusePress`` with the same scorer, ratio and chunk length.
    seed : int
        Seed of the embedded model's weights and of the prompt tokens.
    """

    arch: str = "llama"
    layers: int = 8
    tokens: int = DEFAULT_TOKENS
    model_path: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    timeout: float = DEFAULT_TIMEOUT_S
    press_expr: str | None = None
    compare_reference: bool = False
    seed: int = DEFAULT_SEED
    # Extra environment for the worker (tests use it); HF_HUB_OFFLINE=1 is always set.
    worker_env: dict[str, str] = field(default_factory=dict)

    def validate(self) -> str | None:
        """Return a one-line reason when the options are unusable, else None."""
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
        if self.timeout <= 0:
            return "--timeout must be positive"
        return None

    def to_wire(self) -> dict:
        """The options as sent to the worker (JSON-safe)."""
        return asdict(self)


@dataclass(frozen=True)
class RunSpec:
    """One prefill of the plan: its length, batch size and prompt seed."""

    tokens: int
    batch: int
    seed: int

    @property
    def label(self) -> str:
        return f"{self.tokens}×{self.batch}"


def run_plan(options: TraceOptions) -> list[RunSpec]:
    """The prefills every press goes through, in order, on one press instance.

    Why this order: the second prefill is longer than the first, so indices left over from the
    first stay in range and a stale cache keeps them silently instead of failing. The batch run
    has the first run's length but other prompts, so a selection that ignores the input can be
    told apart from one that reads row 0 only.
    """
    first = options.tokens
    return [
        RunSpec(tokens=first, batch=1, seed=options.seed),
        RunSpec(tokens=first + first // 2, batch=1, seed=options.seed + 1),
        RunSpec(tokens=first, batch=2, seed=options.seed + 2),
    ]
