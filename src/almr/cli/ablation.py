"""`almr ablation`: the paper's Table 6 — C-DPO with and without CPT, with and without the additional
language's fine-tuning data."""

from pathlib import Path
from typing import Annotated

import typer

from almr.cli.common import SetOption, load, say

app = typer.Typer()


@app.command("ablation")
def ablation(
    file: Annotated[Path, typer.Argument(help="A YAML config with ablation:, sft:, dpo: and eval: sections.")],
    set_: SetOption = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bars.")] = True,
) -> None:
    """SFT → DPO → evaluation of four cells (with/without CPT × with/without the language's data); resumable."""
    config = load(file, set_)  # a bad config is reported before the slow import below
    from almr.stages.ablation import run_ablation  # heavy: torch, transformers, trl, lm_eval; keeps --help fast

    path = run_ablation(config, progress=progress, log=say)
    say(path.read_text(encoding="utf-8"))
