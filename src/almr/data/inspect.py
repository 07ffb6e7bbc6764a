"""`almr data inspect PLAN`: what a plan will feed the trainer, measured from the blend and the loader.

Contract: `inspect_plan(plan, png, sample_steps=8) -> dict` returns
- per source: planned sequences and tokens, epochs, shard train tokens, %Chinese of the
  train split (manifest) and of the sequences the loader yields in the first `sample_steps`
  global batches (decoded with the plan's tokenizer, measured with almr.chinese);
- the realized ALMR of every global batch (min, max, largest deviation from the target in
  sequences) and over windows of 1, 10 and 100 batches, and the largest prefix deviation
  |count_i(n) − w_i·n| of any source over the whole phase (the blend's guarantees: < 1 per
  batch, < 2 per prefix);
and writes a PNG of the realized ALMR per step (and cumulative) against the target.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoTokenizer

from almr.chinese import ScriptCounts
from almr.data import blend
from almr.data.loader import PackedLoader
from almr.data.plan import Plan


def blend_statistics(plan: Plan, chunk_steps: int = 4096) -> dict[str, Any]:
    """Per-step additional-language counts and the largest prefix deviation per source, streamed."""
    gbs, steps, k = plan.global_batch_size, plan.steps, len(plan.sources)
    additional = np.array([s.additional for s in plan.sources] + [False])
    weights = blend.leaf_weights(plan.tree, k)
    per_step = np.zeros(steps, dtype=np.int64)
    carry = np.zeros(k, dtype=np.int64)
    worst = np.zeros(k)
    for lo in range(0, steps, chunk_steps):
        hi = min(lo + chunk_steps, steps)
        ids = blend.source_ids(plan.tree, lo * gbs, hi * gbs)
        per_step[lo:hi] = additional[ids].reshape(hi - lo, gbs).sum(axis=1)
        n = np.arange(lo * gbs + 1, hi * gbs + 1, dtype=np.float64)
        for i in range(k):
            counts = np.cumsum(ids == i) + carry[i]
            worst[i] = max(worst[i], float(np.abs(counts - weights[i] * n).max()))
            carry[i] = counts[-1]
    return {"additional_per_step": per_step, "prefix_deviation": worst}


def inspect_plan(plan: Plan, png: str | Path | None = None, sample_steps: int = 8) -> dict[str, Any]:
    gbs, seq_len = plan.global_batch_size, plan.seq_len
    stats = blend_statistics(plan)
    per_step = stats["additional_per_step"]
    realized = per_step / gbs
    target = plan.almr * gbs
    windows = {}
    for w in (1, 10, 100):
        if len(per_step) >= w:
            sums = np.convolve(per_step, np.ones(w, dtype=np.int64), mode="valid")
            windows[w] = {"min": float(sums.min() / (w * gbs)), "max": float(sums.max() / (w * gbs)),
                          "max_deviation_sequences": float(np.abs(sums - target * w).max())}

    # what the loader actually yields, decoded: per-source %Chinese of the first steps
    tok = AutoTokenizer.from_pretrained(plan.tokenizer["path"])
    loader = PackedLoader(plan, micro_batch_size=gbs)
    yielded = [ScriptCounts() for _ in plan.sources]
    for step, batch in enumerate(loader):
        if step >= sample_steps:
            break
        for ids, src in zip(batch["input_ids"].tolist(), batch["source_ids"].tolist(), strict=True):
            yielded[src].add(tok.decode(ids, skip_special_tokens=True))
    total = ScriptCounts(sum(c.han for c in yielded), sum(c.other for c in yielded))

    sources = []
    for i, s in enumerate(plan.sources):
        sources.append({
            "name": s.name, "language": s.language, "domain": s.domain, "weight": s.weight,
            "sequences": s.sequences, "tokens": s.sequences * seq_len, "start": s.start, "epochs": s.epochs,
            "shard_train_tokens": s.train_tokens, "chinese_share_shard": s.chinese_share,
            "chinese_share_yielded": yielded[i].chinese_share if (yielded[i].han + yielded[i].other) else None,
            "prefix_deviation": float(stats["prefix_deviation"][i]),
        })
    report = {
        "plan": plan.hash, "steps": plan.steps, "global_batch_size": gbs, "seq_len": seq_len,
        "target_almr": plan.almr, "realized_almr": float(per_step.sum() / (plan.steps * gbs)),
        "per_step": {"min": float(realized.min()), "max": float(realized.max()),
                     "max_deviation_sequences": float(np.abs(per_step - target).max())},
        "windows": windows, "sampled_steps": min(sample_steps, plan.steps),
        "chinese_share_yielded": total.chinese_share, "sources": sources,
    }
    if png is not None:
        report["png"] = str(plot_almr(realized, plan.almr, Path(png), plan.hash[:12]))
    return report


def inspect_plan_file(
    plan_file: str | Path, png: str | Path | None = None, sample_steps: int = 8
) -> tuple[dict[str, Any], Path]:
    """`almr data inspect`: `inspect_plan` of a saved plan, the plot at `png` (default: PLAN.png)
    and the report as JSON beside the plan (PLAN.inspect.json); returns the report and that path."""
    plan_file = Path(plan_file)
    report = inspect_plan(Plan.load(plan_file), png or plan_file.with_suffix(".png"), sample_steps=sample_steps)
    out = plan_file.with_suffix(".inspect.json")
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report, out


def plot_almr(realized: np.ndarray, target: float, png: Path, label: str) -> Path:
    # imported here: only the plot needs matplotlib (~1 s to import), and only when a PNG is asked for
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(realized) + 1)
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=110)
    ax.plot(steps, realized, lw=0.8, label="per global batch")
    ax.plot(steps, np.cumsum(realized) / steps, lw=1.5, label="cumulative")
    ax.axhline(target, color="k", ls="--", lw=1, label=f"target {target:.4g}")
    ax.set_xlabel("training step")
    ax.set_ylabel("realized ALMR")
    ax.set_title(f"realized ALMR per step (plan {label})")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    return png
