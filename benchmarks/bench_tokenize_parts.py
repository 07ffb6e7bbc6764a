"""Tokenization in parts: tokens/s of one part process and the scaling over processes
(docs/benchmarks.md, "Tokenizing in parts").

    python benchmarks/bench_tokenize_parts.py [--mb 16] [--files 8] [--rounds 3] [--node-cores 64]

One source of `--files` JSONL files (English-like and Chinese text, bench_data.py's corpus and
8k byte-level BPE) is tokenized in 2 parts by `almr data tokenize CONFIG --part i/2`, the command
each task of a Slurm array runs, with `data.workers: 1` (one tokenizer thread per process):
- "1 process": part 0, then part 1, one at a time (nothing else of ours running);
- "2 processes": both parts at once (what two array tasks on one machine do);
- "1 process, all cores": the whole source in one process on the Rust tokenizer's own threads
  (`data.workers: 0`, the default; bench_data.py's 0.76M tok/s row), for reference.
The three alternate in each round (the machine is shared: report median and range). Rates are
the tokenizing rate each process logs (reading, tokenizing, %Chinese, writing the part; not the
interpreter's start, ~2-3 s per task, a constant that 1.7T tokens make negligible); the wall
time with start-up is reported too. Prints one JSON object.
"""

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_data import make_corpus, make_tokenizer, read_texts  # noqa: E402

WROTE = re.compile(r"part (\d+)/(\d+): wrote ([\d,]+) tokens .* in ([\d.]+) s, ([\d.]+) s CPU")
PAPER_TOKENS = 1.7e12


def split_corpus(root: Path, megabytes: float, files: int) -> tuple[list[Path], Path]:
    """bench_data's two corpora, interleaved line by line and cut into `files` files of similar size."""
    en, zh = make_corpus(root, megabytes)
    lines = [
        line for pair in zip(en.read_text().splitlines(), zh.read_text().splitlines(), strict=False) for line in pair
    ]
    tok = make_tokenizer(root, read_texts(en)[::20] + read_texts(zh)[::20])
    out = []
    per = -(-len(lines) // files)
    for k in range(files):
        path = root / "corpus" / f"part{k:03d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines[k * per : (k + 1) * per]) + "\n", encoding="utf-8")
        out.append(path)
    return out, tok


def write_config(root: Path, name: str, files: list[Path], tok: Path, workers: int) -> Path:
    config = root / f"{name}.yaml"
    data = {
        "tokenizer": str(tok),
        "shard_dir": str(root / name),
        "workers": workers,
        "sources": [{"name": "mix", "language": "zh", "train": [str(f) for f in files]}],
    }
    config.write_text(yaml.safe_dump({"data": data}), encoding="utf-8")
    return config


def start(config: Path, part: str | None) -> subprocess.Popen:
    extra = ["--part", part] if part else []
    command = [sys.executable, "-m", "almr.cli", "data", "tokenize", str(config), *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen) -> str:
    out, _ = process.communicate()
    if process.returncode:
        raise RuntimeError(out)
    return out


def part_rate(log: str) -> tuple[int, float, float]:
    """(tokens, seconds, CPU seconds) of the part a process logged."""
    match = WROTE.search(log)
    if not match:
        raise RuntimeError(f"no 'wrote' line in:\n{log}")
    return int(match.group(3).replace(",", "")), float(match.group(4)), float(match.group(5))


def clean(config: Path) -> None:
    shutil.rmtree(yaml.safe_load(config.read_text())["data"]["shard_dir"], ignore_errors=True)


def one_round(parts_config: Path, whole_config: Path) -> dict:
    # 1 process at a time: each part alone
    clean(parts_config)
    alone = []
    wall_alone = 0.0
    for part in ("0/2", "1/2"):
        t0 = time.perf_counter()
        alone.append(part_rate(finish(start(parts_config, part))))
        wall_alone += time.perf_counter() - t0
    # 2 processes at once
    clean(parts_config)
    t0 = time.perf_counter()
    running = [start(parts_config, part) for part in ("0/2", "1/2")]
    together = [part_rate(finish(p)) for p in running]
    wall_together = time.perf_counter() - t0
    # the whole source in one process on the Rust tokenizer's threads (all cores); then again, up to
    # date: the same start-up (imports, tokenizer, fingerprints) with no work, subtracted
    clean(whole_config)
    t0 = time.perf_counter()
    finish(start(whole_config, None))
    wall_whole = time.perf_counter() - t0
    t0 = time.perf_counter()
    finish(start(whole_config, None))
    startup = time.perf_counter() - t0
    manifest = json.loads(
        (Path(yaml.safe_load(whole_config.read_text())["data"]["shard_dir"]) / "mix" / "manifest.json").read_text()
    )
    tokens = manifest["splits"]["train"]["tokens"]
    assert tokens == sum(t[0] for t in alone) == sum(t[0] for t in together), "parts must hold every token once"
    per_process = tokens / sum(t[1] for t in alone)
    aggregate = tokens / max(t[1] for t in together)  # both ran at once: done when the slower is
    cpu_alone, cpu_together = tokens / sum(t[2] for t in alone), tokens / sum(t[2] for t in together)
    return {
        "tokens": tokens,
        "per_process_tok_s": per_process,
        "two_processes_tok_s": aggregate,
        "two_processes_each_tok_s": [t / s for t, s, _ in together],
        "scaling_2": aggregate / per_process,
        # tokens per CPU-second alone and side by side: equal means nothing shared slows a process down,
        # so N processes on N free cores give N times one (the wall-clock scaling above also counts others' jobs)
        "tok_per_cpu_s": {"alone": cpu_alone, "two at once": cpu_together},
        "cpu_efficiency_2": cpu_together / cpu_alone,
        "startup_s": startup,
        "whole_source_all_cores_tok_s": tokens / max(wall_whole - startup, 1e-9),
        "wall_tok_s": {
            "1 process": tokens / wall_alone,
            "2 processes": tokens / wall_together,
            "1 process all cores (workers 0)": tokens / wall_whole,
        },
    }


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=16.0)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--node-cores", type=int, default=64)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-parts-"))
    try:
        files, tok = split_corpus(root, args.mb, args.files)
        parts_config = write_config(root, "parts", files, tok, workers=1)
        whole_config = write_config(root, "whole", files, tok, workers=0)
        rounds = [one_round(parts_config, whole_config) for _ in range(args.rounds)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    per = summary([r["per_process_tok_s"] for r in rounds])
    scaling = summary([r["scaling_2"] for r in rounds])
    cpu_eff = summary([r["cpu_efficiency_2"] for r in rounds])
    # a node runs one part per core; each keeps the rate of one process alone times the CPU efficiency
    # measured side by side (the assumption: parts share nothing but the disk, as here)
    efficiency = min(1.0, cpu_eff["median"])
    node_rate = args.node_cores * per["median"] * efficiency
    print(
        json.dumps(
            {
                "corpus_mb": args.mb,
                "files": args.files,
                "rounds": rounds,
                "per_process_tok_s": per,
                "two_processes_tok_s": summary([r["two_processes_tok_s"] for r in rounds]),
                "scaling_2_processes": scaling,
                "cpu_efficiency_2_processes": cpu_eff,
                "whole_source_one_process_all_cores_tok_s": summary(
                    [r["whole_source_all_cores_tok_s"] for r in rounds]
                ),
                "startup_s": summary([r["startup_s"] for r in rounds]),
                "node": {
                    "cores": args.node_cores,
                    "processes": args.node_cores,
                    "efficiency_assumed": efficiency,
                    "tok_s": node_rate,
                    "node_hours_for_1.7T": PAPER_TOKENS / node_rate / 3600,
                },
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
