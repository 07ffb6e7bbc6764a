"""The `almr` command: one subcommand per stage. It only parses arguments and connects stages;
the work lives in the packages below it. Heavy libraries are imported inside commands so
that `almr --help` stays fast."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from almr.config import AlmrConfig, dump_config, load_config
from almr.errors import AlmrError

app = typer.Typer(
    help="almr: teach a pretrained LLM an additional language, with the mixture ratio and "
    "learning rate chosen by measurement.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
config_app = typer.Typer(help="Show and check configuration files.", no_args_is_help=True)
world_app = typer.Typer(help="Build and inspect the embedded bilingual demo world.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(world_app, name="world")

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="A YAML config file (see configs/).")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one key: --set cpt.optimizer.lr=1e-4 (repeatable)."),
]


def _config(path: Path | None, overrides: list[str] | None) -> AlmrConfig:
    return load_config(path, overrides or [])


@config_app.command("show")
def config_show(file: Annotated[Path, typer.Argument(help="A YAML config file.")], set_: SetOption = None) -> None:
    """Print the fully resolved config (defaults, then FILE, then --set)."""
    console.print(dump_config(_config(file, set_)), end="", markup=False, highlight=False)


@config_app.command("keys")
def config_keys_command(
    section: Annotated[str | None, typer.Argument(help="Only keys under this section, e.g. cpt.")] = None,
) -> None:
    """Every config key with its type, default and meaning, as a Markdown table."""
    from almr.config import config_keys

    rows = [r for r in config_keys() if section is None or r[0].startswith(section.rstrip(".") + ".")]
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += ["| `{}` | {} | `{}` | {} |".format(*(cell.replace("|", r"\|") for cell in row)) for row in rows]
    console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- world


@world_app.command("build")
def world_build(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the world into.")],
    seed: Annotated[int | None, typer.Option(help="Seed of every random choice (default: world.seed).")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    force: Annotated[bool, typer.Option(help="Replace whatever OUT_DIR holds.")] = False,
) -> None:
    """Generate the demo world: corpora, benchmarks, SFT/DPO data, tokenizer, base-model config."""
    from almr.world.build import build_world

    overrides = [*(set_ or []), *([f"world.seed={seed}"] if seed is not None else [])]
    world = _config(config, overrides).world
    manifest = build_world(out_dir, world, force=force)
    console.print(f"world (seed {manifest['seed']}) in {out_dir}: {len(manifest['files'])} files")


@world_app.command("pretrain")
def world_pretrain(
    world_dir: Annotated[Path, typer.Argument(help="A directory made by `almr world build`.")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Where the shards and the run go (default: beside the world).")
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Pretrain the world's base model from random init on a mostly-English mixture (the base section)."""
    from almr.stages.base_model import pretrain_base

    out_dir = out_dir or world_dir.parent
    base = pretrain_base(world_dir, out_dir / "base-run", out_dir / "shards", _config(config, set_), progress)
    console.print(f"base model: {base}")


@world_app.command("stats")
def world_stats(
    world_dir: Annotated[Path, typer.Argument(help="A directory made by `almr world build`.")],
    markdown: Annotated[bool, typer.Option(help="Print a Markdown table.")] = False,
) -> None:
    """Documents, tokens and %Chinese of each source and split of a world."""
    from almr.world.stats import markdown_table, rich_table, world_stats

    rows = world_stats(world_dir)
    console.print(markdown_table(rows) if markdown else rich_table(rows), markup=False, highlight=False)


# --------------------------------------------------------------------------- demo


@app.command("demo")
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for everything the demo makes.")] = Path(
        "almr-demo"
    ),
    config: Annotated[Path, typer.Option("--config", "-c", help="Config of the demo (file or preset).")] = Path(
        "demo"
    ),
    set_: SetOption = None,
) -> None:
    """The main job on the embedded demo world: build it, pretrain its base model, evaluate it, run
    the ALMR × LR study from it and the frontier analysis that recommends the full run."""
    from almr.pipeline import run_demo

    run_demo(out_dir, _config(config, set_), console)


# --------------------------------------------------------------------------- data pipeline (almr data ...)

data_app = typer.Typer(
    help="Tokenize corpora into indexed shards, plan a mixture, inspect a plan.", no_args_is_help=True
)
app.add_typer(data_app, name="data")


@data_app.command("tokenize")
def data_tokenize(
    file: Annotated[Path, typer.Argument(help="A YAML config with data.tokenizer and data.sources.")],
    source: Annotated[list[str] | None, typer.Option("--source", help="Only this source (repeatable).")] = None,
    set_: SetOption = None,
) -> None:
    """Tokenize sources into Megatron .bin/.idx shards with a manifest each (unchanged ones are skipped)."""
    from almr.data.tokenize import tokenize_sources

    config = _config(file, set_)
    for manifest in tokenize_sources(config.data, source or None, progress=True, log=console.print):
        for split, info in manifest["splits"].items():
            console.print(
                f"{manifest['source']['name']}/{split}: {info['documents']:,} documents, {info['tokens']:,} tokens, "
                f"%Chinese {100 * info['chinese_share']:.1f}, bad records {info['bad_records']['count']}"
            )


@data_app.command("plan")
def data_plan(
    file: Annotated[Path, typer.Argument(help="A YAML config with data: and mixture: (and cpt.batch).")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Plan JSON; default SHARD_DIR/plan-HASH.json.")
    ] = None,
    after: Annotated[
        Path | None, typer.Option("--after", help="The previous phase's plan: continue its streams.")
    ] = None,
    consumed: Annotated[
        int | None, typer.Option("--consumed", help="Sequences the previous phase consumed (default: all).")
    ] = None,
    set_: SetOption = None,
) -> None:
    """Compute the mixture plan, print it as a table and write it as JSON (refused if it cannot be met)."""
    from rich.table import Table

    from almr.data.plan import Plan, build_plan

    config = _config(file, set_)
    previous = Plan.load(after) if after is not None else None
    plan = build_plan(
        config.data,
        config.mixture,
        config.cpt.batch,
        token_budget=config.mixture.token_budget or getattr(config.cpt, "total_tokens", None),
        previous=previous,
        consumed=consumed,
    )
    table = Table(
        title=f"plan {plan.hash[:12]}: {plan.steps:,} steps × {plan.global_batch_size} × {plan.seq_len} "
        f"tokens, ALMR {plan.almr:.4g}"
    )
    for col in ("source", "lang", "domain", "weight", "sequences", "tokens", "start", "epochs", "%Chinese"):
        table.add_column(col, justify="left" if col in ("source", "lang", "domain") else "right")
    for s in plan.sources:
        table.add_row(
            s.name,
            s.language,
            s.domain,
            f"{s.weight:.4f}",
            f"{s.sequences:,}",
            f"{s.sequences * plan.seq_len:,}",
            f"{s.start:,}",
            f"{s.epochs:.3f}",
            f"{100 * s.chinese_share:.1f}",
        )
    console.print(table)
    path = plan.save(out or Path(config.data.shard_dir) / f"plan-{plan.hash[:12]}.json")
    console.print(f"wrote {path}")


@data_app.command("inspect")
def data_inspect(
    plan_file: Annotated[Path, typer.Argument(help="A plan JSON from `almr data plan`.")],
    png: Annotated[Path | None, typer.Option("--png", help="Plot; default: next to the plan.")] = None,
    steps: Annotated[int, typer.Option("--sample-steps", help="Global batches decoded for %Chinese.")] = 8,
) -> None:
    """Tokens per source, realized ALMR over windows of the blend, %Chinese of what the loader yields, a plot."""
    import json

    from rich.table import Table

    from almr.data.inspect import inspect_plan
    from almr.data.plan import Plan

    plan = Plan.load(plan_file)
    report = inspect_plan(plan, png or plan_file.with_suffix(".png"), sample_steps=steps)
    table = Table(
        title=f"plan {plan.hash[:12]}: target ALMR {report['target_almr']:.4g}, realized {report['realized_almr']:.4g}"
    )
    for col in ("source", "tokens", "epochs", "shard %zh", "yielded %zh", "max prefix dev"):
        table.add_column(col, justify="left" if col == "source" else "right")
    for s in report["sources"]:
        got = "-" if s["chinese_share_yielded"] is None else f"{100 * s['chinese_share_yielded']:.1f}"
        table.add_row(
            s["name"],
            f"{s['tokens']:,}",
            f"{s['epochs']:.3f}",
            f"{100 * s['chinese_share_shard']:.1f}",
            got,
            f"{s['prefix_deviation']:.3f}",
        )
    console.print(table)
    for w, info in report["windows"].items():
        console.print(
            f"ALMR over windows of {w} batch(es): min {info['min']:.4f}, max {info['max']:.4f}, "
            f"max deviation {info['max_deviation_sequences']:.3f} sequences"
        )
    console.print(
        f"%Chinese of yielded sequences (first {report['sampled_steps']} steps): "
        f"{100 * report['chinese_share_yielded']:.2f}"
    )
    out = plan_file.with_suffix(".inspect.json")
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    console.print(f"wrote {report['png']} and {out}")


# --------------------------------------------------------------------------- end of data pipeline block


# --------------------------------------------------------------------------- CPT trainer (almr cpt ...)


@app.command("cpt")
def cpt_command(
    file: Annotated[Path, typer.Argument(help="A YAML config with model:, cpt: and the data plan (data:, mixture:).")],
    set_: SetOption = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the newest complete checkpoint in cpt.run_dir.")
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")] = True,
) -> None:
    """Continual pre-training: train model.name_or_path on the mixture plan; one process, or many under torchrun."""
    config = _config(file, set_)
    from transformers import AutoTokenizer

    from almr.evaluate.probe import probe_from_config
    from almr.train.cpt import train_cpt

    probe = None
    if config.cpt.probe.every_tokens and config.model.name_or_path:
        probe = probe_from_config(config, AutoTokenizer.from_pretrained(config.model.name_or_path))
    result = train_cpt(config, resume=resume, probe=probe, progress=progress)
    if result.checkpoint is not None:
        console.print(f"{result.steps} steps, {result.tokens:,} tokens; checkpoint {result.checkpoint}")


# --------------------------------------------------------------------------- end of CPT trainer block


# --------------------------------------------------------------------------- evaluation (almr eval ...)

eval_app = typer.Typer(
    help="Evaluate a model (directory or OpenAI-compatible URL) on benchmark suites; tables of results.",
    invoke_without_command=True,
)
app.add_typer(eval_app, name="eval")


@eval_app.callback()
def eval_run(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Option("--model", help="A Hugging Face model directory or an http(s) URL.")
    ] = None,
    suite: Annotated[str | None, typer.Option("--suite", help="world, chinese, english, reasoning, translation, "
                                                "emotion, zh_share, paper (see `almr eval tasks`).")] = None,
    tasks: Annotated[str | None, typer.Option("--tasks", help="Comma-separated tasks (added to the suite).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Items per task.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Benchmark files (a world dir for world tasks).")
    ] = None,
    data_file: Annotated[list[str] | None, typer.Option("--data-file", help="TASK=PATH for one task's file.")] = None,
    tokenizer: Annotated[str | None, typer.Option("--tokenizer", help="Tokenizer dir (needed for a URL's "
                                                  "log-likelihood tasks).")] = None,
    endpoint_model: Annotated[str | None, typer.Option("--endpoint-model", help="Model name at the URL.")] = None,
    allow_code_execution: Annotated[bool, typer.Option("--allow-code-execution", help="Run model-written code "
                                                       "(HumanEval) in a sandboxed subprocess.")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Result JSON (default eval/<model>-<suite>.json).")
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """almr eval --model PATH_OR_URL --suite NAME [--tasks …] [--limit N]: run lm-eval, write one result JSON."""
    if ctx.invoked_subcommand is not None:
        return
    if model is None:
        console.print(ctx.get_help(), markup=False, highlight=False)
        raise typer.Exit(0)
    from almr.errors import ConfigError
    from almr.evaluate.harness import run_eval
    from almr.evaluate.results import markdown_table, save_result

    cfg = _config(config, set_).eval
    files = {}
    for item in data_file or []:
        name, sep, path = item.partition("=")
        if not sep:
            raise ConfigError(f"--data-file {item!r}: expected TASK=PATH")
        files[name] = path
    result = run_eval(
        model, suite=suite, tasks=[t for t in (tasks or "").split(",") if t], limit=limit or cfg.limit,
        data_dir=data_dir or cfg.data_dir, data_files=files, tokenizer=tokenizer, batch_size=cfg.batch_size,
        allow_code_execution=allow_code_execution or cfg.allow_code_execution, max_gen_toks=cfg.max_gen_toks,
        endpoint_model=endpoint_model, timeout_s=cfg.timeout_s, max_retries=cfg.max_retries,
    )  # fmt: skip
    stem = model.rstrip("/").split("/")[-1] or "model"
    path = save_result(result, out or Path("eval") / f"{stem}-{suite or 'tasks'}.json")
    console.print(markdown_table([result]), markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {path} ({result['wall_s']:.1f} s)")


@eval_app.command("table")
def eval_table(
    results: Annotated[list[Path], typer.Argument(help="Result JSON files (one row each).")],
    average: Annotated[str | None, typer.Option("--average", help="Comma-separated keys of the Avg column "
                                                "(default eval.average).")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Also write the Markdown table here.")] = None,
    csv: Annotated[Path | None, typer.Option("--csv", help="Also write the CSV table here.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Rows models, grouped columns per family (the paper's Tables 4–5), and the averaged metric."""
    from almr.evaluate.results import csv_table, load_result, markdown_table

    keys = average.split(",") if average else _config(config, set_).eval.average
    loaded = [load_result(p) for p in results]
    text = markdown_table(loaded, keys)
    console.print(text, markup=False, highlight=False, soft_wrap=True)
    if markdown:
        markdown.write_text(text, encoding="utf-8")
    if csv:
        csv.write_text(csv_table(loaded, keys), encoding="utf-8")


@eval_app.command("judge")
def eval_judge(
    model: Annotated[str, typer.Option("--model", help="The model under test: a directory or an http(s) URL.")],
    judge: Annotated[str | None, typer.Option("--judge", help="Judge endpoint URL (default eval.judge.url).")] = None,
    tasks: Annotated[str, typer.Option("--tasks", help="belle_eval, turing_test (comma-separated).")] = "belle_eval",
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Folder with belle_eval/, turing_test/.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Items per task.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Result JSON.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """LLM-judge tasks: the model answers, the judge endpoint grades; failed items are listed, never scored 0."""
    import time

    from almr.errors import ConfigError
    from almr.evaluate.data import load_records
    from almr.evaluate.judge import JudgeClient, chat_replier, run_judge_task
    from almr.evaluate.registry import TASKS
    from almr.evaluate.results import judge_result, markdown_table, save_result

    cfg = _config(config, set_).eval
    url = judge or cfg.judge.url
    if not url:
        raise ConfigError("no judge endpoint: pass --judge URL or set eval.judge.url")
    names = [t for t in tasks.split(",") if t]
    records = {name: load_records(name, data_dir or cfg.data_dir)[:limit] for name in names}  # data first
    client = JudgeClient(url, cfg.judge.model, cfg.judge.timeout_s, cfg.judge.retries)
    reply = chat_replier(model, timeout_s=cfg.timeout_s, retries=cfg.max_retries)
    started = time.time()
    scored = {n: run_judge_task(n, records[n], reply, client, cfg.judge.prompts_dir) for n in names}
    result = judge_result(scored, [TASKS[n] for n in names], model=model, judge=url, limit=limit,
                          wall_s=time.time() - started)  # fmt: skip
    for name, r in scored.items():
        for failure in r["failures"]:
            err_console.print(f"{name} item {failure['item']}: not judged: {failure['error']}")
    stem = model.rstrip("/").split("/")[-1] or "model"
    path = save_result(result, out or Path("eval") / f"{stem}-judge.json")
    console.print(markdown_table([result]), markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {path}")


@eval_app.command("tasks")
def eval_tasks() -> None:
    """Every task (family, kind, mode, primary metric, data files) and every suite."""
    from almr.evaluate.registry import SUITES, TASKS

    lines = ["| task | family | kind | mode | shots | primary | files |", "|---|---|---|---|---:|---|---|"]
    for t in TASKS.values():
        files = ", ".join(t.files) or t.hf_dataset
        lines.append(f"| {t.name} | {t.family} | {t.kind} | {t.mode} | {t.shots} | {t.primary} | {files} |")
    lines += ["", "| suite | tasks |", "|---|---|"] + [f"| {k} | {', '.join(v)} |" for k, v in SUITES.items()]
    console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- end of evaluation block


# --------------------------------------------------------------------------- sweep (almr sweep ...)


@app.command("sweep")
def sweep_command(
    spec: Annotated[str, typer.Argument(help="A YAML config with a sweep: section (or SWEEP_DIR/sweep.yaml to "
                                        "resume); or the word `status`.")],
    sweep_dir: Annotated[Path | None, typer.Argument(help="With `status`: the sweep folder.")] = None,
    set_: SetOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the run commands (local) or sbatch scripts "
                                          "(slurm) of the first runs; launch nothing.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="With `status`: refresh until the sweep ends.")] = False,
) -> None:
    """almr sweep SPEC: an ALMR × LR study of CPT runs (grid or adaptive), resumable; almr sweep status SWEEP_DIR."""
    from almr.errors import ConfigError

    if spec == "status":
        if sweep_dir is None:
            raise ConfigError("almr sweep status SWEEP_DIR: name the sweep folder")
        _sweep_status(sweep_dir, watch)
        return
    if sweep_dir is not None:
        raise ConfigError(f"almr sweep {spec} {sweep_dir}: one SPEC only (`almr sweep status {sweep_dir}`?)")
    from almr.sweep.launch import cpt_command, sbatch_script
    from almr.sweep.study import plan_runs, probe_base_model, run_sweep

    config = _config(Path(spec), set_)
    if dry_run:
        specs = plan_runs(config)
        for run in specs:
            if config.sweep.launcher == "slurm":
                folder = Path(config.sweep.sweep_dir).resolve() / "slurm" / "%j"
                console.print(f"# {run.run_id}", markup=False, highlight=False)
                console.print(sbatch_script(run, config.sweep.slurm, folder), markup=False, highlight=False)
            else:
                import shlex

                console.print(f"OMP_NUM_THREADS={run.threads} {shlex.join(cpt_command(run))}", markup=False,
                              highlight=False, soft_wrap=True)  # fmt: skip
        what = "all runs" if config.sweep.design == "grid" else "the first runs in flight"
        console.print(f"dry run: {len(specs)} run(s) ({what}); nothing launched", markup=False)
        return
    scores = probe_base_model if config.sweep.launcher == "local" else None
    result = run_sweep(config, baseline_scores=scores, log=lambda m: console.print(m, markup=False, highlight=False))
    _sweep_status(result.sweep_dir, False)
    best = result.best
    if best is not None:
        console.print(f"best: {best.run_id} (ALMR {best.almr:.4g}, LR {best.lr:.3g}): {best.averaged_metric:.2f}")


def _sweep_status(sweep_dir: Path, watch: bool) -> None:
    from almr.sweep.status import is_finished, status_view

    if not watch:
        console.print(status_view(sweep_dir))
        return
    import time

    from rich.live import Live

    with Live(status_view(sweep_dir), console=console, refresh_per_second=1) as live:
        while not is_finished(sweep_dir):
            time.sleep(2.0)
            live.update(status_view(sweep_dir))


# --------------------------------------------------------------------------- end of sweep block


# --------------------------------------------------------------------------- frontier (almr frontier ...)


@app.command("frontier")
def frontier_command(
    sweep_dir: Annotated[Path, typer.Argument(help="A sweep directory (runs/*/record.json, optional baseline.json).")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default SWEEP_DIR/frontier).")
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Fit the loss and averaged-metric surfaces, both frontiers, the recommended (ALMR, LR) with P(best),
    D-CPT and CMR baselines; write report.md, frontier.json and Fig. 1/Fig. 2 (docs/frontier.md)."""
    from almr.frontier.analyze import analyze_sweep

    analysis = analyze_sweep(sweep_dir, _config(config, set_).frontier, out)
    rec = analysis.summary["recommendation"]
    for e in analysis.summary["excluded"]:
        line = f"excluded {e['run_id']} (ALMR {e['almr']:g}, LR {e['lr']:.3g}): {e['status']}: {e['reason']}"
        err_console.print(line, markup=False, highlight=False)
    lin = analysis.summary["metric_frontier"]["forms"]["linear"]["coef"]
    console.print(
        f"recommended ALMR {rec['almr']:.3f}, LR {rec['lr']:.3g}: metric {rec['metric']['mean']:.2f} ± "
        f"{rec['metric']['std']:.2f}, P(best) {rec['prob_best_within_radius']:.2f}; frontier log10 LR* = "
        f"{lin['a']:.3f} + {lin['b']:.3f}·ALMR",
        markup=False, highlight=False,
    )  # fmt: skip
    console.print(f"wrote {analysis.files['report']} and {analysis.files['json']}", markup=False, highlight=False)


# --------------------------------------------------------------------------- end of frontier block


def main() -> None:
    """Entry point of the `almr` console script: bad input is one message and exit code 2."""
    try:
        app()
    except AlmrError as err:
        err_console.print(f"[bold red]error:[/] {err}", markup=True, highlight=False)
        raise SystemExit(2) from None


if __name__ == "__main__":  # `torchrun -m almr.cli cpt ...` (CPT trainer, docs/training.md)
    main()
