"""The vocabulary-extension study on the demo world, measured whatever it shows: the same ALMR × LR
grid from the same base model, once with the base tokenizer and once with `vocab.new_tokens` new
Chinese tokens, at the same token budget; then `almr compare` of the two.

    python benchmarks/vocab_demo.py [--out vocab-demo] [--new-tokens 200]

Shrunk like the demo test (small world, 24,576-token base, 3 × 2 grid of 8,192-token runs) so it
runs in minutes on a laptop CPU; prints both recommendations and the comparison table.
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("vocab-demo"))
    parser.add_argument("--new-tokens", type=int, default=200)
    args = parser.parse_args()
    import torch

    from almr.config import load_config
    from almr.data.tokenize import tokenize_sources
    from almr.frontier.analyze import analyze_sweep
    from almr.frontier.compare import compare_studies
    from almr.frontier.report import headline
    from almr.pipeline import study_config
    from almr.stages.base_model import pretrain_base
    from almr.sweep.study import probe_base_model, run_sweep
    from almr.vocab.extend import extend_vocabulary
    from almr.vocab.report import report
    from almr.world.build import build_world
    from worlds import SMALL_WORLD

    torch.set_num_threads(1)
    out = args.out
    world = [f"world.{k}={v}" for k, v in SMALL_WORLD.model_dump().items() if k != "model"]
    config = load_config("demo", [
        *world, "base.tokens=24576", "base.probe_every_tokens=8192", "base.schedule.warmup_steps=1",
        "cpt.total_tokens=8192", "cpt.validation.every_steps=1", "cpt.probe.every_tokens=4096",
        "cpt.schedule.warmup_steps=0", "eval.probe.items_per_task=16", "sweep.design=grid",
        "sweep.almr.values=[0.1, 0.5, 0.9]", "sweep.lr.values=[0.001, 0.003]", "frontier.n_bootstrap=5",
        "frontier.n_posterior_samples=50", "frontier.grid_size=11", "frontier.dcpt_starts=2",
        "frontier.n_restarts_optimizer=0",
    ])  # fmt: skip
    started = time.perf_counter()
    world_dir = out / "world"
    build_world(world_dir, config.world)
    base = pretrain_base(world_dir, out / "base-run", out / "shards", config)
    base_study = study_config(world_dir, base, out / "base", config)
    settings = {"out_dir": str(out / "vocab"), "new_tokens": args.new_tokens}
    vocab = base_study.model_copy(update={"data": base_study.data.model_copy(update={"tokenizer": str(base)}),
                                          "vocab": base_study.vocab.model_copy(update=settings)})  # fmt: skip
    extension = extend_vocabulary(vocab)
    print(report(vocab, extension, base))
    extended_study = study_config(world_dir, extension.out_dir, out / "extended", config)
    extended_study = extended_study.model_copy(update={"data": extended_study.data.model_copy(
        update={"tokenizer": str(extension.out_dir)})})  # fmt: skip
    sweeps = []
    for label, study in (("base", base_study), ("extended", extended_study)):
        tokenize_sources(study.data, log=print)
        run_sweep(study, baseline_scores=probe_base_model, log=print)
        analysis = analyze_sweep(Path(study.sweep.sweep_dir), config.frontier)
        print(f"{label}: {headline(analysis.summary)}")
        sweeps.append(Path(study.sweep.sweep_dir))
    print(compare_studies(sweeps, ["base", "extended"], out / "comparison"))
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
