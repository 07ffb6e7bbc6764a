"""`local-completions` / `local-chat-completions` against a small OpenAI-compatible test server
(standard library only) that serves a tiny Hugging Face model: the scores through the endpoint
must equal the in-process ones on the same items."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

from almr.evaluate.harness import run_eval

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


class TinyOpenAIServer:
    """/v1/models, /v1/completions (echo + logprobs for scoring, greedy generation with stop
    strings) and /v1/chat/completions over one model, on 127.0.0.1 at an ephemeral port. It
    answers at most `max_requests` requests and is shut down by the fixture."""

    def __init__(self, model_dir: Path, max_requests: int = 2000) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.requests = 0
        self.max_requests = max_requests
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "tiny", "object": "model"}]})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                server.requests += 1
                if server.requests > server.max_requests:
                    self._send(503, {"error": "request budget spent"})
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path.endswith("/chat/completions"):
                    self._send(200, server.chat(body))
                elif self.path.endswith("/completions"):
                    self._send(200, server.completions(body))
                else:
                    self._send(404, {"error": "not found"})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.lock = threading.Lock()

    @torch.no_grad()
    def _generate(self, ids: list[int], max_tokens: int, stop: list[str]) -> str:
        with self.lock:
            out = self.model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False,
                                      attention_mask=torch.ones(1, len(ids), dtype=torch.long))  # fmt: skip
        text = self.tok.decode(out[0, len(ids) :], skip_special_tokens=True)
        for s in stop:
            text = text.split(s)[0]
        return text

    @torch.no_grad()
    def _logprobs(self, ids: list[int]) -> dict:
        with self.lock:
            logp = torch.log_softmax(self.model(torch.tensor([ids])).logits[0].float(), -1)
        token_lp: list[float | None] = [None]
        top: list[dict | None] = [None]
        for i in range(1, len(ids)):
            token_lp.append(float(logp[i - 1, ids[i]]))
            best = int(logp[i - 1].argmax())
            top.append({self.tok.decode([best]) + f"#{best}": float(logp[i - 1, best])})
        # the one generated token that max_tokens=1 asks for
        token_lp.append(0.0)
        top.append({"<gen>": 0.0})
        return {"token_logprobs": token_lp, "top_logprobs": top}

    def completions(self, body: dict) -> dict:
        prompts = body["prompt"]
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        choices = []
        for i, p in enumerate(prompts):
            ids = p if isinstance(p, list) else self.tok(p)["input_ids"]
            if body.get("echo") and body.get("logprobs"):
                choices.append({"index": i, "text": "", "logprobs": self._logprobs(ids)})
            else:
                stop = body.get("stop") or []
                stop = [stop] if isinstance(stop, str) else stop
                choices.append({"index": i, "text": self._generate(ids, int(body.get("max_tokens", 16)), stop)})
        return {"object": "text_completion", "model": "tiny", "choices": choices}

    def chat(self, body: dict) -> dict:
        # the template writes <|begin_of_text|> itself, as HFLM's chat path also relies on
        prompt = self.tok.apply_chat_template(body["messages"], add_generation_prompt=True, tokenize=False)
        ids = self.tok(prompt, add_special_tokens=False)["input_ids"]
        text = self._generate(ids, int(body.get("max_tokens") or body.get("max_completion_tokens") or 16), [])
        return {"object": "chat.completion", "model": "tiny",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, small_world: Path) -> Iterator[tuple[TinyOpenAIServer, Path]]:
    from test_eval_tasks import tiny_model_dir

    model_dir = tiny_model_dir(tmp_path_factory.mktemp("served") / "m", small_world / "tokenizer")
    server = TinyOpenAIServer(model_dir)
    server.thread.start()
    try:
        yield server, model_dir
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def test_local_completions_equals_in_process(served: tuple, small_world: Path) -> None:
    server, model_dir = served
    tasks = ["world_mmlu", "world_ceval", "world_seceu", "world_cmrc"]
    kwargs = {"tasks": tasks, "data_dir": small_world, "limit": 6, "max_gen_toks": 4}
    remote = run_eval(server.url, tokenizer=str(model_dir), **kwargs)
    local = run_eval(str(model_dir), **kwargs)
    assert server.requests > 0
    for task in tasks:
        for metric, m in local["tasks"][task]["metrics"].items():
            got = remote["tasks"][task]["metrics"][metric]["value"]
            assert got == pytest.approx(m["value"], abs=1e-3), (task, metric)
    assert remote["model"] == server.url


def test_local_chat_completions_equals_in_process(served: tuple) -> None:
    server, model_dir = served
    remote = run_eval(server.url, tasks=["zh_share"], data_dir=FIXTURES, max_gen_toks=6)
    local = run_eval(str(model_dir), tasks=["zh_share"], data_dir=FIXTURES, max_gen_toks=6)
    assert remote["tasks"]["zh_share"]["metrics"]["zh_share"]["value"] == pytest.approx(
        local["tasks"]["zh_share"]["metrics"]["zh_share"]["value"]
    )


def test_endpoint_loglikelihood_needs_a_tokenizer(served: tuple, small_world: Path) -> None:
    from almr.errors import ConfigError

    server, _ = served
    with pytest.raises(ConfigError, match="--tokenizer"):
        run_eval(server.url, tasks=["world_mmlu"], data_dir=small_world)
