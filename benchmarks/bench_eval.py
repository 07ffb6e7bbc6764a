"""Evaluation benchmarks, each against its baseline measured in the same run:

1. probe cost: wall time of a demo-shaped CPT run (the world's 1.05M-parameter Llama, batch
   16 × 256) with the world's probe (`TaskProbe` on the 4 world tasks) every `--every-tokens`,
   against the same run without it, and the FLOP estimate the sweep prints;
2. MCQ scoring throughput (items/s): `LoglikScorer` (the probe's path) against lm-eval's
   default path (`HFLM`, batch size 1) and HFLM at the same batch size, on the same model and items.

    python benchmarks/bench_eval.py [--steps 30] [--every-tokens 40960] [--items 32]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch


def build_world(tmp: Path) -> Path:
    from almr.world.build import build_world as build
    from almr.world.config import WorldConfig

    world = tmp / "world"
    build(world, WorldConfig(seed=0, countries=24, en_docs=1500, zh_docs=1500, math_docs=200, code_docs=200,
                             bench_items=200, sft_dialogues=8, dpo_pairs=8))  # fmt: skip
    model_dir = tmp / "model"
    shutil.copytree(world / "model", model_dir)
    for f in (world / "tokenizer").iterdir():
        shutil.copy(f, model_dir / f.name)
    return world


def cpt_seconds(tmp: Path, world: Path, steps: int, probe: object | None, every_tokens: int) -> float:
    from almr.config import load_config
    from almr.train.cpt import train_cpt
    from train_toys import ToyLoader

    run = tmp / f"run-{probe is not None}"
    config = load_config("demo", [
        f"cpt.run_dir={run}", f"model.name_or_path={world.parent / 'model'}", "cpt.random_init=true",
        f"cpt.total_tokens={steps * 16 * 256}", "cpt.device=cpu",  # the demo preset's batch: 16 x 256 tokens
        f"cpt.probe.every_tokens={every_tokens if probe else 0}",
    ])  # fmt: skip
    vocab = 2048
    started = time.perf_counter()
    train_cpt(config.model, config.cpt, loader=ToyLoader(16, 256, vocab), probe=probe)  # type: ignore[arg-type]
    return time.perf_counter() - started


def mcq_throughput(world: Path, items: int) -> None:
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from almr.evaluate.harness import run_eval
    from almr.evaluate.probe import TaskProbe

    tok = AutoTokenizer.from_pretrained(world / "tokenizer")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(world / "model")).eval()
    tasks = ["world_mmlu", "world_ceval", "world_eprstmt"]
    n_items = 3 * items
    probe = TaskProbe(tasks, tok, items_per_task=items, data_dir=world)
    probe(model)  # warm-up
    t = time.perf_counter()
    probe(model)
    ours = n_items / (time.perf_counter() - t)
    rates = {}
    for bs in (1, 64):
        lm = HFLM(pretrained=model, tokenizer=tok, device="cpu", batch_size=bs)
        t = time.perf_counter()
        run_eval(lm, tasks=tasks, data_dir=world, limit=items)
        rates[bs] = n_items / (time.perf_counter() - t)
    print(f"MCQ scoring, {n_items} items ({probe.n_sequences} choice sequences), same model and items:")
    print(f"  ours (LoglikScorer, batch 64):      {ours:8.1f} items/s")
    print(f"  lm-eval HFLM default (batch 1):     {rates[1]:8.1f} items/s   ours ×{ours / rates[1]:.1f}")
    print(f"  lm-eval HFLM batch 64:              {rates[64]:8.1f} items/s   ours ×{ours / rates[64]:.1f}")
    print("  (lm-eval times include building its requests from the task YAML)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--every-tokens", type=int, default=40960, help="10 demo steps of 16 × 256 tokens")
    parser.add_argument("--items", type=int, default=32, help="items per probe task")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from almr.evaluate.probe import WORLD_PROBE, TaskProbe

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        world = build_world(tmp)
        probe = TaskProbe(WORLD_PROBE, AutoTokenizer.from_pretrained(world / "tokenizer"), items_per_task=args.items,
                          data_dir=world)  # fmt: skip
        calls: list[float] = []

        def timed(model: torch.nn.Module, step: int, tokens: int) -> dict[str, float]:
            out = probe(model, step, tokens)
            calls.append(probe.last_seconds_)
            return out

        cpt_seconds(tmp / "warm", world, 12, None, 0)  # imports and first-call costs out of both timings
        base = cpt_seconds(tmp, world, args.steps, None, 0)
        with_probe = cpt_seconds(tmp, world, args.steps, timed, args.every_tokens)
        tokens = args.steps * 16 * 256
        per_call = sum(calls) / len(calls)
        # both parts of the share from the same run: the machine is shared and runs differ by ±25% or more
        train_only = with_probe - sum(calls)
        print(f"CPT, demo shape, {args.steps} steps × 4096 tokens: {base:.1f} s without the probe; {with_probe:.1f} s "
              f"with it every {args.every_tokens:,} tokens ({len(calls)} calls, {sum(calls):.2f} s of probe)")
        print(f"  probe: {probe.n_sequences} sequences ({args.items} items × 4 tasks), {per_call:.3f} s per call")
        print(f"  probe share of CPT wall time at this interval: {sum(calls) / train_only:.2%} (in-run)")
        print(f"  smallest interval for ≤5%: {per_call / (0.05 * train_only / tokens):,.0f} tokens")
        print(f"  FLOP estimate the study prints: {probe.cost().describe(args.every_tokens)}")
        mcq_throughput(world, args.items)


if __name__ == "__main__":
    main()
