"""ChunkKVReusePress on tiny random models: kvpress equivalence, reuse pattern, state, batches, models.

Kept indices are recovered independently of the press: a prefill without a press gives each layer's
full keys (the hook runs after attention, so compression never changes later layers' keys), and each
kept key vector is matched to its position among them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("kvpress")

from kvpress import ChunkKVPress, KnormPress, SnapKVPress  # noqa: E402
from transformers import DynamicCache  # noqa: E402

from kvaudit.reference import ChunkKVReusePress  # noqa: E402
from kvaudit.tinymodel import build_tiny_model, make_input_ids  # noqa: E402

LAYERS = 7  # not divisible by 2, 3 or 4


@pytest.fixture(scope="module")
def model():
    torch.set_grad_enabled(False)
    return build_tiny_model("llama", layers=LAYERS, seed=0)


def prefill(model, press, ids, cache=None):
    cache = DynamicCache() if cache is None else cache
    with torch.no_grad():
        if press is None:
            model.model(input_ids=ids, past_key_values=cache)
        else:
            with press(model):
                model.model(input_ids=ids, past_key_values=cache)
    return cache


def kept_indices(full: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Positions (batch, heads, n_kept) of the kept key vectors among a layer's full keys."""
    match = (kept.unsqueeze(3) == full.unsqueeze(2)).all(-1)  # (batch, heads, n_kept, kv_len)
    assert bool((match.sum(-1) == 1).all()), "a kept key matches no position (or several)"
    return match.to(torch.int8).argmax(-1)


def layer_indices(model, press, ids):
    full = prefill(model, None, ids)
    comp = prefill(model, press, ids)
    return [kept_indices(f.keys, c.keys) for f, c in zip(full.layers, comp.layers)]


def record_score_calls(scorer):
    calls: list[int] = []
    score = scorer.score

    def recording(module, *args, **kwargs):
        calls.append(module.layer_idx)
        return score(module, *args, **kwargs)

    scorer.score = recording
    return calls


# ---------------------------------------------------------------- equivalence with kvpress


EQUIVALENCE_CASES = [
    (scorer, chunk_length, kv_len)
    for scorer in ("snapkv", "knorm")
    for chunk_length in (7, 10, 20)
    for kv_len in (5, 60, 100, 105, 123)
    if not (scorer == "snapkv" and kv_len <= 8)  # SnapKV needs more tokens than its window
]


@pytest.mark.parametrize("scorer,chunk_length,kv_len", EQUIVALENCE_CASES)
def test_matches_kvpress_chunkkv_exactly_without_reuse_window_or_batch(model, scorer, chunk_length, kv_len):
    # 5 tokens: no complete chunk (kvpress delegates to the scorer); 105 and 123: partial tail chunks.
    def make():
        return SnapKVPress(0.5, window_size=8) if scorer == "snapkv" else KnormPress(0.6)

    ids = make_input_ids(kv_len, seed=kv_len)
    theirs = prefill(model, ChunkKVPress(make(), chunk_length=chunk_length), ids)
    ours = prefill(model, ChunkKVReusePress(make(), chunk_length=chunk_length, n_reuse=1, window_size=0), ids)
    for layer, (a, b) in enumerate(zip(theirs.layers, ours.layers)):
        assert a.keys.shape[2] < kv_len or kv_len < 2, "nothing was compressed"
        assert torch.equal(a.keys, b.keys), f"layer {layer}: kept keys differ"
        assert torch.equal(a.values, b.values), f"layer {layer}: kept values differ"


# ---------------------------------------------------------------- Algorithm 2


@pytest.mark.parametrize("n_reuse", [1, 2, 3, 4])
def test_only_group_leaders_score_and_followers_reuse_their_indices(model, n_reuse):
    scorer = SnapKVPress(0.5, window_size=8)
    calls = record_score_calls(scorer)
    press = ChunkKVReusePress(scorer, chunk_length=10, n_reuse=n_reuse)
    ids = make_input_ids(123, seed=3)
    idx = layer_indices(model, press, ids)
    assert calls == [layer for layer in range(LAYERS) if layer % n_reuse == 0]
    for layer in range(LAYERS):
        leader = layer // n_reuse * n_reuse
        assert torch.equal(idx[layer], idx[leader]), f"layer {layer} does not keep leader {leader}'s indices"
    # A leader keeps what a press without reuse keeps on the same layer.
    alone = layer_indices(model, ChunkKVReusePress(SnapKVPress(0.5, window_size=8), n_reuse=1), ids)
    for leader in range(0, LAYERS, n_reuse):
        assert torch.equal(idx[leader], alone[leader])


def test_reuse_actually_changes_followers(model):
    # Guards the test above against a model whose layers all keep the same indices anyway.
    ids = make_input_ids(123, seed=3)
    alone = layer_indices(model, ChunkKVReusePress(SnapKVPress(0.5, window_size=8), n_reuse=1), ids)
    reused = layer_indices(model, ChunkKVReusePress(SnapKVPress(0.5, window_size=8), n_reuse=2), ids)
    differ = [layer for layer in range(1, LAYERS, 2) if not torch.equal(alone[layer], reused[layer])]
    assert differ, "no follower changed: the model cannot tell reuse from no reuse"


@pytest.mark.parametrize(
    "second",
    [dict(tokens=97, batch=1, seed=11), dict(tokens=150, batch=2, seed=12), dict(tokens=123, batch=1, seed=13)],
)
def test_consecutive_prefills_do_not_leak_state(model, second):
    press = ChunkKVReusePress(SnapKVPress(0.5, window_size=8), n_reuse=3)
    first_ids = make_input_ids(123, seed=3)
    second_ids = make_input_ids(second["tokens"], batch=second["batch"], seed=second["seed"])
    first = prefill(model, press, first_ids)
    again = prefill(model, press, second_ids)  # same press instance, right after
    fresh = prefill(model, ChunkKVReusePress(SnapKVPress(0.5, window_size=8), n_reuse=3), second_ids)
    for a, b in zip(again.layers, fresh.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    # ...and the first prefill was itself correct.
    ref = prefill(model, ChunkKVReusePress(SnapKVPress(0.5, window_size=8), n_reuse=3), first_ids)
    assert all(torch.equal(a.keys, b.keys) for a, b in zip(first.layers, ref.layers))


def test_prefills_inside_one_context_manager_do_not_leak_state(model):
    press = ChunkKVReusePress(SnapKVPress(0.5, window_size=8), n_reuse=2)
    inputs = [make_input_ids(123, seed=3), make_input_ids(123, seed=4), make_input_ids(90, batch=2, seed=5)]
    caches = [DynamicCache() for _ in inputs]
    with press(model):  # the state is not reset between these forward passes by the context manager
        for ids, cache in zip(inputs, caches):
            model.model(input_ids=ids, past_key_values=cache)
    for ids, cache in zip(inputs, caches):
        fresh = prefill(model, ChunkKVReusePress(SnapKVPress(0.5, window_size=8), n_reuse=2), ids)
        assert all(torch.equal(a.keys, b.keys) for a, b in zip(cache.layers, fresh.layers))


def test_state_is_dropped_outside_the_context_manager(model):
    press = ChunkKVReusePress(SnapKVPress(0.5, window_size=8), n_reuse=2)
    prefill(model, press, make_input_ids(80))
    assert press._states == {}


# ---------------------------------------------------------------- batches


def test_rows_of_a_batch_choose_their_own_chunks(model):
    scorer = SnapKVPress(0.5, window_size=8)
    seen = []
    score = scorer.score
    scorer.score = lambda module, *a, **k: seen.append(score(module, *a, **k)) or seen[-1]
    press = ChunkKVReusePress(scorer, chunk_length=10, n_reuse=2)
    ids = make_input_ids(120, batch=3, seed=5)
    idx = layer_indices(model, press, ids)
    for layer in range(0, LAYERS, 2):
        rows = {tuple(idx[layer][row, 0].tolist()) for row in range(3)}
        assert len(rows) == 3, f"layer {layer}: rows share their chunks"
        assert all(bool((idx[layer][:, h] == idx[layer][:, 0]).all()) for h in range(idx[layer].shape[1]))
        # Each row keeps what the rule selects from that row's own scores alone.
        scores = seen[layer // 2]
        for row in range(3):
            assert idx[layer][row, 0].tolist() == press.select(scores[row : row + 1])[0, 0].tolist()


def test_identical_rows_choose_identical_chunks(model):
    ids = make_input_ids(123, seed=6).expand(3, -1).contiguous()
    idx = layer_indices(model, ChunkKVReusePress(SnapKVPress(0.5, window_size=8), n_reuse=2), ids)
    for layer_idx in idx:
        assert torch.equal(layer_idx[0], layer_idx[1]) and torch.equal(layer_idx[0], layer_idx[2])


# ---------------------------------------------------------------- models, caches, pipeline


def expected_kept(kv_len: int, c: int, ratio: float, window: int) -> int:
    n_chunks = -(-kv_len // c)
    k = max(max(1, int(n_chunks * (1 - ratio))), n_chunks - (kv_len - window) // c)
    return k * c - (c - kv_len % c) % c


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "mistral"])
def test_runs_on_each_supported_architecture(arch):
    model = build_tiny_model(arch, layers=3, seed=1)
    ids = make_input_ids(95, batch=2, seed=7)
    cache = prefill(model, ChunkKVReusePress(SnapKVPress(0.5, window_size=16), n_reuse=2), ids)
    assert [layer.keys.shape[2] for layer in cache.layers] == [expected_kept(95, 10, 0.5, 16)] * 3
    # Decoding continues on the compressed cache.
    out = model(input_ids=ids[:, :1], past_key_values=cache, position_ids=torch.full((2, 1), 95))
    assert torch.isfinite(out.logits).all()


def test_eager_attention_is_supported():
    # kvpress's ChunkKVPress asserts under eager attention; the scorer can use the weights.
    model = build_tiny_model("llama", layers=2, attn_implementation="eager")
    cache = prefill(model, ChunkKVReusePress(SnapKVPress(0.5, window_size=8)), make_input_ids(64))
    assert cache.layers[0].keys.shape[2] == expected_kept(64, 10, 0.5, 8)


def _quantized_backend() -> str | None:
    if importlib.util.find_spec("optimum") and importlib.util.find_spec("optimum.quanto"):
        return "quanto"
    if importlib.util.find_spec("hqq"):
        return "hqq"
    return None


@pytest.mark.skipif(
    _quantized_backend() is None,
    reason="QuantizedCache needs optimum-quanto or hqq; neither is installed (pip install optimum-quanto)",
)
def test_quantized_cache(model, monkeypatch):
    from transformers import QuantizedCache

    if _quantized_backend() == "quanto":
        # quanto's CPU unpack kernel is C++ compiled on first use (about 23 s on 2 cores, once per
        # environment): use quanto's own Python implementation of the same op instead. This test is
        # about the reference press on a quantized cache, not about quanto's kernels.
        from types import SimpleNamespace

        from optimum.quanto.library.extensions import get_extension

        portable = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)  # quanto's "default"

        def unpack(packed, bits):
            return torch.ops.quanto.unpack.default.redispatch(portable, packed, bits)

        monkeypatch.setattr(get_extension("quanto_cpp"), "_lib", SimpleNamespace(unpack=unpack))

    cache = QuantizedCache(backend=_quantized_backend(), config=model.config, nbits=4, residual_length=16)
    ids = make_input_ids(123, seed=8)
    prefill(model, ChunkKVReusePress(SnapKVPress(0.5, window_size=8), n_reuse=2), ids, cache=cache)
    want = expected_kept(123, 10, 0.5, 8)
    assert cache.get_seq_length() == want
    assert all(layer._quantized_keys is not None for layer in cache.layers)
    out = model(input_ids=ids[:, :1], past_key_values=cache, position_ids=torch.full((1, 1), 123))
    assert torch.isfinite(out.logits).all()


def test_kvpress_pipeline_with_a_local_tokenizer(model, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from kvpress.pipeline import KVPressTextGenerationPipeline

    from kvaudit.tinymodel import build_local_tokenizer

    tokenizer = build_local_tokenizer()
    pipe = KVPressTextGenerationPipeline(model=model, tokenizer=tokenizer, device="cpu")
    scorer = SnapKVPress(0.5, window_size=8)
    calls = record_score_calls(scorer)
    context = "The key-value cache stores keys and values of past tokens. " * 8
    cache = DynamicCache()
    result = pipe(context, question="What does the cache store?", press=ChunkKVReusePress(scorer), cache=cache,
                  max_new_tokens=3)
    assert isinstance(result["answer"], str)
    assert calls == [0, 2, 4, 6]
    n_context = len(tokenizer.encode(tokenizer.bos_token + context, add_special_tokens=False))
    assert cache.get_seq_length() == expected_kept(n_context, 10, 0.5, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_tensors_stay_on_the_keys_device():
    model = build_tiny_model("llama", layers=2, device="cuda")
    cache = prefill(model, ChunkKVReusePress(SnapKVPress(0.5, window_size=8)), make_input_ids(64).cuda())
    assert all(layer.keys.device.type == "cuda" for layer in cache.layers)


def test_the_reference_press_needs_only_kvpress_base_classes() -> None:
    """kvpress 0.5.4 has no `kvpress.utils.compute_n_kept`: a reference press that imported it could not run beside
    kvpress 0.5.4, and `make kvpress-diff` compared ChunkKVPress with no reference on that side."""
    import ast

    import kvaudit.reference.chunkkv_reuse_press as module

    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert {name for name in imported if name.startswith("kvpress")} == {
        "kvpress.presses.base_press", "kvpress.presses.scorer_press"}
