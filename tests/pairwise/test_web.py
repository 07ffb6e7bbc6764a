"""The annotation page: blind, token-gated, votes stored; shared items reach several annotators."""

import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient
from hand_study import MODELS, hand_study

from almr.pairwise.dialogues import Prompt
from almr.pairwise.study import Study
from almr.pairwise.web import create_app

ITEMS = [("c1", "ours", "llama70b"), ("c2", "gpt4", "ours"), ("c3", "llama70b", "gpt4")]


@pytest.fixture
def made(tmp_path: Path) -> tuple[Study, dict[str, str]]:
    study, tokens = hand_study(tmp_path / "s.db", ITEMS)
    return study, tokens


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_page_and_its_items_never_show_model_names(made: tuple[Study, dict[str, str]]) -> None:
    study, tokens = made
    client = TestClient(create_app(study.path))
    page = client.get("/annotate")
    assert page.status_code == 200 and "textContent" in page.text
    seen = [page.text]
    for _ in ITEMS:
        got = client.get("/annotate/api/next", headers=auth(tokens["ann1"])).json()
        seen.append(json.dumps(got, ensure_ascii=False))
        assert set(got["item"]) == {"id", "history", "user", "left", "right"}
        client.post(
            "/annotate/api/vote", json={"item_id": got["item"]["id"], "choice": "tie"}, headers=auth(tokens["ann1"])
        )
    for name in MODELS:
        assert all(name not in text for text in seen), name


def test_tokens_are_required_and_checked(made: tuple[Study, dict[str, str]]) -> None:
    study, _ = made
    client = TestClient(create_app(study.path))
    assert client.get("/annotate/api/next").status_code == 401
    refused = client.post("/annotate/api/vote", json={"item_id": 1, "choice": "left"}, headers=auth("almr-ann-forged"))
    assert refused.status_code == 401 and "not an annotator's token" in refused.json()["detail"]
    assert study.votes() == []


def test_votes_are_stored_and_the_last_counts(made: tuple[Study, dict[str, str]]) -> None:
    study, tokens = made
    client = TestClient(create_app(study.path))
    first = client.get("/annotate/api/next", headers=auth(tokens["ann2"])).json()["item"]["id"]
    assert (
        client.post(
            "/annotate/api/vote", json={"item_id": first, "choice": "left"}, headers=auth(tokens["ann2"])
        ).json()["revisions"]
        == 0
    )
    again = client.post(
        "/annotate/api/vote", json={"item_id": first, "choice": "both_bad"}, headers=auth(tokens["ann2"])
    )
    assert again.json()["revisions"] == 1
    assert [(v.item_id, v.annotator, v.choice) for v in study.votes()] == [(first, "ann2", "both_bad")]
    bad = client.post("/annotate/api/vote", json={"item_id": first, "choice": "A"}, headers=auth(tokens["ann2"]))
    assert bad.status_code == 422
    assert (
        client.post(
            "/annotate/api/vote", json={"item_id": 99, "choice": "tie"}, headers=auth(tokens["ann2"])
        ).status_code
        == 404
    )


def test_shared_items_go_to_several_annotators_and_single_ones_to_one(tmp_path: Path) -> None:
    study, tokens = hand_study(tmp_path / "s.db", [])
    study.add_prompts([Prompt("k#0", "k", 0, [], "hi")])
    for model in MODELS:
        study.add_replies(model, {"k#0": (model[::-1], 0)}, {})
    study.add_items([("k#0", "ours", "gpt4", 0, 2), ("k#0", "gpt4", "llama70b", 1, 1)])
    client = TestClient(create_app(study.path))
    done: dict[str, list[int]] = {}
    for who in ("ann1", "ann2", "ann3"):
        done[who] = []
        while (item := client.get("/annotate/api/next", headers=auth(tokens[who])).json()["item"]) is not None:
            client.post("/annotate/api/vote", json={"item_id": item["id"], "choice": "tie"}, headers=auth(tokens[who]))
            done[who].append(item["id"])
    assert done == {"ann1": [1, 2], "ann2": [1], "ann3": []}
    assert study.progress("ann3") == {"votes_needed": 3, "votes_done": 3, "items_started": 2, "mine": 0}


def test_the_standalone_server_binds_a_free_port(made: tuple[Study, dict[str, str]]) -> None:
    study, tokens = made
    server = uvicorn.Server(uvicorn.Config(create_app(study.path), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        request = urllib.request.Request(f"http://127.0.0.1:{port}/annotate/api/next", headers=auth(tokens["ann3"]))
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert json.load(reply)["annotator"] == "ann3"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
