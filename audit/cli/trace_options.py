"""Tracer options shared by ``trace``, ``check --trace`` and ``report``: declared once here.

Plain typer and stdlib: building options must not import torch.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..tracer.options import DEFAULT_TIMEOUT_S, DEFAULT_TOKENS, TraceOptions

PANEL = "Tracing (tiny local model, never downloads)"

PressExpr = Annotated[Optional[str], typer.Option(
    "--press", help='Build the press from this Python expression, e.g. "ChunkKVPress(SnapKVPress(0.5), 10)". '
    "It is evaluated (eval) in the tracer's worker: pass only trusted expressions.",
    rich_help_panel=PANEL)]
Arch = Annotated[str, typer.Option("--arch", help="Embedded tiny model: llama, qwen2, qwen3 or mistral.",
                                   rich_help_panel=PANEL)]
Layers = Annotated[int, typer.Option("--layers", help="Layers of the embedded tiny model.", rich_help_panel=PANEL)]
Tokens = Annotated[int, typer.Option("--tokens", help="First prefill length (the second is 1.5× longer).",
                                     rich_help_panel=PANEL)]
ModelPath = Annotated[Optional[str], typer.Option("--model", help="Local Hugging Face model folder (never downloads).",
                                                  rich_help_panel=PANEL)]
Device = Annotated[str, typer.Option("--device", help="Torch device.", rich_help_panel=PANEL)]
Dtype = Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.", rich_help_panel=PANEL)]
Timeout = Annotated[float, typer.Option("--timeout", help="Seconds allowed per press before it is killed.",
                                        rich_help_panel=PANEL)]
CompareReference = Annotated[bool, typer.Option(
    "--compare-reference", help="Also run the reference ChunkKVReusePress with the same scorer, ratio and chunk length.",
    rich_help_panel=PANEL)]

DEFAULTS = {"arch": "llama", "layers": 8, "tokens": DEFAULT_TOKENS, "device": "cpu", "dtype": "float32",
            "timeout": DEFAULT_TIMEOUT_S}


def trace_options(
    *, arch: str, layers: int, tokens: int, model: str | None, device: str, dtype: str, timeout: float,
    press: str | None, compare_reference: bool,
) -> TraceOptions:
    return TraceOptions(arch=arch, layers=layers, tokens=tokens, model_path=model, device=device, dtype=dtype,
                        timeout=timeout, press_expr=press, compare_reference=compare_reference)
