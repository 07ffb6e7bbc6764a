"""The annotation page in a real browser (headless Debian chromium): token, blind items, four choices."""

import shutil
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from hand_study import MODELS, hand_study

from almr.pairwise.web import create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ITEMS = [("c1", "ours", "llama70b"), ("c2", "gpt4", "ours")]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")
def test_an_annotator_votes_in_the_browser_without_seeing_a_model_name(tmp_path: Path) -> None:
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    replies = {"ours": "<b>我理解</b>", "llama70b": "I see.", "gpt4": "好的。"}
    study, tokens = hand_study(tmp_path / "s.db", ITEMS, replies=replies)
    server = uvicorn.Server(uvicorn.Config(create_app(study.path), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/annotate")
            page.fill("#token", "almr-ann-wrong")
            page.click("#save-token")
            page.wait_for_selector("text=That token is not an annotator's.")
            page.fill("#token", tokens["ann1"])
            page.click("#save-token")
            page.wait_for_selector("#task:not([hidden])")
            seen = [page.inner_text("body")]
            first = page.inner_text("#left") + page.inner_text("#right")
            page.click("[data-choice=left]")
            page.wait_for_function(f"document.querySelector('#left').textContent + "
                                   f"document.querySelector('#right').textContent !== {first!r}")  # fmt: skip
            seen.append(page.inner_text("body"))
            page.keyboard.press("4")  # both bad
            page.wait_for_selector("text=nothing left for you")
            assert "<b>我理解</b>" in "".join(seen)  # shown as text, not rendered as HTML
            browser.close()
        assert all(name not in text for name in MODELS for text in seen)
        assert sorted(v.choice for v in study.votes()) == ["both_bad", "left"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
