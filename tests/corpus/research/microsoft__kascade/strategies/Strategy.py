# kvaudit test corpus. Provenance: https://github.com/microsoft/kascade, src/strategies/Strategy.py,
# commit 76aea84d4216b538e001fab018cbc24894ce32c3.
# Licence: MIT, Copyright (c) Microsoft Corporation (the repository's LICENSE, and the file's own lines below:
# permission to copy and modify with the notice kept). Unchanged below this header.
# Verdict reached by reading the code (under the corpus's layer-index-reuse claim):
#   the base of every strategy: transformers calls `attention_forward` on each layer once a
#   strategy is registered in ALL_ATTENTION_FUNCTIONS (tests/corpus/kvaudit.toml declares it as a press base).
# Copyright (c) Microsoft Corporation.
# Licensed under the MIT License.

from typing import Optional
from torch import nn
import torch

class Strategy:
    def __init__(self, name: str):
        self.name = name
        self.register_attention()
    
    def register_attention(self):
        pass
    
    def attention_forward(
        self,
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        scaling: float,
        dropout: float = 0.0,
        **kwargs,
    ):
        pass
