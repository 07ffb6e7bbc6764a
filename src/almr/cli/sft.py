"""`almr sft`: supervised fine-tuning (C-SFT, and C-SFT-Empathy from C-SFT), in one process or in
each process torchrun / accelerate launch starts."""

from pathlib import Path
from typing import Annotated

import typer

from almr.cli.common import SetOption, load, say, warn
from almr.processes import is_main_process

app = typer.Typer()


@app.command("sft")
def sft(
    file: Annotated[
        Path, typer.Argument(help="A YAML config with model: (the start checkpoint) and sft: (data, batch, ...).")
    ],
    set_: SetOption = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the newest complete checkpoint in sft.run_dir/checkpoints.")
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")] = True,
) -> None:
    """Supervised fine-tuning of model.name_or_path on sft.datasets, loss on the replies; the model: sft.run_dir/hf."""
    config = load(file, set_)  # a bad config is reported before the slow import below
    from almr.stages.sft import run_sft  # heavy: torch, transformers, trl; keeps almr --help fast

    summary = run_sft(config, resume=resume, progress=progress, notify=warn)
    if is_main_process():  # one line, not one per process
        say(summary.line())
