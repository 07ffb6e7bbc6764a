"""`almr eval`: evaluate a model on benchmark suites (lm-eval) or with an LLM judge; tables of results."""

from pathlib import Path
from typing import Annotated

import typer

from almr.cli.common import ConfigOption, SetOption, load, say, warn
from almr.errors import AlmrError, ConfigError
from almr.evaluate.registry import SUITES, TASKS

# the suites `--suite` runs (the judge suite runs with `almr eval judge`)
LM_EVAL_SUITES = [name for name, names in SUITES.items() if any(TASKS[n].kind != "judge" for n in names)]

DeviceOption = Annotated[
    str | None,
    typer.Option(
        "--device", help="Where a local model runs: auto, cpu, cuda, cuda:N (eval.device; auto: CUDA when visible)."
    ),
]
DtypeOption = Annotated[
    str | None,
    typer.Option(
        "--dtype",
        help="Weights of a local model: auto, float32, bfloat16, "
        "float16 (eval.dtype; auto: bfloat16 on CUDA, float32 on the CPU).",
    ),
]


app = typer.Typer(
    help="Evaluate a model (directory or OpenAI-compatible URL) on benchmark suites; tables of results.",
    invoke_without_command=True,
)


@app.callback()
def evaluate(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Option("--model", help="A Hugging Face model directory or an http(s) URL.")
    ] = None,
    suite: Annotated[str | None, typer.Option("--suite", help=f"{', '.join(LM_EVAL_SUITES)} (paper-base: the paper's "
                                                "suite without chat tasks, for a CPT checkpoint; see `almr eval "
                                                "tasks`).")] = None,
    tasks: Annotated[str | None, typer.Option("--tasks", help="Comma-separated tasks (added to the suite).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Items per task.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Benchmark files (a world dir for world tasks).")
    ] = None,
    data_file: Annotated[list[str] | None, typer.Option("--data-file", help="TASK=PATH for one task's file.")] = None,
    tokenizer: Annotated[str | None, typer.Option("--tokenizer", help="Tokenizer dir (needed for a URL's "
                                                  "log-likelihood tasks).")] = None,
    endpoint_model: Annotated[str | None, typer.Option("--endpoint-model", help="Model name at the URL (default: "
                                                       "the first of GET URL/models).")] = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Requests per forward pass or API "
                                                   "call (eval.batch_size).")] = None,
    allow_code_execution: Annotated[bool, typer.Option("--allow-code-execution", help="Run model-written code "
                                                       "(HumanEval) in a sandboxed subprocess.")] = False,
    skip_missing: Annotated[bool, typer.Option("--skip-missing", help="Skip (and report) tasks whose data is not "
                                               "here or that the model cannot answer; run the rest.")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Result JSON (default eval/<run>-<step>-<suite>.json for a "
                                  "checkpoint, eval/<host>_<port>-<model>-<suite>.json for an endpoint).")
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:  # fmt: skip
    """almr eval --model PATH_OR_URL --suite NAME [--tasks …] [--limit N] [--skip-missing]: run lm-eval, write one
    result JSON."""
    if ctx.invoked_subcommand is not None:
        return
    if model is None:
        say(ctx.get_help())
        raise typer.Exit(0)
    from almr.evaluate.harness import evaluate_and_save  # heavy: lm_eval; keeps almr --help fast
    from almr.evaluate.results import markdown_table

    section = load(config, _with_flags(set_, device=device, dtype=dtype, batch_size=batch_size)).eval
    result, path = evaluate_and_save(
        model, section, suite=suite, tasks=_split(tasks), limit=limit, data_dir=data_dir,
        data_files=_task_files(data_file), tokenizer=tokenizer, endpoint_model=endpoint_model,
        allow_code_execution=allow_code_execution, skip_missing=skip_missing, out=out,
    )  # fmt: skip
    for name, reason in result.get("skipped", {}).items():
        warn(f"skipped {name}: {reason}")
    say(markdown_table([result]))
    say(f"wrote {path} ({result['wall_s']:.1f} s)")
    if result.get("unscored"):
        raise AlmrError(f"lm-eval returned no score for {', '.join(result['unscored'])} (the other scores are in "
                        f"{path}); its log above says why — a filter that matched nothing, a metric the task "
                        "does not define, or no items after --limit")


def _with_flags(set_: list[str] | None, **flags: object) -> list[str]:
    """The --set overrides, then one `eval.KEY=VALUE` per flag given: flags are config keys, checked as such."""
    return [*(set_ or []), *(f"eval.{key}={value}" for key, value in flags.items() if value is not None)]


def _split(names: str | None) -> list[str]:
    return [name for name in (names or "").split(",") if name]


def _task_files(items: list[str] | None) -> dict[str, str]:
    files = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep:
            raise ConfigError(f"--data-file {item!r}: expected TASK=PATH")
        files[name] = path
    return files


def _weighted(items: str) -> dict[str, float]:
    """`--average a=2,b`: {a: 2.0, b: 1.0} (a key without a weight weighs 1)."""
    weights = {}
    for item in items.split(","):
        key, sep, weight = item.partition("=")
        try:
            weights[key.strip()] = float(weight) if sep else 1.0
        except ValueError:
            raise ConfigError(
                f"--average {item!r}: expected KEY or KEY=WEIGHT with a number, e.g. world_ceval=2"
            ) from None
    return weights


@app.command("table")
def table(
    results: Annotated[list[Path], typer.Argument(help="Result JSON files (one row each).")],
    average: Annotated[str | None, typer.Option("--average", help="Comma-separated keys of the Avg column, each "
                                                "KEY or KEY=WEIGHT (default eval.average).")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Also write the Markdown table here.")] = None,
    csv: Annotated[Path | None, typer.Option("--csv", help="Also write the CSV table here.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:  # fmt: skip
    """Rows models, grouped columns per family (the paper's Tables 4–5), and the averaged metric."""
    from almr.evaluate.results import csv_table, load_result, markdown_table  # heavy: lm_eval; keeps --help fast

    keys = _weighted(average) if average else load(config, set_).eval.average
    loaded = [load_result(path) for path in results]
    text = markdown_table(loaded, keys)
    say(text)
    if markdown:
        markdown.write_text(text, encoding="utf-8")
    if csv:
        csv.write_text(csv_table(loaded, keys), encoding="utf-8")


@app.command("judge")
def judge_model(
    model: Annotated[str, typer.Option("--model", help="The model under test: a directory or an http(s) URL.")],
    judge: Annotated[str | None, typer.Option("--judge", help="Judge endpoint URL (default eval.judge.url).")] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="The judge's model name (default "
                                                    "eval.judge.model, else the first of GET JUDGE/models).")] = None,
    endpoint_model: Annotated[str | None, typer.Option("--endpoint-model", help="Model name at the --model URL "
                                                       "(default: the first of GET URL/models).")] = None,
    tasks: Annotated[str, typer.Option("--tasks", help="belle_eval, turing_test (comma-separated).")] = "belle_eval",
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Folder with belle_eval/, turing_test/.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Items per task.")] = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Result JSON (default "
                                             "eval/<model>-judge.json).")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:  # fmt: skip
    """LLM-judge tasks: the model answers, the judge endpoint grades; failed items are listed, never scored 0,
    and make the exit code non-zero."""
    from almr.evaluate.judge import incomplete, judge_and_save  # heavy: lm_eval; keeps almr --help fast
    from almr.evaluate.results import markdown_table

    section = load(config, _with_flags(set_, device=device, dtype=dtype)).eval
    result, path = judge_and_save(model, section, judge=judge, judge_model=judge_model, endpoint_model=endpoint_model,
                                  tasks=_split(tasks), data_dir=data_dir, limit=limit, out=out)  # fmt: skip
    for name, task in result["tasks"].items():
        for failure in task["failures"]:
            warn(f"{name} item {failure['item']}: not judged: {failure['error']}")
    say(markdown_table([result]))
    say(f"wrote {path}")
    missing = incomplete(result)
    if missing:
        counts = "; ".join(f"{name} {why}" for name, why in missing.items())
        raise AlmrError(f"incomplete evaluation: {counts}; the items not judged and why are listed above and under "
                        f"each task's failures in {path}")  # fmt: skip


@app.command("tasks")
def list_tasks() -> None:
    """Every task (family, kind, mode, primary metric, data files) and every suite."""
    lines = ["| task | family | kind | mode | shots | primary | files |", "|---|---|---|---|---:|---|---|"]
    for t in TASKS.values():
        files = ", ".join(t.files) or t.hf_dataset or "lm-eval's own datasets (Hugging Face cache)"
        lines.append(f"| {t.name} | {t.family} | {t.kind} | {t.mode} | {t.shots} | {t.primary} | {files} |")
    lines += ["", "| suite | tasks |", "|---|---|"] + [f"| {k} | {', '.join(v)} |" for k, v in SUITES.items()]
    say("\n".join(lines))
