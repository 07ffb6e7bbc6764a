"""Run a suite through lm-evaluation-harness and return one almr result (see `results`).

Contract of `run_eval`: everything that can be checked without a model is checked first —
task names, the code-execution opt-in, every data file of our tasks (record by record), the
local Hugging Face cache for built-in tasks, the chat template of chat tasks — and each
problem raises an `AlmrError` that names it and the fix. Only then is the model built:

- a local directory (or an in-memory `PreTrainedModel` + tokenizer) runs in-process as
  lm-eval's `HFLM`;
- an lm-eval `LM` object is used as it is (other backends, tests);
- an `http(s)://…` URL is an OpenAI-compatible server (vLLM, almr serve): `local-completions`
  for completion tasks, `local-chat-completions` for chat tasks. Log-likelihood tasks need
  `tokenizer=` (the served model's tokenizer directory) to count context tokens.

Chat tasks (`TaskInfo.chat`) run in a second lm-eval pass with the chat template applied;
all other tasks see raw prompts, as base models are evaluated.
"""

import glob
import json
import logging
import os
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import constants

from almr.errors import AlmrError, ConfigError, DataError
from almr.evaluate.benchmark_files import check_data
from almr.evaluate.config import EvalConfig
from almr.evaluate.registry import TaskInfo, resolve_tasks
from almr.evaluate.results import default_result_path, from_lm_eval, save_result
from almr.evaluate.tasks import TASKS_DIR


def is_url(model: object) -> bool:
    return isinstance(model, str) and model.startswith(("http://", "https://"))


def check_builtin_cache(tasks: list[TaskInfo]) -> None:
    """Built-in lm-eval tasks read the Hugging Face cache; offline, a missing dataset would
    surface as a network error deep inside `datasets`, so name it up front."""
    cache = Path(constants.HF_HUB_CACHE)
    for task in tasks:
        if task.kind != "builtin":
            continue
        pattern = str(cache / f"datasets--{task.hf_dataset.replace('/', '--')}")
        if not glob.glob(pattern):
            raise DataError(
                f"task {task.name}: its data (Hugging Face dataset {task.hf_dataset}) is not in the local cache "
                f"{cache}; download it once on a machine online (`huggingface-cli download --repo-type dataset "
                f"{task.hf_dataset}`, or run lm_eval once) and copy the cache here, or set HF_HUB_CACHE; {task.source}"
            )


def _task_manager(tasks: list[TaskInfo], metadata: dict[str, Any]) -> Any:
    from lm_eval.tasks import TaskManager  # lm_eval.tasks takes ~3 s to import: only when a suite runs

    builtin = any(t.kind == "builtin" for t in tasks)
    # include_defaults=False skips a ~20 s scan of lm-eval's own tasks when only ours run.
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=builtin, metadata=metadata)


def _local_lm(model: Any, tokenizer: Any, batch_size: int, device: str, max_length: int | None,
              chat_tasks: list[str]) -> tuple[Any, Any, str]:  # fmt: skip
    # heavy (torch, transformers): only when a local model is evaluated
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
    if isinstance(model, str | Path):
        path = Path(model)
        if not (path / "config.json").is_file():
            raise AlmrError(
                f"--model {path}: not a Hugging Face model directory (no config.json); pass a saved model "
                "directory (e.g. a CPT checkpoint's hf/ folder) or an http(s):// OpenAI-compatible endpoint"
            )
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            raise AlmrError(
                f"--model {path}: has a config.json but no weights (*.safetensors); the demo world's model/ "
                "folder is only the shape — evaluate a trained checkpoint instead"
            )
        name = str(path)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer or path)
    elif isinstance(tokenizer, str | Path):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    if tokenizer is None:
        raise ConfigError("an in-memory model needs tokenizer= (a tokenizer object or directory)")
    if chat_tasks and not getattr(tokenizer, "chat_template", None):
        raise AlmrError(
            f"model {name} has no chat template, so it cannot answer the chat task(s) {', '.join(chat_tasks)}; "
            "evaluate an instruction-tuned model (SFT output) or leave them out"
        )
    if isinstance(model, str | Path):
        model = AutoModelForCausalLM.from_pretrained(model, dtype="float32")
    model.eval()
    kwargs: dict[str, Any] = {"max_length": max_length} if max_length else {}
    return HFLM(pretrained=model, tokenizer=tokenizer, device=device, batch_size=batch_size, **kwargs), tokenizer, name


def _api_lm(url: str, chat: bool, tokenizer: str | None, endpoint_model: str | None, batch_size: int,
            timeout_s: int, max_retries: int) -> Any:  # fmt: skip
    from lm_eval.api.registry import get_model  # heavy (lm-eval's model registry): only for an endpoint

    base = url.rstrip("/")
    for suffix in ("/chat/completions", "/completions"):
        base = base.removesuffix(suffix)
    kwargs: dict[str, Any] = {
        "base_url": base + ("/chat/completions" if chat else "/completions"),
        "model": endpoint_model or _served_model(base),
        "max_retries": max_retries,
        "timeout": timeout_s,
    }
    if chat:
        kwargs |= {"tokenizer_backend": None, "tokenized_requests": False, "batch_size": 1}
    elif tokenizer:
        # add_bos_token: encode as HFLM does (the tokenizer's special tokens, Llama-3's <|begin_of_text|>),
        # so that scores through a server equal in-process ones on the same model
        kwargs |= {"tokenizer_backend": "huggingface", "tokenizer": str(tokenizer), "batch_size": batch_size,
                   "add_bos_token": True}  # fmt: skip
    else:
        kwargs |= {"tokenizer_backend": None, "tokenized_requests": False, "batch_size": 1}
    return get_model("local-chat-completions" if chat else "local-completions")(**kwargs)


def _served_model(base: str) -> str:
    """The first model id of GET {base}/models (vLLM serves one)."""
    try:
        with urllib.request.urlopen(base + "/models", timeout=10) as reply:
            return json.load(reply)["data"][0]["id"]
    except Exception as err:
        raise AlmrError(f"{base}/models did not list a model ({err}); pass --endpoint-model NAME") from None


def check_request(
    infos: list[TaskInfo],
    model: Any,
    *,
    tokenizer: Any = None,
    data_dir: str | Path | None = None,
    data_files: Mapping[str, str] | None = None,
    allow_code_execution: bool = False,
) -> None:
    """Everything `run_eval` can check before a model is built, in this order: no judge task, the
    code-execution opt-in, every data file of our tasks, the cache of built-in tasks, and a tokenizer
    for log-likelihood tasks over an endpoint."""
    judged = [t.name for t in infos if t.kind == "judge"]
    if judged:
        raise ConfigError(f"{', '.join(judged)}: LLM-judge tasks run with `almr eval judge`, not in an lm-eval suite")
    code = [t.name for t in infos if t.runs_code]
    if code and not allow_code_execution:
        raise ConfigError(
            f"{', '.join(code)} run model-written code; pass --allow-code-execution to run it in a sandboxed "
            "subprocess with a time limit, or leave these tasks out"
        )
    check_data(infos, data_dir, data_files)
    check_builtin_cache(infos)
    if is_url(model) and not tokenizer and any(t.mode == "loglikelihood" and not t.chat for t in infos):
        raise ConfigError(
            f"{model}: log-likelihood tasks over an endpoint need the served model's tokenizer to count context "
            "tokens; pass --tokenizer DIR"
        )


def run_eval(
    model: Any,
    *,
    suite: str | None = None,
    tasks: list[str] | None = None,
    limit: int | None = None,
    data_dir: str | Path | None = None,
    data_files: Mapping[str, str] | None = None,
    tokenizer: Any = None,
    batch_size: int = 16,
    device: str = "cpu",
    allow_code_execution: bool = False,
    max_gen_toks: int | None = None,
    max_length: int | None = None,
    endpoint_model: str | None = None,
    timeout_s: int = 120,
    max_retries: int = 3,
) -> dict[str, Any]:
    """Evaluate `model` (a directory, an in-memory model, or an http(s) URL) on a suite or tasks."""
    started = time.time()
    infos = resolve_tasks(suite, tasks)
    check_request(infos, model, tokenizer=tokenizer, data_dir=data_dir, data_files=data_files,
                  allow_code_execution=allow_code_execution)  # fmt: skip
    url = is_url(model)
    chat_tasks = [t for t in infos if t.chat]
    plain_tasks = [t for t in infos if not t.chat]

    if allow_code_execution:  # lm-eval's built-in humaneval (evaluate's code_eval) checks this variable
        os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    from lm_eval.api.model import LM  # heavy (~1 s to import): only once the checks have passed

    if isinstance(model, LM):  # any lm-eval backend object, used as it is
        lm, name = model, type(model).__name__
    elif not url:
        lm, _, name = _local_lm(model, tokenizer, batch_size, device, max_length, [t.name for t in chat_tasks])
    else:
        name = str(model)

    metadata = {"data_dir": str(data_dir) if data_dir is not None else None, "data_files": dict(data_files or {})}
    raw: list[dict[str, Any]] = []
    for group, chat in ((plain_tasks, False), (chat_tasks, True)):
        if not group:
            continue
        if url:
            lm = _api_lm(str(model), chat, tokenizer, endpoint_model, batch_size, timeout_s, max_retries)
        raw.append(_evaluate(lm, group, metadata, limit, chat, allow_code_execution, max_gen_toks))
    return from_lm_eval(raw, infos, model=name, suite=suite, limit=limit, wall_s=time.time() - started)


def evaluate_and_save(
    model: str,
    config: EvalConfig,
    *,
    suite: str | None = None,
    tasks: Sequence[str] = (),
    limit: int | None = None,
    data_dir: str | Path | None = None,
    data_files: Mapping[str, str] | None = None,
    tokenizer: str | None = None,
    endpoint_model: str | None = None,
    allow_code_execution: bool = False,
    out: str | Path | None = None,
) -> tuple[dict[str, Any], Path]:
    """`almr eval`: `run_eval` with the `eval` section filling what the arguments leave open, the
    result saved to `out` (default `eval/<model>-<suite>.json`); returns the result and its path."""
    result = run_eval(
        model, suite=suite, tasks=list(tasks), limit=limit or config.limit, data_dir=data_dir or config.data_dir,
        data_files=data_files, tokenizer=tokenizer, batch_size=config.batch_size,
        allow_code_execution=allow_code_execution or config.allow_code_execution, max_gen_toks=config.max_gen_toks,
        endpoint_model=endpoint_model, timeout_s=config.timeout_s, max_retries=config.max_retries,
    )  # fmt: skip
    return result, save_result(result, out or default_result_path(model, suite or "tasks"))


def _evaluate(lm: Any, group: list[TaskInfo], metadata: dict[str, Any], limit: int | None, chat: bool,
              allow_code: bool, max_gen_toks: int | None) -> dict[str, Any]:  # fmt: skip
    from lm_eval.evaluator import evaluate  # heavy (~2.5 s to import): only when a suite runs

    # lm-eval warns once per custom_dataset task about --metadata, which is how we pass data_dir
    logging.getLogger("lm_eval.api.task").setLevel(logging.ERROR)

    manager = _task_manager(group, metadata)
    loaded = manager.load([t.name for t in group])
    shots = {t.name: t.shots for t in group}
    for name, task in loaded["tasks"].items():
        top = next((t for t in shots if name == t or name.startswith(t)), None)
        # the registry's shots (C-Eval 5-shot from dev, ...) win over the YAML's default
        task.set_config(key="num_fewshot", value=shots[top] if top is not None else task.get_config("num_fewshot") or 0)
        task.set_fewshot_seed(seed=1234)
        if max_gen_toks and task.get_config("output_type") == "generate_until":
            task.set_config(key="generation_kwargs", value={"max_gen_toks": max_gen_toks}, update=True)
    result = evaluate(
        lm=lm, task_dict=loaded, limit=limit, bootstrap_iters=1000, log_samples=False,
        apply_chat_template=chat, fewshot_as_multiturn=chat, confirm_run_unsafe_code=allow_code,
    )  # fmt: skip
    if result is None:
        raise AlmrError("lm-eval returned no results (a non-zero rank in a distributed run)")
    return result
