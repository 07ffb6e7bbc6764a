"""Run a suite through lm-evaluation-harness and return one almr result (see `results`).

Contract of `run_eval`: everything that can be checked without a model is checked first —
task names, the code-execution opt-in, the data of every task (our tasks' files, the local
Hugging Face cache for built-in tasks), every record of our tasks' files, the chat template of
chat tasks — and each problem raises an `AlmrError` that names it and the fix; missing data is
refused naming every task that lacks it. With `skip_missing`, a task whose data is missing, or
a chat task for a model without a chat template, is skipped instead (the result's `skipped`
says why), and only a request left with nothing to run is refused. Only then is the model built:

- a local directory (or an in-memory `PreTrainedModel` + tokenizer) runs in-process as
  lm-eval's `HFLM`;
- an lm-eval `LM` object is used as it is (other backends, tests);
- an `http(s)://…` URL is an OpenAI-compatible server (vLLM, almr serve): `local-completions`
  for completion tasks, `local-chat-completions` for chat tasks. Log-likelihood tasks need
  `tokenizer=` (the served model's tokenizer directory) to count context tokens.

Chat tasks (`TaskInfo.chat`) run in a second lm-eval pass with the chat template applied;
all other tasks see raw prompts, as base models are evaluated.
"""

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import constants

from almr.errors import AlmrError, ConfigError, DataError
from almr.evaluate.benchmark_files import check_data, missing_files
from almr.evaluate.catalog import configure_tasks, hub_datasets, load_tasks, with_overrides
from almr.evaluate.config import EvalConfig
from almr.evaluate.endpoint import Endpoint
from almr.evaluate.registry import TaskInfo, resolve_tasks
from almr.evaluate.results import default_result_path, from_lm_eval, refuse_other_result, save_result


def is_url(model: object) -> bool:
    return isinstance(model, str) and model.startswith(("http://", "https://"))


def _cache_reason(task: TaskInfo, cache: Path) -> str | None:
    """Why a built-in task cannot run offline (the Hugging Face datasets it reads — lm-eval's own
    `dataset_path`s — not in the cache) and the download command; None when they are all there."""
    names = task.hf_dataset.split(",") if task.hf_dataset is not None else hub_datasets(task.name)
    absent = [n for n in names if n and not (cache / f"datasets--{n.replace('/', '--')}").is_dir()]
    if not absent:
        return None
    if len(absent) == 1:
        which, download = f"dataset {absent[0]} is", f"`hf download --repo-type dataset {absent[0]}`"
    else:
        which, download = f"datasets {', '.join(absent)} are", "`hf download --repo-type dataset NAME` for each"
    where = task.source or (f"https://huggingface.co/datasets/{absent[0]}" if len(names) == 1 else "")
    return (
        f"its Hugging Face {which} not in the local cache {cache}; download once on a machine online "
        f"({download}, or run lm_eval once) and copy the cache here, set HF_HUB_CACHE, or point "
        f"eval.task_overrides.{task.name}.dataset_path at a local copy" + (f"; {where}" if where else "")
    )


def missing_data(
    infos: list[TaskInfo], data_dir: str | Path | None = None, data_files: Mapping[str, str] | None = None
) -> dict[str, str]:
    """`{task: why its data is not here and where to get it}` for every task whose data is missing:
    our tasks' files under `data_dir` (or `data_files`), built-in tasks' datasets in the local
    Hugging Face cache — offline, a missing dataset would otherwise surface as a network error deep
    inside `datasets`, midway through a suite. Records are not read here (`check_data` does that)."""
    cache = Path(constants.HF_HUB_CACHE)
    missing = {}
    for task in infos:
        reason = _cache_reason(task, cache) if task.kind == "builtin" else missing_files(task, data_dir, data_files)
        if reason:
            missing[task.name] = reason
    return missing


def _listed(reasons: Mapping[str, str]) -> str:
    return "\n".join(f"  {name}: {reason}" for name, reason in reasons.items())


def _missing_message(missing: Mapping[str, str], total: int) -> str:
    rest = total - len(missing)
    if rest:
        advice = f"pass --skip-missing to skip them and run the other {rest}, or get the data"
    else:
        advice = "get the data, or choose other tasks"
    counted = f"{len(missing)} of the {total} tasks" if total > 1 else "the task"
    return f"data missing for {counted} asked for ({advice}):\n{_listed(missing)}"


def _nothing_to_run(skipped: Mapping[str, str]) -> str:
    return f"nothing to run: --skip-missing skipped every task asked for:\n{_listed(skipped)}"


def _local_tokenizer(model: Any, tokenizer: Any) -> tuple[Any, str]:
    """The tokenizer of a local model (a directory, checked to hold a model, or an in-memory model
    with `tokenizer`) and the model's name; the weights are not loaded yet."""
    from transformers import AutoTokenizer  # heavy: only when a local model is evaluated

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
    return tokenizer, name


def _unanswerable_chat(infos: list[TaskInfo], tokenizer: Any, name: str, skip_missing: bool) -> dict[str, str]:
    """The chat tasks a model without a chat template cannot answer, as `{task: reason}` to skip;
    refused without `skip_missing`."""
    chat = [t.name for t in infos if t.chat]
    if not chat or getattr(tokenizer, "chat_template", None):
        return {}
    if not skip_missing:
        raise AlmrError(
            f"model {name} has no chat template, so it cannot answer the chat task(s) {', '.join(chat)}; evaluate "
            "an instruction-tuned model (SFT output) or leave them out: --suite paper-base is the paper's suite "
            "for a base (CPT) model, and --skip-missing skips every task the model or the data cannot serve"
        )
    reason = f"model {name} has no chat template, so it cannot answer a chat task; evaluate an instruction-tuned model"
    return dict.fromkeys(chat, reason)


def resolve_device(device: str) -> str:
    """`eval.device` as a torch device: auto is CUDA when one is visible, else the CPU; a CUDA device
    that is not there is refused."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index >= visible:
            raise ConfigError(f"eval.device={device} (--device) but {visible} CUDA device(s) are visible; use cpu, "
                              "auto, or a visible cuda:N")  # fmt: skip
    return device


def _local_lm(model: Any, tokenizer: Any, batch_size: int, device: str, dtype: str,
              max_length: int | None) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """lm-eval's HFLM over the model, and where it ran (`device`, `dtype`, `batch_size`: the result records it)."""
    # heavy (torch, transformers): only when a local model is evaluated
    import torch
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM

    device = resolve_device(device)
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"  # bf16 is 20-50x slower than fp32 on a CPU
    if isinstance(model, str | Path):
        model = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).to(device)
    model.eval()
    kwargs: dict[str, Any] = {"max_length": max_length} if max_length else {}
    # an in-memory model is used where it is: HFLM moves only the models it loads itself
    weights = next(model.parameters())
    placed = {
        "device": str(weights.device),
        "dtype": str(weights.dtype).removeprefix("torch."),
        "batch_size": batch_size,
    }
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, **kwargs), placed


def _api_lm(endpoint: Endpoint, served: str, chat: bool, tokenizer: str | None, batch_size: int,
            max_length: int | None = None) -> Any:  # fmt: skip
    from almr.evaluate.endpoint_lm import EndpointChat, EndpointCompletions  # heavy (lm-eval's API models)

    kwargs: dict[str, Any] = {"model": served, "timeout": int(endpoint.timeout_s)}
    max_length = max_length or _context_length(tokenizer)
    if max_length:
        kwargs["max_length"] = max_length
    if chat:
        return EndpointChat(endpoint, tokenizer_backend=None, tokenized_requests=False, batch_size=1, **kwargs)
    if tokenizer:
        # add_bos_token: encode as HFLM does (the tokenizer's special tokens, Llama-3's <|begin_of_text|>),
        # so that scores through a server equal in-process ones on the same model
        kwargs |= {"tokenizer_backend": "huggingface", "tokenizer": str(tokenizer), "batch_size": batch_size,
                   "add_bos_token": True}  # fmt: skip
    else:
        kwargs |= {"tokenizer_backend": None, "tokenized_requests": False, "batch_size": 1}
    return EndpointCompletions(endpoint, **kwargs)


def _context_length(tokenizer: str | None) -> int | None:
    """The served model's context length as HFLM takes it in process (its config, then its
    tokenizer), when `tokenizer` is the model's own directory; None otherwise. Without it lm-eval's
    API clients assume 2048 tokens and cut longer prompts from the left without a word."""
    if not tokenizer or not (Path(str(tokenizer)) / "config.json").is_file():
        return None
    from lm_eval.models.utils import resolve_max_length
    from transformers import AutoConfig

    return resolve_max_length(AutoConfig.from_pretrained(str(tokenizer)))


def check_request(
    infos: list[TaskInfo],
    model: Any,
    *,
    tokenizer: Any = None,
    data_dir: str | Path | None = None,
    data_files: Mapping[str, str] | None = None,
    allow_code_execution: bool = False,
    skip_missing: bool = False,
) -> dict[str, str]:
    """Everything `run_eval` can check before a model is built, in this order: no judge task, the
    code-execution opt-in, the data of every task (all missing ones named at once), every record of
    our tasks' files, and a tokenizer for log-likelihood tasks over an endpoint. Returns the tasks
    to skip for missing data as `{task: reason}` (empty unless `skip_missing`)."""
    judged = [t.name for t in infos if t.kind == "judge"]
    if judged:
        raise ConfigError(f"{', '.join(judged)}: LLM-judge tasks run with `almr eval judge`, not in an lm-eval suite")
    code = [t.name for t in infos if t.runs_code]
    if code and not allow_code_execution:
        others = [t.name for t in infos if not t.runs_code]
        raise ConfigError(
            f"{', '.join(code)} run model-written code; pass --allow-code-execution to run it in a sandboxed "
            "subprocess with a time limit, or leave these tasks out"
            + (f" (--tasks {','.join(others)})" if others else "")
        )
    skipped = missing_data(infos, data_dir, data_files)
    if skipped and not skip_missing:
        raise DataError(_missing_message(skipped, len(infos)))
    runnable = [t for t in infos if t.name not in skipped]
    if not runnable:
        raise DataError(_nothing_to_run(skipped))
    check_data(runnable, data_dir, data_files)
    if is_url(model) and not tokenizer and any(t.mode == "loglikelihood" and not t.chat for t in runnable):
        raise ConfigError(
            f"{model}: log-likelihood tasks over an endpoint need the served model's tokenizer to count context "
            "tokens; pass --tokenizer DIR"
        )
    return skipped


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
    device: str = "auto",
    dtype: str = "auto",
    allow_code_execution: bool = False,
    max_gen_toks: int | None = None,
    max_length: int | None = None,
    endpoint_model: str | None = None,
    timeout_s: int = 120,
    max_retries: int = 3,
    retry_backoff_s: float = 1.0,
    skip_missing: bool = False,
    task_overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Evaluate `model` (a directory, an in-memory model, or an http(s) URL) on a suite or tasks;
    with `skip_missing`, tasks it or the data cannot serve are skipped (the result's `skipped`)."""
    started = time.time()
    infos = with_overrides(resolve_tasks(suite, tasks), task_overrides or {})
    skipped = check_request(infos, model, tokenizer=tokenizer, data_dir=data_dir, data_files=data_files,
                            allow_code_execution=allow_code_execution, skip_missing=skip_missing)  # fmt: skip
    infos = [t for t in infos if t.name not in skipped]
    url = is_url(model)
    placed: dict[str, Any] = {}
    endpoint = Endpoint(str(model), timeout_s, max_retries, retry_backoff_s) if url else None
    # an endpoint is asked for its model before any work: a server that is down or does not serve
    # the model asked for is one message naming the URL, not a traceback midway through a suite
    served = endpoint.model_name(endpoint_model) if endpoint else None

    if allow_code_execution:  # lm-eval's built-in humaneval (evaluate's code_eval) checks this variable
        os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    from lm_eval.api.model import LM  # heavy (~1 s to import): only once the checks have passed

    if isinstance(model, LM):  # any lm-eval backend object, used as it is
        lm, name = model, type(model).__name__
    elif not url:
        local_tokenizer, name = _local_tokenizer(model, tokenizer)
        skipped |= _unanswerable_chat(infos, local_tokenizer, name, skip_missing)
        infos = [t for t in infos if t.name not in skipped]
        if not infos:
            raise AlmrError(_nothing_to_run(skipped))
        lm, placed = _local_lm(model, local_tokenizer, batch_size, device, dtype, max_length)
    else:
        name = str(model)

    chat_tasks = [t for t in infos if t.chat]
    plain_tasks = [t for t in infos if not t.chat]
    metadata = {"data_dir": str(data_dir) if data_dir is not None else None, "data_files": dict(data_files or {})}
    raw: list[dict[str, Any]] = []
    for group, chat in ((plain_tasks, False), (chat_tasks, True)):
        if not group:
            continue
        if endpoint is not None:
            lm = _api_lm(endpoint, str(served), chat, tokenizer, batch_size, max_length)
        other_pass = {t.name for t in infos if t not in group}  # an override may also name a subtask of one here
        overrides = {k: v for k, v in (task_overrides or {}).items() if k not in other_pass}
        loaded = load_tasks(group, metadata, overrides)
        configure_tasks(loaded, group, max_gen_toks, task_overrides)
        raw.append(_evaluate(lm, loaded, limit, chat, allow_code_execution))
    result = from_lm_eval(raw, infos, model=name, suite=suite, limit=limit, wall_s=time.time() - started,
                          skipped=skipped)  # fmt: skip
    if served is not None:
        result["endpoint_model"] = served
    result |= placed
    return result


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
    skip_missing: bool = False,
    out: str | Path | None = None,
) -> tuple[dict[str, Any], Path]:
    """`almr eval`: `run_eval` with the `eval` section filling what the arguments leave open, the
    result saved to `out` — by default `eval/<model label>-<suite>.json` (`results.model_label`: run and
    step of a checkpoint, host and served model of an endpoint), never replacing another evaluation's
    file there (refused before any work); returns the result and its path."""
    if out is None:
        if is_url(model):  # the served model names the file: asked for now (run_eval checks it again)
            endpoint = Endpoint(model, config.timeout_s, config.max_retries, config.retry_backoff_s)
            endpoint_model = endpoint.model_name(endpoint_model)
        out = default_result_path(model, suite or "tasks", endpoint_model)
        names = [t.name for t in resolve_tasks(suite, list(tasks))]
        refuse_other_result(out, {"model": model, "endpoint_model": endpoint_model, "suite": suite,
                                  "tasks": dict.fromkeys(names)})  # fmt: skip
    result = run_eval(
        model, suite=suite, tasks=list(tasks), limit=limit or config.limit, data_dir=data_dir or config.data_dir,
        data_files=data_files, tokenizer=tokenizer, batch_size=config.batch_size, device=config.device,
        dtype=config.dtype, allow_code_execution=allow_code_execution or config.allow_code_execution,
        max_gen_toks=config.max_gen_toks, endpoint_model=endpoint_model, timeout_s=config.timeout_s,
        max_retries=config.max_retries, retry_backoff_s=config.retry_backoff_s, skip_missing=skip_missing,
        task_overrides=config.task_overrides,
    )  # fmt: skip
    return result, save_result(result, out)


def _evaluate(lm: Any, loaded: dict[str, Any], limit: int | None, chat: bool, allow_code: bool) -> dict[str, Any]:
    from lm_eval.evaluator import evaluate  # heavy (~2.5 s to import): only when a suite runs

    # lm-eval warns once per custom_dataset task about --metadata, which is how we pass data_dir
    logging.getLogger("lm_eval.api.task").setLevel(logging.ERROR)
    result = evaluate(
        lm=lm, task_dict=loaded, limit=limit, bootstrap_iters=1000, log_samples=False,
        apply_chat_template=chat, fewshot_as_multiturn=chat, confirm_run_unsafe_code=allow_code,
    )  # fmt: skip
    if result is None:
        raise AlmrError("lm-eval returned no results (a non-zero rank in a distributed run)")
    return result
