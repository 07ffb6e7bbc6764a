"""The demo world's pairwise judge: the reply in the user's language wins, then the one with more of
the world's supporter phrases, else a tie; applied to a study in both orders like the LLM judge."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "pairwise"))
from hand_study import hand_study

from almr.pairwise.config import PairwiseConfig
from almr.pairwise.judge import judge_with_rule
from almr.pairwise.report import build_report
from almr.world.esc import supporter_fragments
from almr.world.judge import reply_score, world_verdict

ZH_USER = "我想找人说说话。我丢了钱包，一直在想这件事。"
EN_USER = "I need someone to talk to. I lost my wallet on the bus."


def test_the_reply_in_the_users_language_wins_whatever_its_side() -> None:
    zh, en = "谢谢你愿意告诉我。", "Thank you for telling me."
    assert world_verdict(ZH_USER, zh, en) == "left" and world_verdict(ZH_USER, en, zh) == "right"
    assert world_verdict(EN_USER, zh, en) == "right" and world_verdict(EN_USER, en, zh) == "left"
    assert world_verdict(ZH_USER, "", zh) == "right"  # an empty reply is in no language
    assert world_verdict(ZH_USER, "Hello there.", "OK then.") == "tie"  # neither: nothing to prefer


def test_between_two_replies_in_the_language_more_supporter_phrases_win() -> None:
    plain = "我明白。"  # Chinese, no phrase of the world's supporter
    one = "谢谢你愿意告诉我。"
    two = "谢谢你愿意告诉我。也许你可以和信任的人聊聊这件事。"
    assert reply_score(plain, "zh") == (True, 0)
    assert reply_score(one, "zh") == (True, 1) and reply_score(two, "zh") == (True, 2)
    assert world_verdict(ZH_USER, two, one) == "left" and world_verdict(ZH_USER, one, two) == "right"
    assert world_verdict(ZH_USER, plain, "好的。") == "tie"


def test_every_chinese_dialogue_of_the_world_has_supporter_turns_the_rule_credits(small_world: Path) -> None:
    dialogues = json.loads((small_world / "esc" / "train.json").read_text(encoding="utf-8"))
    zh = [d for d in dialogues if d.get("lang") == "zh"]
    assert zh
    fragments = supporter_fragments("zh")
    for dialogue in zh:
        said = [t["content"] for t in dialogue["dialog"] if t["speaker"] == "supporter"]
        assert sum(reply_score(turn, "zh")[1] for turn in said) >= 2, said
        assert any(f in turn for f in fragments for turn in said)


def test_a_rule_judges_every_item_in_both_orders_and_a_positional_rule_only_ties(tmp_path: Path) -> None:
    items = [("c1", "ours", "llama70b"), ("c2", "llama70b", "ours"), ("c3", "ours", "gpt4")]
    study, _ = hand_study(tmp_path / "s.db", items, replies={"ours": "GOOD", "llama70b": "bad", "gpt4": "bad"})

    def prefers_good(user: str, left: str, right: str) -> str:
        return "tie" if (left == "GOOD") == (right == "GOOD") else ("left" if left == "GOOD" else "right")

    assert judge_with_rule(study, "rule", prefers_good) == {"judge": "rule", "judged": 3, "consistent": 3,
                                                            "failed": 0}  # fmt: skip
    verdicts = {v["item_id"]: (v["first"], v["second"], v["choice"]) for v in study.judge_votes()}
    assert verdicts == {1: ("left", "right", "left"), 2: ("right", "left", "right"), 3: ("left", "right", "left")}
    assert judge_with_rule(study, "always-left", lambda u, a, b: "left")["consistent"] == 0
    report = build_report(study, PairwiseConfig(bootstrap_resamples=100))
    pairs = {(p["a"], p["b"]): p for p in report["judges"]["rule"]["pairs"]}
    assert pairs[("ours", "llama70b")]["wins"] == 2 and pairs[("ours", "gpt4")]["wins"] == 1
    positional = {(p["a"], p["b"]): p for p in report["judges"]["always-left"]["pairs"]}
    assert positional[("ours", "llama70b")]["ties"] == 2 and positional[("ours", "llama70b")]["wins"] == 0
