"""`almr pairwise`: blind pairwise evaluation of chat models (Table 8; docs/pairwise.md) — make a
study, issue annotator tokens, serve the annotation page, let an LLM judge it, report, export."""

from pathlib import Path
from typing import Annotated

import typer

from almr.cli.common import ConfigOption, SetOption, load, say, warn

app = typer.Typer(help="Blind pairwise evaluation of chat models: win rates, intervals, agreement (Table 8).",
                  no_args_is_help=True)  # fmt: skip
token_app = typer.Typer(help="Annotator tokens of a study.", no_args_is_help=True)
app.add_typer(token_app, name="token")

StudyArg = Annotated[Path, typer.Argument(help="The study file (made by `almr pairwise make`).")]


@app.command("make")
def make(
    dialogues: Annotated[Path, typer.Argument(help="JSONL of dialogues, or an `almr serve` conversation export.")],
    model: Annotated[list[str], typer.Option("--model", "-m", help="NAME=SOURCE (repeat, two or more): SOURCE is "
                                             "`logged` (the log's own reply), an http(s)://…/v1 endpoint, or a "
                                             "model directory run in this process.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The study file to write (SQLite).")],
    endpoint_model: Annotated[list[str] | None, typer.Option("--endpoint-model", help="NAME=ID: the model id at "
                                                             "NAME's endpoint (default: the first it lists).")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:  # fmt: skip
    """Collect every model's reply to each user turn (same history), scrub model names, randomise sides."""
    from almr.pairwise.collect import parse_models
    from almr.pairwise.make import make_study  # heavy only for a model directory (torch, transformers)

    section = load(config, set_).pairwise
    models = parse_models(model)
    ids = parse_models(endpoint_model or [], flag="--endpoint-model")
    made = make_study(dialogues, models, out, section, ids, log=warn)
    for failure in made.study.failures():
        warn(f"not collected: {failure['model']} on {failure['prompt']}: {failure['error']}")
    per_model = ", ".join(f"{m} {made.replies[m]} ({made.failures[m]} failed, {made.scrubbed[m]} scrubbed)"
                          for m in models)  # fmt: skip
    say(f"{made.prompts} prompts; replies: {per_model}; {made.items} items")
    say(f"wrote {out}; next: `almr pairwise token add {out} NAME`, then `almr pairwise annotate {out}`")


@token_app.command("add")
def token_add(study: StudyArg, name: Annotated[str, typer.Argument(help="The annotator's name.")]) -> None:
    """Issue a token for an annotator (a new one replaces theirs); it is shown once and stored hashed."""
    from almr.pairwise.study import Study

    token = Study(study).add_annotator(name)
    say(token)
    warn(f"annotator {name}: give them this token and the page's address; it is not shown again")


@app.command("annotate")
def annotate(
    study: StudyArg,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free port).")] = 8100,
) -> None:
    """Serve the blind annotation page at /annotate."""
    from almr.pairwise.study import Study
    from almr.pairwise.web import serve

    Study(study)  # a missing or wrong file is refused before the server starts
    warn(f"annotation page: http://{host}:{port}/annotate")
    serve(study, host, port)


@app.command("report")
def report(
    study: StudyArg,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for pairwise_report.md and .json.")] = None,
    bradley_terry: Annotated[bool, typer.Option("--bradley-terry", help="Also fit Bradley–Terry strengths.")] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Table 8: per pair W/T/L, win rates with bootstrap intervals by conversation, agreement, position bias,
    %Chinese; the LLM judge's verdicts apart."""
    from almr.pairwise.report import build_report, markdown, write_report
    from almr.pairwise.study import Study

    section = load(config, set_).pairwise
    built = build_report(Study(study), section, bradley_terry)
    say(markdown(built))
    if out:
        md, js = write_report(built, out)
        say(f"wrote {md} and {js}")


@app.command("judge")
def judge(
    study: StudyArg,
    judge_url: Annotated[str, typer.Option("--judge", help="The judge's OpenAI-compatible endpoint (…/v1).")],
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="The judge's model id (default: the "
                                                    "first it lists).")] = None,
    prompt: Annotated[Path | None, typer.Option("--prompt", help="A judge prompt file with {history}, {user}, "
                                                "{reply_a}, {reply_b} (default: the shipped one).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Judge at most this many items.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:  # fmt: skip
    """An LLM judge votes on every item in both orders (inconsistent verdicts are ties); reported apart."""
    from almr.pairwise.judge import judge_study
    from almr.pairwise.study import Study

    section = load(config, set_).pairwise
    counts = judge_study(Study(study), judge_url, section, judge_model, prompt, limit, log=warn)
    say(f"judge {counts['judge']}: {counts['judged']} items judged, {counts['consistent']} consistent in both "
        f"orders, {counts['failed']} failed (listed above; run again to retry them)")  # fmt: skip


@app.command("export")
def export(
    study: StudyArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Label Studio tasks JSON to write.")],
) -> None:
    """Label Studio pairwise tasks (blind) with the votes so far, and the labeling config beside them."""
    from almr.pairwise.labelstudio import export_tasks
    from almr.pairwise.study import Study

    tasks, label_config, n = export_tasks(Study(study), out)
    say(f"wrote {n} tasks to {tasks} and the labeling config to {label_config}")


@app.command("import")
def import_(
    study: StudyArg,
    tasks: Annotated[Path, typer.Argument(help="Label Studio's JSON export of the tasks `export` wrote.")],
) -> None:
    """Read Label Studio annotations back into the study as votes (the last vote of an annotator counts)."""
    from almr.pairwise.labelstudio import import_votes
    from almr.pairwise.study import Study

    counts = import_votes(Study(study), tasks)
    say(f"imported {counts['votes']} votes; {counts['skipped']} annotations skipped (cancelled or empty)")
