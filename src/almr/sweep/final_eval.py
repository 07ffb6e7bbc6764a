"""Per-run final evaluation (`sweep.final_eval`): an `almr eval` suite on a finished run's final
checkpoint, written to `RUN/final_eval.json`, from which the run's record takes its scores and
its averaged metric (`records.fill_from_metrics`); the probe's trajectory stays in the record.

- `check_final_eval(config)`: before any run starts, the suite's task names, that it produces
  every key of `eval.average`, the code-execution opt-in, a chat template for chat tasks, and
  the data of every task (`eval.data_dir`, the Hugging Face cache) — one message each.
- `evaluate_run(config, final_eval)`: what `almr sweep final-eval RUN/config.yaml` does after
  training, in the run's own job: the newest complete checkpoint must be the one the run ended
  with (its `end` event); its `hf/` export is evaluated by `evaluate_and_save`, the machinery of
  `almr eval`, with the run config's `eval` section. A failure leaves no final_eval.json.
- `final_eval_args(final_eval)`: the command-line flags that carry the settings into that job
  (a run's own config.yaml holds the default `sweep` section: `design.point_config`).
"""

import json
import os
from pathlib import Path

from almr.config import AlmrConfig
from almr.errors import AlmrError, ConfigError
from almr.evaluate.catalog import with_overrides
from almr.evaluate.harness import check_request, evaluate_and_save
from almr.evaluate.registry import TaskInfo, resolve_tasks
from almr.evaluate.results import check_average_produced
from almr.sweep.config import SweepFinalEvalConfig
from almr.sweep.records import FINAL_EVAL, read_events


def final_eval_args(final_eval: SweepFinalEvalConfig) -> list[str]:
    """`--suite S --tasks a,b --limit N` of `almr sweep final-eval` (only the settings given)."""
    args = ["--suite", final_eval.suite] if final_eval.suite else []
    args += ["--tasks", ",".join(final_eval.tasks)] if final_eval.tasks else []
    return args + (["--limit", str(final_eval.limit)] if final_eval.limit else [])


def _has_chat_template(model: str | None) -> bool:
    """Whether the local model directory's tokenizer carries a chat template (files only, no load)."""
    if not model or not Path(model).is_dir():
        return True  # no model, a hub name or a missing directory: the CPT run itself reports it first
    path = Path(model)
    if any(path.glob("chat_template.*")):
        return True
    config = path / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))


def check_final_eval(config: AlmrConfig) -> list[TaskInfo]:
    """Refuse a `sweep.final_eval` that cannot give every run its averaged metric (module docstring);
    returns the tasks it runs."""
    final_eval = config.sweep.final_eval
    try:
        infos = with_overrides(resolve_tasks(final_eval.suite, final_eval.tasks), config.eval.task_overrides)
    except ConfigError as err:
        raise ConfigError(f"sweep.final_eval: {err}") from None
    check_average_produced(config.eval.average, infos, "sweep.final_eval", "sweep.final_eval.tasks")
    code = [info.name for info in infos if info.runs_code]
    if code and not config.eval.allow_code_execution:
        raise ConfigError(
            f"sweep.final_eval runs {', '.join(code)}, which run model-written code; set "
            "eval.allow_code_execution: true (sandboxed subprocess, time limit) or leave them out"
        )
    chat = [info.name for info in infos if info.chat]
    if chat and not _has_chat_template(config.model.name_or_path):
        raise ConfigError(
            f"sweep.final_eval: {', '.join(chat)} need a chat template, which the base model "
            f"{config.model.name_or_path} (and so each CPT checkpoint) lacks; use sweep.final_eval.suite: "
            "paper-base or leave the chat tasks out"
        )
    try:  # the opt-in was checked above, with the config key to set
        check_request(infos, None, data_dir=config.eval.data_dir, allow_code_execution=True)
    except AlmrError as err:
        raise type(err)(f"sweep.final_eval (data from eval.data_dir={config.eval.data_dir}): {err}") from None
    return infos


def final_checkpoint(run_dir: Path) -> Path:
    """The `hf/` export of the checkpoint the run ended with; an AlmrError when the run has not ended
    or that checkpoint is not complete."""
    ends = [e for e in read_events(run_dir) if e.get("event") == "end"]
    if not ends:
        raise AlmrError(f"{run_dir}: the run has not ended (no end event in metrics.jsonl); nothing to evaluate")
    step = int(ends[-1]["step"])
    complete = {int(p.parent.name.removeprefix("step_")): p.parent for p in run_dir.glob("checkpoints/step_*/complete")}
    if not complete or max(complete) != step:
        newest = f"the newest complete one is step {max(complete)}" if complete else "none is complete"
        raise AlmrError(f"{run_dir}: the run ended at step {step} but {newest}; resume the run to save it")
    hf = complete[step] / "hf"
    if not (hf / "config.json").is_file():
        raise AlmrError(f"{hf}: the checkpoint has no Hugging Face export; resume the run to save it again")
    return hf


def evaluate_run(config: AlmrConfig, final_eval: SweepFinalEvalConfig) -> Path:
    """Evaluate the run of `config` (a run's own config: `cpt.run_dir`, `eval`) on the final-eval
    suite; returns the path of RUN/final_eval.json."""
    run_dir = Path(config.cpt.run_dir)
    out = run_dir / FINAL_EVAL
    out.unlink(missing_ok=True)  # a failed evaluation must not leave an older attempt's scores behind
    hf = final_checkpoint(run_dir)
    tmp = out.with_suffix(".tmp")
    evaluate_and_save(str(hf), config.eval, suite=final_eval.suite, tasks=final_eval.tasks, limit=final_eval.limit,
                      data_dir=config.eval.data_dir, out=tmp)  # fmt: skip
    os.replace(tmp, out)  # the record reads a whole file or none
    return out
