"""Data-pipeline benchmarks, each against a baseline measured in the same run (docs/benchmarks.md).

    python benchmarks/bench_data.py [--mb 16] [--sequences 100000000]

1. tokenization tokens/s: `almr data tokenize` (reading, decoding, tokenizing in processes,
   %Chinese, writing shards) vs (a) the tokenizers library's own `encode_batch_fast` on the
   same texts already in memory, all cores, and (b) datasets `map` (batched, num_proc = cores)
   + `interleave_datasets` over the same two JSONL files;
2. ratio exactness: the largest per-global-batch deviation |additional − ALMR·B| (sequences)
   of our blend vs `datasets.interleave_datasets(probabilities=...)`, at ALMR 0.05, 0.2, 0.5;
3. building the blend for 10⁸ positions over 8 sources: time and peak memory (in a child process);
4. loader: tokens/s of ready [4, 2048] micro-batches on one core vs 2×10⁴ tokens/s (one GPU, 8B).
Needs the `bench` extra (datasets).
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# only numpy and the blend at the top: the --blend-child process measures its own peak memory, so
# everything else (pydantic, tokenizers, torch, datasets: the `bench` extra) is imported where it is used
from almr.data.blend import build_tree, source_ids

HERE = Path(__file__).resolve().parent


def make_corpus(root: Path, megabytes: float) -> tuple[Path, Path]:
    """Two JSONL sources of varied text (English-like words, Chinese characters), `megabytes` in all."""
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 10))) for _ in range(5000)]
    han = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
    paths = []
    for name, maker in (("en", lambda n: " ".join(rng.choice(words, n)) + "."),
                        ("zh", lambda n: "".join(rng.choice(han, n)) + "。")):
        path = root / f"{name}.jsonl"
        size = 0
        with path.open("w", encoding="utf-8") as out:
            while size < megabytes * 1e6 / 2:
                line = json.dumps({"text": maker(int(rng.integers(50, 400)))}, ensure_ascii=False) + "\n"
                out.write(line)
                size += len(line.encode("utf-8"))
        paths.append(path)
    return paths[0], paths[1]


def make_tokenizer(root: Path, texts: list[str]) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=8000, special_tokens=["<|end_of_text|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end_of_text|>").save_pretrained(root / "tok")
    return root / "tok"


def read_texts(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def bench_tokenize(root: Path, megabytes: float, repeats: int = 3) -> dict:
    from almr.data.config import DataConfig
    from almr.data.tokenize import tokenize_sources

    en, zh = make_corpus(root, megabytes)
    texts = read_texts(en) + read_texts(zh)
    tok_dir = make_tokenizer(root, texts[::20])
    cores = os.cpu_count() or 1

    # (a) the library alone, texts already in memory, Rust threads on all cores, vs ours (files →
    # shards, the same Rust threads; workers = 0), alternated and best of `repeats`: the machine is noisy
    from tokenizers import Tokenizer

    lib = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    data = DataConfig(tokenizer=str(tok_dir), shard_dir=str(root / "shards"), sources=[
        {"name": "en", "language": "en", "train": [str(en)]}, {"name": "zh", "language": "zh", "train": [str(zh)]}])
    t_lib = t_ours = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        n_lib = sum(len(e.ids) + 1 for e in lib.encode_batch_fast(texts, add_special_tokens=False))
        t_lib = min(t_lib, time.perf_counter() - start)
        shutil.rmtree(root / "shards", ignore_errors=True)
        start = time.perf_counter()
        manifests = tokenize_sources(data, progress=False, log=lambda m: None)
        t_ours = min(t_ours, time.perf_counter() - start)
    n_ours = sum(m["splits"]["train"]["tokens"] for m in manifests)
    assert n_ours == n_lib, (n_ours, n_lib)

    # (b) datasets: load, batched map in num_proc processes, interleave the two sources
    os.environ["HF_DATASETS_CACHE"] = str(root / "hf-cache")
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    hf_tok = AutoTokenizer.from_pretrained(tok_dir)

    def encode(batch: dict) -> dict:
        ids = hf_tok(batch["text"], add_special_tokens=False)["input_ids"]
        return {"input_ids": [[*x, hf_tok.eos_token_id] for x in ids]}

    start = time.perf_counter()
    parts = [datasets.load_dataset("json", data_files=str(p), split="train").map(
        encode, batched=True, num_proc=cores, remove_columns=["text"]) for p in (en, zh)]
    mixed = datasets.interleave_datasets(parts, probabilities=[0.5, 0.5], seed=0, stopping_strategy="all_exhausted")
    n_hf = sum(len(x) for x in mixed.with_format("numpy")["input_ids"][:1])  # touch the result
    t_hf = time.perf_counter() - start
    del n_hf
    return {
        "corpus_mb": megabytes, "tokens": n_lib, "cores": cores,
        "library_tok_s": n_lib / t_lib, "ours_tok_s": n_ours / t_ours, "datasets_tok_s": n_lib / t_hf,
        "overhead_vs_library": t_ours / t_lib - 1, "speedup_vs_datasets": t_hf / t_ours,
        "data": data.model_dump(),
    }


def bench_ratio(batches: int = 400, gbs: int = 256) -> list[dict]:
    import datasets

    rows = []
    n = batches * gbs
    for almr in (0.05, 0.2, 0.5):
        tree = build_tree([almr, 1 - almr], [True, False])
        ours = (source_ids(tree, 0, n) == 0).reshape(batches, gbs).sum(1)
        a = datasets.Dataset.from_dict({"src": [0] * n})
        b = datasets.Dataset.from_dict({"src": [1] * n})
        mixed = datasets.interleave_datasets([a, b], probabilities=[almr, 1 - almr], seed=0)
        theirs = (np.array(mixed["src"][:n]) == 0).reshape(batches, gbs).sum(1)
        rows.append({"almr": almr, "global_batch": gbs, "batches": batches,
                     "ours_max_dev": float(np.abs(ours - almr * gbs).max()),
                     "datasets_max_dev": float(np.abs(theirs - almr * gbs).max())})
    return rows


def _blend_child(sequences: int) -> None:
    weights = [0.2, 0.3, 0.15, 0.1, 0.1, 0.08, 0.05, 0.02]
    tree = build_tree(weights, [True] + [False] * 7)
    before = _peak_mb()
    start = time.perf_counter()
    counts = np.zeros(8, dtype=np.int64)
    chunk = 1 << 22
    for lo in range(0, sequences, chunk):
        counts += np.bincount(source_ids(tree, lo, min(lo + chunk, sequences)), minlength=8)
    took = time.perf_counter() - start
    peak = _peak_mb()
    dev = float(np.abs(counts - np.array(weights) * sequences).max())
    print(json.dumps({"sequences": sequences, "seconds": took, "peak_rss_mb": peak,
                      "rss_growth_mb": peak - before, "final_count_deviation": dev}))


def _peak_mb() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would include the parent's at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_blend(sequences: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--blend-child", str(sequences)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_loader(root: Path, data: dict, seconds: float = 8.0) -> dict:
    import torch

    from almr.data.config import BatchConfig, DataConfig, MixtureConfig
    from almr.data.loader import PackedLoader
    from almr.data.plan import build_plan

    torch.set_num_threads(1)
    config = DataConfig.model_validate(data)
    plan = build_plan(config, MixtureConfig(almr=0.3, max_epochs=100), BatchConfig(
        micro_batch_size=4, global_batch_size=256, seq_len=2048), token_budget=2048 * 256 * 40)
    loader = PackedLoader(plan, micro_batch_size=4)
    start = time.perf_counter()
    tokens = 0
    for batch in loader:
        tokens += batch["input_ids"].numel()
        if time.perf_counter() - start > seconds:
            break
    rate = tokens / (time.perf_counter() - start)
    return {"loader_tok_s": rate, "gpu_8b_tok_s": 2e4, "margin": rate / 2e4}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=16.0, help="corpus size for the tokenization benchmark")
    parser.add_argument("--sequences", type=int, default=10**8)
    parser.add_argument("--blend-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.blend_child:
        _blend_child(args.blend_child)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = Path(tempfile.mkdtemp(prefix="almr-bench-"))
    try:
        tok = bench_tokenize(root, args.mb)
        print(f"tokenize {tok['corpus_mb']:.0f} MB, {tok['tokens']:,} tokens, {tok['cores']} cores:")
        print(f"  tokenizers encode_batch_fast (a) {tok['library_tok_s']:,.0f} tok/s | almr data tokenize "
              f"{tok['ours_tok_s']:,.0f} tok/s | datasets map+interleave (b) {tok['datasets_tok_s']:,.0f} tok/s")
        print(f"  overhead over (a): {100 * tok['overhead_vs_library']:+.1f}%  speed-up over (b): "
              f"{tok['speedup_vs_datasets']:.2f}x")
        print("ratio exactness, max per-batch deviation in sequences (B = 256, 400 batches):")
        for row in bench_ratio():
            print(f"  ALMR {row['almr']:<5} ours {row['ours_max_dev']:.2f} | "
                  f"datasets.interleave_datasets {row['datasets_max_dev']:.2f}")
        blend = bench_blend(args.sequences)
        print(f"blend of {blend['sequences']:,} sequences over 8 sources: {blend['seconds']:.1f} s, "
              f"peak RSS {blend['peak_rss_mb']:.0f} MB (growth {blend['rss_growth_mb']:.0f} MB), "
              f"final count deviation {blend['final_count_deviation']:.2f}")
        loader = bench_loader(root, tok["data"])
        print(f"loader: {loader['loader_tok_s']:,.0f} tok/s of ready [4, 2048] batches on one core = "
              f"{loader['margin']:.0f}x an 8B model's ~2e4 tok/s per GPU")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
