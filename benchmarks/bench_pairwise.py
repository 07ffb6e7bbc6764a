"""The pairwise study's two promises (docs/benchmarks.md#pairwise):

1. **Speed**: a study of a few hundred items reports in seconds. A synthetic study (3 models,
   `--conversations` conversations of 1–4 user turns, every pair on every turn, 20% of the items
   voted by three annotators, 6 annotators) is written to a study file; the report (bootstrap
   intervals for every pair, agreement, position bias, Bradley–Terry, %Chinese) is timed in process
   and as `almr pairwise report` (interpreter start-up included).
2. **Coverage**: the 95% interval, resampled by conversation, covers the true win rate in about 95%
   of simulated studies. Each study draws `--conversations` conversations with 1–4 votes each; a
   conversation has its own win probability p_c ~ Beta(μ·κ, (1−μ)·κ) (votes of one conversation are
   correlated: κ = 4 is strong correlation), a vote is a tie with probability 0.2, else a win with
   probability p_c; the true (W + ½T)/N is 0.1 + 0.8·μ. The same studies are also given a
   bootstrap that resamples votes, which ignores the correlation — its coverage shows why
   resampling conversations matters.

    python benchmarks/bench_pairwise.py [--studies 1000] [--conversations 100] [--resamples 2000]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from almr.pairwise.config import PairwiseConfig
from almr.pairwise.dialogues import Prompt
from almr.pairwise.report import build_report, markdown
from almr.pairwise.stats import cluster_bootstrap
from almr.pairwise.study import Study

MODELS = ["ours", "llama70b", "gpt4"]


def synthetic_study(path: Path, conversations: int, seed: int = 0) -> tuple[Study, int, int]:
    rng = np.random.default_rng(seed)
    study = Study.create(path, MODELS, {"sources": dict.fromkeys(MODELS, "synthetic")})
    prompts = [Prompt(f"c{c}#{t}", f"c{c}", t, [], f"问题 {c} {t}") for c in range(conversations)
               for t in range(int(rng.integers(1, 5)))]  # fmt: skip
    study.add_prompts(prompts)
    texts = {"ours": "我理解你的感受，慢慢来。", "llama70b": "I understand how you feel.",
             "gpt4": "我明白，this is hard."}  # fmt: skip
    for model in MODELS:
        study.add_replies(model, {p.key: (texts[model], 0) for p in prompts}, {})
    rows = []
    for p in prompts:
        for i, a in enumerate(MODELS):
            for b in MODELS[i + 1 :]:
                left, right = (a, b) if rng.random() < 0.5 else (b, a)
                rows.append((p.key, left, right, len(rows), 3 if rng.random() < 0.2 else 1))
    study.add_items(rows)
    annotators = [f"ann{i}" for i in range(6)]
    for name in annotators:
        study.add_annotator(name)
    strength = {"ours": 1.0, "llama70b": -1.0, "gpt4": 0.3}
    votes = []
    for item in study.items():
        p_left = 1 / (1 + np.exp(strength[item.model_right] - strength[item.model_left]))
        for who in rng.choice(annotators, size=item.required, replace=False):
            u = rng.random()
            choice = "tie" if u < 0.15 else "both_bad" if u < 0.2 else "left" if rng.random() < p_left else "right"
            votes.append((item.id, str(who), choice))
    study.add_votes(votes)
    return study, len(rows), len(votes)


def speed(conversations: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        study, items, votes = synthetic_study(Path(tmp) / "study.db", conversations)
        config = PairwiseConfig()
        start = time.perf_counter()
        text = markdown(build_report(study, config, with_bradley_terry=True))
        in_process = time.perf_counter() - start
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "almr.cli", "pairwise", "report", str(study.path),
                               "--bradley-terry"], capture_output=True, text=True, check=True)  # fmt: skip
        command = time.perf_counter() - start
        assert done.stdout.strip() == text.strip()
    return {"items": items, "votes": votes, "report_s": in_process, "command_s": command}


def coverage(studies: int, conversations: int, resamples: int, mu: float, kappa: float, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    truth = 0.1 + 0.8 * mu
    hit_conversation = hit_vote = 0
    width_conversation = width_vote = 0.0
    start = time.perf_counter()
    for s in range(studies):
        sizes = rng.integers(1, 5, size=conversations)
        p = rng.beta(mu * kappa, (1 - mu) * kappa, size=conversations)
        clusters = np.repeat(np.arange(conversations), sizes)
        tie = rng.random(clusters.size) < 0.2
        win = rng.random(clusters.size) < p[clusters]
        scores = np.where(tie, 0.5, win.astype(float))
        by_c = cluster_bootstrap(scores, clusters, resamples, 0.95, seed=s)["score_rate"]
        by_v = cluster_bootstrap(scores, np.arange(clusters.size), resamples, 0.95, seed=s)["score_rate"]
        hit_conversation += by_c[0] <= truth <= by_c[1]
        hit_vote += by_v[0] <= truth <= by_v[1]
        width_conversation += by_c[1] - by_c[0]
        width_vote += by_v[1] - by_v[0]
    return {"mu": mu, "kappa": kappa, "truth": truth, "coverage_by_conversation": hit_conversation / studies,
            "coverage_by_vote": hit_vote / studies, "width_by_conversation": width_conversation / studies,
            "width_by_vote": width_vote / studies, "mc_se": float(np.sqrt(0.95 * 0.05 / studies)),
            "seconds": time.perf_counter() - start}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--conversations", type=int, default=100)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = parser.parse_args()
    results: dict = {"speed": [speed(n) for n in (40, 400)], "coverage": []}
    for row in results["speed"]:
        print(f"speed: {row['items']} items, {row['votes']} votes: report {row['report_s']:.2f} s in process, "
              f"`almr pairwise report` {row['command_s']:.2f} s")  # fmt: skip
    for mu, kappa in [(0.7, 4.0), (0.5, 1e6), (0.9, 4.0)]:
        row = coverage(args.studies, args.conversations, args.resamples, mu, kappa)
        results["coverage"].append(row)
        print(f"coverage μ={mu} κ={kappa:g} (truth {row['truth']:.2f}): by conversation "
              f"{row['coverage_by_conversation']:.3f} (width {row['width_by_conversation']:.3f}), by vote "
              f"{row['coverage_by_vote']:.3f} (width {row['width_by_vote']:.3f}); ±{row['mc_se']:.3f} MC s.e.; "
              f"{row['seconds']:.1f} s")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
