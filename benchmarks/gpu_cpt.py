"""Tokens/s and MFU of the almr CPT trainer: a ~1.2B Llama-3-shaped model in bf16 (autocast in one
process; FSDP2's bf16 MixedPrecisionPolicy under torchrun), fp32 master weights, fused AdamW, random
tokens, sequence length 2048, on one GPU or under torchrun as data parallel × tensor parallel
(`--tp N`: the 2-D layout, dp = processes / N). Prints the layout with its MFU per GPU. Not run in
CI (no GPU).

MFU is against the data-sheet dense bf16 peak (H100/H200 SXM: 989 TFLOP/s), the convention of
torchtitan and Megatron-LM, which report roughly 40–55% MFU for Llama models on H100s. Target: ≥ 40%.

    python benchmarks/gpu_cpt.py                     # one GPU
    python benchmarks/gpu_cpt.py --compile           # torch.compile each decoder layer
    python benchmarks/gpu_cpt.py --tiny              # smoke check on a CPU (fp32, tiny model)
    torchrun --nproc_per_node 8 benchmarks/gpu_cpt.py --tp 2     # 4 (FSDP) × 2 (tensor parallel)
    torchrun --nproc_per_node 4 benchmarks/gpu_cpt.py --tiny --tp 2   # the 2 × 2 layout on CPU (gloo)
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_cpt import TensorLoader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny model, fp32, CPU: a smoke check of this script")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--micro", type=int, default=4)
    parser.add_argument("--accum", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--skip", type=int, default=3, help="untimed warm-up steps")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel degree under torchrun (divides processes)")
    args = parser.parse_args()

    import torch
    from tokenizers import Tokenizer, models
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    from almr.config import load_config
    from almr.train.config import ParallelConfig
    from almr.train.cpt import train_cpt
    from almr.train.parallel import close_distributed, init_distributed

    if args.tiny:
        shape = dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=512)  # fmt: skip
        seq_len, device, dtype = 64, "cpu", "float32"
    else:
        shape = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256)  # fmt: skip
        seq_len, device, dtype = 2048, "cuda", "bfloat16"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    env = init_distributed(device, ParallelConfig(gpus_per_node=world, tensor_parallel=args.tp))
    # every process builds the same model directory and data: a shared seed and folder name per launch
    torch.manual_seed(0)
    tmp = Path(tempfile.gettempdir()) / f"gpu_cpt_{os.environ.get('TORCHELASTIC_RUN_ID', os.getpid())}"
    if env.is_main:
        LlamaConfig(**shape, max_position_embeddings=seq_len, rope_theta=500000.0).save_pretrained(tmp / "model")
        words = {"<unk>": 0, **{f"t{i}": i for i in range(1, 500)}}
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(words, unk_token="<unk>")))
        tokenizer.save_pretrained(tmp / "model")
    if torch.distributed.is_initialized():
        torch.distributed.barrier()  # the others read the folder rank 0 wrote
    global_batch = args.micro * args.accum * env.dp_size
    sets = {
        "model.name_or_path": tmp / "model", "model.dtype": dtype, "cpt.random_init": True,
        "cpt.run_dir": tmp / "run", "cpt.steps": args.steps, "cpt.device": device, "cpt.compile": args.compile,
        "cpt.gradient_checkpointing": args.gradient_checkpointing, "cpt.batch.micro_batch_size": args.micro,
        "cpt.batch.global_batch_size": global_batch, "cpt.batch.seq_len": seq_len, "cpt.optimizer.lr": 1e-4,
        "cpt.schedule.warmup_steps": 2,
    }  # fmt: skip
    config = load_config(None, [f"{k}={v}" for k, v in sets.items()])
    data = torch.randint(0, shape["vocab_size"], (args.steps * global_batch, seq_len + 1))
    loader = TensorLoader(data[env.dp_rank :: env.dp_size], args.micro)  # this replica's share
    train_cpt(config.model, config.cpt, loader=loader, progress=env.is_main)
    close_distributed()
    if not env.is_main:
        return

    events = [json.loads(line) for line in (tmp / "run/metrics.jsonl").read_text().splitlines()]
    start = next(e for e in events if e["event"] == "start")
    timed = [e for e in events if e["event"] == "train"][args.skip :]
    tokens_per_s = len(timed) * global_batch * seq_len / sum(e["step_time"] for e in timed)
    mfu = start["flops_per_token"] * tokens_per_s / (start["peak_flops"] * world)  # per GPU
    peak_mem = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"{name}: {start['parameters'] / 1e9:.2f}B parameters, {dtype}, micro {args.micro} × accum {args.accum} × "
          f"{seq_len} tokens, compile={args.compile}")  # fmt: skip
    print(f"layout dp {env.dp_size} × tp {args.tp} ({world} processes)")
    print(f"tokens/s {tokens_per_s:,.0f}   MFU {100 * mfu:.1f}% of {start['peak_flops'] / 1e12:.0f} TFLOP/s "
          f"({start['peak_flops_source']})   peak memory {peak_mem:.1f} GiB")  # fmt: skip
    print("reference: torchtitan / Megatron-LM report ~40-55% MFU for Llama on H100; target >= 40%")


if __name__ == "__main__":
    main()
