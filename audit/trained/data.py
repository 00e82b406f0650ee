"""Token windows for the tiny trained model: text windows and repeated random segments (numpy only).

The training script, the held-out prompts and the measurement helpers all draw their inputs here,
so that training, the recorded figures and later checks see the same kind of window: every window
starts with BOS, followed by a slice of the token stream (files joined, each followed by EOS).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# The special tokens of kvaudit's byte-level tokenizer (kvaudit.tinymodel.build_local_tokenizer),
# in its order: their ids are 0-3, so ordinary tokens are the ids from FIRST_ORDINARY_ID on.
UNK, BOS, EOS, PAD = "<unk>", "<bos>", "<eos>", "<pad>"
BOS_ID, EOS_ID, FIRST_ORDINARY_ID = 1, 2, 4
IGNORE = -100  # the label of a position that carries no loss (PyTorch's cross-entropy convention)


def token_stream(encoded_files: Iterable[Sequence[int]]) -> np.ndarray:
    """One int64 stream: each file's ids followed by EOS, files in the order given."""
    parts = [np.append(np.asarray(ids, dtype=np.int64), EOS_ID) for ids in encoded_files]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def text_windows(stream: np.ndarray, length: int, batch: int, rng: np.random.Generator) -> np.ndarray:
    """``batch`` windows of ``length`` ids: BOS, then ``length - 1`` ids from a random offset of ``stream``."""
    if length < 2 or stream.size < length - 1:
        raise ValueError(f"a window of {length} tokens needs a stream of at least {length - 1} tokens (has {stream.size})")
    starts = rng.integers(0, stream.size - (length - 1) + 1, size=batch)
    windows = np.empty((batch, length), dtype=np.int64)
    windows[:, 0] = BOS_ID
    for row, start in enumerate(starts):
        windows[row, 1:] = stream[start:start + length - 1]
    return windows


def synthetic_ids(vocab_size: int, seed: int) -> np.ndarray:
    """All ordinary token ids in a fixed random order: a prefix of it is a small synthetic vocabulary.

    Taking prefixes keeps every small vocabulary a subset of the larger ones.
    """
    return np.random.default_rng(seed).permutation(np.arange(FIRST_ORDINARY_ID, vocab_size, dtype=np.int64))


@dataclass(frozen=True)
class Repeated:
    """Rows of repeated random segments and what they let a model predict."""

    input_ids: np.ndarray  # (batch, length): BOS, then segment, segment, ... (cut at length)
    labels: np.ndarray  # next-token targets; IGNORE where the target cannot be known from the context
    segment_lengths: np.ndarray  # (batch,)


def repeated_segments(
    length: int,
    batch: int,
    rng: np.random.Generator,
    vocab: np.ndarray,
    segment: tuple[int, int],
) -> Repeated:
    """Rows ``BOS s s s ...`` of a random segment ``s`` of distinct ids from ``vocab``, repeated to fill ``length``.

    A segment length is drawn per row from ``segment`` (inclusive). Labels follow the model's
    convention (position ``p`` predicts ``input_ids[p + 1]``) and are IGNORE for the first copy and
    its next token: only a token whose predecessor occurred before can be predicted (by copying
    what followed that earlier occurrence, which is what an induction head does).
    """
    low, high = segment
    if not 1 <= low <= high or high > vocab.size:
        raise ValueError(f"segment lengths {segment} must lie in 1..{vocab.size}")
    input_ids = np.empty((batch, length), dtype=np.int64)
    labels = np.full((batch, length), IGNORE, dtype=np.int64)
    lengths = rng.integers(low, high + 1, size=batch)
    for row, seg_len in enumerate(lengths):
        seg = rng.choice(vocab, size=seg_len, replace=False)
        input_ids[row, 0] = BOS_ID
        input_ids[row, 1:] = np.resize(seg, length - 1)
        # The token at position p (>= 1) is seg[(p - 1) % L]; a target at p + 1 is predictable when
        # the token at p occurred before, i.e. p >= L + 1.
        labels[row, seg_len + 1:length - 1] = input_ids[row, seg_len + 2:]
    return Repeated(input_ids, labels, lengths)


def spaced_copies(
    length: int,
    batch: int,
    rng: np.random.Generator,
    vocab: np.ndarray,
    segment: tuple[int, int],
) -> Repeated:
    """Rows ``BOS f1 s f2 s f3``: a random segment ``s`` twice, at random places, amid filler ``f``.

    ``s`` holds distinct ids from ``vocab`` (its length drawn from ``segment``); the filler holds
    ids from ``vocab`` that are not in ``s``, so the first copy is the only earlier occurrence of a
    token of the second. The distance between the copies varies from row to row: no fixed-offset
    attention predicts the second copy (with copies back to back, heads at fixed offsets did, and
    never generalised), only attention to what followed the earlier occurrence. Labels as in
    :func:`repeated_segments`: the tokens of the second copy after its first.
    """
    low, high = segment
    if not 1 <= low <= high or 2 * high + 1 > length or high >= vocab.size:
        raise ValueError(f"segment lengths {segment} do not fit twice in {length} tokens and {vocab.size} ids")
    input_ids = np.empty((batch, length), dtype=np.int64)
    labels = np.full((batch, length), IGNORE, dtype=np.int64)
    lengths = rng.integers(low, high + 1, size=batch)
    for row, seg_len in enumerate(lengths):
        shuffled = rng.permutation(vocab)
        seg, rest = shuffled[:seg_len], shuffled[seg_len:]
        input_ids[row, 0] = BOS_ID
        input_ids[row, 1:] = rng.choice(rest, size=length - 1)
        spare = length - 1 - 2 * seg_len  # filler tokens, split at two random cuts
        first_gap, second_gap = np.sort(rng.integers(0, spare + 1, size=2))
        first = 1 + first_gap
        second = first + seg_len + (second_gap - first_gap)
        input_ids[row, first:first + seg_len] = seg
        input_ids[row, second:second + seg_len] = seg
        labels[row, second:second + seg_len - 1] = seg[1:]
    return Repeated(input_ids, labels, lengths)


def next_token_labels(windows: np.ndarray) -> np.ndarray:
    """Labels for plain text windows: every position predicts the next id; the last predicts nothing."""
    labels = np.full_like(windows, IGNORE)
    labels[:, :-1] = windows[:, 1:]
    return labels
