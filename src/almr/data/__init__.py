"""Data pipeline: raw corpora → Megatron indexed shards (+ manifest) → mixture plan → exact
blended, packed loader. One module per job: sources (streaming readers), shards (MMIDIDX),
tokenize (parallel tokenization, manifests), plan (mixture plan), blend (the exact blend),
loader (PackedLoader, validation_sequences), inspect (report and plot). See docs/data.md."""
