"""`almr config`: show and check configuration files."""

from pathlib import Path
from typing import Annotated

import typer

from almr.cli.common import SetOption, console, load, say
from almr.config import config_keys, dump_config

app = typer.Typer(help="Show and check configuration files.", no_args_is_help=True)


@app.command("show")
def show(file: Annotated[Path, typer.Argument(help="A YAML config file.")], set_: SetOption = None) -> None:
    """Print the fully resolved config (defaults, then FILE, then --set)."""
    console.print(dump_config(load(file, set_)), end="", markup=False, highlight=False, soft_wrap=True)


@app.command("keys")
def keys(
    section: Annotated[str | None, typer.Argument(help="Only keys under this section, e.g. cpt.")] = None,
) -> None:
    """Every config key with its type, default and meaning, as a Markdown table."""
    prefix = None if section is None else section.rstrip(".") + "."
    rows = [row for row in config_keys() if prefix is None or row[0].startswith(prefix)]
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += ["| `{}` | {} | `{}` | {} |".format(*(cell.replace("|", r"\|") for cell in row)) for row in rows]
    say("\n".join(lines))
