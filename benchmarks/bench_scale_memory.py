"""Host memory that should not grow with the corpus or the model (issue 17, items 4 and 5), before
and after, measured in the same run (docs/benchmarks.md, "Memory at scale").

    git archive b03ecf0 src | tar -x -C /tmp/almr-base      # the code before the change
    python benchmarks/bench_scale_memory.py --baseline-src /tmp/almr-base/src
        [--writer-docs 10000000] [--docs 1000000] [--valid-tokens 3000000] [--hidden 512] [--rounds 3]

Every measurement runs in a fresh process whose `almr` is either this checkout's (`new`) or the
baseline's (`old`, PYTHONPATH); rounds alternate old and new. Peak host memory is the rise of
VmHWM over the resident size just before the measured operation (the high-water mark is reset
there through /proc/self/clear_refs), so the interpreter, torch and the model do not count.
1. shard writer: `ShardWriter` given `--writer-docs` documents of 2-5 tokens, 256 at a time (as
   the tokenizer hands them over): its memory per document, alone.
   tokenize: `tokenize_sources` (one process, `data.workers: 1`) of one source of `--docs` short
   documents (2-4 words of a word-level tokenizer): the shard writer's per-document memory.
2. start + validation: the CPT stage's data start (`build_data`: plan, packed loader, held-out
   sets) on that corpus as train split and `--valid-tokens` held-out tokens, then one validation
   of a tiny Llama (seq_len 256) with the trainer's Validator. `new` runs it with the default
   cap (cpt.validation.max_sequences 512) and uncapped (every sequence, read lazily).
3. checkpoint: `Checkpointer.save` (DCP state + Hugging Face export in float32, 20MB shards) of an
   FSDP2-sharded Llama (hidden `--hidden`, 4 layers, 8k vocabulary; AdamW state after one step)
   under 2 gloo processes (torchrun): time of the save and each rank's peak, against the size
   of the checkpoint on disk.
Prints one JSON object: per case, the median and range over rounds.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
NEW_SRC = HERE.parent / "src"

COMMON = """
import ctypes, json, os, sys, time
def hwm_reset():
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # memory freed earlier goes back first: RSS is what is live
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
"""

TOKENIZE = COMMON + """
from almr.data.config import DataConfig
from almr.data.manifest import tokenizer_info
from almr.data.tokenize import tokenize_sources
data = DataConfig.model_validate(json.loads(sys.argv[1]))
tokenizer_info(data.tokenizer)  # transformers' import and the tokenizer out of the measurement
hwm_reset(); before = status("VmRSS")
start = time.perf_counter()
tokenize_sources(data, progress=False, log=lambda m: None)
print(json.dumps({"peak_bytes": status("VmHWM") - before, "seconds": time.perf_counter() - start}))
"""

WRITE = COMMON + """
import numpy as np
from almr.data.shards import ShardWriter
docs, folder = int(sys.argv[1]), sys.argv[2]
lengths = np.random.default_rng(0).integers(2, 6, 256)  # the tokenizer hands the writer 256 documents at a time
tokens = np.ones(int(lengths.sum()), dtype=np.uint16)
hwm_reset(); before = status("VmRSS")
start = time.perf_counter()
with ShardWriter(folder + "/train", np.uint16) as writer:
    for _ in range(docs // 256):
        writer.add(tokens, lengths)
    writer.commit()
print(json.dumps({"peak_bytes": status("VmHWM") - before, "seconds": time.perf_counter() - start}))
"""

START_VALIDATE = COMMON + """
import inspect, torch
torch.set_num_threads(1)
from transformers import AutoConfig, AutoModelForCausalLM
from almr.config import AlmrConfig
from almr.stages.cpt import build_data
from almr.train.parallel import Distributed
from almr.train.validate import Validator
config = AlmrConfig.model_validate(json.loads(sys.argv[1]))
cap = json.loads(sys.argv[2])
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(sys.argv[3]), dtype=torch.float32).eval()
env = Distributed(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), mesh=None)
with torch.no_grad():
    model(torch.zeros(1, 8, dtype=torch.long))  # first-call allocations out of the measurement
hwm_reset(); before = status("VmRSS")
start = time.perf_counter()
loader, validation = build_data(config, 0, 1)
started = time.perf_counter()
kw = {"max_sequences": cap} if "max_sequences" in inspect.signature(Validator).parameters else {}
losses = Validator(validation, 16, 1, env, **kw)(model)
done = time.perf_counter()
print(json.dumps({"peak_bytes": status("VmHWM") - before, "start_seconds": started - start,
                  "validation_seconds": done - started, "loss": losses["en"]}))
"""

SAVE = COMMON + """
import torch, torch.distributed as dist
torch.set_num_threads(1)
from pathlib import Path
from torch.distributed.fsdp import fully_shard
from transformers import LlamaConfig, AutoModelForCausalLM
from almr.train import checkpoint as ckpt
dist.init_process_group("gloo")
rank = dist.get_rank()
hidden, root = int(sys.argv[1]), Path(sys.argv[2])
config = LlamaConfig(vocab_size=8192, hidden_size=hidden, intermediate_size=int(2.6875 * hidden), num_hidden_layers=4,
                     num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=256)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
for layer in model.model.layers:
    fully_shard(layer)
fully_shard(model)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
x = torch.randint(0, 8192, (2, 64))
model(input_ids=x, labels=x).loss.backward()
optimizer.step()
checkpointer = ckpt.Checkpointer(root, keep_last=1, rank=rank)
state = {"model_optim": ckpt.ModelAndOptimizer(model, optimizer)}
export = lambda out: ckpt.export_hf(model, None, out, rank == 0, dtype=torch.float32, max_shard_size="20MB")
rows = []
for step in (1, 2):  # the first save pays one-time imports and allocations: step 2 is reported
    dist.barrier()
    hwm_reset(); before = status("VmRSS")
    start = time.perf_counter()
    folder = checkpointer.save(step, state, export, {"tokens": 0})
    seconds = time.perf_counter() - start
    checkpointer.prune()
    rows.append({"seconds": seconds, "peak_bytes": status("VmHWM") - before})
size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
hf = sum(p.stat().st_size for p in (folder / "hf").glob("*.safetensors"))
out = [None] * dist.get_world_size()
dist.all_gather_object(out, rows[-1])
if rank == 0:
    print(json.dumps({"ranks": out, "checkpoint_bytes": size, "export_weight_bytes": hf,
                      "export_files": len(list((folder / "hf").glob("*.safetensors")))}))
dist.destroy_process_group()
"""


def run(script: str, args: list[str], src: Path, torchrun: bool = False) -> dict:
    # a fixed mmap threshold: glibc's adaptive one would keep large freed blocks resident between measurements
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "MALLOC_MMAP_THRESHOLD_": "131072"}  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(textwrap.dedent(script))
    torchrun_2 = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    launcher = torchrun_2 if torchrun else [sys.executable]
    done = subprocess.run([*launcher, f.name, *args], env=env, capture_output=True, text=True, timeout=1800)
    os.unlink(f.name)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)[:200]} with {src} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def make_corpus(root: Path, docs: int, valid_tokens: int) -> Path:
    """A word-level tokenizer (token i is written t{i}, 256 ids) and a source: `docs` train
    documents of 2-4 words, held-out documents of ~1000 words adding up to `valid_tokens`."""
    import numpy as np

    sys.path.insert(0, str(HERE.parent / "tests"))
    from train_toys import make_model_dir

    make_model_dir(root / "model", vocab=256)
    rng = np.random.default_rng(0)
    words = np.array([f"t{i}" for i in range(256)])
    with (root / "train.jsonl").open("w") as f:
        for start in range(0, docs, 100_000):
            n = min(100_000, docs - start)
            lengths = rng.integers(2, 5, n)
            ids = rng.integers(3, 256, int(lengths.sum()))
            cuts = np.cumsum(lengths)[:-1]
            f.writelines(json.dumps({"text": " ".join(words[doc])}) + "\n" for doc in np.split(ids, cuts))
    with (root / "valid.jsonl").open("w") as f:
        for _ in range(max(1, valid_tokens // 1000)):
            f.write(json.dumps({"text": " ".join(words[rng.integers(3, 256, 999)])}) + "\n")  # + EOS: 1000 tokens
    return root


def data_config(root: Path, shard_dir: Path, train: bool = True, valid: bool = True) -> dict:
    source = {"name": "en", "language": "en", "train": [str(root / "train.jsonl")] if train else [],
              "valid": [str(root / "valid.jsonl")] if valid else []}  # fmt: skip
    return {"tokenizer": str(root / "model"), "shard_dir": str(shard_dir), "workers": 1, "sources": [source]}


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-src", type=Path, required=True, help="the src/ folder of the code before")
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--writer-docs", type=int, default=10_000_000)
    parser.add_argument("--valid-tokens", type=int, default=3_000_000)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["write", "tokenize", "validate", "save"], action="append")
    args = parser.parse_args()
    only = set(args.only or ["write", "tokenize", "validate", "save"])
    srcs = {"old": args.baseline_src.resolve(), "new": NEW_SRC}
    results: dict = {"docs": args.docs, "writer_docs": args.writer_docs, "valid_tokens": args.valid_tokens,
                     "hidden": args.hidden, "rounds": args.rounds}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = make_corpus(Path(tmp), args.docs, args.valid_tokens)
        samples: dict[str, list[dict]] = {}
        if "write" in only:
            for r in range(args.rounds):
                for name, src in srcs.items():
                    folder = root / f"write-{name}-{r}"
                    folder.mkdir()
                    samples.setdefault(f"shard writer/{name}", []).append(
                        run(WRITE, [str(args.writer_docs), str(folder)], src))
        if "tokenize" in only:
            for r in range(args.rounds):
                for name, src in srcs.items():
                    shard_dir = root / f"tok-{name}-{r}"
                    samples.setdefault(f"tokenize/{name}", []).append(
                        run(TOKENIZE, [json.dumps(data_config(root, shard_dir, valid=False))], src))
        if "validate" in only:
            shard_dir = root / "shards"
            run(TOKENIZE, [json.dumps(data_config(root, shard_dir))], NEW_SRC)
            config = {"data": data_config(root, shard_dir), "mixture": {"almr": 0.0, "token_budget": 64 * 256},
                      "cpt": {"batch": {"micro_batch_size": 16, "global_batch_size": 16, "seq_len": 256}}}  # fmt: skip
            cases = {"old": (srcs["old"], None), "new": (NEW_SRC, 512), "new, uncapped": (NEW_SRC, None)}
            for _ in range(args.rounds):
                for name, (src, cap) in cases.items():
                    samples.setdefault(f"start+validation/{name}", []).append(
                        run(START_VALIDATE, [json.dumps(config), json.dumps(cap), str(root / "model")], src))
        if "save" in only:
            for r in range(args.rounds):
                for name, src in srcs.items():
                    row = run(SAVE, [str(args.hidden), str(root / f"ckpt-{name}-{r}")], src, torchrun=True)
                    row.update({f"rank{i}_{k}": v for i, rank in enumerate(row.pop("ranks")) for k, v in rank.items()})
                    samples.setdefault(f"checkpoint/{name}", []).append(row)
        for case, rows in samples.items():
            keys = [k for k in rows[0] if isinstance(rows[0][k], int | float)]
            results[case] = {k: summary([row[k] for row in rows]) for k in keys}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
