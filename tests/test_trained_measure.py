"""The attention measurements of kvaudit.trained.measure and the windows of kvaudit.trained.data,
checked against attention whose figures are known: uniform (zeroed query and key weights) and
hand-built maps."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kvaudit.tinymodel import build_tiny_model  # noqa: E402
from kvaudit.trained import data, measure  # noqa: E402


@pytest.fixture(scope="module")
def uniform_model():
    """A random tiny Llama whose queries and keys are zero: every query attends uniformly to its past."""
    torch.set_num_threads(1)
    model = build_tiny_model("llama", layers=2, seed=0)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.zero_()
            layer.self_attn.k_proj.weight.zero_()
    return model


def test_uniform_attention_gives_the_uniform_figures(uniform_model) -> None:
    ids = torch.randint(4, 4096, (2, 200), generator=torch.Generator().manual_seed(0))
    stats = measure.attention_stats(uniform_model, ids, window=64)
    assert stats.locality.shape == stats.sink.shape == (2, 4)
    assert np.allclose(stats.locality, stats.locality_uniform, atol=1e-6)
    assert np.allclose(stats.sink, stats.sink_uniform, atol=1e-6)
    # Independently: queries 64..199, each sees q + 1 keys.
    q = np.arange(64, 200)
    assert stats.locality_uniform == pytest.approx(np.mean(64 / (q + 1)))
    assert stats.sink_uniform == pytest.approx(np.mean(1 / (q + 1)))
    assert stats.sink_heads() == []
    induction = measure.induction_stats(uniform_model, segment=16, rows=2)
    assert np.allclose(induction.score, induction.uniform, atol=1e-6)
    assert induction.uniform == pytest.approx(np.mean(1 / (np.arange(17, 33) + 1)))
    assert induction.chance_loss == pytest.approx(math.log(4092)) and induction.induction_heads() == []
    # The attention implementation is restored afterwards.
    assert uniform_model.config._attn_implementation == "sdpa"


def _maps(length: int, rule) -> list[torch.Tensor]:
    """One layer, one head: row q of the map puts all its weight on key rule(q)."""
    m = torch.zeros(1, length, length, dtype=torch.float64)
    for q in range(length):
        m[0, q, rule(q)] = 1.0
    return [m]


def test_hand_built_maps_give_the_expected_figures() -> None:
    segment = 8
    induction = _maps(2 * segment + 1, lambda q: q - segment + 1 if q > segment else 0)
    assert measure.induction_score(induction, segment).tolist() == [[1.0]]
    off_by_one = _maps(2 * segment + 1, lambda q: q - segment if q > segment else 0)  # the earlier occurrence itself
    assert measure.induction_score(off_by_one, segment).tolist() == [[0.0]]
    sink = _maps(100, lambda q: 0)
    assert measure.sink_mass(sink, 10).tolist() == [[1.0]]
    assert measure.locality_share(sink, 16, 16).tolist() == [[0.0]]  # position 0 lies outside the last 16
    previous = _maps(100, lambda q: max(q - 1, 0))
    assert measure.locality_share(previous, 2, 16).tolist() == [[1.0]]
    assert measure.locality_share(_maps(100, lambda q: max(q - 2, 0)), 2, 16).tolist() == [[0.0]]


def test_a_head_shows_a_structure_only_with_enough_mass_and_far_above_uniform() -> None:
    stats = measure.AttentionStats(locality=np.zeros((2, 2)), locality_uniform=0.2,
                                   sink=np.array([[0.5, 0.19], [0.05, 0.25]]), sink_uniform=0.003,
                                   window=64, min_query=64, rows=1)
    assert stats.sink_heads() == [(0, 0), (1, 1)]  # 0.19 is under the mass bar; 0.05 is 17x uniform, still no sink
    short = measure.InductionStats(score=np.array([[0.3, 0.9]]), uniform=0.05, copy_accuracy=0.0, copy_loss=0.0,
                                   chance_loss=1.0, segment=4, rows=1)
    assert short.induction_heads() == [(0, 1)]  # 0.3 is only 6x uniform on a short row


def test_next_token_loss_matches_a_float64_cross_entropy(uniform_model) -> None:
    ids = torch.randint(4, 4096, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = uniform_model(input_ids=ids).logits.double()
    expected = -torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).mean().item()
    assert measure.next_token_loss(uniform_model, ids, batch_size=2) == pytest.approx(expected, rel=1e-9)


def test_repeated_segments_label_only_what_an_earlier_occurrence_predicts() -> None:
    rep = data.repeated_segments(40, 6, np.random.default_rng(0), np.arange(10, 60), (2, 12))
    for ids, labels, seg_len in zip(rep.input_ids, rep.labels, rep.segment_lengths):
        assert ids[0] == data.BOS_ID and len(set(ids[1:seg_len + 1].tolist())) == seg_len
        for p in range(len(ids) - 1):
            seen_before = [j for j in range(1, p) if ids[j] == ids[p]]
            if labels[p] == data.IGNORE:
                assert not seen_before
            else:
                assert labels[p] == ids[p + 1] and all(ids[j + 1] == labels[p] for j in seen_before)
        assert labels[-1] == data.IGNORE


def test_spaced_copies_put_one_earlier_occurrence_at_a_varying_distance() -> None:
    rep = data.spaced_copies(48, 40, np.random.default_rng(0), np.arange(10, 74), (3, 12))
    distances = set()
    for ids, labels, seg_len in zip(rep.input_ids, rep.labels, rep.segment_lengths):
        assert ids[0] == data.BOS_ID
        labelled = [p for p in range(len(ids)) if labels[p] != data.IGNORE]
        assert len(labelled) == seg_len - 1 and labelled == list(range(labelled[0], labelled[0] + seg_len - 1))
        for p in labelled:
            [earlier] = [j for j in range(1, p) if ids[j] == ids[p]]  # the first copy only: filler avoids s
            assert ids[earlier + 1] == labels[p] == ids[p + 1]
            distances.add(p - earlier)
    assert len(distances) > 10  # no fixed offset predicts the second copy
    with pytest.raises(ValueError, match="do not fit twice"):
        data.spaced_copies(20, 1, np.random.default_rng(0), np.arange(10, 74), (3, 10))


def test_text_windows_start_with_bos_and_are_slices_of_the_stream() -> None:
    stream = data.token_stream([[5, 6, 7], [8, 9]])
    assert stream.tolist() == [5, 6, 7, data.EOS_ID, 8, 9, data.EOS_ID]
    windows = data.text_windows(stream, 4, 5, np.random.default_rng(0))
    for row in windows:
        assert row[0] == data.BOS_ID
        assert any(stream[i:i + 3].tolist() == row[1:].tolist() for i in range(len(stream) - 2))
    with pytest.raises(ValueError, match="needs a stream of at least 9 tokens"):
        data.text_windows(stream, 10, 1, np.random.default_rng(0))
