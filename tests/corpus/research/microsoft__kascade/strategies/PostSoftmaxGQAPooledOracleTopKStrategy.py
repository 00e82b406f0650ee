# kvaudit test corpus. Provenance: https://github.com/microsoft/kascade, src/strategies/PostSoftmaxGQAPooledOracleTopKStrategy.py,
# commit 76aea84d4216b538e001fab018cbc24894ce32c3.
# Licence: MIT, Copyright (c) Microsoft Corporation (the repository's LICENSE, and the file's own lines below:
# permission to copy and modify with the notice kept). Unchanged below this header.
# Verdict reached by reading the code (under the corpus's layer-index-reuse claim):
#   top-k per KV head group, on every layer; layer 0 keeps full attention. No reuse.
# expect: PostSoftmaxGQAPooledOracleTopKStrategy reuse=missing not-evidence=layer-group,index-cache
# Copyright (c) Microsoft Corporation.
# Licensed under the MIT License.

from .OracleTopkLayer0GlobalStrategy import OracleTopkLayer0GlobalStrategy
import torch
from .attention_utils import softmax_

class PostSoftmaxGQAPooledOracleTopKStrategy(OracleTopkLayer0GlobalStrategy):
    def __init__(self, name='post_softmax_gqa_pooled_oracle_topk', k=1, block_size=12288):
        super().__init__(name=name, k=k, block_size=block_size)

    def _get_head_count_for_stats(self, module):
        """Use key-value heads for statistics tracking in GQA."""
        return module.config.num_key_value_heads

    def _softmax_topk_sparsify_(self, attn_weights, attention_mask, module, k, is_decode, start, end):
        """
        Post-softmax GQA pooling: Apply softmax first, then pool and select top-k.
        """
        softmax_(attn_weights, dim=-1)
        B, H, Lq, Lk = attn_weights.shape
        attn_weights_per_khead = attn_weights.view(B, module.config.num_key_value_heads, module.num_key_value_groups, Lq, Lk).sum(dim=2)  # [B, G, Lq, Lk]
        indices = torch.topk(attn_weights_per_khead, k, dim=-1).indices  # [B, G, Lq, k]

        ### Stats collection
        if self._stats_runner is not None:
            self._stats_runner.update(is_decode, module.layer_idx, indices, attn_weights_per_khead)
        
        indices = indices.repeat_interleave(module.num_key_value_groups, dim=1)  # [B, H, Lq, k]
        values = attn_weights.gather(dim=3, index=indices)
        if module.layer_idx > 0: # Layer 0: No modification - keeps original softmax weights
            attn_weights.fill_(0)
            attn_weights.scatter_(3, indices, values)
            attn_weights.div_(attn_weights.sum(dim=-1, keepdim=True))
        
        return attn_weights