"""`almr cpt`: continual pre-training, in one process or in each process torchrun starts."""

from pathlib import Path
from typing import Annotated

import typer

from almr.cli.common import SetOption, load, say

app = typer.Typer()
STOPPED_EXIT = 75  # EX_TEMPFAIL: stopped early on purpose, resumable


@app.command("cpt")
def cpt(
    file: Annotated[Path, typer.Argument(help="A YAML config with model:, cpt: and the data plan (data:, mixture:).")],
    set_: SetOption = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the newest complete checkpoint in cpt.run_dir.")
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")] = True,
) -> None:
    """Continual pre-training: train model.name_or_path on the mixture plan; one process, or many under torchrun."""
    config = load(file, set_)  # a bad config is reported before the slow import below
    from almr.stages.cpt import run_cpt  # heavy: torch, transformers; keeps almr --help fast

    result = run_cpt(config, resume=resume, progress=progress)
    if not result.is_main:
        return  # under torchrun, one summary: process 0's
    if result.finished_before:
        say(
            f"{result.run_dir} is already finished: {result.steps} steps, {result.tokens:,} tokens; checkpoint "
            f"{result.checkpoint}. Nothing was trained; a new cpt.run_dir starts another run"
        )
    elif result.stopped:
        say(
            f"stopped on SIGUSR2 after step {result.steps} ({result.tokens:,} tokens); checkpoint {result.checkpoint}. "
            "Run the same command with --resume to continue"
        )
        # not 0: a chain `almr cpt … && almr sweep final-eval …` must not evaluate an unfinished run
        raise typer.Exit(STOPPED_EXIT)
    elif result.checkpoint is not None:
        say(f"{result.steps} steps, {result.tokens:,} tokens; checkpoint {result.checkpoint}")
