"""The tiny trained model shipped as package data (issue 18): intact, loadable offline, its recorded
figures reproducible on its held-out text. Training (``make tiny-model``) never runs here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kvaudit.trained as trained
from kvaudit.trained import corpus, data

MODEL = trained.trained_model_path()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def loaded():
    """The committed model and tokenizer, loaded once for the module."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return trained.load()


@pytest.fixture(scope="module")
def log() -> dict:
    return trained.training_log()


def _heldout_or_skip(**kwargs):
    try:
        return trained.heldout_prompts(**kwargs)
    except trained.HeldOutTextUnavailable as error:  # another Python than the one the manifest records
        pytest.skip(str(error))


# --- the folder -------------------------------------------------------------------------------------

def test_folder_is_complete_intact_and_at_most_8_mb() -> None:
    names = {p.name for p in MODEL.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "manifest.json",
            "training-log.json", "SHA256SUMS"} <= names
    listed = {line.partition("  ")[2] for line in (MODEL / "SHA256SUMS").read_text().splitlines()}
    assert listed == names - {"SHA256SUMS"}
    assert trained.checksum_problems() == []
    trained.verify_checksum()
    assert sum(p.stat().st_size for p in MODEL.iterdir()) <= 8 * 1024 * 1024


def test_checksum_names_a_changed_and_a_missing_file(tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(MODEL, copy)
    config = json.loads((copy / "config.json").read_text())
    config["num_hidden_layers"] += 1
    (copy / "config.json").write_text(json.dumps(config))
    (copy / "tokenizer.json").unlink()
    problems = trained.checksum_problems(copy)
    assert len(problems) == 2 and problems[0].startswith("config.json: sha256") and problems[1] == "tokenizer.json: missing"
    with pytest.raises(trained.ChecksumMismatch, match="config.json: sha256 .*; tokenizer.json: missing"):
        trained.verify_checksum(copy)
    assert trained.checksum_problems(tmp_path) == [f"{tmp_path / 'SHA256SUMS'}: missing"]


def test_weights_are_stored_in_half_precision_and_the_config_is_the_recorded_one(log: dict) -> None:
    # The safetensors header (8-byte little-endian length, then JSON): read directly, no torch.
    raw = (MODEL / "model.safetensors").read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    dtypes = {entry["dtype"] for name, entry in header.items() if name != "__metadata__"}
    assert dtypes <= {"BF16", "F16"}
    config = json.loads((MODEL / "config.json").read_text())
    settings = log["settings"]
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"],
            config["num_key_value_heads"], config["vocab_size"]) == (
        settings["layers"], settings["hidden"], settings["heads"], settings["kv_heads"], settings["vocab_size"])


def test_the_committed_model_was_trained_with_the_committed_settings(log: dict) -> None:
    """Every setting in the log is the training script's default: `make tiny-model` rebuilds this model."""
    import dataclasses

    from kvaudit.trained.train import TrainConfig

    assert log["settings"] == json.loads(json.dumps(dataclasses.asdict(TrainConfig())))
    assert log["tokens_trained"] == sum(p["steps"] * p["seq_len"] * p["batch"] for p in log["settings"]["phases"])


# --- loading offline ------------------------------------------------------------------------------

@pytest.mark.slow
def test_loads_offline_from_package_data_and_kvzip_finds_its_tokenizer(tmp_path: Path) -> None:
    """A fresh interpreter, HF_HUB_OFFLINE=1 and an empty Hugging Face home: nothing but the package data."""
    script = (
        "import torch, kvaudit.trained as t\n"
        "from transformers import AutoTokenizer\n"
        "model, tok = t.load()\n"
        "again = AutoTokenizer.from_pretrained(model.config.name_or_path)\n"
        "ids = tok('x = 1')['input_ids']\n"
        "print(type(model).__name__, model.config.name_or_path, again('x = 1')['input_ids'] == ids, ids[0])\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    name, folder, same, first = done.stdout.split()
    assert (name, Path(folder), same, int(first)) == ("LlamaForCausalLM", MODEL, "True", data.BOS_ID)
    assert not (tmp_path / "hf" / "hub").exists()


def test_presses_that_load_the_tokenizer_from_the_model_folder_run() -> None:
    """KVzipPress calls AutoTokenizer.from_pretrained(model.config.name_or_path): the folder has one."""
    torch = pytest.importorskip("torch")
    kvpress = pytest.importorskip("kvpress")
    from transformers import DynamicCache

    model, _ = trained.load()  # its own copy: the press attaches attributes to the layers
    prompt = _heldout_or_skip(length=128, batch=1, seed=1)
    cache = DynamicCache()
    with torch.no_grad(), kvpress.KVzipPress(compression_ratio=0.5)(model):
        model(input_ids=prompt, past_key_values=cache, use_cache=True)
    # KVzip masks rather than evicts: half of all (layer, KV head, position) entries, chosen across layers.
    assert cache.get_seq_length() == 128
    config = model.config
    masked = sum(len(layer.self_attn.masked_key_indices[0]) for layer in model.model.layers)
    assert masked == int(config.num_hidden_layers * config.num_key_value_heads * 128 * 0.5)


# --- the tokenizer --------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "def f(x):\n    return {'k': x ** 2}  # café, naïve, 数据, ✓\n",
    "\tclass A:\n\n\n        pass\r\n",
    "",
    "<bos> is a special token's text, written out",
])
def test_tokenizer_round_trips_and_starts_with_bos(loaded, text: str) -> None:
    _, tok = loaded
    ids = tok(text)["input_ids"]
    assert ids[0] == data.BOS_ID and all(0 <= i < 4096 for i in ids)
    assert tok.decode(ids[1:]) == text
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_tokenizer_special_ids_are_the_ones_training_used(loaded) -> None:
    model, tok = loaded
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, data.BOS_ID, data.EOS_ID, 3)
    assert len(tok) == model.config.vocab_size == 4096
    assert (model.config.bos_token_id, model.config.eos_token_id) == (data.BOS_ID, data.EOS_ID)


# --- the manifest ---------------------------------------------------------------------------------

def test_manifest_splits_by_the_documented_rule() -> None:
    manifest = trained.manifest()
    files = manifest["files"]
    paths = [f["path"] for f in files]
    assert paths == sorted(paths) and len(set(paths)) == len(paths)
    assert all((f["split"] == "heldout") == corpus.is_heldout(f["path"]) for f in files)
    assert 0 < sum(f["split"] == "heldout" for f in files) < len(files) / 10
    assert not any(set(p.split("/")[:-1]) & corpus.EXCLUDED_DIRS for p in paths)
    for split, key in (("train", "train"), ("heldout", "heldout")):
        # Each file's ids, then one EOS.
        assert sum(f["tokens"] + 1 for f in files if f["split"] == split) == manifest["tokens"][key]
    assert manifest["python"].count(".") == 2 and manifest["licence"].startswith("PSF-2.0")


# --- held-out prompts and loss --------------------------------------------------------------------

def test_heldout_prompts_are_deterministic_and_come_from_heldout_files() -> None:
    first = _heldout_or_skip(length=64, batch=3, seed=7)
    assert first.shape == (3, 64) and str(first.dtype) == "torch.int64"
    assert bool((first[:, 0] == data.BOS_ID).all()) and int(first.max()) < 4096
    assert bool((first == trained.heldout_prompts(length=64, batch=3, seed=7)).all())
    assert not bool((first == trained.heldout_prompts(length=64, batch=3, seed=8)).all())
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
    root = corpus.stdlib_root()
    heldout = "".join((root / f["path"]).read_text() + "\n"
                      for f in trained.manifest()["files"] if f["split"] == "heldout")
    for row in first:
        # The longest stretch within one file (EOS separates files), its edges trimmed (a window may
        # start inside a multi-byte character): it lies in held-out text.
        pieces, piece = [], []
        for i in row[1:].tolist():
            if i == data.EOS_ID:
                pieces.append(piece)
                piece = []
            else:
                piece.append(i)
        text = tok.decode(max([*pieces, piece], key=len))[8:-8]
        assert len(text) > 20 and text in heldout


def test_heldout_loss_on_probe_windows_is_the_recorded_one(loaded, log: dict) -> None:
    """Range: the probe loss within 1% of the value recorded by the training script for the same
    windows (bf16 weights, float32 sums: CPUs differ in the last digits), and within 10% of the
    recorded held-out loss over 64 windows of 512 tokens; both far under the unigram baseline."""
    from kvaudit.trained.measure import next_token_loss

    model, _ = loaded
    final = log["final"]
    probe = final["probe"]
    windows = _heldout_or_skip(length=probe["length"], batch=probe["batch"], seed=probe["seed"])
    loss = next_token_loss(model, windows)
    assert loss == pytest.approx(final["probe_loss"], rel=0.01)
    assert loss == pytest.approx(final["heldout_loss"], rel=0.10)
    assert loss < final["unigram_loss"] - 1.0 and final["heldout_loss"] < final["unigram_loss"] - 1.0


def test_shuffled_text_loses_what_the_model_learned(loaded) -> None:
    """The held-out loss reflects learned structure: the same tokens in random order score far worse."""
    from kvaudit.trained.measure import next_token_loss

    model, _ = loaded
    windows = _heldout_or_skip(length=256, batch=2, seed=3)
    shuffled = windows.clone()
    rng = np.random.default_rng(0)
    for row in shuffled:
        row[1:] = row[1:][rng.permutation(255)]
    assert next_token_loss(model, shuffled) > next_token_loss(model, windows) + 1.0


def test_heldout_prompts_say_so_when_the_text_is_missing(tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(MODEL, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for entry in manifest["files"]:
        entry["sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(trained.HeldOutTextUnavailable, match="none of the held-out standard-library files"):
        trained.heldout_prompts(length=16, folder=copy)
    # strict=False takes held-out files whatever their hash (another Python version's edits).
    assert trained.heldout_prompts(length=16, folder=copy, strict=False).shape == (1, 16)


# --- the package stays light ---------------------------------------------------------------------

def test_importing_the_package_and_the_training_script_loads_no_torch() -> None:
    script = ("import sys, kvaudit.trained, kvaudit.trained.train, kvaudit.trained.corpus\n"
              "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'tokenizers', 'transformers', 'numpy'}))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "bogus=1"], "--set 'bogus=1': expected NAME=JSON with NAME one of"),
    (["--set", "lr=fast"], "--set lr: 'fast' is not JSON"),
    (["--set", 'phases=[{"steps": 1, "colour": 2}]'], "--set phases: expected a list of objects with Phase's fields"),
])
def test_the_training_script_refuses_bad_settings_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    from kvaudit.trained.train import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "out"), *args])
    assert str(exit_info.value).startswith(message) and "\n" not in str(exit_info.value)


def test_the_training_script_refuses_a_folder_that_holds_something_else(tmp_path: Path) -> None:
    """Checked before training starts, so that a wrong --out costs nothing."""
    from kvaudit.trained.train import main

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="is not an empty folder nor an earlier model"):
        main(["--out", str(tmp_path), "--quiet"])
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_make_tiny_model_writes_where_it_is_told() -> None:
    done = subprocess.run(["make", "-n", "tiny-model", "TINY_MODEL_OUT=/tmp/elsewhere"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "-m kvaudit.trained.train --out /tmp/elsewhere" in done.stdout
