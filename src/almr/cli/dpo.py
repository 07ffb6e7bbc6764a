"""`almr dpo`: direct preference optimization from an SFT checkpoint, in one process or in each
process torchrun / accelerate launch starts."""

from pathlib import Path
from typing import Annotated

import typer

from almr.cli.common import SetOption, load, say
from almr.processes import is_main_process

app = typer.Typer()


@app.command("dpo")
def dpo(
    file: Annotated[Path, typer.Argument(help="A YAML config with model: (the SFT model's hf/ folder) and dpo:.")],
    set_: SetOption = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the newest complete checkpoint in dpo.run_dir.")
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")] = True,
) -> None:
    """DPO: train model.name_or_path on dpo.datasets' preference pairs; the reference log-probabilities are cached."""
    config = load(file, set_)  # a bad config is reported before the slow import below
    from almr.stages.dpo import run_dpo  # heavy: torch, transformers, TRL; keeps almr --help fast

    result = run_dpo(config, resume=resume, progress=progress)
    if is_main_process():  # under torchrun, one line for the run, not one per process
        say(result.summary)
