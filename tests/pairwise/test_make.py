"""Making a study: replies from endpoints, the log and a model in process; blind, balanced, failures kept."""

import json
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fake_endpoint import FakeEndpoint

from almr.errors import AlmrError
from almr.pairwise.config import PairwiseConfig
from almr.pairwise.make import make_study
from almr.pairwise.study import Study

FAST = {"retries": 0, "backoff_s": 0.0, "timeout_s": 10.0}


def dialogues(path: Path, n: int = 11) -> Path:
    lines = []
    for i in range(n):
        lines.append(
            {
                "id": f"c{i}",
                "turns": [
                    {"role": "user", "content": f"问题{i}" + (" fail" if i == 3 else "")},
                    {"role": "assistant", "content": f"我是 ours-empathy，回答{i}"},
                ],
            }
        )
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    return path


def llama(body: dict[str, Any]) -> tuple[int, str]:
    user = body["messages"][-1]["content"]
    if "fail" in user:
        return 500, "the model crashed"
    return 200, f"As Llama-3-70B-Instruct, made by Meta AI, I answer {user}"


def gpt(body: dict[str, Any]) -> tuple[int, str]:
    return 200, f"I am ChatGPT (GPT-4o) by OpenAI. 好的：{body['messages'][-1]['content']}"


@pytest.fixture
def study(tmp_path: Path) -> Study:
    with FakeEndpoint(["meta-llama/Llama-3-70B-Instruct"], llama) as a, FakeEndpoint(["gpt-4o"], gpt) as b:
        made = make_study(
            dialogues(tmp_path / "d.jsonl"),
            {"ours-empathy": "logged", "llama70b": a.url, "gpt4": b.url},
            tmp_path / "s.db",
            PairwiseConfig(seed=5, shared_share=0.25, **FAST),
        )
        assert all(r["max_tokens"] == 256 and r["temperature"] == 0 for r in a.requests + b.requests)
    assert made.prompts == 11
    assert made.replies == {"ours-empathy": 11, "llama70b": 10, "gpt4": 11}
    assert made.failures == {"ours-empathy": 0, "llama70b": 1, "gpt4": 0}
    assert made.items == 10 + 11 + 10
    return made.study


def test_replies_that_failed_are_listed_and_their_items_not_made(study: Study) -> None:
    (failure,) = study.failures()
    assert failure["model"] == "llama70b" and failure["prompt"] == "c3#0"
    assert "HTTP 500" in failure["error"] and "the model crashed" in failure["error"]
    assert not [i for i in study.items() if i.prompt_key == "c3#0" and "llama70b" in (i.model_left, i.model_right)]


def test_sides_are_balanced_per_pair_and_stored(study: Study) -> None:
    items = study.items()
    per_pair = Counter((i.model_left, i.model_right) for i in items)
    for a, b in [("ours-empathy", "llama70b"), ("ours-empathy", "gpt4"), ("llama70b", "gpt4")]:
        assert abs(per_pair[(a, b)] - per_pair[(b, a)]) <= 1, (a, b, per_pair)
    replies = study.replies()
    for item in items:  # what the page shows is the stored sides' replies
        view = study.item_view(item.id)
        assert view["left"] == replies[item.model_left][item.prompt_key]
        assert view["right"] == replies[item.model_right][item.prompt_key]
    again = Study(study.path).items()
    assert [(i.model_left, i.model_right) for i in again] == [(i.model_left, i.model_right) for i in items]


def test_shared_items_get_several_annotators(study: Study) -> None:
    required = Counter(i.required for i in study.items())
    assert required == {3: round(0.25 * 31), 1: 31 - round(0.25 * 31)}


def test_model_names_are_scrubbed_from_replies(study: Study) -> None:
    replies = study.replies()
    assert replies["llama70b"]["c0#0"] == "As AI, made by AI, I answer 问题0"
    assert replies["gpt4"]["c0#0"] == "I am AI (AI) by AI. 好的：问题0"
    assert replies["ours-empathy"]["c0#0"] == "我是 AI，回答0"  # the study's own model names too


def test_an_unreachable_endpoint_stops_before_any_file_is_written(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    with pytest.raises(AlmrError, match="cannot connect"):
        make_study(
            dialogues(tmp_path / "d.jsonl"),
            {"a": "logged", "b": f"http://127.0.0.1:{port}/v1"},
            tmp_path / "s.db",
            PairwiseConfig(**FAST),
        )
    assert not (tmp_path / "s.db").exists()


def test_bad_model_lists_are_refused(tmp_path: Path) -> None:
    d = dialogues(tmp_path / "d.jsonl")
    with pytest.raises(AlmrError, match="two or more models"):
        make_study(d, {"a": "logged"}, tmp_path / "s.db", PairwiseConfig())
    with pytest.raises(AlmrError, match="not `logged`, an http"):
        make_study(d, {"a": "logged", "b": str(tmp_path / "nowhere")}, tmp_path / "s.db", PairwiseConfig())
    (tmp_path / "s.db").write_text("")
    with pytest.raises(AlmrError, match="already exists"):
        make_study(d, {"a": "logged", "b": "logged"}, tmp_path / "s.db", PairwiseConfig())


def test_a_model_directory_generates_in_process(tmp_path: Path, small_world: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model_dir = tmp_path / "tiny"
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(small_world / "model")).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(small_world / "tokenizer").save_pretrained(model_dir)
    config = PairwiseConfig(max_new_tokens=6, batch_size=4, device="cpu")
    made = make_study(
        dialogues(tmp_path / "d.jsonl", 5), {"ours": "logged", "tiny": str(model_dir)}, tmp_path / "s.db", config
    )
    assert made.replies["tiny"] + made.failures["tiny"] == 5
    assert made.items == made.replies["tiny"]


def test_a_fatal_error_while_collecting_leaves_no_half_made_study(tmp_path: Path) -> None:
    with (
        FakeEndpoint(["m"], lambda body: (401, "bad key")) as endpoint,
        pytest.raises(AlmrError, match=r"HTTP 401.*set OPENAI_API_KEY"),
    ):
        make_study(dialogues(tmp_path / "d.jsonl"), {"a": "logged", "b": endpoint.url}, tmp_path / "s.db",
                   PairwiseConfig(**FAST))  # fmt: skip
    assert list(tmp_path.glob("s.db*")) == []
