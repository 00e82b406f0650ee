"""One run of the tracer, in this process: state cleared between runs, decoding maps, re-rotated keys.

These call :func:`kvaudit.tracer.child.runner.observe_run` directly on a tiny model (torch in-process, so
slow to import); the worker does the same in its forked child.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("kvpress")

from kvpress import BasePress, KeyRerotationPress, KnormPress, SnapKVPress  # noqa: E402

from kvaudit.tinymodel import build_tiny_model, make_input_ids  # noqa: E402
from kvaudit.tracer.child.instrument import attention_modules  # noqa: E402
from kvaudit.tracer.options import RunSpec  # noqa: E402
from kvaudit.tracer.child.runner import RunSetup, observe_run  # noqa: E402
from kvaudit.tracer.child.settings import PressSettings  # noqa: E402

pytestmark = pytest.mark.slow
SPEC = RunSpec(tokens=96, batch=1, seed=3)


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return build_tiny_model("llama", layers=2, seed=0)


def setup(steps: int = 0, attention: str = "sdpa") -> RunSetup:
    return RunSetup(PressSettings("P"), capture_scores=True, facts=("window_size", "compression_ratio"),
                    decode_steps=steps, attention=attention)


def test_prompts_use_each_id_once_when_the_vocabulary_allows() -> None:
    ids = make_input_ids(4096, batch=2, seed=1)
    assert all(len(set(row.tolist())) == 4096 for row in ids) and not torch.equal(ids[0], ids[1])


def test_masks_left_by_an_earlier_run_are_cleared(model) -> None:
    # Eager attention never clears kvpress's masks: a mask left on the module by an earlier press
    # would read as "masked" in the next press's run.
    for module in attention_modules(model):
        module.masked_key_indices = (torch.zeros(10, dtype=torch.long), torch.zeros(10, dtype=torch.long),
                                     torch.arange(10))
    observation = observe_run(model, KnormPress(compression_ratio=0.5), SPEC, setup(attention="eager"))
    assert observation.ok, observation.error
    assert model.config._attn_implementation == "eager"
    for layer in observation.layers:
        assert layer.kept_lengths == ((48, 48),)  # every head keeps its 48, none masked by the stale mask
        assert layer.scores is not None and len(layer.scores[0][0]) == 96
    observe_run(model, KnormPress(compression_ratio=0.5), SPEC, setup())  # back to sdpa for the next tests
    assert model.config._attn_implementation == "sdpa"


@dataclass
class RollingPress(BasePress):
    """Cuts the cache back to its prefill size at every decoding step: the oldest entry goes."""

    compression_ratio: float = 0.5

    def forward_hook(self, module, input, kwargs, output):
        cache = kwargs["past_key_values"].layers[module.layer_idx]
        length = cache.keys.shape[2]
        keep = max(1, int(length * (1 - self.compression_ratio))) if kwargs["hidden_states"].shape[1] > 1 else length - 1
        cache.keys, cache.values = cache.keys[:, :, -keep:].contiguous(), cache.values[:, :, -keep:].contiguous()
        return output


def test_decoding_maps_compose_step_by_step(model) -> None:
    observation = observe_run(model, RollingPress(), SPEC, setup(steps=6))
    assert observation.ok and observation.decode_steps == 6 and observation.decode_error is None
    layer = observation.layers[0]
    assert layer.kept[0][0] == tuple(range(48, 96))
    assert [step.length for step in layer.decode] == [48] * 6
    # after 6 steps the window slid by 6: prompt positions 54..95, then the 6 generated tokens 96..101
    assert layer.decode[-1].kept[0][0] == tuple(range(54, 102))


def test_prefill_only_press_grows_while_decoding(model) -> None:
    observation = observe_run(model, SnapKVPress(compression_ratio=0.5, window_size=16), SPEC, setup(steps=5))
    assert [step.length for step in observation.layers[1].decode] == [49, 50, 51, 52, 53]
    assert observation.layers[1].decode[-1].kept[0][0][-5:] == (96, 97, 98, 99, 100)


def test_re_rotated_keys_map_to_the_same_positions_as_their_scorer(model) -> None:
    plain = observe_run(model, SnapKVPress(compression_ratio=0.5, window_size=16), SPEC, setup())
    rotated = observe_run(model, KeyRerotationPress(SnapKVPress(compression_ratio=0.5, window_size=16)), SPEC, setup())
    for a, b in zip(plain.layers, rotated.layers):
        assert b.kept == a.kept and b.unmatched == 0 and b.ambiguous == 0


def test_repeated_ids_make_value_matches_ambiguous_and_say_so(model) -> None:
    # 96 tokens of 4 ids: layer-0 values repeat, so re-rotated rows cannot all be placed
    repeated = RunSpec(tokens=96, batch=1, seed=0)
    press = KeyRerotationPress(SnapKVPress(compression_ratio=0.5, window_size=16))
    import kvaudit.tracer.child.runner as runner

    original = runner.make_input_ids
    runner.make_input_ids = lambda tokens, batch, seed, vocab: torch.arange(tokens).remainder(4).expand(batch, -1)
    try:
        observation = observe_run(model, press, repeated, setup())
    finally:
        runner.make_input_ids = original
    assert observation.layers[0].ambiguous > 0
