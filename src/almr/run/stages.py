"""The paper's pipeline as a table of stages (docs/pipeline.md): what each reads from the config,
which stages' outputs it needs, the library function that does its work, and what it makes.

    world → base → study → frontier → cpt → sft → dpo → empathy → baselines → eval → ablation
          → pairwise → report

A config that names its base model (`model.name_or_path`: a local directory or a hub id) runs the
same stages without the demo world: `world` tokenizes the config's `data.sources`, `base` is that
model as it is, and the post-training stages read the data sets the config names
(`given_model_gaps` says, before anything runs, which of them a selection of stages lacks).

A stage's function only connects library functions (almr.world, almr.stages, almr.sweep,
almr.frontier, almr.evaluate, almr.pairwise, almr.report) with the folders of its inputs; each
returns its outputs as paths relative to its folder, which `stage.json` keeps for the stages after
it. Heavy libraries are imported inside the functions (`almr run --dry-run` stays fast).
"""

import json
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from almr.config import AlmrConfig
from almr.errors import AlmrError, ConfigError
from almr.run.posttrain import (
    finetune,
    formal_cpt,
    model_zh_share,
    split_empathy,
    study_config,
    world_dpo_data,
    world_sft_data,
)
from almr.run.runner import Stage, StageContext

# The eval stage's model labels, in the report's row order: stage → {label: output name}.
MODELS = {
    "base": {"base": "model"},
    "cpt": {"cpt": "model"},
    "baselines": {"cpt-fixed": "cpt-fixed", "instruct": "instruct"},
    "sft": {"c-sft": "model"},
    "dpo": {"c-dpo": "model"},
    "empathy": {"c-sft-empathy": "model"},
}


def _rel(path: Path, folder: Path) -> str:
    """`path` as a stage output: relative to the stage's folder when it lies in the pipeline's
    folder (which can then move), absolute when it lies elsewhere (a model in the hub cache, the
    user's shards)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    if not path.is_relative_to(folder.parent):
        return str(path)
    return os.path.relpath(path, folder)


# ---------------------------------------------------------------------------- world, base


def _world(ctx: StageContext) -> Path | None:
    """The demo world's folder; None for a config that names its model."""
    return None if ctx.config.names_a_model else ctx.input_path("world", "world")


def given_model_gaps(config: AlmrConfig, selected: list[str]) -> list[str]:
    """What a config that names its model lacks for the `selected` stages (the demo world supplies
    all of it): one line per problem, saying what to set. Checked before anything runs."""
    if not config.names_a_model:
        return []

    def world_tasks(tasks: list[str]) -> bool:  # the demo world's own tasks, whose files only a world has
        return any(t.startswith("world") for t in tasks) and config.eval.data_dir is None

    instruct = config.baselines.instruct
    need = {
        "world": [(not config.data.sources, "data.sources: not set; the CPT mixture's corpora (docs/data.md)")],
        "study": [(world_tasks(config.eval.probe.tasks), "eval.probe.tasks: the defaults are the demo world's; "
                   "name the study's probe tasks (e.g. [ceval-valid, mmlu, gsm8k]) or set eval.data_dir to a world")],
        "sft": [(not config.sft.datasets, "sft.datasets: not set; C-SFT's chat data sets")],
        "dpo": [(not config.dpo.datasets, "dpo.datasets: not set; C-DPO's preference data sets")],
        "empathy": [
            (not config.empathy.datasets, "empathy.datasets: not set; the emotional-support data sets (ESConv)"),
            (config.pipeline.dialogues is None, "pipeline.dialogues: not set; the pairwise study's dialogues (JSONL)"),
        ],
        "baselines": [(instruct.model is None and not (instruct.sft_datasets and instruct.dpo_datasets),
                       "baselines.instruct: set model (an existing instruct model) or sft_datasets and dpo_datasets "
                       "(English-dominant data to build one from the base model)")],
        "ablation": [
            (world_tasks(config.ablation.tasks), "ablation.tasks: the defaults are the demo world's; name your own"),
            (not (config.sft.datasets and config.dpo.datasets), "sft.datasets and dpo.datasets: the ablation "
             "fine-tunes every cell on them"),
        ],
    }  # fmt: skip
    gaps = [f"{message} (the {stage} stage)" for stage in selected for missing, message in need.get(stage, [])
            if missing]  # fmt: skip
    if "ablation" in selected and config.sft.datasets and config.dpo.datasets:
        from almr.stages.ablation import check_language_data  # heavy: TRL and lm-eval

        try:
            check_language_data(config)
        except ConfigError as err:
            gaps.append(f"{err} (the ablation stage)")
    if "eval" in selected:
        gaps += _eval_gaps(config)
    return gaps


def _eval_gaps(config: AlmrConfig) -> list[str]:
    """The eval stage's tasks: known, their data where almr can look (eval.data_dir), code execution
    opted into where they run code — what `almr eval` would refuse after the whole pipeline trained."""
    from almr.evaluate.harness import check_request  # heavy: lm-eval
    from almr.evaluate.registry import resolve_tasks

    try:
        check_request(resolve_tasks(None, config.pipeline.eval_tasks), None, data_dir=config.eval.data_dir,
                      allow_code_execution=config.eval.allow_code_execution)  # fmt: skip
    except AlmrError as err:
        return [f"pipeline.eval_tasks (eval.data_dir={config.eval.data_dir}): {err} (the eval stage)"]
    return []


def run_world(ctx: StageContext) -> dict[str, str]:
    from almr.world.build import MANIFEST, build_world
    from almr.world.stats import markdown_table, world_stats

    if ctx.config.names_a_model:
        return _tokenize_data(ctx)
    world = ctx.dir
    if (world / MANIFEST).is_file():
        build_world(world, ctx.config.world)  # completes a world of an older version in place
    else:
        # the stage's folder already holds its log: build beside it, then move the world in
        staging = ctx.out / ".world-build"
        shutil.rmtree(staging, ignore_errors=True)
        build_world(staging, ctx.config.world)
        for entry in staging.iterdir():
            os.replace(entry, world / entry.name)
        staging.rmdir()
    manifest = json.loads((world / MANIFEST).read_text(encoding="utf-8"))
    (world / "stats.md").write_text(markdown_table(world_stats(world)) + "\n", encoding="utf-8")
    ctx.say(f"{len(manifest['countries'])} countries, {len(manifest['files'])} files")
    return {"world": ".", "stats": "stats.md"}


def _tokenize_data(ctx: StageContext) -> dict[str, str]:
    """The world stage of a config that names its model: its data sources tokenized into
    data.shard_dir (with the model's tokenizer unless data.tokenizer names one); current shards are
    kept."""
    from almr.data.tokenize import tokenize_sources

    data = ctx.config.data
    if data.tokenizer is None:
        data = data.model_copy(update={"tokenizer": ctx.config.model.name_or_path})
    manifests = tokenize_sources(data, progress=False, log=ctx.say)
    ctx.say(f"{len(manifests)} sources tokenized into {data.shard_dir}")
    return {"shards": _rel(Path(data.shard_dir), ctx.dir)}


def _given_model(ctx: StageContext) -> dict[str, str]:
    """The base stage of a config that names its model: that model as it is (a hub id is
    downloaded once into the Hugging Face cache), and the world stage's shards."""
    name = ctx.config.model.name_or_path
    path = _model_dir(name, ctx.config.model.revision)
    if not (path / "config.json").is_file():
        raise AlmrError(f"model.name_or_path: {path} has no config.json: not a Hugging Face model directory")
    ctx.say(f"base model: {name}")
    return {"model": _rel(path, ctx.dir), "shards": _rel(ctx.input_path("world", "shards"), ctx.dir)}


def run_base(ctx: StageContext) -> dict[str, str]:
    from almr.stages.base_model import pretrain_base

    if ctx.config.names_a_model:
        return _given_model(ctx)
    world = ctx.input_path("world", "world")
    model = pretrain_base(world, ctx.dir / "run", ctx.dir / "shards", ctx.config, progress=False)
    ctx.say(f"base model: {model}")
    return {"model": _rel(model, ctx.dir), "run": "run", "shards": "shards"}


# ---------------------------------------------------------------------------- study, frontier, cpt


def _study(ctx: StageContext) -> AlmrConfig:
    return study_config(_world(ctx), ctx.input_path("base", "model"), ctx.input_path("base", "shards"),
                        ctx.out / "study" / "sweep", ctx.config)  # fmt: skip


def run_study(ctx: StageContext) -> dict[str, str]:
    from almr.sweep.study import probe_base_model, run_sweep

    study = _study(ctx)
    result = run_sweep(study, baseline_scores=probe_base_model, log=ctx.say)
    best = result.best
    if best is not None:
        ctx.say(f"{len(result.records)} runs; best measured: ALMR {best.almr:.2f}, LR {best.lr:.2e}")
    return {"sweep": "sweep"}


def run_frontier(ctx: StageContext) -> dict[str, str]:
    from almr.frontier.analyze import analyze_sweep
    from almr.frontier.report import headline

    analysis = analyze_sweep(ctx.input_path("study", "sweep"), ctx.config.frontier, ctx.dir)
    ctx.say(headline(analysis.summary))
    return {name: _rel(path, ctx.dir) for name, path in analysis.files.items()}


def run_cpt(ctx: StageContext) -> dict[str, str]:
    summary = json.loads(ctx.input_path("frontier", "json").read_text(encoding="utf-8"))
    rec = summary.get("recommendation") or {}
    if rec.get("almr") is None or rec.get("lr") is None:
        raise AlmrError(f"the frontier analysis ({ctx.input_path('frontier', 'json')}) recommends no (ALMR, LR)")
    almr, lr = float(rec["almr"]), float(rec["lr"])
    ctx.say(f"the formal CPT at the recommendation: ALMR {almr:.3f}, LR {lr:.3g}")
    model = formal_cpt(_study(ctx), almr, lr, ctx.dir / "run")
    (ctx.dir / "choice.json").write_text(json.dumps({"almr": almr, "lr": lr}) + "\n", encoding="utf-8")
    return {"model": _rel(model, ctx.dir), "run": "run", "choice": "choice.json"}


# ---------------------------------------------------------------------------- post-training


def run_sft(ctx: StageContext) -> dict[str, str]:
    world = _world(ctx)
    data = ctx.config.sft.datasets or world_sft_data(world)
    model = finetune(ctx.config, "sft", ctx.input_path("cpt", "model"), ctx.dir / "run", datasets=data)
    return {"model": _rel(model, ctx.dir), "run": "run"}


def run_dpo(ctx: StageContext) -> dict[str, str]:
    world = _world(ctx)
    data = ctx.config.dpo.datasets or world_dpo_data(world / "dpo" / "train.jsonl")
    model = finetune(ctx.config, "dpo", ctx.input_path("sft", "model"), ctx.dir / "run", datasets=data)
    return {"model": _rel(model, ctx.dir), "run": "run"}


def run_empathy(ctx: StageContext) -> dict[str, str]:
    from almr.data.config import ChatDatasetConfig

    world, pipeline = _world(ctx), ctx.config.pipeline
    if world is None:  # a config that names its model: its own data sets and dialogues
        assert pipeline.dialogues is not None  # given_model_gaps refused the run otherwise
        dialogues = ctx.dir / "data" / "dialogues.jsonl"
        dialogues.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pipeline.dialogues, dialogues)  # the study reads its own copy: reruns see the same
        data = ctx.config.empathy.datasets
    else:
        train, dialogues = split_empathy(world, ctx.dir / "data", pipeline.pairwise_dialogues)
        data = ctx.config.empathy.datasets or [ChatDatasetConfig(path=str(train), format="esconv",
                                                                 language_field="lang")]  # fmt: skip
    model = finetune(ctx.config, "sft", ctx.input_path("sft", "model"), ctx.dir / "run", datasets=data,
                     steps=ctx.config.empathy.steps, lr=ctx.config.empathy.lr)  # fmt: skip
    return {"model": _rel(model, ctx.dir), "run": "run", "dialogues": _rel(dialogues, ctx.dir)}


def run_baselines(ctx: StageContext) -> dict[str, str]:
    from almr.stages.baselines import build_fixed_cpt, build_instruct

    world, base = _world(ctx), ctx.input_path("base", "model")
    given = ctx.config.baselines.instruct.model
    if given is not None:
        ctx.say(f"Instruct: {given}, as it is")
        instruct = _model_dir(given)
    else:
        ctx.say("Instruct: SFT + DPO from the base model on English-dominant data")
        instruct = build_instruct(ctx.config, world, base, ctx.dir / "instruct", False, log=ctx.say)
    ctx.say("the fixed-recipe CPT (Chinese-LLaMA style)")
    shards = ctx.input_path("base", "shards")  # the world's shards (the demo's base stage, else the world stage)
    fixed = build_fixed_cpt(ctx.config, world, base, ctx.dir / "cpt-fixed", False, shard_dir=shards)
    return {"instruct": _rel(instruct, ctx.dir), "cpt-fixed": _rel(fixed, ctx.dir)}


def _model_dir(name: str, revision: str | None = None) -> Path:
    """A local model directory as it is; a hub id downloaded once into the Hugging Face cache."""
    if Path(name).is_dir():
        return Path(name)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name, revision=revision))


# ---------------------------------------------------------------------------- evaluation


def eval_models(ctx: StageContext) -> dict[str, Path]:
    """{label: model directory} of every model stage among the done inputs, in MODELS' order."""
    return {label: ctx.input_path(stage, output) for stage, labels in MODELS.items() if ctx.has_input(stage)
            for label, output in labels.items()}  # fmt: skip


CHAT_MODELS = ("instruct", "c-sft", "c-dpo", "c-sft-empathy")


def _eval_request(ctx: StageContext, world: Path | None, label: str) -> dict[str, Any]:
    """What `almr eval` is asked for one model: the world's suite on the world, else
    pipeline.eval_tasks (base and CPT models without the chat tasks) with eval.data_dir."""
    from almr.evaluate.registry import resolve_tasks

    spec = ctx.config.eval
    common = {"limit": spec.limit, "batch_size": spec.batch_size, "max_gen_toks": spec.max_gen_toks,
              "dtype": spec.dtype, "device": spec.device, "task_overrides": spec.task_overrides}  # fmt: skip
    if world is not None:
        return {"suite": "world", "data_dir": world, "allow_code_execution": True, **common}
    tasks = [t.name for t in resolve_tasks(None, ctx.config.pipeline.eval_tasks) if label in CHAT_MODELS or not t.chat]
    return {"tasks": tasks, "data_dir": spec.data_dir, "allow_code_execution": spec.allow_code_execution, **common}


def run_eval(ctx: StageContext) -> dict[str, str]:
    """Every model on the world's suite, or pipeline.eval_tasks for a config that names its model;
    on the world also each model's %Chinese (elsewhere the zh_share task's, among the eval tasks).
    With pipeline.engine vllm each model is scored through its own `vllm serve`, one at a time with
    the GPU to itself (lm-eval's completions client; its tokenizer counts the context tokens)."""
    from almr.evaluate.harness import run_eval as evaluate
    from almr.evaluate.results import save_result

    models, world, pipeline = eval_models(ctx), _world(ctx), ctx.config.pipeline
    outputs = {}
    for done, (label, model) in enumerate(models.items()):
        ctx.progress(done, len(models), "model")
        path = ctx.dir / f"{label}.json"
        outputs[label] = path.name
        if not path.is_file():  # written whole at the end of its evaluation: a resume skips it
            request = _eval_request(ctx, world, label)
            if pipeline.engine == "vllm":
                from almr.run.vllm import vllm_served

                ctx.say(f"{label}: starting vllm serve")
                with vllm_served(model, label, ctx.dir / "vllm.log", dtype=request["dtype"],
                                 gpu_memory_utilization=0.9, start_timeout_s=pipeline.vllm_start_timeout_s) as url:
                    result = evaluate(url, tokenizer=str(model), endpoint_model=label, **request)
            else:
                result = evaluate(str(model), **request)
            result["model"] = label
            save_result(result, path)
        ctx.say(f"{label}: evaluated")
    if world is not None:
        outputs["chinese_share"] = _chinese_shares(ctx, world, models)
    return outputs


def _chinese_shares(ctx: StageContext, world: Path, models: dict[str, Path]) -> str:
    """Each model's share of Chinese in greedy chat replies to the world's Chinese questions, kept
    in chinese_share.json as each is measured (a resume measures only the rest)."""
    pipeline = ctx.config.pipeline
    path = ctx.dir / "chinese_share.json"
    shares: dict[str, float] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    for label, model in models.items():
        if label not in shares:
            shares[label] = model_zh_share(model, world, pipeline.zh_questions, pipeline.zh_new_tokens)
            path.write_text(json.dumps(shares, indent=1) + "\n", encoding="utf-8")
        ctx.say(f"{label}: {100 * shares[label]:.1f}% Chinese in replies to Chinese questions")
    return path.name


def run_ablation(ctx: StageContext) -> dict[str, str]:
    from almr.stages.ablation import run_ablation as ablate

    world, config = _world(ctx), ctx.config
    update: dict[str, Any] = {
        "ablation": config.ablation.model_copy(update={
            "cpt_model": str(ctx.input_path("cpt", "model")), "base_model": str(ctx.input_path("base", "model")),
            "out_dir": str(ctx.dir)}),
    }  # fmt: skip
    if world is not None:
        update |= {
            "sft": config.sft.model_copy(update={"datasets": config.sft.datasets or world_sft_data(world)}),
            "dpo": config.dpo.model_copy(update={
                "datasets": config.dpo.datasets or world_dpo_data(world / "dpo" / "train.jsonl")}),
            "eval": config.eval.model_copy(update={"data_dir": str(world)}),
        }  # fmt: skip
    table = ablate(AlmrConfig.model_validate(config.model_copy(update=update).model_dump()), progress=False,
                   log=ctx.say)  # fmt: skip
    return {"table": _rel(table, ctx.dir)}


# ---------------------------------------------------------------------------- pairwise, report


@contextmanager
def served(model_dir: Path, store: Path) -> Iterator[str]:
    """`almr serve` of `model_dir` in this process on 127.0.0.1 at a free port; yields its /v1 URL."""
    import uvicorn

    from almr.serve.app import create_app
    from almr.serve.config import ServeConfig
    from almr.serve.server import build_engine
    from almr.serve.store import Store

    # the judge asks for greedy replies itself: no persona, client settings allowed, no tokens on loopback
    persona = {"system_prompt": "", "temperature": 0.0, "allow_client_overrides": True}
    config = ServeConfig.model_validate({"host": "127.0.0.1", "port": 0, "persona": persona,
                                         "store": f"sqlite:///{store}", "auth": {"required": False}})  # fmt: skip
    db = Store(config.store)
    server = uvicorn.Server(uvicorn.Config(create_app(config, build_engine(model_dir, config), db), host="127.0.0.1",
                                           port=0, log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, name="almr-judge-server", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise AlmrError(f"the judge server for {model_dir} did not start (see the stage's log)")
            thread.join(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        db.close()


def run_pairwise(ctx: StageContext) -> dict[str, str]:
    from almr.pairwise.judge import judge_study, judge_with_rule
    from almr.pairwise.make import make_study
    from almr.pairwise.report import build_report, write_report

    available = {label: path for label, path in eval_models(ctx).items()}
    models = {label: str(available[label]) for label in ctx.config.pipeline.pairwise_models if label in available}
    if len(models) < 2:
        raise AlmrError(f"pipeline.pairwise_models: only {', '.join(models) or 'none'} of "
                        f"{', '.join(ctx.config.pipeline.pairwise_models)} built; the study needs two")  # fmt: skip
    study_path = ctx.dir / "study.db"
    for leftover in ctx.dir.glob("study.db*"):
        leftover.unlink()  # a study cut short is made again: collecting replies is the cheap part
    dialogues, pipeline = ctx.input_path("empathy", "dialogues"), ctx.config.pipeline
    with ExitStack() as servers:
        sources = models
        if pipeline.engine == "vllm":
            from almr.run.vllm import vllm_models

            ctx.say(f"starting vllm serve for {', '.join(models)}")
            sources = servers.enter_context(vllm_models(models, ctx.dir / "vllm.log", dtype=ctx.config.model.dtype,
                                                        start_timeout_s=pipeline.vllm_start_timeout_s))  # fmt: skip
        made = make_study(dialogues, sources, study_path, ctx.config.pairwise,
                          endpoint_models=dict(zip(models, models, strict=True)) if sources is not models else None,
                          log=ctx.say)  # fmt: skip
        ctx.say(f"{made.prompts} prompts, {made.items} items")
        if not made.items:
            failures = made.study.failures()
            first = f"; the first: {failures[0]['model']}: {failures[0]['error']}" if failures else ""
            raise AlmrError(f"the pairwise study has no item: {len(failures)} replies failed{first}")
        if pipeline.judge and _world(ctx) is not None:
            from almr.world.judge import world_verdict

            counts = judge_with_rule(made.study, "world-rule", world_verdict)
            ctx.say(f"the world's judge: {counts['judged']} items judged, {counts['consistent']} consistent in "
                    "both orders")  # fmt: skip
        elif pipeline.judge:
            judge = ctx.input_path("empathy", "model")
            if sources is not models and "c-sft-empathy" in sources:
                url, name = sources["c-sft-empathy"], "c-sft-empathy"  # already behind vllm serve
            else:
                url, name = servers.enter_context(served(judge, ctx.dir / "judge-serve.db")), None
            counts = judge_study(made.study, url, ctx.config.pairwise, judge_model=name, log=lambda _: None)
            ctx.say("LLM judge (C-SFT-Empathy, itself one of the models compared: a first look, not a verdict): "
                    f"{counts['judged']} items judged, {counts['consistent']} consistent in both orders, "
                    f"{counts['failed']} without a verdict")  # fmt: skip
    study, config = made.study, ctx.config.pairwise
    if study.votes() or any(j["choice"] is not None for j in study.judge_votes()):
        md, js = write_report(build_report(study, config), ctx.dir)
    else:
        md, js = _unjudged_report(study, config, ctx.dir)
    return {"study": "study.db", "report": md.name, "report_json": js.name}


def _unjudged_report(study: Any, config: Any, folder: Path) -> tuple[Path, Path]:
    """The report of a study nobody could judge (no annotators, a judge without one usable verdict):
    Table 8 with its win rates missing and its %Chinese column, which needs no vote."""
    from almr.pairwise.report import chinese_shares, markdown, table8

    items = study.items()
    report: dict[str, Any] = {
        "study": str(study.path), "models": study.models, "items": len(items),
        "conversations": len({i.conversation_id for i in items}), "chinese": chinese_shares(study),
        "failures": study.failures(), "human": None, "agreement": None, "judges": {},
        "bootstrap": {"resamples": config.bootstrap_resamples, "confidence": config.confidence, "unit": "conversation"},
        "judge_failures": [{"item": j["item_id"], "judge": j["judge"], "error": j["error"]}
                           for j in study.judge_votes() if j["choice"] is None],
    }  # fmt: skip
    text = markdown(report) + "\n".join([
        "", "## Table 8 without votes", "",
        f"No item has a vote: no annotator voted and the judge gave no usable verdict on any of "
        f"{len(report['judge_failures'])} items it was asked about (pairwise_report.json lists why). The win rates "
        "are missing; the %Chinese of each model's replies needs no vote.", "",
        table8(study.models, {"pairs": []}, report["chinese"], config.confidence), "",
    ])  # fmt: skip
    md, js = folder / "pairwise_report.md", folder / "pairwise_report.json"
    md.write_text(text, encoding="utf-8")
    js.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return md, js


def run_report(ctx: StageContext) -> dict[str, str]:
    from almr.report.build import build_report

    needs = {stage.name: stage.inputs for stage in STAGES}
    md, html = build_report(ctx.out, ctx.config, needs, config_name=ctx.config_ref)
    ctx.say(f"report: {md} and {html}")
    return {"md": _rel(md, ctx.dir), "html": _rel(html, ctx.dir)}


# What a stage that probes the CPT (eval.probe) reads besides its own section.
PROBE = ("eval.probe", "eval.data_dir", "eval.task_overrides")
EVAL = ("eval.limit", "eval.max_gen_toks", "eval.data_dir", "eval.allow_code_execution", "eval.dtype",
        "eval.batch_size", "eval.device", "eval.task_overrides")  # fmt: skip

STAGES: tuple[Stage, ...] = (
    Stage("world", ("world", "data", "model"), (), run_world,
          "the demo world (corpora, benchmarks, chat data, tokenizer); for a config naming its model, its data "
          "sources tokenized",
          "almr world build {out}/world"),
    Stage("base", ("base", "model"), ("world",), run_base,
          "the base model (the Llama-3 stand-in), or the model the config names", "almr world pretrain {out}/world"),
    Stage("study", ("cpt", "mixture", "sweep", "eval.average", *PROBE, "model"), ("world", "base"), run_study,
          "the ALMR × LR study: short CPT runs from the base model", "almr sweep {config}", kind="study"),
    Stage("frontier", ("frontier",), ("study",), run_frontier, "the frontier analysis and its recommendation",
          "almr frontier {out}/study/sweep --out {out}/frontier"),
    Stage("cpt", ("cpt", "mixture", *PROBE, "model"), ("world", "base", "frontier"), run_cpt,
          "the formal CPT at the recommended (ALMR, LR)", "almr cpt {config}", kind="train"),
    Stage("sft", ("sft", "model"), ("world", "cpt"), run_sft, "C-SFT", "almr sft {config}", kind="finetune"),
    Stage("dpo", ("dpo", "model"), ("world", "sft"), run_dpo, "C-DPO", "almr dpo {config}", kind="finetune"),
    Stage("empathy", ("sft", "empathy", "pipeline.pairwise_dialogues", "pipeline.dialogues", "model"),
          ("world", "sft"), run_empathy, "C-SFT-Empathy", "almr sft {config}", kind="finetune"),
    Stage("baselines", ("baselines", "sft", "dpo", "cpt", "mixture", *PROBE, "model"), ("world", "base"),
          run_baselines, "Instruct (SFT + DPO from base) and the fixed-recipe CPT (ALMR 0.2)",
          "almr sft/dpo/cpt {config}", kind="finetune"),
    Stage("eval", (*EVAL, "pipeline.zh_questions", "pipeline.zh_new_tokens", "pipeline.eval_tasks", "pipeline.engine"),
          ("world", "base", "cpt", "sft", "dpo", "empathy"), run_eval,
          "every model on the world suite (Tables 4, 5, 7) and its %Chinese; for a config naming its model, "
          "pipeline.eval_tasks", "almr eval MODEL --suite world", optional=("baselines",), kind="gpu"),
    Stage("ablation", ("ablation", "sft", "dpo", *EVAL, "model"), ("world", "base", "cpt"), run_ablation,
          "Table 6: {with, without} CPT × {with, without} zh data", "almr ablation {config}", kind="finetune"),
    Stage("pairwise", ("pairwise", "pipeline.pairwise_models", "pipeline.judge", "pipeline.engine"),
          ("world", "base", "cpt", "sft", "dpo", "empathy"), run_pairwise,
          "Table 8: blind pairwise study of the chat models with %Chinese, judged by the world's rule (demo) or "
          "the empathy model as an LLM judge", "almr pairwise make/judge/report", optional=("baselines",),
          kind="gpu"),
    Stage("report", (), (), run_report, "report.md and report.html: every table and figure",
          "almr run {config} --only report",
          optional=("world", "base", "study", "frontier", "cpt", "sft", "dpo", "empathy", "baselines", "eval",
                    "ablation", "pairwise")),
)  # fmt: skip


def stage_names() -> list[str]:
    return [s.name for s in STAGES]


def describe(stage: Stage) -> dict[str, Any]:
    return {"name": stage.name, "reads": list(stage.reads), "inputs": list(stage.inputs), "outputs": stage.outputs}
