"""`almr data`: tokenize corpora into indexed shards, plan a mixture, inspect a plan."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from almr.cli.common import SetOption, console, load, say

if TYPE_CHECKING:  # imported by the commands themselves: numpy would slow almr --help
    from almr.data.plan import Plan

app = typer.Typer(help="Tokenize corpora into indexed shards, plan a mixture, inspect a plan.", no_args_is_help=True)


@app.command("tokenize")
def tokenize(
    file: Annotated[Path, typer.Argument(help="A YAML config with data.tokenizer and data.sources.")],
    source: Annotated[list[str] | None, typer.Option("--source", help="Only this source (repeatable).")] = None,
    set_: SetOption = None,
) -> None:
    """Tokenize sources into Megatron .bin/.idx shards with a manifest each (unchanged ones are skipped)."""
    from almr.data.tokenize import tokenize_sources  # heavy: tokenizers, numpy; keeps almr --help fast

    config = load(file, set_)
    for manifest in tokenize_sources(config.data, source or None, progress=True, log=say):
        for split, info in manifest["splits"].items():
            say(
                f"{manifest['source']['name']}/{split}: {info['documents']:,} documents, {info['tokens']:,} tokens, "
                f"%Chinese {100 * info['chinese_share']:.1f}, bad records {info['bad_records']['count']}"
            )


@app.command("plan")
def plan(
    file: Annotated[Path, typer.Argument(help="A YAML config with data: and mixture: (and cpt.batch).")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Plan JSON; default SHARD_DIR/plan-HASH.json.")
    ] = None,
    after: Annotated[
        Path | None, typer.Option("--after", help="The previous phase's plan: continue its streams.")
    ] = None,
    consumed: Annotated[
        int | None, typer.Option("--consumed", help="Sequences the previous phase consumed (default: all).")
    ] = None,
    set_: SetOption = None,
) -> None:
    """Compute the mixture plan, print it as a table and write it as JSON (refused if it cannot be met)."""
    config = load(file, set_)  # a bad config is reported before the slow imports below
    from almr.data.plan import Plan, default_plan_path  # heavy: numpy; keeps almr --help fast
    from almr.stages.cpt import plan_for  # heavy: torch, transformers; keeps almr --help fast

    previous = Plan.load(after) if after is not None else None
    mixture_plan = plan_for(config, previous=previous, consumed=consumed)  # the very plan `almr cpt` trains on
    console.print(_plan_table(mixture_plan))
    path = mixture_plan.save(out or default_plan_path(mixture_plan, config.data.shard_dir))
    say(f"wrote {path}")


def _plan_table(plan: "Plan") -> Table:
    table = Table(
        title=f"plan {plan.hash[:12]}: {plan.steps:,} steps × {plan.global_batch_size} × {plan.seq_len} "
        f"tokens, ALMR {plan.almr:.4g}"
    )
    for col in ("source", "lang", "domain", "weight", "sequences", "tokens", "start", "epochs", "%Chinese"):
        table.add_column(col, justify="left" if col in ("source", "lang", "domain") else "right")
    for s in plan.sources:
        table.add_row(
            s.name, s.language, s.domain, f"{s.weight:.4f}", f"{s.sequences:,}", f"{s.sequences * plan.seq_len:,}",
            f"{s.start:,}", f"{s.epochs:.3f}", f"{100 * s.chinese_share:.1f}",
        )  # fmt: skip
    return table


@app.command("inspect")
def inspect(
    plan_file: Annotated[Path, typer.Argument(help="A plan JSON from `almr data plan`.")],
    png: Annotated[Path | None, typer.Option("--png", help="Plot; default: next to the plan.")] = None,
    steps: Annotated[int, typer.Option("--sample-steps", help="Global batches decoded for %Chinese.")] = 8,
) -> None:
    """Tokens per source, realized ALMR over windows of the blend, %Chinese of what the loader yields, a plot."""
    from almr.data.inspect import inspect_plan_file  # heavy: torch, transformers; keeps almr --help fast

    report, path = inspect_plan_file(plan_file, png, sample_steps=steps)
    console.print(_inspect_table(report))
    for w, info in report["windows"].items():
        say(
            f"ALMR over windows of {w} batch(es): min {info['min']:.4f}, max {info['max']:.4f}, "
            f"max deviation {info['max_deviation_sequences']:.3f} sequences"
        )
    say(
        f"%Chinese of yielded sequences (first {report['sampled_steps']} steps): "
        f"{100 * report['chinese_share_yielded']:.2f}"
    )
    say(f"wrote {report['png']} and {path}")


def _inspect_table(report: dict[str, Any]) -> Table:
    table = Table(
        title=f"plan {report['plan'][:12]}: target ALMR {report['target_almr']:.4g}, "
        f"realized {report['realized_almr']:.4g}"
    )
    for col in ("source", "tokens", "epochs", "shard %zh", "yielded %zh", "max prefix dev"):
        table.add_column(col, justify="left" if col == "source" else "right")
    for s in report["sources"]:
        got = "-" if s["chinese_share_yielded"] is None else f"{100 * s['chinese_share_yielded']:.1f}"
        table.add_row(
            s["name"], f"{s['tokens']:,}", f"{s['epochs']:.3f}", f"{100 * s['chinese_share_shard']:.1f}", got,
            f"{s['prefix_deviation']:.3f}",
        )  # fmt: skip
    return table
