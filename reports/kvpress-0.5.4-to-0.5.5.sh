#!/usr/bin/env bash
# Reproduces reports/kvpress-0.5.4-to-0.5.5.md (`make kvpress-diff`): kvpress 0.5.4, installed in a scratch venv
# outside the repository (never in .venv), against kvpress 0.5.5 in .venv, traced alike with the options of
# `make kvpress-report`, then `kvaudit diff`. Also rewrites reports/kvpress-0.5.5.claims-baseline.json.
# Each full trace takes minutes on 2 cores; they run one after the other. Needs the package index once (pip).
set -euo pipefail
cd "$(dirname "$0")/.."
OLD_VENV=${OLD_VENV:-/tmp/kvpress-old-venv}
WORK=${WORK:-/tmp/kvpress-diff}
mkdir -p "$WORK"
if [ ! -x "$OLD_VENV/bin/kvaudit" ]; then
    python3 -m venv "$OLD_VENV"
    "$OLD_VENV/bin/pip" install --quiet --upgrade pip "setuptools>=68"
    "$OLD_VENV/bin/pip" install --quiet 'kvpress==0.5.4' torch==2.13.0  # brings transformers 5.2.0
    "$OLD_VENV/bin/pip" install --quiet -e .                             # kvaudit itself, without the trace extra
fi
make setup

# One torch thread for both runs. --timeout 600 instead of 120 s: on a shared, loaded 2-core machine five
# presses that take seconds alone (ComposedPress, FinchPress, KeyRerotationPress, KVComposePress, ThinKPress)
# ran past 120 s and were reported as crashes; a limit is not a measurement, both runs get the same one.
# Exit 1 means violated claims: the answer of the trace, not a failure of the script.
trace() {
    local venv=$1 out=$2
    shift 2
    OMP_NUM_THREADS=1 "$venv/bin/kvaudit" trace kvpress.presses --compare-reference \
        --config reports/kvpress-0.5.5.toml --timeout 600 --format json "$@" > "$out" || [ $? -eq 1 ]
}
if [ -z "${REUSE_TRACES:-}" ]; then  # REUSE_TRACES=1: diff the traces already in $WORK again
    trace "$OLD_VENV" "$WORK/kvpress-0.5.4.json"
    trace .venv "$WORK/kvpress-0.5.5.json" --baseline reports/kvpress-0.5.5.claims-baseline.json --write-baseline
fi

report=$PWD/reports/kvpress-0.5.4-to-0.5.5.md
# Exit 1: something got worse from 0.5.4 to 0.5.5 (the diff says what).
(cd "$WORK" && "$OLDPWD/.venv/bin/kvaudit" diff kvpress-0.5.4.json kvpress-0.5.5.json --format markdown \
    --title "kvaudit diff: kvpress 0.5.4 → 0.5.5" -o "$report") || [ $? -eq 1 ]
cat >> "$report" <<'END'

---

#### How this diff was made

kvpress 0.5.4 (the newest release before 0.5.5 on the package index; it installs with torch 2.13.0 and
brings transformers 5.2.0, as 0.5.5 does) was installed in a scratch venv outside the repository, with
kvaudit from this checkout; kvpress 0.5.5 is the one in `.venv` (`make setup`). Both were traced with the
options of `make kvpress-report` (the default grid and tiny model, `--compare-reference`, the acceptances
of `reports/kvpress-0.5.5.toml`, which 0.5.4 is held to as well), one torch thread each, and a 600 s
limit per press instead of 120 s (on the shared 2-core machine, loaded by other jobs, five presses that take
seconds alone ran past 120 s in a first run and were reported as crashes), then compared:

```bash
kvaudit trace kvpress.presses --compare-reference --config reports/kvpress-0.5.5.toml --timeout 600 --format json > kvpress-0.5.4.json   # 0.5.4 venv
kvaudit trace kvpress.presses --compare-reference --config reports/kvpress-0.5.5.toml --timeout 600 --format json > kvpress-0.5.5.json   # .venv
kvaudit diff kvpress-0.5.4.json kvpress-0.5.5.json --format markdown --title "kvaudit diff: kvpress 0.5.4 → 0.5.5"
```

`make kvpress-diff` (`reports/kvpress-0.5.4-to-0.5.5.sh`) does all of it, venv included.

**What it shows** (as committed, 2026-12-07). Of the 42 presses both versions have, 40 keep every verdict,
number and defect. The one thing that got worse is a new press: 0.5.5's `EntropyGatedChunkKVPress` breaks
ChunkKV's layer-wise reuse and observation window and batch independence, and has ChunkKVPress's batch-row-0
defect (its chunk selection is an accepted deviation). `KVComposePress` now keeps at least one entry on
every layer (0.5.5's `kvcompose_press.py` clamps each layer's count at `max(1, keep_token_lower_bound)`),
where 0.5.4 left the last layers empty; its `batch-independence` went from violated to not-applicable,
because 0.5.5 drops whole batch rows (its `kept-fraction` finding), so no row's kept positions are known
exactly. `KVzipPress` has a new `chunk_size` parameter, and on its seeded stand-ins its layers keep a few
positions more or fewer (up to 3 per layer on the first prefill); the cause inside KVzip was not traced
further. `KVgradPress` and `RestoreKVPress`, new in 0.5.5, run on stand-ins for their Hub files. A separate
plain-Python comparison of the two JSON documents (every claim whole, every run without its timings,
defects, messages and configurations) finds these differences and no other.
END
echo "wrote $report"
