"""The `almr` command: one Typer sub-app per stage (`almr.cli.<stage>`). Each command parses its
arguments, calls one library function and prints what it returns; the work lives in the packages
below. Heavy libraries (torch, transformers, optuna) are imported inside the commands that need
them, so that `almr --help` stays fast."""

import typer
from rich.text import Text

from almr.cli.ablation import app as ablation_app
from almr.cli.common import err_console
from almr.cli.config import app as config_app
from almr.cli.cpt import app as cpt_app
from almr.cli.data import app as data_app
from almr.cli.demo import app as demo_app
from almr.cli.dpo import app as dpo_app
from almr.cli.eval import app as eval_app
from almr.cli.frontier import app as frontier_app
from almr.cli.pairwise import app as pairwise_app
from almr.cli.run import app as run_app
from almr.cli.serve import app as serve_app
from almr.cli.sft import app as sft_app
from almr.cli.sweep import app as sweep_app
from almr.cli.vocab import app as vocab_app
from almr.cli.world import app as world_app
from almr.errors import AlmrError

app = typer.Typer(
    help="almr: teach a pretrained LLM an additional language, with the mixture ratio and "
    "learning rate chosen by measurement.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
for single_command in (run_app, demo_app, cpt_app, sweep_app, frontier_app, ablation_app, dpo_app, sft_app):
    app.add_typer(single_command)  # unnamed: its one command sits at the top level (`almr cpt FILE`)
app.add_typer(config_app, name="config")
app.add_typer(world_app, name="world")
app.add_typer(data_app, name="data")
app.add_typer(eval_app, name="eval")
app.add_typer(pairwise_app, name="pairwise")
app.add_typer(serve_app, name="serve")
app.add_typer(vocab_app, name="vocab")


def main() -> None:
    """Entry point of the `almr` console script: bad input is one message and exit code 2."""
    try:
        app()
    except AlmrError as err:
        # the message is the user's own text (paths, keys, values): printed as is, never as markup
        err_console.print(Text.assemble(("error:", "bold red"), f" {err}"), highlight=False)
        raise SystemExit(2) from None


__all__ = ["app", "main"]
