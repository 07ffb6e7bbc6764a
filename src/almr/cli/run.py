"""`almr run CONFIG`: the paper's pipeline as resumable stages (docs/pipeline.md)."""

from pathlib import Path
from typing import Annotated

import typer

from almr.cli.common import SetOption

app = typer.Typer()

OutOption = Annotated[Path, typer.Option("--out", help="The pipeline's folder: one sub-folder per stage.")]
OnlyOption = Annotated[str | None, typer.Option("--only", help="Run only these stages: --only eval,report.")]
FromOption = Annotated[str | None, typer.Option("--from", help="Start at this stage (earlier ones must be done).")]
UntilOption = Annotated[str | None, typer.Option("--until", help="Stop after this stage.")]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print each stage's state, command and resources (Slurm: its script).")
]


def run_pipeline(config: str, out: Path, only: str | None, start: str | None, until: str | None, dry_run: bool,
                 set_: list[str] | None) -> None:  # fmt: skip
    from almr.run.command import run_command  # the stage table imports the library lazily; keeps --help fast

    names = [n.strip() for n in only.split(",") if n.strip()] if only else []
    code = run_command(config, out, overrides=set_ or [], only=names, start=start, until=until, dry_run=dry_run)
    if code:
        raise typer.Exit(code)


@app.command("run")
def run(
    config: Annotated[str, typer.Argument(help="A YAML config file or a preset (demo, paper-llama3-8b, ...).")],
    out: OutOption = Path("almr-run"),
    only: OnlyOption = None,
    start: FromOption = None,
    until: UntilOption = None,
    dry_run: DryRunOption = False,
    set_: SetOption = None,
) -> None:
    """Run the pipeline: world → base → study → frontier → cpt → sft → dpo → empathy → baselines → eval
    → ablation → pairwise → report. Done stages are skipped, changed ones rerun (it says why),
    interrupted ones resume."""
    run_pipeline(config, out, only, start, until, dry_run, set_)
