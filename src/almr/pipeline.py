"""The main job on the demo world, end to end. It only connects stages; each stage's work lives
in its own package, and each stage's output stays in `out_dir` so a re-run reuses it.

Today: 1. build the world; 2. pretrain its base model (the Llama-3 stand-in) with the CPT
trainer, scoring the probe suite along the way; 3. evaluate the base model on the world's
benchmark suite; 4. the ALMR × LR study: short CPT runs from the base model (`sweep`) and the
frontier analysis that recommends the full run's (ALMR, LR). Everything lands in
`out_dir/report.md`.
"""

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from almr.config import AlmrConfig, dump_config
from almr.data.tokenize import tokenize_sources
from almr.evaluate.harness import run_eval
from almr.evaluate.results import markdown_table, save_result
from almr.frontier.analyze import analyze_sweep
from almr.frontier.report import headline
from almr.stages.base_model import pretrain_base
from almr.sweep.status import status_view
from almr.sweep.study import probe_base_model, run_sweep
from almr.train.config import ModelConfig
from almr.world.build import build_world, world_data
from almr.world.stats import markdown_table as stats_markdown
from almr.world.stats import rich_table, world_stats


def run_demo(out_dir: Path, config: AlmrConfig, console: Console) -> Path:
    """Every stage of the demo in order, each printing its part and adding its section to
    `out_dir/report.md`; returns the report's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")
    world_dir = out_dir / "world"
    report = ["# almr demo", "", f"Config: `{out_dir / 'config.yaml'}`.", ""]
    report += _world_stage(world_dir, config, console)
    base, lines = _base_stage(world_dir, out_dir, config, console)
    report += lines
    report += _eval_stage(base, world_dir, out_dir, config, console)
    report += _study_stage(world_dir, base, out_dir, config, console)
    path = out_dir / "report.md"
    path.write_text("\n".join(report), encoding="utf-8")
    console.print(f"report: {path}")
    return path


def _world_stage(world_dir: Path, config: AlmrConfig, console: Console) -> list[str]:
    console.rule("[bold]1. the demo world")
    manifest = build_world(world_dir, config.world)
    stats = world_stats(world_dir)
    console.print(f"{len(manifest['countries'])} countries, {len(manifest['files'])} files in {world_dir}")
    console.print(rich_table(stats))
    return ["## 1. The demo world", "", f"`{world_dir}` (seed {manifest['seed']})", "", stats_markdown(stats), ""]


def _base_stage(world_dir: Path, out_dir: Path, config: AlmrConfig, console: Console) -> tuple[Path, list[str]]:
    console.rule("[bold]2. the base model (the Llama-3 stand-in)")
    run_dir = out_dir / "base-run"
    base = pretrain_base(world_dir, run_dir, out_dir / "shards", config)
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    losses = [e for e in events if e["event"] == "val"]
    console.print(f"base model: {base}")
    console.print(_loss_table(losses))
    return base, [
        "## 2. The base model",
        "",
        f"Pretrained from random initialization on {config.base.tokens:,} tokens "
        f"({100 * config.base.almr:.0f}% Chinese): `{base}`. Held-out loss per source:",
        "",
        _loss_markdown(losses),
        "",
    ]


def _eval_stage(base: Path, world_dir: Path, out_dir: Path, config: AlmrConfig, console: Console) -> list[str]:
    console.rule("[bold]3. evaluation of the base model")
    result = run_eval(
        str(base), suite="world", data_dir=world_dir, limit=config.eval.limit, allow_code_execution=True,
        batch_size=config.eval.batch_size,
    )  # fmt: skip
    result["model"] = "base"
    save_result(result, out_dir / "eval" / "base-world.json")
    table = markdown_table([result], average=config.eval.average)
    console.print(table, markup=False, highlight=False, soft_wrap=True)
    items = f"First {config.eval.limit} items" if config.eval.limit else "All items"
    return ["## 3. Evaluation (world suite)", "", f"{items} of each benchmark.", "", table, ""]


def _study_stage(world_dir: Path, base: Path, out_dir: Path, config: AlmrConfig, console: Console) -> list[str]:
    console.rule("[bold]4. the ALMR × LR study")
    study = study_config(world_dir, base, out_dir, config)

    def say(message: str) -> None:
        console.print(message, markup=False, highlight=False)

    tokenize_sources(study.data, log=say)  # nothing to do when the shards are current
    run_sweep(study, baseline_scores=probe_base_model, log=say)
    console.print(status_view(Path(study.sweep.sweep_dir)))
    analysis = analyze_sweep(Path(study.sweep.sweep_dir), config.frontier, out_dir / "frontier")
    console.print(headline(analysis.summary), markup=False, highlight=False)
    return [
        "## 4. The ALMR × LR study",
        "",
        f"{study.sweep.design} design, {len(analysis.records)} runs of {study.cpt.total_tokens:,} tokens each from "
        f"the base model (`{study.sweep.sweep_dir}`); the analysis is in `{analysis.files['report']}`:",
        "",
        analysis.files["report"].read_text(encoding="utf-8").split("\n", 1)[1],
    ]


def _loss_table(losses: list[dict[str, Any]]) -> Table:
    sources = list(losses[0]["loss"]) if losses else []
    table = Table(title="held-out loss per source")
    table.add_column("tokens", justify="right")
    for source in sources:
        table.add_column(source, justify="right")
    for event in losses:
        table.add_row(f"{event['tokens']:,}", *(f"{event['loss'][s]:.3f}" for s in sources))
    return table


def _loss_markdown(losses: list[dict[str, Any]]) -> str:
    sources = list(losses[0]["loss"]) if losses else []
    lines = ["| tokens | " + " | ".join(sources) + " |", "|---:|" + "---:|" * len(sources)]
    lines += [f"| {e['tokens']:,} | " + " | ".join(f"{e['loss'][s]:.3f}" for s in sources) + " |" for e in losses]
    return "\n".join(lines)


def study_config(world_dir: Path, base: Path, out_dir: Path, config: AlmrConfig) -> AlmrConfig:
    """The demo's sweep: the config's cpt/mixture/sweep settings, from the world's base model on the
    world's shards, probing the world's benchmarks, with its folder under `out_dir`."""
    update = {
        "model": ModelConfig(name_or_path=str(base), dtype=config.model.dtype),
        "data": world_data(world_dir, out_dir / "shards"),
        "eval": config.eval.model_copy(update={"data_dir": str(world_dir)}),
        "sweep": config.sweep.model_copy(update={"sweep_dir": str(out_dir / "sweep")}),
    }
    return AlmrConfig.model_validate(config.model_copy(update=update).model_dump())
