"""Peak host memory per process while a torchrun job builds its model: the full load (every process
`from_pretrained`s the whole model in fp32, then FSDP2 shards it; the trainer before the sharded
load) against the sharded load (`almr.train.sharded_load`: meta build, FSDP2, each process reads
its own slices of the safetensors files). CPU, gloo.

A Llama is built from its config once, with random weights, and saved in bf16 to a temporary
folder. Each round launches torchrun twice, once per path, in alternating order; each process
resets its peak RSS after its imports, its process group and a meta build of the model (which
imports the model's code) (`/proc/self/clear_refs`, 5), builds
the model, and reports VmHWM (peak RSS) and VmRSS at the start and after the build, and the peak
of its anonymous memory (RssAnon sampled every millisecond: VmHWM also counts the pages of the
safetensors files a process has mapped, page cache that the processes of a node share). The report
is the median and range over rounds of the per-process peak (max over processes), absolute and
above the start, and the ratio of the medians (full / sharded), with one process's share of the
fp32 weights for scale.

    python benchmarks/bench_sharded_load.py                      # ~125M parameters, 2 processes, 3 rounds
    python benchmarks/bench_sharded_load.py --processes 4 --rounds 2
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_WORKER = """
import json, os, sys, threading, time
import torch
from pathlib import Path
from almr.train.config import ModelConfig
from almr.train.model import build_model
from almr.train.parallel import init_distributed, parallelize
from almr.train.sharded_load import build_parallel_model

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

mode, folder = sys.argv[1], sys.argv[2]
out = Path(sys.argv[3].replace("RANK", os.environ["RANK"]))  # this rank's report
env = init_distributed("cpu")
config = ModelConfig(name_or_path=folder)
shard = lambda model, dist_env: parallelize(model, dist_env, gradient_checkpointing=False, compile=False)
# the code both paths run, imported before the peak is reset: what is measured is the weights' memory
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
import torch.distributed.checkpoint
with torch.device("meta"):
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
AutoTokenizer.from_pretrained(folder)
torch.distributed.barrier()
Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
# VmHWM counts the pages of the safetensors files a process has mapped (page cache, shared by the
# processes of a node); the anonymous memory, sampled every millisecond, is what each process owns
anon_peak, sampling = [status("RssAnon")], [True]
def sample():
    while sampling[0]:
        anon_peak[0] = max(anon_peak[0], status("RssAnon"))
        time.sleep(0.001)
sampler = threading.Thread(target=sample)
sampler.start()
start, anon_start, began = status("VmRSS"), status("RssAnon"), time.perf_counter()
if mode == "full":
    model = shard(build_model(config).model, env)
else:
    model = build_parallel_model(config, env, shard).model
seconds = time.perf_counter() - began
sampling[0] = False
sampler.join()
torch.distributed.barrier()
out.write_text(json.dumps({"rank": env.rank, "start": start, "peak": status("VmHWM"), "end": status("VmRSS"),
                           "anon_start": anon_start, "anon_peak": anon_peak[0], "seconds": seconds}))
torch.distributed.destroy_process_group()
"""


def build_folder(path: Path, args: argparse.Namespace) -> int:
    """A bf16 Llama with a tokenizer in `path`; its parameter count."""
    import torch
    from tokenizers import Tokenizer, models
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    config = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64, num_key_value_heads=4,
        tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(path)
    words = {"<unk>": 0, **{f"t{i}": i for i in range(1, args.vocab)}}
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(words, unk_token="<unk>"))).save_pretrained(
        path
    )
    return sum(p.numel() for p in model.parameters())


def launch(mode: str, folder: Path, work: Path, processes: int) -> list[dict[str, Any]]:
    script = work / "worker.py"
    script.write_text(_WORKER)
    outs = [work / f"{mode}.{rank}.json" for rank in range(processes)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command = [*torchrun, str(script), mode, str(folder), str(work / f"{mode}.RANK.json")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
    return [json.loads(path.read_text()) for path in outs]


def summary(values: list[float]) -> str:
    return f"{statistics.median(values) / 2**20:8.0f} MiB  [{min(values) / 2**20:.0f}–{max(values) / 2**20:.0f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--intermediate", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder, work = Path(tmp) / "model", Path(tmp)
        parameters = build_folder(folder, args)
        share = 4 * parameters / args.processes
        print(f"Llama, {parameters / 1e6:.0f}M parameters (bf16 file {2 * parameters / 2**20:.0f} MiB, fp32 "
              f"{4 * parameters / 2**20:.0f} MiB), {args.processes} gloo processes: one process's fp32 share "
              f"{share / 2**20:.0f} MiB")  # fmt: skip
        peaks: dict[str, list[float]] = {"full": [], "sharded": []}
        added: dict[str, list[float]] = {"full": [], "sharded": []}
        anon: dict[str, list[float]] = {"full": [], "sharded": []}
        seconds: dict[str, list[float]] = {"full": [], "sharded": []}
        for round_ in range(args.rounds):
            for mode in ("full", "sharded") if round_ % 2 == 0 else ("sharded", "full"):
                started = time.perf_counter()
                reports = launch(mode, folder, work, args.processes)
                peaks[mode].append(max(r["peak"] for r in reports))
                added[mode].append(max(r["peak"] - r["start"] for r in reports))
                anon[mode].append(max(r["anon_peak"] - r["anon_start"] for r in reports))
                seconds[mode].append(max(r["seconds"] for r in reports))
                print(f"  round {round_ + 1} {mode:7s}: peak {peaks[mode][-1] / 2**20:.0f} MiB "
                      f"(+{added[mode][-1] / 2**20:.0f} over the start; anonymous +{anon[mode][-1] / 2**20:.0f}), "
                      f"build {seconds[mode][-1]:.1f} s, "
                      f"launch {time.perf_counter() - started:.0f} s")  # fmt: skip
        print("\nper process, median [range] over rounds:")
        for mode in ("full", "sharded"):
            print(f"  {mode:7s} VmHWM {summary(peaks[mode])}   above start {summary(added[mode])}   anonymous "
                  f"above start {summary(anon[mode])}   build {statistics.median(seconds[mode]):.1f} s")  # fmt: skip
        print("full / sharded (ratio of medians), and above start in one process's fp32 shares:")
        for name, values in (("VmHWM", peaks), ("VmHWM above start", added), ("anonymous above start", anon)):
            ratio = statistics.median(values["full"]) / statistics.median(values["sharded"])
            shares = "" if values is peaks else (
                f"   (full {statistics.median(values['full']) / share:.2f} shares, "
                f"sharded {statistics.median(values['sharded']) / share:.2f})"
            )  # fmt: skip
            print(f"  {name:22s} {ratio:.2f}×{shares}")


if __name__ == "__main__":
    main()
