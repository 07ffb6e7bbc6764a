"""The conversation store through the API: turns as a tree (a regenerated reply is a sibling),
per-user isolation, feedback, export and deletion; HTML in messages is stored as text."""

import json

import pytest
from fastapi.testclient import TestClient

from conftest import MODEL, TOKENS, openai_client

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[user]}"}


def test_turns_form_a_tree_and_regenerating_adds_a_sibling(client: TestClient) -> None:
    api = openai_client(client)
    conversation = client.post("/api/conversations", json={"title": "t"}, headers=auth("alice")).json()["id"]
    meta = {"conversation_id": conversation}
    first = [{"role": "user", "content": "我今天很累"}]
    a1 = api.chat.completions.create(model=MODEL, messages=first, max_tokens=4, metadata=meta)
    again = api.chat.completions.create(model=MODEL, messages=first, max_tokens=4, metadata=meta)
    reply = a1.choices[0].message.content
    second = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "谢谢"}]
    api.chat.completions.create(model=MODEL, messages=second, max_tokens=4, metadata=meta)
    messages = client.get(f"/api/conversations/{conversation}", headers=auth("alice")).json()["messages"]
    by_id = {m["id"]: m for m in messages}
    user_turns = [m for m in messages if m["role"] == "user"]
    assert [m["content"] for m in user_turns] == ["我今天很累", "谢谢"]
    replies = [m for m in messages if m["role"] == "assistant" and m["parent_id"] == user_turns[0]["id"]]
    assert {m["id"] for m in replies} == {a1.id.removeprefix("chatcmpl-"), again.id.removeprefix("chatcmpl-")}
    assert by_id[user_turns[1]["parent_id"]]["role"] == "assistant"
    stored = by_id[a1.id.removeprefix("chatcmpl-")]
    assert stored["model"] == MODEL and stored["completion_tokens"] == a1.usage.completion_tokens
    assert stored["latency_ms"] > 0 and stored["params"]["max_tokens"] == 4


def test_a_continued_history_without_an_id_finds_its_conversation(client: TestClient) -> None:
    api = openai_client(client)
    first = [{"role": "user", "content": "hello there"}]
    out = api.chat.completions.create(model=MODEL, messages=first, max_tokens=3)
    history = [
        *first,
        {"role": "assistant", "content": out.choices[0].message.content},
        {"role": "user", "content": "go on"},
    ]
    api.chat.completions.create(model=MODEL, messages=history, max_tokens=3)
    conversations = client.get("/api/conversations", headers=auth("alice")).json()
    assert len(conversations) == 1


def test_users_see_only_their_own_conversations(client: TestClient) -> None:
    openai_client(client, "alice").chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "secret"}], max_tokens=2
    )
    mine = client.get("/api/conversations", headers=auth("alice")).json()
    assert len(mine) == 1 and client.get("/api/conversations", headers=auth("bob")).json() == []
    cid = mine[0]["id"]
    assert client.get(f"/api/conversations/{cid}", headers=auth("bob")).status_code == 404
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 1,
            "metadata": {"conversation_id": cid}}  # fmt: skip
    assert client.post("/v1/chat/completions", json=body, headers=auth("bob")).status_code == 404
    reply = next(
        m
        for m in client.get(f"/api/conversations/{cid}", headers=auth("alice")).json()["messages"]
        if m["role"] == "assistant"
    )
    assert (
        client.post(f"/api/messages/{reply['id']}/feedback", json={"value": 1}, headers=auth("bob")).status_code == 404
    )
    assert (
        client.post(f"/api/messages/{reply['id']}/feedback", json={"value": 1}, headers=auth("alice")).status_code
        == 200
    )
    assert client.get("/api/admin/export", headers=auth("alice")).status_code == 403


def test_html_is_stored_as_text_and_export_and_deletion_work(client: TestClient) -> None:
    payload = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    openai_client(client, "bob").chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": payload}], max_tokens=2
    )
    openai_client(client, "alice").chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    lines = client.get("/api/admin/export", headers=auth("admin")).text.splitlines()
    records = [json.loads(line) for line in lines]
    assert {r["user"] for r in records} == {"alice", "bob"}
    assert any(m["content"] == payload for r in records for m in r["messages"])
    assert client.delete("/api/admin/users/bob", headers=auth("admin")).json() == {"deleted_conversations": 1}
    assert client.get("/api/conversations", headers=auth("bob")).status_code == 401  # the user is gone
    assert client.delete("/api/me/data", headers=auth("alice")).json() == {"deleted_conversations": 1}
    assert client.get("/api/admin/export", headers=auth("admin")).text == ""
