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
    part: Annotated[
        str | None, typer.Option("--part", help="Only part I of N of each source's files, as I/N (I from 0).")
    ] = None,
    parts: Annotated[
        int | None, typer.Option("--parts", help="Tokenize each source in N parts (all of them, here or --slurm).")
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", help="With --parts: parts run at once here, one process each.")] = 1,
    slurm: Annotated[
        bool, typer.Option("--slurm", help="With --parts N: submit a Slurm array of N tasks (data.slurm).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="With --slurm: print the sbatch script and each task's command.")
    ] = False,
    set_: SetOption = None,
) -> None:
    """Tokenize sources into Megatron .bin/.idx shards with a manifest each (unchanged ones are skipped);
    in N parts with --parts N (here) or --part I/N (one part: a Slurm array task, or by hand)."""
    from almr.errors import ConfigError

    config = load(file, set_)
    index, count = _part_option(part, parts)
    if slurm or dry_run:
        if not slurm or index is not None or count == 1:
            raise ConfigError("--slurm takes --parts N (N > 1) without --part; --dry-run goes with --slurm")
        _submit_array(file, config, source or None, count, set_ or [], dry_run)
        return
    from almr.data.tokenize import tokenize_sources  # heavy: tokenizers, numpy; keeps almr --help fast

    for manifest in tokenize_sources(config.data, source or None, progress=True, log=say, parts=count, part=index,
                                     jobs=jobs):  # fmt: skip
        name = manifest["source"] if "part" in manifest else manifest["source"]["name"]
        where = f"{name} part {manifest['part']}/{manifest['parts']}" if "part" in manifest else name
        for split, info in manifest["splits"].items():
            say(
                f"{where}/{split}: {info['documents']:,} documents, {info['tokens']:,} tokens, "
                f"%Chinese {100 * info['chinese_share']:.1f}, bad records {info['bad_records']['count']}"
            )


def _part_option(part: str | None, parts: int | None) -> tuple[int | None, int]:
    """(part index or None, number of parts) from --part I/N and --parts N."""
    from almr.errors import ConfigError

    if part is None:
        return None, parts or 1
    text = part.strip()
    pieces = text.split("/")
    if len(pieces) != 2 or not all(p.strip().isdigit() for p in pieces):
        raise ConfigError(f"--part {part}: write it as I/N, part I (from 0) of N, e.g. --part 0/8")
    index, count = int(pieces[0]), int(pieces[1])
    if parts is not None and parts != count:
        raise ConfigError(f"--part {part} and --parts {parts} disagree on the number of parts; give one of them")
    from almr.data.tokenize import check_parts

    check_parts(count, index)
    return index, count


def part_commands(
    file: Path, sources: list[str] | None, parts: int, overrides: list[str], python: str = "python"
) -> list[list[str]]:
    """The command of each task of a tokenization array: `almr data tokenize FILE --part i/N ...`."""
    extra = [a for name in sources or [] for a in ("--source", name)]
    extra += [a for item in overrides for a in ("--set", item)]
    config = str(Path(file).resolve()) if Path(file).is_file() else str(file)  # a preset name stays a name
    return [[python, "-m", "almr.cli", "data", "tokenize", config, "--part", f"{i}/{parts}", *extra]
            for i in range(parts)]  # fmt: skip


def run_part(command: list[str]) -> None:
    """What one array task executes (submitted by `--slurm`): its part's command."""
    import subprocess

    subprocess.run(command, check=True)


def _slurm_parameters(config: Any, parts: int) -> dict[str, Any]:
    slurm = config.data.slurm
    params: dict[str, Any] = {
        "job_name": "almr-tokenize", "nodes": 1, "ntasks_per_node": 1, "time": slurm.time_min,
        "array_parallelism": min(slurm.parallelism, parts), "setup": list(slurm.setup),
    }  # fmt: skip
    for key, value in (("partition", slurm.partition), ("account", slurm.account),
                       ("cpus_per_task", slurm.cpus_per_task), ("mem", slurm.mem)):  # fmt: skip
        if value is not None:
            params[key] = value
    return params


def _submit_array(
    file: Path, config: Any, sources: list[str] | None, parts: int, overrides: list[str], dry_run: bool
) -> None:
    """A Slurm array of `parts` tasks through submitit (as the sweep's launcher), task i running
    `almr data tokenize FILE --part i/N`; the folder is prepared once here, before any task starts."""
    import sys

    import submitit
    from submitit.slurm import slurm as submitit_slurm

    folder = Path(config.data.shard_dir).resolve() / ".slurm-tokenize" / "%j"
    params = _slurm_parameters(config, parts)
    if dry_run:
        commands = part_commands(file, sources, parts, overrides, python=sys.executable)
        # submitit renders the script its SlurmExecutor submits (as `almr sweep --dry-run` shows it)
        script = submitit_slurm._make_sbatch_string(
            command=f"{sys.executable} -u -m submitit.core._submit {folder}", folder=folder, map_count=parts, **params
        )
        say(script)
        for i, command in enumerate(commands):
            say(f"# task {i}: {shlex_join(command)}")
        say(f"dry run: an array of {parts} task(s); nothing submitted")
        return
    import shutil

    from almr.data.tokenize import prepare_parts
    from almr.errors import ConfigError

    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise ConfigError(
            "--slurm: no Slurm here (sbatch/srun not found); submit from a cluster's login node, or run the parts "
            "here with --parts N [--jobs J], or print the array script with --dry-run"
        )
    todo = prepare_parts(config.data, sources, parts, log=say)
    if not todo:
        say("every source is up to date; nothing submitted")
        return
    commands = part_commands(file, todo, parts, overrides, python=sys.executable)
    executor = submitit.SlurmExecutor(folder=folder)
    executor.update_parameters(**params)
    jobs = executor.map_array(run_part, commands)
    say(f"submitted Slurm array {str(jobs[0].job_id).split('_')[0]}: {parts} task(s) for {', '.join(todo)}; "
        f"logs in {folder.parent}; run the same command again to redo only missing parts")  # fmt: skip


def shlex_join(command: list[str]) -> str:
    import shlex

    return shlex.join(command)


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
