"""`almr demo`: the main job, end to end, on the embedded demo world."""

from pathlib import Path
from typing import Annotated

import typer

from almr.cli.common import SetOption, console, load

app = typer.Typer()


@app.command("demo")
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for everything the demo makes.")] = Path(
        "almr-demo"
    ),
    config: Annotated[Path, typer.Option("--config", "-c", help="Config of the demo (file or preset).")] = Path("demo"),
    set_: SetOption = None,
) -> None:
    """The main job on the embedded demo world: build it, pretrain its base model, evaluate it, run
    the ALMR × LR study from it and the frontier analysis that recommends the full run."""
    from almr.pipeline import run_demo  # heavy: it drives every stage (torch, transformers); keeps --help fast

    run_demo(out_dir, load(config, set_), console)
