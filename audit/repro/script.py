"""Write one standalone reproduction: the press and the grid's cell, the harness, the paper's rule.

A script is plain Python that imports torch, transformers and kvpress only (never kvaudit): a
maintainer runs it without installing kvaudit. Its parts, in order:

* a docstring (the finding, how to run it, the versions it was written with);
* the constants of the cell kvaudit traced (the press's expression, ratio, prompt, attention);
* ``build_model()``, kvaudit's tiny model rebuilt from its config with the same seed;
* the harness (``harness.py`` beside this module, emitted verbatim: the same in every script; it is text
  for the scripts, never imported, since it reads their constants);
* the rule (``check(model, new_press)``), written by the claim's own module
  (:meth:`kvaudit.mechanism.Mechanism.repro_rule`) or, for a defect, by :mod:`kvaudit.repro.defects`.

Nothing here imports torch.
"""

from __future__ import annotations

import pprint
import textwrap
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from typing import Any

from ..defaults import TINY_MODEL, VOCAB_SIZE

# The transformers classes of each embedded architecture (kvaudit.tinymodel.ARCHES, by name: no import here).
ARCH_CLASSES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
}
HARNESS = "harness.py"


@dataclass(frozen=True)
class ModelSpec:
    """The model the trace ran on: the embedded tiny model (arch, layers, seed) or a local folder."""

    arch: str = "llama"
    layers: int = 8
    seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    path: str | None = None


@dataclass(frozen=True)
class Cell:
    """The cell of the grid a reproduction runs: one prompt (length, rows, seed) at one ratio.

    ``plan`` and ``ratios`` are the whole grid, for the defects that need the prefills in order on
    one press (a crash after earlier prefills, stale indices).
    """

    tokens: int
    batch: int
    seed: int
    ratio: float | None
    decode_steps: int = 0
    plan: tuple[tuple[int, int, int], ...] = ()  # (tokens, rows, seed) of each prefill, in order
    ratios: tuple[float | None, ...] = (None,)


@dataclass(frozen=True)
class Script:
    """Everything one reproduction script says."""

    press: str  # the press's class name
    finding: str  # a claim id, or a defect id
    title: str  # one line: "ChunkKVPress breaks chunk-selection (ChunkKV, arXiv 2502.00299)"
    rule_from: str  # the module the rule's code comes from: "kvaudit.rules.claim_chunk_selection"
    expression: str  # builds the press kvaudit traced, kvpress's names in scope
    module: str | None  # the press's own file, when it is not kvpress's (its names are in scope too)
    ratio_attribute: str | None  # the attribute the grid's ratio is set on (None: the press has none)
    cell: Cell
    rule: str  # the code that defines check(model, new_press)
    attention: str = "sdpa"
    also_attention: str | None = None  # another implementation the tracer also ran the first prompt under
    decode_inside: bool = True
    params: dict[str, Any] = field(default_factory=dict)
    model: ModelSpec = field(default_factory=ModelSpec)
    versions: str = ""
    filename: str = "repro.py"  # the script's own name, for its usage lines


@cache
def harness() -> str:
    """The shared helpers, as every script holds them."""
    return (files(__package__) / HARNESS).read_text(encoding="utf-8")


def model_code(model: ModelSpec) -> str:
    """``build_model()``: kvaudit's tiny model from its config (or the local folder the trace loaded)."""
    dtype = f"torch.{model.dtype}"
    if model.path is not None:
        return textwrap.dedent(f'''\
            def build_model():
                """The local model folder kvaudit traced (nothing is downloaded)."""
                model = transformers.AutoModelForCausalLM.from_pretrained(
                    {model.path!r}, local_files_only=True, dtype={dtype}, attn_implementation=ATTENTION)
                return model.to({model.device!r}).eval()
            ''')
    config_class, model_class = ARCH_CLASSES[model.arch]
    arguments = [f"num_hidden_layers={model.layers}", *(f"{key}={value!r}" for key, value in TINY_MODEL.items()),
                 "vocab_size=VOCAB_SIZE", "attn_implementation=ATTENTION"]
    indent = " " * 8
    shape = textwrap.fill(", ".join(arguments), width=110, initial_indent=indent, subsequent_indent=indent)
    return (f'def build_model():\n'
            f'    """kvaudit\'s tiny {model.arch}: built from a config, random weights drawn after '
            f'torch.manual_seed({model.seed})."""\n'
            f"    config = transformers.{config_class}(\n{shape})\n"
            f"    torch.manual_seed({model.seed})\n"
            f"    return transformers.{model_class}(config).to(device={model.device!r}, dtype={dtype}).eval()\n")


def _constant(name: str, value: Any, comment: str) -> str:
    text = repr(value) if isinstance(value, str) else pprint.pformat(value, width=100, sort_dicts=False)
    if isinstance(value, dict) and "\n" in text:  # one entry a line
        text = "{\n" + "".join(f"    {key!r}: {item!r},\n" for key, item in value.items()) + "}"
    line = f"{name} = {text}"
    if "\n" in text or len(line) + len(comment) + 4 > 118:
        return f"# {comment}\n{line}"
    return f"{line}  # {comment}"


def constants(script: Script) -> str:
    """The cell kvaudit traced, as named constants the harness and the rule read."""
    cell = script.cell
    vocab = (f"transformers.AutoConfig.from_pretrained({script.model.path!r}, local_files_only=True).vocab_size"
             if script.model.path is not None else repr(VOCAB_SIZE))
    lines = [
        _constant("PRESS", script.expression, "the press kvaudit traced (kvpress's names in scope)"),
        _constant("PRESS_MODULE", script.module, "the press's own file, when not kvpress's (its names in scope too)"),
        _constant("RATIO_ATTRIBUTE", script.ratio_attribute, "the grid sets its ratio on this attribute"),
        _constant("RATIO", cell.ratio, "the grid cell: its compression ratio (None: the press has none)"),
        _constant("TOKENS", cell.tokens, "its prompt: length"),
        _constant("BATCH", cell.batch, "rows"),
        _constant("PROMPT_SEED", cell.seed, "and seed"),
        _constant("ATTENTION", script.attention, "the attention implementation the press ran under"),
        _constant("ALSO_ATTENTION", script.also_attention,
                  "another one the tracer also ran the first prompt under (None: none)"),
        _constant("DECODE_STEPS", cell.decode_steps, "greedy decoding steps after a prefill"),
        _constant("DECODE_INSIDE", script.decode_inside, "decode inside `with press(model):`, as kvpress's pipeline"),
        _constant("PLAN", list(cell.plan), "the grid's prefills, in order on one press: (tokens, rows, seed)"),
        _constant("RATIOS", list(cell.ratios), "the grid's ratios, each on a fresh press"),
        _constant("PARAMS", script.params, "the paper's parameters, where the press has no setting of its own"),
        f"VOCAB_SIZE = {vocab}",
    ]
    return "\n".join(lines)


def docstring(script: Script) -> str:
    about = textwrap.fill(
        f"A standalone reproduction written by kvaudit ({script.versions}). It imports torch, transformers and "
        "kvpress only" + (" (and the press's own file, PRESS_MODULE)" if script.module else "") + ". It rebuilds kvaudit's tiny model from its config and seed, runs the press on the cell of "
        "kvaudit's grid that shows the finding, and checks the rule with the code that follows the constants "
        f"(written by {script.rule_from}).", width=110, subsequent_indent=" " * 8)
    return textwrap.dedent(f'''\
        """{script.title}

        {about}

            python {script.filename}                 # the press kvaudit traced
            python {script.filename} --press "EXPR"  # another press, e.g. a fixed one (kvpress's names in scope)

        It prints what the rule expects and what the press did (`expected`, `observed`), and exits 1 when
        the rule is broken, 0 when it holds (or does not apply), 2 when it cannot check (a bad --press).
        """
        ''')


def render(script: Script) -> str:
    """The whole script, as text."""
    parts = [
        "#!/usr/bin/env python3",
        docstring(script).rstrip("\n"),
        "",
        "import argparse\nimport contextlib\nimport importlib.util\nimport math\nimport os\nimport sys\n"
        "import traceback\n",
        'os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded\n',
        "import kvpress  # noqa: E402\nimport torch  # noqa: E402\nimport transformers  # noqa: E402\n"
        "from transformers import DynamicCache  # noqa: E402\n",
        "# -- what kvaudit traced " + "-" * 74,
        constants(script),
        "",
        "",
        model_code(script.model).rstrip("\n"),
        "",
        "",
        f"# -- the rule (written by {script.rule_from}) " + "-" * max(4, 68 - len(script.rule_from)),
        textwrap.dedent(script.rule).strip("\n"),
        "",
        "",
        harness().rstrip("\n"),
    ]
    return "\n".join(parts) + "\n"
