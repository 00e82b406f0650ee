# The two commands a fresh machine needs (see README.md):
#   make audit   set up, then audit the installed kvpress ChunkKVPress against the reference press
#   make test    set up, then run the whole test suite (.ci/run calls this)
#   make fuzz    the fuzz tests with 10,000 cases each
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# torch is pinned: its CPU wheel lies on every machine here; an unpinned torch pulls a CUDA build.
TORCH   = torch==2.13.0

.PHONY: setup audit test bench fuzz kvpress-report kvpress-diff tiny-model

# The presses traced on the tiny trained model too: those whose claims need learned attention (ChunkKV's
# layer similarity and reuse quality), those whose paper relies on sinks, and those that need a tokenizer.
TRAINED_PRESSES = kvpress.presses.chunkkv_press kvpress.presses.snapkv_press kvpress.presses.streaming_llm_press \
	kvpress.presses.simlayerkv_press kvpress.presses.kvzip_press kvpress.presses.kvgrad_press

$(BIN)/kvaudit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip "setuptools>=68"
	$(BIN)/pip install --quiet "$(TORCH)" -e ".[trace,plots,test]"
	touch $@

setup: $(BIN)/kvaudit

# Exit code 1 means "findings": that is the audit's answer, not a failure of the job.
audit: setup
	$(BIN)/kvaudit check --trace --compare-reference || [ $$? -eq 1 ]

# Two pytest-xdist workers (CI has 2 cores), each test file on one of them so that a file's
# module fixtures (traces on the shared worker) are built once.
test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: setup
	$(BIN)/python benchmarks/run_all.py

# The fuzz tests with 10,000 cases each (CI runs a few hundred): `check` never tracebacks,
# never exits 1 on a crash, and finishes each file in bounded time.
fuzz: setup
	KVAUDIT_FUZZ_EXAMPLES=10000 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_fuzz.py

# The committed audit of every kvpress press (static for all, a trace for each that runs offline), with a
# standalone reproduction (script and issue draft) of each finding under reports/repro/, rewritten whole.
# --timeout 300: a margin for a loaded 2-core machine. ThinKPress's trace once took about 145 s of CPU (row
# matching searched in Python), past the default 120 s, and was reported as a crash ThinK does not have; with
# rows matched by hash, `kvaudit trace kvpress.presses.think_press` takes about 12 s in all.
kvpress-report: setup
	rm -rf reports/repro
	$(BIN)/kvaudit report kvpress.presses --compare-reference --config reports/kvpress-0.5.5.toml -o reports/kvpress-0.5.5.md \
		--repro-dir reports/repro --timeout 300
	$(BIN)/kvaudit report $(TRAINED_PRESSES) --model trained --compare-reference --config reports/kvpress-0.5.5.toml \
		-o reports/kvpress-0.5.5-trained.md --timeout 300

# The tiny trained model (issue 18): a small Llama trained on the standard library's source, with a
# fixed seed and step count on one torch thread (about 12 minutes on 2 cores). It replaces the
# committed reference in the package data; TINY_MODEL_OUT=/tmp/tiny writes elsewhere (a
# reproducibility check against the committed one).
TINY_MODEL_OUT ?= audit/trained/tiny-trained
tiny-model: setup
	$(BIN)/python -m kvaudit.trained.train --out $(TINY_MODEL_OUT)

# kvaudit diff of kvpress 0.5.4 (a scratch venv outside the repository) against 0.5.5 (.venv): reports/kvpress-0.5.4-to-0.5.5.md,
# and kvpress 0.5.5's claims baseline. Two full traces, one after the other (minutes each).
kvpress-diff: setup
	bash reports/kvpress-0.5.4-to-0.5.5.sh
