"""`local-completions` / `local-chat-completions` against almr's own OpenAI-compatible server
(`almr.serve`, on uvicorn at 127.0.0.1) serving a tiny Hugging Face model: the scores through the
endpoint must equal the in-process ones on the same items."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from almr.evaluate.harness import run_eval

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


class ServedModel:
    """`almr.serve`'s app over one model directory, on uvicorn at 127.0.0.1 and a free port: no
    tokens (a loopback server), no persona system prompt, the client's sampling settings honoured."""

    def __init__(self, model_dir: Path, store: Path) -> None:
        import uvicorn

        from almr.serve.app import create_app
        from almr.serve.config import ServeConfig
        from almr.serve.store import Store
        from almr.serve.transformers_engine import TransformersEngine

        config = ServeConfig.model_validate({
            "model_name": "tiny", "auth": {"required": False, "requests_per_minute": 100_000},
            "persona": {"system_prompt": "", "temperature": 0, "max_tokens": 256, "allow_client_overrides": True},
        })  # fmt: skip
        engine = TransformersEngine(model_dir, model_name="tiny", cpu_threads=1)
        self.app = create_app(config, engine, Store(f"sqlite:///{store}"))
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    @property
    def requests(self) -> int:
        """Generation requests answered (from the server's own /metrics counters)."""
        registry = self.app.state.almr.metrics.registry
        return int(sum(sample.value for metric in registry.collect() if metric.name == "almr_requests"
                       for sample in metric.samples
                       if sample.name.endswith("_total") and "completions" in sample.labels["route"]))  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, small_world: Path) -> Iterator[tuple[ServedModel, Path]]:
    from test_eval_tasks import tiny_model_dir

    root = tmp_path_factory.mktemp("served")
    model_dir = tiny_model_dir(root / "m", small_world / "tokenizer")
    server = ServedModel(model_dir, root / "store.db")
    server.start()
    try:
        yield server, model_dir
    finally:
        server.stop()


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


def test_the_endpoint_client_takes_the_served_model_s_context(served: tuple) -> None:
    import json

    from almr.evaluate.endpoint import Endpoint
    from almr.evaluate.harness import _api_lm

    server, model_dir = served
    context = json.loads((model_dir / "config.json").read_text())["max_position_embeddings"]
    lm = _api_lm(Endpoint(server.url), "tiny", False, str(model_dir), 4)
    # as HFLM in process, not lm-eval's 2048 for API models (it keeps one position for the generated token)
    assert context != 2048 and lm.max_length == context - 1
    assert _api_lm(Endpoint(server.url), "tiny", False, str(model_dir), 4, max_length=64).max_length == 63
