"""The report on a hand-made vote set whose every number is worked out by hand below."""

from pathlib import Path

import pytest
from hand_study import hand_study

from almr.errors import AlmrError
from almr.pairwise.config import PairwiseConfig
from almr.pairwise.report import build_report, markdown
from almr.pairwise.stats import cluster_bootstrap
from almr.pairwise.study import Study

ITEMS = [
    ("c1", "ours", "llama70b"),  # 1
    ("c2", "llama70b", "ours"),  # 2
    ("c3", "ours", "llama70b"),  # 3
    ("c4", "llama70b", "ours"),  # 4
    ("c5", "ours", "llama70b"),  # 5: shared by three annotators
    ("c1", "gpt4", "ours"),  # 6
    ("c2", "ours", "gpt4"),  # 7
    ("c3", "gpt4", "llama70b"),  # 8
]
VOTES = [
    (1, "ann1", "left"),  # ours wins
    (2, "ann1", "right"),  # ours wins
    (3, "ann1", "tie"),
    (4, "ann1", "right"),  # changed below: the last vote counts
    (4, "ann1", "left"),  # llama70b wins
    (5, "ann1", "both_bad"),
    (5, "ann2", "left"),  # ours wins
    (5, "ann3", "left"),  # ours wins
    (6, "ann2", "left"),  # gpt4 wins
    (7, "ann2", "left"),  # ours wins
    (8, "ann3", "left"),  # gpt4 wins
]
REPLIES = {"ours": "你好朋友", "llama70b": "hello 你好", "gpt4": "好的 ok"}
CONFIG = PairwiseConfig(bootstrap_resamples=500, seed=11)


@pytest.fixture
def study(tmp_path: Path) -> Study:
    made, _ = hand_study(tmp_path / "s.db", ITEMS, replies=REPLIES)
    for item, who, choice in VOTES:
        made.vote(item, who, choice)
    return made


def test_pairs_win_rates_and_intervals_by_hand(study: Study) -> None:
    report = build_report(study, CONFIG, with_bradley_terry=True)
    human = report["human"]
    assert human["votes"] == 10 and human["items_voted"] == 8 and human["voters"] == ["ann1", "ann2", "ann3"]
    ours_llama, ours_gpt4, llama_gpt4 = human["pairs"]
    # ours vs llama70b: W = items 1, 2 and two votes on 5; T = the tie on 3 and the both-bad on 5; L = item 4
    assert (ours_llama["a"], ours_llama["b"]) == ("ours", "llama70b")
    assert (ours_llama["wins"], ours_llama["ties"], ours_llama["losses"], ours_llama["both_bad"]) == (4, 2, 1, 1)
    assert ours_llama["n"] == 7 and ours_llama["conversations"] == 5
    assert ours_llama["win_rate"] == 4 / 7 and ours_llama["score_rate"] == 5 / 7
    # the interval resamples the five conversations: c1 1, c2 1, c3 ½, c4 0, c5 ½ + 1 + 1
    expected = cluster_bootstrap([1, 1, 0.5, 0, 0.5, 1, 1], ["c1", "c2", "c3", "c4", "c5", "c5", "c5"], 500, 0.95, 11)
    assert ours_llama["ci_score_rate"] == list(expected["score_rate"])
    assert ours_llama["ci_win_rate"] == list(expected["win_rate"])
    assert (ours_gpt4["wins"], ours_gpt4["ties"], ours_gpt4["losses"], ours_gpt4["score_rate"]) == (1, 0, 1, 0.5)
    assert (llama_gpt4["a"], llama_gpt4["b"], llama_gpt4["losses"], llama_gpt4["score_rate"]) == (
        "llama70b",
        "gpt4",
        1,
        0.0,
    )
    # decisive votes: left on items 1, 4, 5, 5, 6, 7, 8 and right on item 2: 7 of 8; p = 2·(8 + 1)/256
    assert human["position_bias"] == {"decisive": 8, "left": 7, "left_share": 7 / 8, "p_value": 18 / 256}
    assert set(human["bradley_terry"]) == {"ours", "llama70b", "gpt4"}
    assert human["bradley_terry"]["ours"] > human["bradley_terry"]["llama70b"]


def test_agreement_on_the_shared_item_by_hand(study: Study) -> None:
    agree = build_report(study, CONFIG)["agreement"]
    # item 5 alone has several votes: both_bad, left, left
    assert agree["available"] and agree["items"] == 1 and agree["annotators"] == 3
    assert agree["percent_agreement"] == pytest.approx(1 / 3)
    # coincidences o_ll = 1, o_bl = o_lb = 1; n_b = 1, n_l = 2, n = 3: α = 1 − 2·2/(9 − 5) = 0
    assert agree["krippendorff_alpha"] == pytest.approx(0.0, abs=1e-12)
    # P_i = (1 + 4 − 3)/6 = ⅓; p = (⅓, ⅔): P_e = 5/9; κ = (⅓ − 5/9)/(4/9) = −½
    assert agree["fleiss_kappa"] == pytest.approx(-0.5)
    # ann1 vs ann2 and ann1 vs ann3: 0 (no agreement, none expected); ann2 vs ann3: undefined
    assert [c["kappa"] for c in agree["cohen_kappa"]] == [0.0, 0.0, None]
    assert agree["cohen_kappa_mean"] == 0.0


def test_table8_layout_and_chinese_share(study: Study) -> None:
    report = build_report(study, CONFIG)
    # %Chinese: 4 of 4; 2 of (2 + 5); 2 of (2 + 2)
    assert report["chinese"] == {"ours": 100.0, "llama70b": pytest.approx(200 / 7), "gpt4": 50.0}
    text = markdown(report)
    assert "| Model | vs ours | vs llama70b | vs gpt4 | %Chinese |" in text
    lo, hi = report["human"]["pairs"][0]["ci_score_rate"]
    assert f"| ours | N/A | 71.4 [{100 * lo:.1f}, {100 * hi:.1f}] | 50.0 [" in text
    assert f"| llama70b | 28.6 [{100 * (1 - hi):.1f}, {100 * (1 - lo):.1f}] | N/A | 0.0 [" in text
    assert "| gpt4 | 50.0 [" in text and "| 100.0 | 50.0 |" not in text
    assert "Position bias: 7 of 8 decisive votes chose the left side (87.5%)" in text
    assert "None: every model answered every prompt." in text


def test_the_last_vote_counts_and_changes_are_kept(study: Study) -> None:
    assert [v.choice for v in study.votes() if v.item_id == 4] == ["left"]
    assert study.vote(4, "ann1", "left") == 2  # the third vote on it: two changes


def test_no_votes_is_refused_with_what_to_do(tmp_path: Path) -> None:
    empty, _ = hand_study(tmp_path / "e.db", ITEMS)
    with pytest.raises(AlmrError, match=r"has no votes yet: issue tokens .*almr pairwise token add"):
        build_report(empty, CONFIG)


def test_one_annotator_reports_everything_but_agreement(tmp_path: Path) -> None:
    one, _ = hand_study(tmp_path / "o.db", ITEMS, annotators=["solo"])
    one.vote(1, "solo", "left")
    one.vote(2, "solo", "tie")
    report = build_report(one, CONFIG)
    assert report["agreement"] == {"available": False, "reason": "only 1 annotator voted (solo): agreement needs two"}
    assert report["human"]["pairs"][0]["score_rate"] == 0.75
    assert "Agreement cannot be computed: only 1 annotator voted (solo): agreement needs two." in markdown(report)


def test_items_of_other_models_are_refused(study: Study) -> None:
    study.add_items([("c1#0", "claude", "ours", 99, 1)])
    with pytest.raises(
        AlmrError,
        match=r"1 items compare models that are not the study's \(ours, llama70b, gpt4\): "
        r"item 9: claude vs ours",
    ):
        build_report(study, CONFIG)


def test_votes_of_strangers_and_unknown_choices_are_refused(study: Study) -> None:
    with pytest.raises(AlmrError, match="'mallory' is not an annotator"):
        study.vote(1, "mallory", "left")
    with pytest.raises(AlmrError, match="choice 'A' is not one of left, right, tie, both_bad"):
        study.vote(1, "ann1", "A")
    with pytest.raises(AlmrError, match="item 99 is not in study"):
        study.vote(99, "ann1", "left")


def test_replies_not_collected_are_listed(study: Study) -> None:
    study.add_replies("gpt4", {}, {"c9#0": "POST …/chat/completions: HTTP 500 after 4 attempts"})
    report = build_report(study, CONFIG)
    assert report["failures"] == [
        {"model": "gpt4", "prompt": "c9#0", "error": "POST …/chat/completions: HTTP 500 after 4 attempts"}
    ]
    assert "- gpt4 on c9#0: POST …/chat/completions: HTTP 500 after 4 attempts" in markdown(report)


def test_judge_verdicts_are_reported_apart(study: Study) -> None:
    study.save_judge_verdict(1, "judge-x", "left", "right", "left", None)  # consistent: ours wins
    study.save_judge_verdict(2, "judge-x", "left", "left", "tie", None)  # inconsistent: a tie
    study.save_judge_verdict(3, "judge-x", None, None, None, "HTTP 500")
    report = build_report(study, CONFIG)
    judged = report["judges"]["judge-x"]
    assert judged["votes"] == 2 and judged["consistent"] == 1
    assert judged["failed"] == [{"item": 3, "error": "HTTP 500"}]
    assert (judged["pairs"][0]["wins"], judged["pairs"][0]["ties"], judged["pairs"][0]["losses"]) == (1, 1, 0)
    assert judged["position_bias"]["decisive"] == 4 and judged["position_bias"]["left"] == 3
    assert report["human"]["votes"] == 10  # untouched by the judge
    assert "## Judge judge-x (not human votes)" in markdown(report)
