"""Training: the CPT loop (cpt.py, which reads top to bottom) and its parts, each one job:
step (one optimizer step with gradient accumulation), loss (the objective), validate
(held-out loss and probe cadence), model (load and check a causal LM), optimizer, schedule
(LR as a pure function), state (counters, RNGs), resume (where a run starts), checkpoint
(DCP state + HF export), parallel (processes, FSDP2, precision), metrics (metrics.jsonl, MFU)."""
