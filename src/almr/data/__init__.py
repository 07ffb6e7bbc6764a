"""Data pipeline: raw corpora → Megatron indexed shards (+ manifest) → mixture plan → exact
blended, packed loader. One module per job: config (the `data`, `mixture` and batch sections),
sources (streaming readers), shards (MMIDIDX), manifest (what shards were made from: tokenizer
identity, input fingerprint, manifest.json), tokenize (parallel tokenization), plan (mixture
plan), blend (the exact blend), loader (PackedLoader, validation_sequences), inspect (report
and plot). See docs/data.md."""
