"""What needs a real browser, a real PostgreSQL or a real process to kill: the chat page in
headless Chromium, the store on PostgreSQL, and no acknowledged turn lost to kill -9."""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from almr.serve.app import create_app
from almr.serve.auth import hash_token
from almr.serve.store import Store
from conftest import MODEL, TOKENS, FakeEngine, LiveServer, open_store, serve_config

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
XSS = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script> 你好，我在这里陪你。'


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")
def test_chat_page_in_headless_chromium(tmp_path: Path) -> None:
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    app = create_app(serve_config(), FakeEngine(XSS), open_store(tmp_path / "s.db"))
    with LiveServer(app) as live, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            violations: list[str] = []
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            page.goto(live.url + "/")
            assert "12356" in page.locator("#crisis").text_content()
            page.locator("#accept").click()  # the consent notice comes first
            page.fill("#token", TOKENS["alice"])
            page.dispatch_event("#token", "change")
            page.fill("#input", "我今天很难过")
            page.click("#send")
            page.wait_for_selector("#stop:not([hidden])")  # streaming: the stop button is up
            page.wait_for_selector("#stop", state="hidden")  # (no script of ours: the page's CSP forbids eval)
            reply = page.locator(".msg.assistant .text").last
            assert reply.text_content() == XSS  # shown as text, whole
            assert page.title() != "pwned" and page.locator(".msg img").count() == 0
            page.locator(".msg.assistant .up").last.click()
            page.reload()
            page.wait_for_selector(".msg.assistant")
            assert page.locator(".msg.user .text").first.text_content() == "我今天很难过"
            assert page.locator("#history button").count() == 1
            assert page.title() != "pwned" and not violations
        finally:
            browser.close()
    records = list(Store(f"sqlite:///{tmp_path / 's.db'}").iter_export())
    assert [m["feedback"] for m in records[0]["messages"] if m["role"] == "assistant"] == [1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL 15 on a unix socket in a temporary directory it owns (pytest's own are
    private to root), run as the postgres user, stopped and removed after the test."""
    pytest.importorskip("psycopg", reason="no PostgreSQL driver (pip install psycopg[binary])")
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 is not installed (apt-get install postgresql)")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="almr-pg-"))
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", _free_port()
    done = subprocess.run([*as_postgres, str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        pytest.skip(f"initdb failed: {done.stderr.strip()[-300:]}")
    options = f"-k {root} -p {port} -c listen_addresses=''"
    start = subprocess.run([*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l",
                            str(root / "log"), "start"], capture_output=True, text=True)  # fmt: skip
    if start.returncode:
        pytest.skip(f"pg_ctl start failed: {start.stdout.strip()[-300:]}")
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={root}&port={port}"
    finally:
        subprocess.run([*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def test_the_store_on_postgresql(postgres: str) -> None:
    first, second = Store(postgres), Store(postgres)  # two server processes sharing one database
    first.add_user("alice", hash_token("t"))
    alice = second.user_by_token(hash_token("t"))
    turn = first.begin_turn(alice.id, [{"role": "user", "content": "你好"}], None)
    second.add_reply(turn, "嗨", model=MODEL, params={"t": 0}, finish_reason="stop", latency_ms=1.0,
                     first_token_ms=None, prompt_tokens=2, completion_tokens=1)  # fmt: skip
    again = second.begin_turn(alice.id, [{"role": "user", "content": "你好"}], turn.conversation_id)
    assert again.parent_id == turn.parent_id  # the stored history was found, not duplicated
    exported = list(first.iter_export())
    assert [m["content"] for m in exported[0]["messages"]] == ["你好", "嗨"]
    assert first.delete_user_data("alice") == 1 and list(second.iter_export()) == []
    first.close()
    second.close()


def test_kill_9_loses_no_acknowledged_turn(tmp_path: Path, chat_model: Path) -> None:
    db = tmp_path / "s.db"
    open_store(db).close()
    port = _free_port()
    command = [sys.executable, "-m", "almr.cli", "serve", str(chat_model), "--port", str(port), "--set",
               f"serve.store=sqlite:///{db}", "--set", f"serve.model_name={MODEL}", "--set",
               "serve.persona.max_tokens=8", "--set", "serve.auth.requests_per_minute=100000"]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            pytest.fail(f"the server did not start: {server.stderr.read().decode()[-500:] if server.stderr else ''}")
        acknowledged: list[str] = []

        async def client(i: int, stop: asyncio.Event) -> None:
            headers = {"Authorization": f"Bearer {TOKENS['alice']}"}
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
                n = 0
                while not stop.is_set():
                    n += 1
                    body = {"model": MODEL, "messages": [{"role": "user", "content": f"{i}-{n}"}], "stream": True}
                    try:
                        async with http.stream("POST", "/v1/chat/completions", json=body) as reply:
                            rid, done = None, False
                            async for line in reply.aiter_lines():
                                if line == "data: [DONE]":
                                    done = True
                                elif line.startswith("data: "):
                                    rid = json.loads(line[6:])["id"].removeprefix("chatcmpl-")
                            if done and rid:
                                acknowledged.append(rid)
                    except httpx.HTTPError:
                        return  # the server is gone

        async def load() -> None:
            stop = asyncio.Event()
            tasks = [asyncio.create_task(client(i, stop)) for i in range(8)]
            await asyncio.sleep(4)
            server.send_signal(signal.SIGKILL)  # mid-load, without warning
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)

        asyncio.run(load())
    finally:
        server.kill()
        server.wait(30)
    assert acknowledged, "no turn completed before the kill"
    store = Store(f"sqlite:///{db}")
    stored = {m["id"] for c in store.iter_export() for m in c["messages"] if m["role"] == "assistant"}
    lost = set(acknowledged) - stored
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged turns lost"
