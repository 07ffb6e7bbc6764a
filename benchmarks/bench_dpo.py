"""DPO with the reference log-probabilities cached (one model in memory) against DPO holding two
models (a live reference), on this CPU: same model, same pairs, same batches, fp32, one run.

The model is a Llama built from a config with random weights (default ~25M parameters, large
enough that a second copy shows in the process's memory) and the demo world's chat tokenizer; the
pairs are the world's DPO pairs. Each variant runs `almr.train.dpo.train_dpo` in its own
subprocess, so that peak RSS is its own, alternately, `--rounds` times. The cached variant starts
from an empty cache each time, so its figures include computing the reference log-probabilities
(with the policy itself, before its first step). Reported: peak RSS (median and range over
rounds), the median step time after `--skip` warm-up steps, and setup time (loading, tokenizing
and, for the cached variant, the reference pass).

    python benchmarks/bench_dpo.py                      # ~25M parameters, 3 rounds
    python benchmarks/bench_dpo.py --hidden 768 --layers 8 --rounds 2   # ~55M parameters

`--preference DIR` measures instead what DPO is for, on the demo world (the `demo` preset): the
world's base model → SFT on the world's dialogues → DPO on its preference pairs but the last
`--held-out`, then the held-out preference accuracy (`almr.stages.dpo.preference_accuracy`) of
the SFT and the DPO model, overall, per language and per kind of pair, with a paired bootstrap
interval of the difference. Stages already in DIR are reused.

    python benchmarks/bench_dpo.py --preference /tmp/almr-dpo-pref      # ~10 min on 2 cores
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

VARIANTS = {"cached": "cached reference log-probs", "live": "live reference model (two models)"}


def build_inputs(root: Path, args: argparse.Namespace) -> None:
    """A small world (for its chat tokenizer and DPO pairs) and the model directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from almr.world.build import build_world
    from almr.world.config import WorldConfig

    world = WorldConfig(seed=3, countries=16, en_docs=200, zh_docs=200, math_docs=20, code_docs=20, bench_items=4,
                        sft_dialogues=8, dpo_pairs=args.pairs, esc_dialogues=4, vocab_size=args.vocab)  # fmt: skip
    build_world(root / "world", world)
    tokenizer = AutoTokenizer.from_pretrained(root / "world" / "model")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=int(2.6875 * args.hidden),
        num_hidden_layers=args.layers, num_attention_heads=8, num_key_value_heads=4,
        max_position_embeddings=max(args.seq_len, 128), tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")


def worker(args: argparse.Namespace) -> None:
    from almr.train.config import DpoConfig, ModelConfig
    from almr.train.dpo import train_dpo

    root, out = Path(args.root), Path(args.out)
    lines = (root / "world" / "dpo" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    pairs = [json.loads(line) for line in lines]
    cfg = DpoConfig.model_validate({
        "run_dir": str(out / "run"), "steps": args.steps, "device": "cpu", "cache_reference": args.worker == "cached",
        "batch": {"micro_batch_size": args.micro, "global_batch_size": args.global_batch, "seq_len": args.seq_len},
        "optimizer": {"lr": 1e-4}, "save_every_steps": 10**6,  # no checkpoint but the last
    })  # fmt: skip
    started = time.time()
    result = train_dpo(ModelConfig(name_or_path=str(root / "model")), cfg, pairs, progress=False,
                       cache_dir=out / "cache")  # fmt: skip
    events = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    start = next(e["time"] for e in events if e["event"] == "start")
    train = [e["time"] for e in events if e["event"] == "train"]
    step_times = [b - a for a, b in zip([start, *train], train, strict=False)][args.skip :]
    print(json.dumps({
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "setup_s": start - started,
        "step_s": statistics.median(step_times), "reference": result.reference, "loss": result.losses,
    }))  # fmt: skip


def preference(args: argparse.Namespace) -> None:
    import numpy as np

    from almr.config import AlmrConfig, load_config
    from almr.stages.base_model import pretrain_base
    from almr.stages.dpo import preference_margins, run_dpo
    from almr.stages.sft import run_sft
    from almr.world.build import build_world

    out = Path(args.preference)
    config = load_config("demo")
    world = out / "world"
    if not (world / "world.json").is_file():
        build_world(world, config.world)
    base = pretrain_base(world, out / "base-run", out / "shards", config, progress=False)
    pairs = [json.loads(line) for line in (world / "dpo" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    train, test = pairs[: -args.held_out], pairs[-args.held_out :]
    (out / "dpo-train.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in train), "utf-8")
    sft_data = [{"path": str(world / "sft" / "train.jsonl"), "language": "mixed"}]
    dpo_data = [{"path": str(out / "dpo-train.jsonl"), "language": "mixed"}]
    stages = {
        "sft": {"model": {"name_or_path": str(base)},
                "sft": {**config.sft.model_dump(), "run_dir": str(out / "sft"), "datasets": sft_data}},
        "dpo": {"model": {"name_or_path": str(out / "sft" / "hf")},
                "dpo": {**config.dpo.model_dump(), "run_dir": str(out / "dpo"), "datasets": dpo_data}},
    }  # fmt: skip
    for name, run in (("sft", run_sft), ("dpo", run_dpo)):
        if not (out / name / "summary.json").is_file():
            started = time.time()
            stage_config = AlmrConfig.model_validate({**config.model_dump(), **stages[name]})
            run(stage_config, progress=False)
            print(f"{name}: {time.time() - started:.0f} s")
    sft_hf, dpo_hf = out / "sft" / "hf", out / "dpo" / "hf"
    seq_len = config.dpo.batch.seq_len
    wins = {}
    for name, model_dir, reference in (("SFT", sft_hf, None), ("DPO", dpo_hf, None), ("DPO vs SFT", dpo_hf, sft_hf)):
        margin = preference_margins(model_dir, test, reference_dir=reference, max_length=seq_len).numpy()
        wins[name] = np.where(margin > 0, 1.0, np.where(margin == 0, 0.5, 0.0))  # as preference_accuracy counts
    rng = np.random.default_rng(0)
    diffs = [float(np.mean(wins["DPO"][i] - wins["SFT"][i])) for i in
             (rng.integers(0, len(test), len(test)) for _ in range(2000))]  # fmt: skip
    low, high = np.percentile(diffs, [2.5, 97.5])
    print(f"\nheld-out pairs: {len(test)} (trained on {len(train)})")
    groups = {"all": [True] * len(test)}
    for key in ("lang", "kind"):
        for value in sorted({p[key] for p in test}):
            groups[f"{key} {value}"] = [p[key] == value for p in test]
    print("| pairs | n | SFT | DPO | DPO (implicit reward vs SFT) |\n|---|---:|---:|---:|---:|")
    for label, mask in groups.items():
        mask = np.array(mask)
        row = " | ".join(f"{wins[name][mask].mean():.3f}" for name in ("SFT", "DPO", "DPO vs SFT"))
        print(f"| {label} | {mask.sum()} | {row} |")
    print(f"DPO − SFT: {wins['DPO'].mean() - wins['SFT'].mean():+.3f} (95% paired bootstrap {low:+.3f} … {high:+.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--micro", type=int, default=4)
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--skip", type=int, default=2, help="untimed warm-up steps")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--preference", metavar="DIR", help="measure held-out preference accuracy (see above)")
    parser.add_argument("--held-out", type=int, default=200, help="--preference: pairs held out of DPO")
    parser.add_argument("--worker", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        worker(args)
        return
    if args.preference:
        preference(args)
        return

    root = Path(tempfile.mkdtemp(prefix="bench_dpo_"))
    build_inputs(root, args)
    from transformers import AutoModelForCausalLM

    n_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(root / "model").parameters())
    print(f"model {n_params / 1e6:.1f}M parameters ({n_params * 4 / 2**20:.0f} MiB fp32); {args.pairs} pairs, batch "
          f"{args.micro} × {args.global_batch // args.micro} accumulation, seq_len {args.seq_len}; {args.steps} steps "
          f"({args.skip} untimed); {args.threads} threads; {args.rounds} alternating rounds")  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    passthrough = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                   if v is not None and k not in ("worker", "root", "out")]  # fmt: skip
    results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for round_ in range(args.rounds):
        for name in VARIANTS if round_ % 2 == 0 else reversed(VARIANTS):
            cmd = [sys.executable, __file__, *passthrough, f"--worker={name}", f"--root={root}",
                   f"--out={root / f'{name}-{round_}'}"]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode:
                sys.exit(f"{name} worker failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results[name].append(result)
            print(
                f"  round {round_ + 1} {name:6}: peak RSS {result['peak_rss'] / 2**20:6.0f} MiB, step "
                f"{result['step_s']:.2f} s, setup {result['setup_s']:.1f} s (reference {result['reference']})"
            )
    losses = {name: runs[0]["loss"] for name, runs in results.items()}
    same = max(abs(a - b) for a, b in zip(losses["cached"], losses["live"], strict=True))
    print(f"\n{'variant':36} {'peak RSS MiB (median, range)':>30} {'step s':>8} {'setup s':>8}")
    summary = {}
    for name, label in VARIANTS.items():
        rss = [r["peak_rss"] / 2**20 for r in results[name]]
        step = statistics.median(r["step_s"] for r in results[name])
        setup = statistics.median(r["setup_s"] for r in results[name])
        summary[name] = (statistics.median(rss), step)
        print(f"{label:36} {statistics.median(rss):12.0f} ({min(rss):.0f}–{max(rss):.0f}) {step:15.2f} {setup:8.1f}")
    saved = summary["live"][0] - summary["cached"][0]
    print(f"cached / live: {summary['cached'][0] / summary['live'][0]:.2f}× peak RSS ({saved:.0f} MiB less; one fp32 "
          f"copy of the model is {n_params * 4 / 2**20:.0f} MiB), {summary['cached'][1] / summary['live'][1]:.2f}× "
          f"step time; largest loss difference over the steps {same:.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
