"""Static analysis of press source: indexing, flow facts and per-claim verdicts."""
