"""CPT trainer vs the Hugging Face Trainer on this CPU: same model config, same token sequences,
same micro batch, gradient accumulation and sequence length, fp32, measured in one run.

Each trainer runs in its own subprocess (so that peak RSS is its own), alternately, `--rounds`
times; the median and range of its rounds are reported, and the ratio of the medians (this
machine's timings vary ±25% between runs, so only ratios from the same run mean anything).
Throughput is wall time from the end of step `--skip` to the end of the last step, measured the
same way for both loops: everything a step costs (data, loss, optimizer, logging) is inside it.
MFU is against the fp32 matmul peak measured here.

`--trainers` names what runs: `almr` (its default loss: chunked linear + cross-entropy),
`almr-plain` (cpt.loss_chunk_tokens=0: the full logits), `hf` (the HF Trainer), and any of them
with `@N` for a micro-batch of N (same global batch, fewer accumulation steps).

    python benchmarks/bench_cpt.py --rounds 3      # ~1M-parameter Llama (the demo world's shape)
    python benchmarks/bench_cpt.py --hidden 256 --seq-len 256 --micro 8   # ~7M parameters
    python benchmarks/bench_cpt.py --vocab 32000 --hidden 256 --steps 8 --skip 2 \
        --trainers almr almr-plain hf almr@16   # a realistic vocabulary/hidden ratio (125)
    python benchmarks/bench_cpt.py --loss-memory 4096 32000 512 --chunks 256 1024   # the loss alone
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
    """The wall-clock time at the end of each step (metrics.jsonl's `time` of each train event)."""
    from almr.config import load_config
    from almr.train.cpt import train_cpt

    sets = {
        "model.name_or_path": model_dir, "cpt.random_init": True, "cpt.run_dir": out, "cpt.steps": args.steps,
        "cpt.batch.micro_batch_size": args.micro, "cpt.batch.global_batch_size": args.global_batch,
        "cpt.batch.seq_len": args.seq_len, "cpt.optimizer.lr": 1e-3, "cpt.schedule.warmup_steps": 2,
        "cpt.device": "cpu", **({"cpt.loss_chunk_tokens": 0} if args.plain else {}),
    }  # fmt: skip
    config = load_config(None, [f"{k}={v}" for k, v in sets.items()])
    train_cpt(config.model, config.cpt, loader=TensorLoader(sequences(args), args.micro))
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [e["time"] for e in map(json.loads, lines) if e["event"] == "train"]


def run_hf(args: argparse.Namespace, model_dir: Path, out: Path) -> list[float]:
    """The wall-clock time at the end of each optimizer step (on_step_end)."""
    from transformers import AutoConfig, AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir), dtype=torch.float32)
    data = sequences(args)
    # The HF model shifts labels itself: give it the same seq_len input tokens as almr.
    dataset = [{"input_ids": row[:-1], "labels": row[:-1]} for row in data]
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_end(self, *_: Any, **__: Any) -> None:
            times.append(time.time())

    training = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.micro,
        gradient_accumulation_steps=args.global_batch // args.micro, max_steps=args.steps, learning_rate=1e-3,
        weight_decay=0.01, max_grad_norm=1.0, lr_scheduler_type="linear", warmup_steps=2, bf16=False,
        gradient_checkpointing=False, report_to=[], dataloader_num_workers=0, use_cpu=True, save_strategy="no",
        logging_strategy="no", disable_tqdm=True, seed=0,
    )  # fmt: skip
    Trainer(model=model, args=training, train_dataset=dataset, callbacks=[StepTimer()]).train()
    return times


def loss_memory(args: argparse.Namespace) -> None:
    """One loss (forward + backward) of `--loss-memory TOKENS VOCAB HIDDEN`, plain (chunk 0) or
    chunked (`--loss-chunk`), in this fresh process: peak RSS above the inputs, and its time."""
    import torch.nn.functional as F

    from almr.train.chunked_ce import linear_cross_entropy

    tokens, vocab, hidden_size = args.loss_memory
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(tokens, hidden_size, generator=gen).requires_grad_()
    weight = (torch.randn(vocab, hidden_size, generator=gen) * 0.02).requires_grad_()
    labels = torch.randint(0, vocab, (tokens,), generator=gen)
    hidden.grad, weight.grad = torch.zeros_like(hidden), torch.zeros_like(weight)  # as in accumulation
    Path("/proc/self/clear_refs").write_text("5")  # Linux: the peak RSS (VmHWM) restarts from what is resident now
    before = _status_bytes("VmRSS")
    start = time.perf_counter()
    if args.loss_chunk:
        loss = linear_cross_entropy(hidden, weight, labels, args.loss_chunk)
    else:
        loss = F.cross_entropy((hidden @ weight.T).float(), labels, reduction="sum")
    loss.backward()
    seconds = time.perf_counter() - start
    print(json.dumps({"extra_peak_rss": _status_bytes("VmHWM") - before, "seconds": seconds}))


def _status_bytes(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) * 1024


def compare_loss_memory(args: argparse.Namespace) -> None:
    tokens, vocab, hidden_size = args.loss_memory
    logits = tokens * vocab * 4
    print(f"loss of {tokens} tokens × {vocab} vocabulary × {hidden_size} hidden (fp32 logits {logits / 2**20:.0f} MiB)")
    for chunk in (0, *args.chunks):
        cmd = [sys.executable, __file__, "--loss-memory", *map(str, args.loss_memory), f"--loss-chunk={chunk}",
               f"--threads={args.threads}"]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        name = f"chunked, {chunk} tokens" if chunk else "plain (full logits)"
        print(f"  {name:22} peak RSS above the inputs {r['extra_peak_rss'] / 2**20:7.0f} MiB, {r['seconds']:.2f} s")


def worker(args: argparse.Namespace) -> None:
    model_dir, out = Path(args.model_dir), Path(args.out)
    ends = (run_almr if args.worker == "almr" else run_hf)(args, model_dir, out)
    timed = len(ends) - args.skip
    tokens = timed * args.global_batch * args.seq_len
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    seconds = ends[-1] - ends[args.skip - 1]
    print(json.dumps({"tokens_per_s": tokens / seconds, "peak_rss": peak_rss, "steps_timed": timed}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--micro", type=int, default=8)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=14)
    parser.add_argument("--skip", type=int, default=4, help="untimed warm-up steps (at least 1)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--trainers", nargs="+", default=["almr", "hf"], help="almr, almr-plain, hf, each [@micro]")
    parser.add_argument("--loss-memory", type=int, nargs=3, metavar=("TOKENS", "VOCAB", "HIDDEN"),
                        help="instead: peak memory of one loss, plain vs chunked (--chunks)")  # fmt: skip
    parser.add_argument("--chunks", type=int, nargs="+", default=[1024], help="chunk sizes for --loss-memory")
    parser.add_argument("--loss-chunk", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=["almr", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        worker(args)
        return
    if args.loss_memory:
        (loss_memory if args.loss_chunk is not None else compare_loss_memory)(args)
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
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in args.trainers}
    own = ("worker", "model_dir", "out", "trainers", "plain", "micro", "chunks", "loss_memory", "loss_chunk")
    passthrough = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if v is not None and k not in own]
    for round_ in range(args.rounds):
        for name in args.trainers:
            kind, _, micro = name.partition("@")
            out = tmp / f"{name}-{round_}"
            cmd = [sys.executable, __file__, *passthrough, f"--micro={micro or args.micro}",
                   f"--worker={kind.removesuffix('-plain')}", f"--model-dir={tmp / 'model'}", f"--out={out}",
                   *(["--plain"] if kind == "almr-plain" else [])]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode:
                sys.exit(f"{name} worker failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rounds[name].append(result)
            print(f"  round {round_ + 1} {name:12}: {result['tokens_per_s']:8.0f} tokens/s, "
                  f"peak RSS {result['peak_rss'] / 2**20:6.0f} MiB", flush=True)  # fmt: skip
    print(f"{'trainer':12} {'median tokens/s':>16} {'range':>17} {'MFU':>6} {'peak RSS':>9}")
    median: dict[str, float] = {}
    for name, results in rounds.items():
        speeds = [r["tokens_per_s"] for r in results]
        median[name] = statistics.median(speeds)
        rss = statistics.median(r["peak_rss"] for r in results) / 2**20
        mfu = flops_per_token * median[name] / peak
        print(f"{name:12} {median[name]:16.0f} {min(speeds):8.0f}–{max(speeds):<8.0f} {100 * mfu:5.1f}% "
              f"{rss:5.0f} MiB")  # fmt: skip
    base = args.trainers[-1] if "hf" not in rounds else "hf"
    base_rss = statistics.median(r["peak_rss"] for r in rounds[base])
    for name, results in rounds.items():
        if name == base:
            continue
        # round by round: each trainer against the baseline run next to it (the load drifts)
        paired = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(results, rounds[base], strict=True)]
        rss = statistics.median(r["peak_rss"] for r in results) / base_rss
        print(f"{name} / {base}: {median[name] / median[base]:.2f}× median tokens/s (per round "
              f"{min(paired):.2f}–{max(paired):.2f}×), {rss:.2f}× peak RSS")  # fmt: skip


if __name__ == "__main__":
    main()
