"""CPT trainer vs the Hugging Face Trainer on this CPU: same model config, same token sequences,
same micro batch, gradient accumulation and sequence length, fp32, measured in one run.

Each trainer runs in its own subprocess (so that peak RSS is its own), alternately, `--rounds`
times; the best tokens/s of each is compared (this machine's timings vary ±25% between runs).
Steps before `--skip` are warm-up and not timed. MFU is against the fp32 matmul peak measured here.

    python benchmarks/bench_cpt.py                 # ~1M-parameter Llama (the demo world's shape)
    python benchmarks/bench_cpt.py --hidden 256 --seq-len 256 --micro 8   # ~7M parameters
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def build_model_dir(path: Path, args: argparse.Namespace) -> None:
    from tokenizers import Tokenizer, models
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=3 * args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=args.seq_len, tie_word_embeddings=False,
    ).save_pretrained(path)  # fmt: skip
    words = {"<unk>": 0, **{f"t{i}": i for i in range(1, args.vocab)}}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(words, unk_token="<unk>")))
    tokenizer.save_pretrained(path)


def sequences(args: argparse.Namespace) -> torch.Tensor:
    """Every sequence both trainers see: [steps × global batch, seq_len + 1] token ids."""
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, args.vocab, (args.steps * args.global_batch, args.seq_len + 1), generator=gen)


class TensorLoader:
    """The almr.data loader protocol over a fixed tensor (one process)."""

    def __init__(self, data: torch.Tensor, micro: int) -> None:
        self.data, self.micro, self.consumed_sequences = data, micro, 0

    def __iter__(self) -> Any:
        while self.consumed_sequences + self.micro <= len(self.data):
            rows = self.data[self.consumed_sequences : self.consumed_sequences + self.micro]
            self.consumed_sequences += self.micro
            yield {"input_ids": rows[:, :-1], "labels": rows[:, 1:], "source_ids": torch.zeros(self.micro)}

    def state_dict(self) -> dict[str, int]:
        return {"consumed_sequences": self.consumed_sequences}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consumed_sequences = state["consumed_sequences"]


def run_almr(args: argparse.Namespace, model_dir: Path, out: Path) -> list[float]:
    from almr.config import load_config
    from almr.train.cpt import train_cpt

    sets = {
        "model.name_or_path": model_dir, "cpt.random_init": True, "cpt.run_dir": out, "cpt.steps": args.steps,
        "cpt.batch.micro_batch_size": args.micro, "cpt.batch.global_batch_size": args.global_batch,
        "cpt.batch.seq_len": args.seq_len, "cpt.optimizer.lr": 1e-3, "cpt.schedule.warmup_steps": 2,
        "cpt.device": "cpu",
    }  # fmt: skip
    config = load_config(None, [f"{k}={v}" for k, v in sets.items()])
    train_cpt(config.model, config.cpt, loader=TensorLoader(sequences(args), args.micro))
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [e["step_time"] for e in map(json.loads, lines) if e["event"] == "train"]


def run_hf(args: argparse.Namespace, model_dir: Path, out: Path) -> list[float]:
    from transformers import AutoConfig, AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir), dtype=torch.float32)
    data = sequences(args)
    # The HF model shifts labels itself: give it the same seq_len input tokens as almr.
    dataset = [{"input_ids": row[:-1], "labels": row[:-1]} for row in data]
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_: Any, **__: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            times.append(time.perf_counter() - self.start)

    training = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.micro,
        gradient_accumulation_steps=args.global_batch // args.micro, max_steps=args.steps, learning_rate=1e-3,
        weight_decay=0.01, max_grad_norm=1.0, lr_scheduler_type="linear", warmup_steps=2, bf16=False,
        gradient_checkpointing=False, report_to=[], dataloader_num_workers=0, use_cpu=True, save_strategy="no",
        logging_strategy="no", disable_tqdm=True, seed=0,
    )  # fmt: skip
    Trainer(model=model, args=training, train_dataset=dataset, callbacks=[StepTimer()]).train()
    return times


def worker(args: argparse.Namespace) -> None:
    model_dir, out = Path(args.model_dir), Path(args.out)
    times = (run_almr if args.worker == "almr" else run_hf)(args, model_dir, out)
    timed = times[args.skip :]
    tokens = len(timed) * args.global_batch * args.seq_len
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"tokens_per_s": tokens / sum(timed), "peak_rss": peak_rss, "steps_timed": len(timed)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--micro", type=int, default=8)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=14)
    parser.add_argument("--skip", type=int, default=4, help="untimed warm-up steps")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--worker", choices=["almr", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        worker(args)
        return

    from transformers import AutoConfig, AutoModelForCausalLM

    from almr.train.metrics import model_flops_per_token, peak_flops

    tmp = Path(tempfile.mkdtemp(prefix="bench_cpt_"))
    build_model_dir(tmp / "model", args)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tmp / "model"))
    flops_per_token = model_flops_per_token(model, args.seq_len)
    n_params = sum(p.numel() for p in model.parameters())
    peak, _ = peak_flops("cpu", "float32")
    print(f"model {n_params / 1e6:.2f}M parameters, {flops_per_token / 1e6:.2f} MFLOP/token; batch {args.micro} × "
          f"{args.global_batch // args.micro} accumulation × {args.seq_len} tokens; {args.threads} threads; "
          f"fp32 matmul peak {peak / 1e9:.1f} GFLOP/s (measured)")  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    best: dict[str, dict[str, float]] = {}
    passthrough = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                   if v is not None and k not in ("worker", "model_dir", "out")]  # fmt: skip
    for round_ in range(args.rounds):
        for name in ("almr", "hf"):
            out = tmp / f"{name}-{round_}"
            cmd = [sys.executable, __file__, *passthrough, f"--worker={name}", f"--model-dir={tmp / 'model'}",
                   f"--out={out}"]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode:
                sys.exit(f"{name} worker failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"  round {round_ + 1} {name:4}: {result['tokens_per_s']:8.0f} tokens/s, "
                  f"peak RSS {result['peak_rss'] / 2**20:6.0f} MiB")  # fmt: skip
            if name not in best or result["tokens_per_s"] > best[name]["tokens_per_s"]:
                best[name] = {**result, "peak_rss": min(result["peak_rss"], best.get(name, result)["peak_rss"])}
    print(f"{'trainer':10} {'tokens/s':>10} {'MFU':>7} {'peak RSS':>10}")
    for name, label in (("almr", "almr cpt"), ("hf", "HF Trainer")):
        r = best[name]
        mfu = flops_per_token * r["tokens_per_s"] / peak
        print(f"{label:10} {r['tokens_per_s']:10.0f} {100 * mfu:6.1f}% {r['peak_rss'] / 2**20:7.0f} MiB")
    ratio = best["almr"]["tokens_per_s"] / best["hf"]["tokens_per_s"]
    rss = best["almr"]["peak_rss"] / best["hf"]["peak_rss"]
    print(f"almr / HF Trainer: {ratio:.2f}× tokens/s, {rss:.2f}× peak RSS")


if __name__ == "__main__":
    main()
