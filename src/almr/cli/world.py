"""`almr world`: build and inspect the embedded bilingual demo world, pretrain its base model."""

from pathlib import Path
from typing import Annotated

import typer

from almr.cli.common import ConfigOption, SetOption, console, load, say

app = typer.Typer(help="Build and inspect the embedded bilingual demo world.", no_args_is_help=True)


@app.command("build")
def build(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the world into.")],
    seed: Annotated[int | None, typer.Option(help="Seed of every random choice (default: world.seed).")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    force: Annotated[bool, typer.Option(help="Replace whatever OUT_DIR holds.")] = False,
) -> None:
    """Generate the demo world: corpora, benchmarks, SFT/DPO data, tokenizer, base-model config."""
    from almr.world.build import build_world  # heavy: transformers (the tokenizer); keeps almr --help fast

    overrides = [*(set_ or []), *([f"world.seed={seed}"] if seed is not None else [])]
    manifest = build_world(out_dir, load(config, overrides).world, force=force)
    say(f"world (seed {manifest['seed']}) in {out_dir}: {len(manifest['files'])} files")


@app.command("pretrain")
def pretrain(
    world_dir: Annotated[Path, typer.Argument(help="A directory made by `almr world build`.")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Where the shards and the run go (default: beside the world).")
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Pretrain the world's base model from random init on a mostly-English mixture (the base section)."""
    from almr.stages.base_model import pretrain_base  # heavy: torch, transformers; keeps almr --help fast

    out_dir = out_dir or world_dir.parent
    base = pretrain_base(world_dir, out_dir / "base-run", out_dir / "shards", load(config, set_), progress)
    say(f"base model: {base}")


@app.command("stats")
def stats(
    world_dir: Annotated[Path, typer.Argument(help="A directory made by `almr world build`.")],
    markdown: Annotated[bool, typer.Option(help="Print a Markdown table.")] = False,
) -> None:
    """Documents, tokens and %Chinese of each source and split of a world."""
    from almr.world.stats import markdown_table, rich_table, world_stats  # heavy: transformers; keeps --help fast

    rows = world_stats(world_dir)
    if markdown:
        say(markdown_table(rows))
    else:
        console.print(rich_table(rows), markup=False, highlight=False)
