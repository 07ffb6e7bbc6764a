"""SFT throughput and padding waste on the demo world: `almr sft` (packing off and on) against TRL's
SFTTrainer set by hand the way a user would on a CPU (fp32, no gradient checkpointing, the same
batch, assistant-only loss), measured side by side in one run, alternately, `--rounds` times; the
median tokens/s of each and its range are reported (this machine's timings vary ±25% between runs).

Tokens are real (non-padding) tokens; tokens/s = tokens trained / wall time from the trainer's
start to its last step (almr: from metrics.jsonl; TRL: around `trainer.train()`). The model is
the demo world's shape with seeded random weights: throughput does not depend on the weights.

    python benchmarks/bench_sft.py                          # builds the default world in a temp dir
    python benchmarks/bench_sft.py --world /tmp/w --steps 30 --rounds 2 --threads 1
"""

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, help="a built demo world (default: build one in a temp dir)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steady on a shared machine)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    try:
        world = args.world or build_world(work / "world")
        model = random_weights(world, work / "model")
        variants = {
            "almr, padding, micro 8": lambda tag: run_almr(world, model, work / tag, args.steps, False, 8),
            "almr, packing, micro 8": lambda tag: run_almr(world, model, work / tag, args.steps, True, 8),
            "almr, packing, micro 1": lambda tag: run_almr(world, model, work / tag, args.steps, True, 1),
            "TRL by hand, padding, micro 8": lambda tag: run_trl(world, model, work / tag, args.steps, False, 8),
            "TRL by hand, packing, micro 1": lambda tag: run_trl(world, model, work / tag, args.steps, True, 1),
        }
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        for round_ in range(args.rounds):
            for index, (name, run) in enumerate(variants.items()):
                result = run(f"run-{round_}-{index}")
                results[name].append(result)
                print(json.dumps({"variant": name, "round": round_, **result}), flush=True)
        print(table(results))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build_world(path: Path) -> Path:
    from almr.world.build import build_world as build
    from almr.world.config import WorldConfig

    build(path, WorldConfig())
    return path


def random_weights(world: Path, path: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(world / "model")).save_pretrained(path)
    AutoTokenizer.from_pretrained(world / "model").save_pretrained(path)
    return path


def run_almr(world: Path, model: Path, run: Path, steps: int, packing: bool, micro: int) -> dict[str, Any]:
    """`almr sft demo` with the demo's sft section (global batch 16, seq_len 256, lr 5e-4)."""
    from almr.config import load_config
    from almr.stages.sft import run_sft

    config = load_config("demo", [
        f"model.name_or_path={model}", f"sft.run_dir={run}", "sft.device=cpu", f"sft.steps={steps}",
        f"sft.datasets=[{{path: {world / 'sft' / 'train.jsonl'}, format: messages}}]",
        f"sft.packing={str(packing).lower()}", f"sft.batch.micro_batch_size={micro}",
    ])  # fmt: skip
    summary = run_sft(config, progress=False)
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    start = next(e for e in events if e["event"] == "start")
    last = [e for e in events if e["event"] == "train"][-1]
    wall = last["time"] - start["time"]
    return {"tokens": last["tokens"], "wall_s": round(wall, 2), "tokens_per_s": round(last["tokens"] / wall),
            "padding_waste": round(summary.padding_waste, 4), "pack_fill": summary.pack_fill,
            "final_loss": summary.final_loss}  # fmt: skip


def run_trl(world: Path, model_dir: Path, run: Path, steps: int, packing: bool, micro: int) -> dict[str, Any]:
    """TRL's SFTTrainer as its docs suggest, set for a CPU by hand: fp32, no gradient checkpointing."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    lines = (world / "sft" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [{"messages": json.loads(line)["messages"]} for line in lines]
    args = SFTConfig(
        output_dir=str(run), max_steps=steps, per_device_train_batch_size=micro,
        gradient_accumulation_steps=16 // micro, max_length=256, assistant_only_loss=True, packing=packing,
        bf16=False, gradient_checkpointing=False, use_cpu=True, learning_rate=5e-4, lr_scheduler_type="cosine",
        logging_steps=1, report_to=[], save_strategy="no", disable_tqdm=True, seed=0,
    )  # fmt: skip
    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    tokens = [entry["num_tokens"] for entry in trainer.state.log_history if "num_tokens" in entry][-1]
    return {"tokens": int(tokens), "wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall)}


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    """Median tokens/s of each variant with its range over the rounds, and the ratio of the medians
    to TRL by hand (padding, micro 8)."""
    baseline = statistics.median(r["tokens_per_s"] for r in results["TRL by hand, padding, micro 8"])
    lines = ["| variant | median tokens/s (range) | vs TRL by hand (padding, micro 8) | padding waste | pack fill |",
             "|---|---|---|---|---|"]  # fmt: skip
    for name, runs in results.items():
        speeds = [r["tokens_per_s"] for r in runs]
        median = statistics.median(speeds)
        waste = f"{runs[0]['padding_waste']:.1%}" if "padding_waste" in runs[0] else "-"
        fill = f"{runs[0]['pack_fill']:.1%}" if runs[0].get("pack_fill") else "-"
        spread = f"{median:,.0f} ({min(speeds):,}–{max(speeds):,})"
        lines.append(f"| {name} | {spread} | {median / baseline:.2f}× | {waste} | {fill} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
