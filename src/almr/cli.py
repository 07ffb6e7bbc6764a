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

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="A YAML config file (see configs/).")]
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


@config_app.command("keys")
def config_keys_command(
    section: Annotated[str | None, typer.Argument(help="Only keys under this section, e.g. cpt.")] = None,
) -> None:
    """Every config key with its type, default and meaning, as a Markdown table."""
    from almr.config import config_keys

    rows = [r for r in config_keys() if section is None or r[0].startswith(section.rstrip(".") + ".")]
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += ["| `{}` | {} | `{}` | {} |".format(*(cell.replace("|", r"\|") for cell in row)) for row in rows]
    console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- world


@world_app.command("build")
def world_build(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the world into.")],
    seed: Annotated[int | None, typer.Option(help="Seed of every random choice (default: world.seed).")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    force: Annotated[bool, typer.Option(help="Replace whatever OUT_DIR holds.")] = False,
) -> None:
    """Generate the demo world: corpora, benchmarks, SFT/DPO data, tokenizer, base-model config."""
    from almr.world.build import build_world

    overrides = [*(set_ or []), *([f"world.seed={seed}"] if seed is not None else [])]
    world = _config(config, overrides).world
    manifest = build_world(out_dir, world, force=force)
    console.print(f"world (seed {manifest['seed']}) in {out_dir}: {len(manifest['files'])} files")


@world_app.command("pretrain")
def world_pretrain(
    world_dir: Annotated[Path, typer.Argument(help="A directory made by `almr world build`.")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Where the shards and the run go (default: beside the world).")
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Pretrain the world's base model from random init on a mostly-English mixture (world.pretrain)."""
    from almr.world.pretrain import pretrain_base

    out_dir = out_dir or world_dir.parent
    base = pretrain_base(world_dir, out_dir / "base-run", out_dir / "shards", _config(config, set_), progress)
    console.print(f"base model: {base}")


@world_app.command("stats")
def world_stats(
    world_dir: Annotated[Path, typer.Argument(help="A directory made by `almr world build`.")],
    markdown: Annotated[bool, typer.Option(help="Print a Markdown table.")] = False,
) -> None:
    """Documents, tokens and %Chinese of each source and split of a world."""
    from almr.world.stats import markdown_table, rich_table, world_stats

    rows = world_stats(world_dir)
    console.print(markdown_table(rows) if markdown else rich_table(rows), markup=False, highlight=False)


# --------------------------------------------------------------------------- demo


@app.command("demo")
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for everything the demo makes.")] = Path(
        "almr-demo"
    ),
    config: Annotated[Path, typer.Option("--config", "-c", help="Config of the demo (file or preset).")] = Path(
        "demo"
    ),
    set_: SetOption = None,
) -> None:
    """The main job on the embedded demo world: build it, pretrain its base model, evaluate it."""
    from almr.pipeline import run_demo

    run_demo(out_dir, _config(config, set_), console)


def main() -> None:
    """Entry point of the `almr` console script: bad input is one message and exit code 2."""
    try:
        app()
    except AlmrError as err:
        err_console.print(f"[bold red]error:[/] {err}", markup=True, highlight=False)
        raise SystemExit(2) from None


if __name__ == "__main__":  # `torchrun -m almr.cli cpt ...` (CPT trainer, docs/training.md)
    main()
