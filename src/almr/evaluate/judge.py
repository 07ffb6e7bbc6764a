"""LLM-judge tasks: BelleEval scoring and the BotChat-style Turing test, through any
OpenAI-compatible chat endpoint given by URL.

Contract: `JudgeClient(url, model, timeout_s, retries, backoff_s).ask(prompt)` sends one user message
to `URL/chat/completions` through almr's one HTTP client (`endpoint.Endpoint`: retries with backoff,
the server's error in one line) and returns the reply text; the judge model is `model`, else the first
of GET `URL/models`. `run_judge_task` asks the model under test for a reply to every item
(`reply(messages) -> str`, see `chat_replier`), has the judge grade each reply with the task's prompt
file (`judge_prompts/<task>.txt`, or `prompts_dir`), and returns per-task scores over the items that
were judged plus a list of the items that were not, each with its error — a failed or unparseable
verdict is reported, never silently scored 0. An endpoint error that every further item would meet
too (the server is unreachable, wants credentials, or lacks the route or model) stops the run as an
`EndpointError` instead. `judge_and_save` checks both endpoints (GET /models) before the first item;
`incomplete(result)` names the tasks with items not judged, which `almr eval judge` exits non-zero on.

- BelleEval: the judge gives `得分：X`, X in [0, 1]; the task's score is the mean ×100.
- Turing test: the model continues each opening (alternating turns, `turns` replies); the
  judge says `判断：人类` or `判断：AI`; the score is the share judged human ×100.
"""

import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from almr.errors import AlmrError, ConfigError
from almr.evaluate.benchmark_files import load_records
from almr.evaluate.config import EvalConfig
from almr.evaluate.endpoint import Endpoint, EndpointError
from almr.evaluate.registry import TASKS
from almr.evaluate.results import default_result_path, judge_result, refuse_other_result, save_result

PROMPTS_DIR = Path(__file__).parent / "judge_prompts"
Messages = list[dict[str, str]]
JudgeError = EndpointError  # the name judge failures had before the client was shared


class JudgeClient:
    """The judge endpoint; see the module doc."""

    def __init__(self, url: str, model: str | None = None, timeout_s: float = 60.0, retries: int = 3,
                 backoff_s: float = 0.5) -> None:  # fmt: skip
        self.endpoint = Endpoint(url, timeout_s, retries, backoff_s)
        self.url = self.endpoint.url
        self.requested = model
        self._model: str | None = None

    @property
    def model(self) -> str:
        """The judge model: the one asked for (checked against GET /models), else the first served."""
        if self._model is None:
            self._model = self.endpoint.model_name(self.requested, flag="--judge-model (eval.judge.model)")
        return self._model

    def ask(self, prompt: str) -> str:
        return self.endpoint.chat([{"role": "user", "content": prompt}], self.model, temperature=0)


def load_prompt(task: str, prompts_dir: str | Path | None = None) -> str:
    path = Path(prompts_dir or PROMPTS_DIR) / f"{task}.txt"
    if not path.is_file():
        raise AlmrError(f"judge prompt {path} does not exist; copy the shipped one from {PROMPTS_DIR}")
    return path.read_text(encoding="utf-8")


_SCORE = re.compile(r"得分\s*[:：]\s*([01](?:\.\d+)?)\s*$")
_HUMAN = re.compile(r"判断\s*[:：]\s*(人类|AI)\s*$", re.IGNORECASE)


def parse_score(verdict: str) -> float | None:
    """The BelleEval score in [0, 1] on the verdict's last line, or None."""
    match = _SCORE.search(verdict.strip().splitlines()[-1]) if verdict.strip() else None
    return float(match.group(1)) if match and 0.0 <= float(match.group(1)) <= 1.0 else None


def parse_human(verdict: str) -> bool | None:
    """True when the judge took the dialogue for human, False for AI, None when it did not say."""
    match = _HUMAN.search(verdict.strip().splitlines()[-1]) if verdict.strip() else None
    return None if match is None else match.group(1) == "人类"


def _dialogue(opening: Sequence[str], reply: Callable[[Messages], str], turns: int) -> list[str]:
    lines = list(opening)
    for _ in range(turns):
        # the model speaks next; roles alternate backwards from it
        messages = [{"role": "assistant" if (len(lines) - i) % 2 == 0 else "user", "content": t}
                    for i, t in enumerate(lines)]  # fmt: skip
        lines.append(reply(messages))
    return lines


def run_judge_task(
    task: str,
    records: Sequence[Mapping[str, Any]],
    reply: Callable[[Messages], str],
    judge: JudgeClient,
    prompts_dir: str | Path | None = None,
    turns: int = 2,
) -> dict[str, Any]:
    """Score `records` of `belle_eval` or `turing_test`; see the module doc for the result."""
    template = load_prompt(task, prompts_dir)
    values: list[float] = []
    failures: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        item = record.get("id", index)
        try:
            if task == "belle_eval":
                answer = reply([{"role": "user", "content": record["question"]}])
                std = record.get("std_answer", "")
                prompt = template.format(question=record["question"], std_answer=std, answer=answer)
                parse: Callable[[str], Any] = parse_score
            elif task == "turing_test":
                lines = _dialogue(record["opening"], reply, turns)
                prompt = template.format(dialogue="\n".join(f"{'AB'[i % 2]}：{t}" for i, t in enumerate(lines)))
                parse = parse_human
            else:
                raise AlmrError(f"{task} is not a judge task; judge tasks: belle_eval, turing_test")
        except EndpointError as err:
            if err.fatal:
                raise
            failures.append({"item": item, "error": f"model under test: {err}"})
            continue
        try:
            verdict = judge.ask(prompt)
        except EndpointError as err:
            if err.fatal:
                raise
            failures.append({"item": item, "error": str(err)})
            continue
        got = parse(verdict)
        if got is None:
            failures.append({"item": item, "error": f"unparseable verdict: {verdict[-200:]!r}"})
            continue
        values.append(float(got))
    metric = "score" if task == "belle_eval" else "human_rate"
    mean = 100.0 * sum(values) / len(values) if values else None
    return {"metric": metric, "value": mean, "n_judged": len(values), "n_items": len(records), "failures": failures}


def chat_replier(model: Any, tokenizer: Any = None, max_new_tokens: int = 128, endpoint_model: str | None = None,
                 timeout_s: float = 120.0, retries: int = 3, backoff_s: float = 1.0, device: str = "auto",
                 dtype: str = "auto") -> Callable[[Messages], str]:  # fmt: skip
    """`reply(messages) -> str` for a local model (its chat template, greedy, on `device` in `dtype`) or an
    endpoint URL (the model `endpoint_model`, else the first of GET URL/models — asked now)."""
    if isinstance(model, str) and model.startswith(("http://", "https://")):
        endpoint = Endpoint(model, timeout_s, retries, backoff_s)
        served = endpoint.model_name(endpoint_model)

        def remote(messages: Messages) -> str:
            return endpoint.chat(messages, served, max_tokens=max_new_tokens, temperature=0)

        remote.served_model = served  # type: ignore[attr-defined]
        return remote
    # heavy (torch, transformers): only when the model under test runs in this process
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from almr.evaluate.harness import resolve_device

    tok = tokenizer if hasattr(tokenizer, "apply_chat_template") else AutoTokenizer.from_pretrained(tokenizer or model)
    if not getattr(tok, "chat_template", None):
        raise AlmrError(f"model {model} has no chat template, so it cannot answer the judge tasks; use an SFT model")
    where = resolve_device(device)
    if dtype == "auto":
        dtype = "bfloat16" if where.startswith("cuda") else "float32"
    if isinstance(model, str | Path):
        lm = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).to(where).eval()
    else:
        lm = model.eval()
    device_of = next(lm.parameters()).device

    @torch.no_grad()
    def local(messages: Messages) -> str:
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(device_of)
        out = lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False)
        return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()

    return local


def judge_and_save(
    model: str,
    config: EvalConfig,
    *,
    judge: str | None = None,
    judge_model: str | None = None,
    endpoint_model: str | None = None,
    tasks: Sequence[str] = ("belle_eval",),
    data_dir: str | Path | None = None,
    limit: int | None = None,
    out: str | Path | None = None,
) -> tuple[dict[str, Any], Path]:
    """`almr eval judge`: the model under test (a directory, or a URL serving `endpoint_model`) answers
    every item of `tasks`, the judge endpoint (`judge`, default eval.judge.url; its model `judge_model`,
    default eval.judge.model, else the first it serves) grades each answer, and the result is saved to
    `out` (default `eval/<model label>-judge.json`, never replacing another evaluation's file). Items not
    judged are listed under each task's `failures`, never scored 0 (`incomplete` names them). Both
    endpoints are checked before the first item. Returns the result and its path."""
    url = judge or config.judge.url
    if not url:
        raise ConfigError("no judge endpoint: pass --judge URL or set eval.judge.url")
    unknown = [name for name in tasks if name not in TASKS or TASKS[name].kind != "judge"]
    if unknown:
        raise ConfigError(f"--tasks {', '.join(unknown)}: not a judge task; judge tasks: belle_eval, turing_test")
    # every data file is read and checked before the first model or judge call
    records = {name: load_records(name, data_dir or config.data_dir)[:limit] for name in tasks}
    backoff = config.retry_backoff_s
    client = JudgeClient(url, judge_model or config.judge.model, config.judge.timeout_s, config.judge.retries, backoff)
    client.model  # noqa: B018  (GET /models: a judge that is down or lacks the model stops here)
    reply = chat_replier(model, endpoint_model=endpoint_model, timeout_s=config.timeout_s, retries=config.max_retries,
                         backoff_s=backoff, device=config.device, dtype=config.dtype)  # fmt: skip
    served = getattr(reply, "served_model", None)
    if out is None:
        out = default_result_path(model, "judge", served)
        refuse_other_result(out, {"model": model, "endpoint_model": served, "suite": "judge",
                                  "tasks": dict.fromkeys(tasks)})  # fmt: skip
    started = time.time()
    scored = {name: run_judge_task(name, records[name], reply, client, config.judge.prompts_dir) for name in tasks}
    result = judge_result(scored, [TASKS[name] for name in tasks], model=model, judge=url, limit=limit,
                          wall_s=time.time() - started)  # fmt: skip
    result["judge_model"] = client.model
    if served is not None:
        result["endpoint_model"] = served
    return result, save_result(result, out)


def incomplete(result: Mapping[str, Any]) -> dict[str, str]:
    """`{task: "judged k of n items"}` for every task of a judge result with items not judged."""
    return {
        name: f"judged {task['n_samples']} of {task['n_items']} items"
        for name, task in result["tasks"].items()
        if task.get("failures") or task["n_samples"] < task.get("n_items", task["n_samples"])
    }
