"""`almr demo`: `almr run demo --out almr-demo`, the whole pipeline on the embedded demo world."""

from pathlib import Path
from typing import Annotated

import typer

from almr.cli.common import SetOption
from almr.cli.run import DryRunOption, FromOption, OnlyOption, UntilOption, run_pipeline

app = typer.Typer()


@app.command("demo")
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for everything the demo makes.")] = Path(
        "almr-demo"
    ),
    config: Annotated[str, typer.Option("--config", "-c", help="Config of the demo (file or preset).")] = "demo",
    only: OnlyOption = None,
    start: FromOption = None,
    until: UntilOption = None,
    dry_run: DryRunOption = False,
    set_: SetOption = None,
) -> None:
    """The whole pipeline on the embedded demo world (= `almr run demo --out almr-demo`): the world, its
    base model, the adaptive ALMR × LR study and its frontier, the formal CPT at the recommendation,
    C-SFT, C-DPO, C-SFT-Empathy, the baselines, evaluation, ablation, the pairwise study and the
    report (almr-demo/report/report.md, .html)."""
    run_pipeline(config, out_dir, only, start, until, dry_run, set_)
