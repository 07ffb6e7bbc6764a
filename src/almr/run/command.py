"""What `almr run` does with its arguments: load and check the config, select the stages, then
print the plan (`--dry-run`), submit the stages as Slurm jobs (`sweep.launcher: slurm`), or run them
here with live progress. Returns the exit code."""

import os
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console

from almr.config import AlmrConfig, dump_config, load_config
from almr.errors import ConfigError
from almr.run.display import Display
from almr.run.logs import terminal
from almr.run.runner import Pipeline, Stage, StageFailed
from almr.run.slurm import (
    ACCELERATE_CONFIG,
    IN_JOB,
    accelerate_config,
    describe_resources,
    sbatch_script,
    submit_script,
)
from almr.run.stages import STAGES, given_model_gaps

# Keys every stage may use that change how it runs, not what it makes: where its processes run,
# the launcher of its job, how often it reports, how long a server may take to start.
PLACEMENT = ("parallel", "sweep.launcher", "sweep.slurm", "pipeline.progress_every_s", "pipeline.vllm_start_timeout_s")


def set_keys(model: BaseModel, prefix: str = "") -> list[str]:
    """The dotted leaf keys the config file or --set gave a value (pydantic's fields_set, nested)."""
    keys = []
    for name in sorted(model.model_fields_set):
        value = getattr(model, name)
        if isinstance(value, BaseModel) and value.model_fields_set:
            keys += set_keys(value, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def unread_keys(config: BaseModel, stages: Sequence[Stage]) -> list[str]:
    """Keys set in the config that no stage reads (nor PLACEMENT covers)."""
    covers = [*PLACEMENT, *(key for stage in stages for key in stage.reads)]

    def read(key: str) -> bool:
        return any(key == c or key.startswith(c + ".") or c.startswith(key + ".") for c in covers)

    return [key for key in set_keys(config) if not read(key)]


def load_for_run(config_ref: str, overrides: Sequence[str], stages: Sequence[Stage]) -> AlmrConfig:
    config = load_config(config_ref, list(overrides))
    unread = unread_keys(config, stages)
    if unread:
        raise ConfigError(
            f"config {config_ref}: no stage of `almr run` reads {', '.join(unread)}; remove "
            f"{'it' if len(unread) == 1 else 'them'} (each stage's keys: docs/pipeline.md)"
        )
    return config


def rerun_command(config_ref: str, out: Path, overrides: Sequence[str]) -> str:
    sets = "".join(f" --set {shlex.quote(o)}" for o in overrides)
    return f"almr run {shlex.quote(config_ref)} --out {shlex.quote(str(out))}{sets}"


def run_command(config_ref: str, out: Path, *, overrides: Sequence[str] = (), only: Sequence[str] = (),
                start: str | None = None, until: str | None = None, dry_run: bool = False,
                console: Console | None = None, stages: Sequence[Stage] | None = None,
                config: Any = None, live: bool | None = None) -> int:  # fmt: skip
    """`almr run`: returns the exit code (0 done, 1 a stage failed, 130 interrupted). `stages` and
    `config` replace the paper's stage table and the loaded config (tests)."""
    if console is not None:
        return _run(config_ref, out, overrides, only, start, until, dry_run, console, stages, config, live)
    with terminal() as stream:  # the user's stdout, which a stage's log capture leaves alone
        return _run(config_ref, out, overrides, only, start, until, dry_run, Console(file=stream, soft_wrap=True),
                    stages, config, live)  # fmt: skip


def _run(config_ref: str, out: Path, overrides: Sequence[str], only: Sequence[str], start: str | None,
         until: str | None, dry_run: bool, console: Console, stages: Sequence[Stage] | None, config: Any,
         live: bool | None) -> int:  # fmt: skip
    if stages is None:
        stages = STAGES
    if config is None:
        config = load_for_run(config_ref, overrides, stages)
    out = Path(out)
    pipeline = Pipeline(stages, config, out, rerun_command(config_ref, out, overrides), config_ref)
    selected = pipeline.select(only, start, until)
    gaps = given_model_gaps(config, selected) if isinstance(config, AlmrConfig) else []
    if gaps and not dry_run:
        raise ConfigError(f"config {config_ref} names its model ({config.model.name_or_path}); for the selected stages "
                          "it also needs:\n  " + "\n  ".join(gaps))  # fmt: skip
    if dry_run:
        for line in dry_run_lines(pipeline, selected, config_ref):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return 0
    pipeline.check_inputs(selected, pipeline.states(selected))
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(config, AlmrConfig):
        (out / "config.yaml").write_text(dump_config(config), encoding="utf-8")
    if _launcher(config) == "slurm" and not os.environ.get(IN_JOB):
        return submit(pipeline, selected, config_ref, console)
    every = getattr(getattr(config, "pipeline", None), "progress_every_s", 30.0)
    display = Display(console, total=len(selected), every_s=every, live=live)
    try:
        pipeline.run(selected, display)
    except StageFailed as err:
        display.close()
        console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        display.close()
        console.print(f"interrupted; `{pipeline.rerun}` continues where it stopped", markup=False, highlight=False,
                      soft_wrap=True)  # fmt: skip
        return 130
    finally:
        display.close()
    display.say(f"pipeline done: {', '.join(selected)} in {out}")
    return 0


def _launcher(config: Any) -> str:
    sweep = getattr(config, "sweep", None)
    return getattr(sweep, "launcher", "local")


def dry_run_lines(pipeline: Pipeline, selected: Sequence[str], config_ref: str) -> list[str]:
    """Every stage with its state, why, its command, its resources; under Slurm its sbatch script and
    the submit script that chains the jobs."""
    states = pipeline.states(selected)
    slurm = _launcher(pipeline.config) == "slurm"
    lines = [f"pipeline in {pipeline.out} ({len(selected)} of {len(pipeline.stages)} stages selected)"]
    todo: list[Stage] = []
    for stage in pipeline.stages:
        state = states[stage.name]
        chosen = stage.name in selected
        word = state.state if chosen else f"{state.state}, not selected"
        lines.append(f"{stage.name:<10} {word:<20} {stage.outputs}")
        if state.reasons and chosen:
            lines.append(f"{'':<10} why: {'; '.join(state.reasons)}")
        if not chosen:
            continue
        lines.append(f"{'':<10} command: {pipeline.rerun} --only {stage.name}")
        if stage.command:
            lines.append(f"{'':<10} equals: {stage.command.format(config=config_ref, out=pipeline.out)}")
        if isinstance(pipeline.config, AlmrConfig):
            lines.append(f"{'':<10} resources: {describe_resources(stage, pipeline.config)}")
        if state.state != "done":
            todo.append(stage)
    if slurm and todo and isinstance(pipeline.config, AlmrConfig):
        scripts = pipeline.out / "slurm"
        for stage in todo:
            lines += [f"# {scripts / (stage.name + '.sbatch')}", sbatch_script(stage, config_ref, pipeline.out,
                                                                               pipeline.config)]  # fmt: skip
        if any(stage.kind == "finetune" for stage in todo):
            lines += [f"# {scripts / ACCELERATE_CONFIG}", accelerate_config(pipeline.config)]
        lines += [f"# {scripts / 'submit.sh'}", submit_script(todo, config_ref, pipeline.out, scripts)]
    run = [s.name for s in todo] if todo else []
    try:
        pipeline.check_inputs(selected, states)
    except ConfigError as err:
        lines.append(f"this selection would be refused: {err}")
    if isinstance(pipeline.config, AlmrConfig):
        lines += [f"this selection would be refused: {gap}" for gap in given_model_gaps(pipeline.config, selected)]
    lines.append(f"dry run: {len(run)} stage(s) would run ({', '.join(run) or 'none'}); nothing was started")
    return lines


def submit(pipeline: Pipeline, selected: Sequence[str], config_ref: str, console: Console) -> int:
    """Write each stage's sbatch script and submit them as a chain of dependent jobs."""
    assert isinstance(pipeline.config, AlmrConfig)
    states = pipeline.states(selected)
    todo = [pipeline.by_name[n] for n in selected if states[n].state != "done"]
    scripts = pipeline.out / "slurm"
    scripts.mkdir(parents=True, exist_ok=True)
    for stage in todo:
        (scripts / f"{stage.name}.sbatch").write_text(sbatch_script(stage, config_ref, pipeline.out, pipeline.config),
                                                      encoding="utf-8")  # fmt: skip
    if any(stage.kind == "finetune" for stage in todo):
        (scripts / ACCELERATE_CONFIG).write_text(accelerate_config(pipeline.config), encoding="utf-8")
    chain = scripts / "submit.sh"
    chain.write_text(submit_script(todo, config_ref, pipeline.out, scripts), encoding="utf-8")
    try:
        done = subprocess.run(["bash", str(chain)], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ConfigError("sweep.launcher=slurm but bash is not available to submit the jobs") from None
    if done.returncode:
        raise ConfigError(f"submitting {chain} failed (is sbatch on PATH?): {done.stderr.strip()}")
    console.print(done.stdout.rstrip(), markup=False, highlight=False, soft_wrap=True)
    return 0
