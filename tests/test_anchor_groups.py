"""Layer groups named by anchor layers (issue 15): what the evidence says about them.

The corpus (tests/test_corpus.py) checks the verdicts; these tests check the words: a configured
list of anchor layers is a layer group, or configuration, never "per-layer state"; a container the
layers write is per-layer state, never a layer group."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from helpers import TESTS

from kvaudit.config import load_config
from kvaudit.engine import CheckOptions, run_check
from kvaudit.model import LAYER_INDEX_REUSE

CORPUS = TESTS / "corpus"


def _options() -> CheckOptions:
    config = load_config(CORPUS / "kvaudit.toml")
    return CheckOptions(forced_claims=[LAYER_INDEX_REUSE], claim_overrides=config.claim_overrides,
                        config_root=config.root, press_bases=tuple(config.press_bases))


@pytest.fixture(scope="module")
def kascade() -> dict:
    result = run_check([str(CORPUS / "research" / "microsoft__kascade")], _options())
    assert not result.has_errors, result.files  # KascadeStrategy.py is Python 3.12 syntax
    return {p.name: p for p in result.presses}


@pytest.mark.parametrize("name", ["KascadeStrategy", "OmniKVStrategy", "LessIsMoreStrategy"])
def test_a_configured_anchor_list_is_a_layer_group_not_per_layer_state(kascade, name: str) -> None:
    press = kascade[name]
    details = [e.detail for e in press.evidence]
    assert press.verdicts[LAYER_INDEX_REUSE] == "implemented"
    assert not [d for d in details if "per-layer state" in d and "not per-layer state" not in d], details
    groups = [d for d in details if "(layer-group test)" in d and "self.recompute_layers" in d]
    assert groups and all("select (`torch.topk(...)`" in d and "without selecting" in d for d in groups), details
    assert any(e.kind == "reuse-parameter" and "field `recompute_layers` (configuration, not per-layer state)"
               in e.detail for e in press.evidence), details
    assert not [f for f in press.findings if f.rule in ("KVA101", "KVA102")]


def test_a_literal_list_that_only_keeps_layers_dense_is_no_group(kascade) -> None:
    quest = kascade["QuestStrategy"]
    [check] = [e for e in quest.evidence if "module.layer_idx in [0" in e.detail]
    assert check.detail.endswith("(plain layer-position test, not a reuse group)")


def test_a_statistics_object_is_no_index_cache(kascade) -> None:
    """`self._stats_runner.update(is_decode, layer_idx, indices, ...)` hands indices to an object no layer
    fetches from; `self._stats_runner is not None` looks at the object, it is no layer test."""
    oracle = kascade["OracleTopkStrategy"]
    assert [e for e in oracle.evidence if "_stats_runner" in e.detail] == []


def _press(tmp_path: Path, code: str, name: str):
    path = tmp_path / "press.py"
    path.write_text(textwrap.dedent(code), encoding="utf-8")
    result = run_check([str(path)], CheckOptions(forced_claims=[LAYER_INDEX_REUSE]))
    assert not result.has_errors, result.files
    return next(p for p in result.presses if p.name == name)


HEAD = '''
    from dataclasses import dataclass, field

    import torch
    from kvpress.presses.base_press import BasePress
    from kvpress.presses.scorer_press import ScorerPress

'''


def test_the_same_membership_test_on_a_container_the_layers_write_is_state(tmp_path: Path) -> None:
    press = _press(tmp_path, HEAD + '''
    @dataclass
    class Memo(BasePress):
        press: ScorerPress = None
        anchors: dict = field(default_factory=dict)

        def compress(self, module, hidden_states, keys, values, attentions, kwargs):
            if module.layer_idx not in self.anchors:
                scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
                self.anchors[module.layer_idx] = scores.topk(8, dim=-1).indices
            index = self.anchors[module.layer_idx].unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
            return keys.gather(2, index), values.gather(2, index)
    ''', "Memo")
    assert press.verdicts[LAYER_INDEX_REUSE] == "missing"
    [check] = [e for e in press.evidence if e.kind == "layer-check"]
    assert check.detail.endswith("(tests per-layer state `self.anchors`, not a layer group)")


@pytest.mark.parametrize("follower", [
    "keys = keys * self.keep[..., None]",  # the mask applied
    "keys = keys.masked_fill(~self.keep[..., None], 0)",
])
def test_a_selection_kept_as_a_mask_is_reused(tmp_path: Path, follower: str) -> None:
    press = _press(tmp_path, HEAD + f'''
    @dataclass
    class MaskReuse(BasePress):
        press: ScorerPress = None
        select_layers: tuple = (0, 12)

        def compress(self, module, hidden_states, keys, values, attentions, kwargs):
            if module.layer_idx in self.select_layers:
                scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
                top = scores.topk(8, dim=-1).indices
                self.keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, top, True)
            else:
                {follower}
            return keys, values
    ''', "MaskReuse")
    assert press.verdicts[LAYER_INDEX_REUSE] == "implemented"
    assert any(e.kind == "index-cache" and "keeps a selection mask" in e.detail for e in press.evidence)


def test_an_anchor_test_whose_followers_still_score_is_partial(tmp_path: Path) -> None:
    press = _press(tmp_path, HEAD + '''
    @dataclass
    class StillScores(BasePress):
        press: ScorerPress = None
        anchors: tuple = (0, 16)

        def compress(self, module, hidden_states, keys, values, attentions, kwargs):
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
            if module.layer_idx in self.anchors:
                self.kept = scores.topk(8, dim=-1).indices
            index = self.kept.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
            return keys.gather(2, index), values.gather(2, index)
    ''', "StillScores")
    assert press.verdicts[LAYER_INDEX_REUSE] == "partial"
    [finding] = [f for f in press.findings if f.rule == "KVA102"]
    assert "is not behind a layer-group test, so follower layers still score" in finding.message
    assert "no constructor field sets the layer group" not in finding.message  # `anchors` does


def test_asking_whether_there_is_a_layer_index_is_no_anchor_test(tmp_path: Path) -> None:
    """`module.layer_idx is not None` holds on every layer: it does not pick layers, so the layers that
    pass it are not anchors (the press scores on every layer and reads its own last selection)."""
    press = _press(tmp_path, HEAD + '''
    @dataclass
    class HasIndex(BasePress):
        press: ScorerPress = None

        def compress(self, module, hidden_states, keys, values, attentions, kwargs):
            if module.layer_idx is not None:
                scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
                self.kept = scores.topk(8, dim=-1).indices
            index = self.kept.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
            return keys.gather(2, index), values.gather(2, index)
    ''', "HasIndex")
    assert press.verdicts[LAYER_INDEX_REUSE] != "implemented"
    assert not [e for e in press.evidence if "(layer-group test)" in e.detail]
