"""`almr cpt`: continual pre-training, in one process or in each process torchrun starts."""

from pathlib import Path
from typing import Annotated

import typer

from almr.cli.common import SetOption, load, say

app = typer.Typer()


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
    elif result.checkpoint is not None:
        say(f"{result.steps} steps, {result.tokens:,} tokens; checkpoint {result.checkpoint}")
