"""What the commands share: the --config and --set options, the consoles, and loading a config."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from almr.config import AlmrConfig, load_config

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="A YAML config file (see configs/).")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one key: --set cpt.optimizer.lr=1e-4 (repeatable)."),
]


def load(path: Path | None, overrides: list[str] | None) -> AlmrConfig:
    """The config of a command: defaults, then the file (or preset) at `path`, then each --set."""
    return load_config(path, overrides or [])


def say(text: str) -> None:
    """Print text as it is: user text (paths, messages, tables in Markdown) may hold brackets, which
    rich would read as markup, and long lines must stay whole for copying and for files."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def warn(text: str) -> None:
    """Print a line to stderr as it is (see `say`)."""
    err_console.print(text, markup=False, highlight=False)
