"""LLM-judge tasks: BelleEval scoring and the BotChat-style Turing test, through any
OpenAI-compatible chat endpoint given by URL.

Contract: `JudgeClient(url, model, timeout_s, retries).ask(prompt)` POSTs one user message to
`URL/chat/completions` and returns the reply text; a connection error, a timeout, an HTTP
error or a reply without text is retried up to `retries` more times (with a short backoff),
then raised as `JudgeError`. `run_judge_task` asks the model under test for a reply to every
item (`reply(messages) -> str`, see `chat_replier`), has the judge grade each reply with the
task's prompt file (`judge_prompts/<task>.txt`, or `prompts_dir`), and returns per-task
scores over the items that were judged plus a list of the items that were not, each with its
error — a failed or unparseable verdict is reported, never silently scored 0.

- BelleEval: the judge gives `得分：X`, X in [0, 1]; the task's score is the mean ×100.
- Turing test: the model continues each opening (alternating turns, `turns` replies); the
  judge says `判断：人类` or `判断：AI`; the score is the share judged human ×100.
"""

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from almr.errors import AlmrError, ConfigError
from almr.evaluate.benchmark_files import load_records
from almr.evaluate.config import EvalConfig
from almr.evaluate.registry import TASKS
from almr.evaluate.results import default_result_path, judge_result, save_result

PROMPTS_DIR = Path(__file__).parent / "judge_prompts"
Messages = list[dict[str, str]]


class JudgeError(AlmrError):
    """A judge call that failed after all retries."""


class JudgeClient:
    def __init__(self, url: str, model: str | None = None, timeout_s: float = 60.0, retries: int = 3,
                 backoff_s: float = 0.5) -> None:  # fmt: skip
        self.url = url.rstrip("/").removesuffix("/chat/completions")
        self.model = model
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s

    def _post(self, body: Mapping[str, Any]) -> str:
        request = urllib.request.Request(
            self.url + "/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
            content = json.load(reply)["choices"][0]["message"]["content"]
        if not isinstance(content, str) or not content.strip():
            raise ValueError("reply has no text")
        return content

    def ask(self, prompt: str) -> str:
        body = {"model": self.model or "judge", "messages": [{"role": "user", "content": prompt}], "temperature": 0}
        errors = []
        for attempt in range(self.retries + 1):
            try:
                return self._post(body)
            except (urllib.error.URLError, TimeoutError, OSError, ValueError, KeyError, IndexError) as err:
                errors.append(f"{type(err).__name__}: {err}")
                if attempt < self.retries:
                    time.sleep(self.backoff_s * (attempt + 1))
        raise JudgeError(f"judge {self.url} failed {self.retries + 1} times: {errors[-1]}")


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
        try:
            verdict = judge.ask(prompt)
        except JudgeError as err:
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
                 timeout_s: float = 120.0, retries: int = 3) -> Callable[[Messages], str]:  # fmt: skip
    """`reply(messages) -> str` for a local model (its chat template, greedy) or an endpoint URL."""
    if isinstance(model, str) and model.startswith(("http://", "https://")):
        client = JudgeClient(model, endpoint_model, timeout_s, retries)

        def remote(messages: Messages) -> str:
            body = {"model": client.model or "model", "messages": messages, "max_tokens": max_new_tokens,
                    "temperature": 0}  # fmt: skip
            return client._post(body)

        return remote
    # heavy (torch, transformers): only when the model under test runs in this process
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = tokenizer if hasattr(tokenizer, "apply_chat_template") else AutoTokenizer.from_pretrained(tokenizer or model)
    if not getattr(tok, "chat_template", None):
        raise AlmrError(f"model {model} has no chat template, so it cannot answer the judge tasks; use an SFT model")
    lm = AutoModelForCausalLM.from_pretrained(model).eval() if isinstance(model, str | Path) else model.eval()

    @torch.no_grad()
    def local(messages: Messages) -> str:
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        out = lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False)
        return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()

    return local


def judge_and_save(
    model: str,
    config: EvalConfig,
    *,
    judge: str | None = None,
    tasks: Sequence[str] = ("belle_eval",),
    data_dir: str | Path | None = None,
    limit: int | None = None,
    out: str | Path | None = None,
) -> tuple[dict[str, Any], Path]:
    """`almr eval judge`: the model under test (a directory or URL) answers every item of `tasks`, the
    judge endpoint (`judge`, default eval.judge.url) grades each answer, and the result is saved to
    `out` (default `eval/<model>-judge.json`). Items not judged are listed under each task's
    `failures`, never scored 0. Returns the result and its path."""
    url = judge or config.judge.url
    if not url:
        raise ConfigError("no judge endpoint: pass --judge URL or set eval.judge.url")
    # every data file is read and checked before the first model or judge call
    records = {name: load_records(name, data_dir or config.data_dir)[:limit] for name in tasks}
    client = JudgeClient(url, config.judge.model, config.judge.timeout_s, config.judge.retries)
    reply = chat_replier(model, timeout_s=config.timeout_s, retries=config.max_retries)
    started = time.time()
    scored = {name: run_judge_task(name, records[name], reply, client, config.judge.prompts_dir) for name in tasks}
    result = judge_result(
        scored, [TASKS[name] for name in tasks], model=model, judge=url, limit=limit, wall_s=time.time() - started
    )
    return result, save_result(result, out or default_result_path(model, "judge"))
