"""LLM-judge tasks against a local fake judge server (standard library) that returns fixed
verdicts, fails, times out or talks nonsense for chosen items."""

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from almr.evaluate.benchmark_files import load_records
from almr.evaluate.judge import JudgeClient, parse_human, parse_score, run_judge_task

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


class FakeJudge:
    """Replies by the first rule whose key occurs in the prompt: a verdict text, "500" (HTTP
    error), or "sleep" (longer than the client's timeout). Serves at most 200 requests."""

    def __init__(self, rules: dict[str, str], default: str) -> None:
        self.rules, self.default, self.calls = rules, default, 0
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # GET /v1/models: the judge model is the first served
                data = json.dumps({"object": "list", "data": [{"id": "judge-model", "object": "model"}]}).encode()
                self.send_response(200 if self.path == "/v1/models" else 404)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                judge.calls += 1
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                action = next((v for k, v in judge.rules.items() if k in prompt), judge.default)
                if action == "sleep":
                    time.sleep(0.6)
                if action == "500" or judge.calls > 200:
                    self.send_response(500)
                    self.end_headers()
                    return
                data = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": action}}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data.encode())))
                self.end_headers()
                self.wfile.write(data.encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def judge() -> Iterator[FakeJudge]:
    fake = FakeJudge({"春天": "很好的诗。\n得分：0.8", "1+1": "正确。\n得分：1", "周末": "判断：AI",
                      "最近怎么样": "像人说的话。\n判断：人类"}, default="得分：0.5")  # fmt: skip
    yield fake
    fake.close()


def test_verdict_parsing() -> None:
    assert parse_score("理由……\n得分：0.75") == 0.75
    assert parse_score("得分: 1") == 1.0
    assert parse_score("得分：7") is None and parse_score("") is None and parse_score("不错") is None
    assert parse_human("判断：人类") is True and parse_human("判断：AI") is False and parse_human("不知道") is None


def test_belle_eval_scores_the_fixed_verdicts(judge: FakeJudge) -> None:
    records = load_records("belle_eval", FIXTURES)
    asked: list[list[dict]] = []
    result = run_judge_task("belle_eval", records, lambda m: asked.append(m) or "答案", JudgeClient(judge.url))
    assert result["value"] == pytest.approx(100 * (0.8 + 1.0) / 2)
    assert result["n_judged"] == 2 and result["failures"] == []
    assert asked[0] == [{"role": "user", "content": "请写一首关于春天的短诗。"}]


def test_turing_test_share_judged_human(judge: FakeJudge) -> None:
    records = load_records("turing_test", FIXTURES)
    result = run_judge_task("turing_test", records, lambda m: "还行吧", JudgeClient(judge.url), turns=1)
    assert result["metric"] == "human_rate" and result["value"] == 50.0 and result["n_judged"] == 2


def test_failing_and_slow_judges_are_retried_then_reported_per_item_not_scored_zero() -> None:
    fake = FakeJudge({"春天": "500", "1+1": "sleep"}, default="得分：0.5")
    try:
        client = JudgeClient(fake.url, timeout_s=0.3, retries=2, backoff_s=0.01)
        result = run_judge_task("belle_eval", load_records("belle_eval", FIXTURES), lambda m: "答案", client)
    finally:
        fake.close()
    assert fake.calls == 2 * 3  # each item: one try and two retries
    assert result["value"] is None and result["n_judged"] == 0
    assert [f["item"] for f in result["failures"]] == [0, 1]
    assert [f["error"] for f in result["failures"]] == [
        f"POST {fake.url}/chat/completions: HTTP 500 with an empty body after 3 attempts; the server failed; its log "
        "says why",
        f"POST {fake.url}/chat/completions: no reply within 0.3 s after 3 attempts; the server is slow or stuck: check "
        "its load, or raise eval.timeout_s (eval.judge.timeout_s for the judge)",
    ]


def test_unparseable_verdict_is_reported() -> None:
    fake = FakeJudge({}, default="我觉得还可以")
    try:
        result = run_judge_task("belle_eval", load_records("belle_eval", FIXTURES), lambda m: "答案",
                                JudgeClient(fake.url, retries=0))  # fmt: skip
    finally:
        fake.close()
    assert result["value"] is None and len(result["failures"]) == 2
    assert "unparseable verdict" in result["failures"][0]["error"]


def test_eval_judge_command_writes_a_result_with_failures_listed(judge: FakeJudge, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from almr.cli import app
    from almr.evaluate.results import load_result

    model = FakeJudge({}, default="我是模型的回答")  # an OpenAI-compatible "model under test"
    try:
        out = CliRunner().invoke(app, ["eval", "judge", "--model", model.url, "--judge", judge.url, "--tasks",
                                       "belle_eval,turing_test", "--data-dir", str(FIXTURES), "-o",
                                       str(tmp_path / "j.json")])  # fmt: skip
    finally:
        model.close()
    assert out.exit_code == 0, out.output
    result = load_result(tmp_path / "j.json")
    assert result["tasks"]["belle_eval"]["metrics"]["score"]["value"] == pytest.approx(90.0)
    assert result["tasks"]["turing_test"]["metrics"]["human_rate"]["value"] == 50.0
    assert result["tasks"]["belle_eval"]["failures"] == []
