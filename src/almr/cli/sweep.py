"""`almr sweep`: an ALMR × LR study of CPT runs, its status, and the final evaluation of one run."""

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live

from almr.cli.common import SetOption, console, load, say, warn
from almr.errors import ConfigError

app = typer.Typer()


@app.command("sweep")
def sweep(
    spec: Annotated[str, typer.Argument(help="A YAML config with a sweep: section (or SWEEP_DIR/sweep.yaml to "
                                        "resume); or the word `status` or `final-eval`.")],
    sweep_dir: Annotated[Path | None, typer.Argument(help="With `status`: the sweep folder; with `final-eval`: "
                                                     "a run's RUN/config.yaml.")] = None,
    set_: SetOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the run commands (local) or sbatch scripts "
                                          "(slurm) of the first runs; launch nothing.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="With `status`: refresh until the sweep ends.")] = False,
    suite: Annotated[str | None, typer.Option("--suite", help="With `final-eval`: the suite.")] = None,
    tasks: Annotated[str | None, typer.Option("--tasks", help="With `final-eval`: comma-separated tasks.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="With `final-eval`: items per task.")] = None,
) -> None:  # fmt: skip
    """almr sweep SPEC: an ALMR × LR study of CPT runs (grid or adaptive), resumable; almr sweep status SWEEP_DIR;
    almr sweep final-eval RUN/config.yaml --suite …: evaluate a finished run (what sweep.final_eval runs)."""
    if spec == "final-eval":
        if sweep_dir is None:
            raise ConfigError("almr sweep final-eval RUN/config.yaml --suite NAME: name the run's config")
        final_eval(sweep_dir, set_, suite, tasks, limit)
        return
    if suite or tasks or limit:
        raise ConfigError("--suite, --tasks and --limit go with `almr sweep final-eval RUN/config.yaml`")
    if spec == "status":
        if sweep_dir is None:
            raise ConfigError("almr sweep status SWEEP_DIR: name the sweep folder")
        show_status(sweep_dir, watch)
        return
    if sweep_dir is not None:
        raise ConfigError(f"almr sweep {spec} {sweep_dir}: one SPEC only (`almr sweep status {sweep_dir}`?)")
    config = load(Path(spec), set_)
    from almr.sweep import study  # heavy: optuna; keeps almr --help fast

    if dry_run:
        say("\n".join(study.dry_run(config)))
        return
    # local sweeps score the base model in this process for baseline.json; Slurm ones leave it empty (docs/sweep.md)
    scores = study.probe_base_model if config.sweep.launcher == "local" else None
    result = study.run_sweep(config, baseline_scores=scores, log=say)
    show_status(result.sweep_dir, watch=False)
    best = result.best
    if best is not None:
        say(f"best: {best.run_id} (ALMR {best.almr:.4g}, LR {best.lr:.3g}): {best.averaged_metric:.2f}")
    if result.unstarted or result.failed:
        # a script (or a Slurm job) running the study must see that it is not whole
        if result.unstarted:
            ids = ", ".join(r.run_id for r in result.unstarted)
            warn(f"{len(result.unstarted)} run(s) could not be launched ({ids}): {result.unstarted[0].error}; "
                 f"run `almr sweep {result.sweep_dir}/sweep.yaml` again to retry them")  # fmt: skip
        if result.failed:
            warn(f"{len(result.failed)} run(s) failed ({', '.join(r.run_id for r in result.failed)}); "
                 f"`almr sweep status {result.sweep_dir}` shows why")  # fmt: skip
        raise typer.Exit(1)


def final_eval(run_config: Path, set_: list[str] | None, suite: str | None, tasks: str | None,
               limit: int | None) -> None:  # fmt: skip
    """The final evaluation of one finished run: its final checkpoint on the suite, into RUN/final_eval.json."""
    from almr.sweep.config import SweepFinalEvalConfig

    names = [name for name in (tasks or "").split(",") if name]
    if not suite and not names:
        raise ConfigError("almr sweep final-eval RUN/config.yaml: pass --suite NAME or --tasks a,b")
    config = load(run_config, set_)
    settings = SweepFinalEvalConfig(enabled=True, suite=suite, tasks=names, limit=limit)
    from almr.evaluate.results import load_result, markdown_table  # heavy: lm_eval; keeps almr --help fast
    from almr.sweep.final_eval import evaluate_run

    path = evaluate_run(config, settings)
    say(markdown_table([load_result(path)], config.eval.average))
    say(f"wrote {path}")


def show_status(sweep_dir: Path, watch: bool) -> None:
    """The status table of a sweep; with `watch`, refreshed every 2 s until every run has ended."""
    from almr.sweep.status import is_finished, status_view  # heavy: optuna, lm_eval; keeps almr --help fast

    if not watch:
        console.print(status_view(sweep_dir))
        return
    with Live(status_view(sweep_dir), console=console, refresh_per_second=1) as live:
        while not is_finished(sweep_dir):
            time.sleep(2.0)
            live.update(status_view(sweep_dir))
