"""The main job on the demo world, end to end. It only connects stages; each stage's work
lives in its own package. Today: build the world and show its statistics."""

from pathlib import Path

from rich.console import Console

from almr.config import AlmrConfig, dump_config


def run_demo(out_dir: Path, config: AlmrConfig, console: Console) -> None:
    from almr.world.build import build_world
    from almr.world.stats import rich_table, world_stats

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")
    world_dir = out_dir / "world"
    console.rule("[bold]1. the demo world")
    manifest = build_world(world_dir, config.world)
    console.print(f"{len(manifest['countries'])} countries, {len(manifest['files'])} files in {world_dir}")
    console.print(rich_table(world_stats(world_dir)))
