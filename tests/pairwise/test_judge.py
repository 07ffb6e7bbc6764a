"""The LLM judge: both orders, inconsistent verdicts are ties, failures listed, verdicts kept apart."""

import re
from collections import Counter
from pathlib import Path
from typing import Any

from fake_endpoint import FakeEndpoint
from hand_study import hand_study

from almr.pairwise.config import PairwiseConfig
from almr.pairwise.judge import judge_prompt, parse_verdict
from almr.pairwise.judge import judge_study as run_judge
from almr.pairwise.report import build_report

ITEMS = [("c1", "ours", "llama70b"), ("c2", "llama70b", "ours"), ("c3", "ours", "gpt4"), ("c4", "gpt4", "ours")]
REPLIES = {"ours": "GOOD reply", "llama70b": "weak reply", "gpt4": "other reply"}
CONFIG = PairwiseConfig(retries=0, backoff_s=0.0, bootstrap_resamples=200)


def shown(prompt: str) -> tuple[str, str]:
    return (
        re.search(r"\[Reply A\]\n(.*)\n\n\[Reply B\]", prompt).group(1),  # type: ignore[union-attr]
        re.search(r"\[Reply B\]\n(.*)\n\nExplain", prompt).group(1),
    )  # type: ignore[union-attr]


def judge_reply(body: dict[str, Any]) -> tuple[int, str]:
    """Picks GOOD against llama70b's reply whatever its place; always picks A against gpt4's (a position bias)."""
    a, b = shown(body["messages"][0]["content"])
    if "other" in a + b:
        return 200, "A looks fine.\n[[A]]"
    return 200, "Reasoning…\n[[A]]" if a.startswith("GOOD") else "Reasoning…\n[[B]]"


def test_both_orders_are_asked_and_inconsistent_verdicts_are_ties(tmp_path: Path) -> None:
    study, _ = hand_study(tmp_path / "s.db", ITEMS, replies=REPLIES)
    with FakeEndpoint(["judge-x"], judge_reply) as judge:
        counts = run_judge(study, judge.url, CONFIG)
        assert len(judge.requests) == 2 * len(ITEMS)
        # every item in both orders (requests run concurrently, so in any order)
        assert Counter(shown(r["messages"][0]["content"]) for r in judge.requests) == {
            ("GOOD reply", "weak reply"): 2,
            ("weak reply", "GOOD reply"): 2,
            ("GOOD reply", "other reply"): 2,
            ("other reply", "GOOD reply"): 2,
        }
    assert counts == {"judge": "judge-x", "judged": 4, "consistent": 2, "failed": 0}
    verdicts = {v["item_id"]: (v["first"], v["second"], v["choice"]) for v in study.judge_votes()}
    assert verdicts == {
        1: ("left", "right", "left"),
        2: ("right", "left", "right"),
        3: ("left", "left", "tie"),
        4: ("left", "left", "tie"),
    }
    report = build_report(study, CONFIG)
    assert report["human"] is None  # the judge's verdicts are not human votes
    pairs = {(p["a"], p["b"]): p for p in report["judges"]["judge-x"]["pairs"]}
    assert (pairs[("ours", "llama70b")]["wins"], pairs[("ours", "llama70b")]["ties"]) == (2, 0)
    assert (pairs[("ours", "gpt4")]["wins"], pairs[("ours", "gpt4")]["ties"]) == (0, 2)
    assert report["judges"]["judge-x"]["position_bias"]["left"] == 6  # of 8 raw verdicts, all decisive


def test_unparseable_and_failed_verdicts_are_listed_and_retried_next_run(tmp_path: Path) -> None:
    study, _ = hand_study(tmp_path / "s.db", ITEMS[:2], replies=REPLIES)
    answers = iter([(200, "I cannot decide."), (500, "overloaded")])
    with FakeEndpoint(["judge-x"], lambda body: next(answers)) as judge:
        counts = run_judge(study, judge.url, CONFIG)
    assert counts["failed"] == 2 and counts["judged"] == 0
    errors = sorted(v["error"] for v in study.judge_votes())
    assert errors[0].startswith("POST") and "HTTP 500" in errors[0] and "unparseable verdict" in errors[1]
    with FakeEndpoint(["judge-x"], judge_reply) as judge:
        assert run_judge(study, judge.url, CONFIG)["judged"] == 2  # only the items without a verdict


def test_verdict_parsing_and_the_prompt() -> None:
    assert parse_verdict("A is better [[A]] … no, [[C]]") == "C"
    assert parse_verdict("[[D]]") is None
    prompt = judge_prompt(
        {
            "history": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
            "user": "sad",
            "left": "L",
            "right": "R",
        },
        swap=True,
    )
    assert "User: hi\nAssistant: yo\nUser: sad" in prompt and "[Reply A]\nR\n\n[Reply B]\nL" in prompt
