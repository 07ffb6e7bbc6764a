"""The `almr` command: one subcommand per stage. It only parses arguments and connects stages;
the work lives in the packages below it. Heavy libraries are imported inside commands so
that `almr --help` stays fast."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from almr.config import AlmrConfig, dump_config, load_config
from almr.errors import AlmrError

app = typer.Typer(
    help="almr: teach a pretrained LLM an additional language, with the mixture ratio and "
    "learning rate chosen by measurement.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
config_app = typer.Typer(help="Show and check configuration files.", no_args_is_help=True)
world_app = typer.Typer(help="Build and inspect the embedded bilingual demo world.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(world_app, name="world")

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="A YAML config file (see configs/).")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one key: --set cpt.optimizer.lr=1e-4 (repeatable)."),
]


def _config(path: Path | None, overrides: list[str] | None) -> AlmrConfig:
    return load_config(path, overrides or [])


@config_app.command("show")
def config_show(file: Annotated[Path, typer.Argument(help="A YAML config file.")], set_: SetOption = None) -> None:
    """Print the fully resolved config (defaults, then FILE, then --set)."""
    console.print(dump_config(_config(file, set_)), end="", markup=False, highlight=False)


def main() -> None:
    """Entry point of the `almr` console script: bad input is one message and exit code 2."""
    try:
        app()
    except AlmrError as err:
        err_console.print(f"[bold red]error:[/] {err}", markup=True, highlight=False)
        raise SystemExit(2) from None
