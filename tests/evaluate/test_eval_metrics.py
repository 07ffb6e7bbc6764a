"""Metric functions on cases worked out by hand from the official definitions, and against the
reference tools (sacrebleu's command line, rouge_chinese on jieba tokens)."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from almr.evaluate import metrics
from almr.evaluate.codeexec import passes


# --------------------------------------------------------------------------- CMRC 2018 / DRCD
# Each expected value below is worked out from cmrc2018_evaluate.py: segment (CJK chars one
# token each, other runs as Treebank words, listed punctuation removed), F1 of the longest
# common substring, max over references; EM after removing punctuation.
@pytest.mark.parametrize(
    ("prediction", "answers", "em", "f1"),
    [
        ("1963年", ["1963年"], 1.0, 1.0),
        # pred [在, 1963, 年] vs ref [1963, 年]: LCS 2, P 2/3, R 1 -> 0.8
        ("在1963年", ["1963年"], 0.0, 0.8),
        # ref1 [宁,平,省]: LCS 3, P 3/6, R 1 -> 2/3; ref2 (8 chars): LCS 3, P 1/2, R 3/8 -> 3/7; max 2/3
        ("宁平省的家庭", ["宁平省", "宁平省天主教家庭"], 0.0, 2 / 3),
        # lower-cased, the full stop removed: [iphone, 11] both
        ("iPhone 11。", ["iPhone 11"], 1.0, 1.0),
        # [apple, iphone] vs [iphone, 11]: LCS 1, P 1/2, R 1/2 -> 0.5
        ("Apple iPhone", ["iPhone 11"], 0.0, 0.5),
        ("《红楼梦》", ["红楼梦"], 1.0, 1.0),
        ("", ["司机"], 0.0, 0.0),
        # common run must be contiguous: [司,机] vs [机,司]: LCS 1 -> P 1/2 R 1/2
        ("机司", ["司机"], 0.0, 0.5),
    ],
)
def test_cmrc_em_f1_hand_worked(prediction: str, answers: list[str], em: float, f1: float) -> None:
    assert metrics.cmrc_em(prediction, answers) == em
    assert metrics.cmrc_f1(prediction, answers) == pytest.approx(f1)


def test_mixed_segmentation_keeps_english_words_and_numbers_whole() -> None:
    assert metrics.mixed_segmentation("Apple公司在2019年推出iPhone 11，售价699美元。") == [
        "apple", "公", "司", "在", "2019", "年", "推", "出", "iphone", "11", "售", "价", "699", "美", "元",
    ]  # fmt: skip


# --------------------------------------------------------------------------- ROUGE on jieba tokens


def test_rouge_hand_worked() -> None:
    # jieba keeps "a", "b", "c" as tokens; ROUGE-1: 2 of 3 unigrams -> F 2/3; ROUGE-2: 1 of 2 bigrams -> 1/2;
    # ROUGE-L: LCS 2 -> 2/3
    got = metrics.rouge_jieba("a b c", "a b d")
    assert got == pytest.approx({"rouge1": 200 / 3, "rouge2": 50.0, "rougeL": 200 / 3}, abs=1e-4)
    same = metrics.rouge_jieba("林志颖公司疑涉虚假营销", "林志颖公司疑涉虚假营销")
    assert same["rougeL"] == pytest.approx(100, abs=1e-4)


def test_rouge_equals_rouge_chinese_on_jieba_tokens() -> None:
    import jieba
    from rouge_chinese import Rouge

    preds = ["林志颖公司涉嫌虚假营销", "全国消费价格上涨百分之二", "今天天气很好"]
    refs = ["林志颖公司疑涉虚假营销", "全国居民消费价格上涨2%", "国家统计局发布数据"]
    ours = [metrics.rouge_jieba(p, r) for p, r in zip(preds, refs, strict=True)]
    ref = Rouge().get_scores([" ".join(jieba.cut(p)) for p in preds], [" ".join(jieba.cut(r)) for r in refs], avg=True)
    for key, name in (("rouge1", "rouge-1"), ("rouge2", "rouge-2"), ("rougeL", "rouge-l")):
        assert sum(o[key] for o in ours) / len(ours) == pytest.approx(100 * ref[name]["f"], abs=1e-6)


# --------------------------------------------------------------------------- BLEU = the sacrebleu CLI


def _sacrebleu_cli(tmp_path: Path, hyps: list[str], refs: list[str], tokenize: str) -> float:
    (tmp_path / "hyp.txt").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    (tmp_path / "ref.txt").write_text("\n".join(refs) + "\n", encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "sacrebleu", str(tmp_path / "ref.txt"), "-i", str(tmp_path / "hyp.txt"),
         "-tok", tokenize, "-b", "-w", "6"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(out.stdout.strip())


def test_bleu_equals_sacrebleu_cli(tmp_path: Path) -> None:
    zh_hyp = ["今天天气很好。", "我喜欢看书。", "他在学校学习阿拉伯语。"]
    zh_ref = ["今天天气很好。", "我喜欢读书。", "埃及的孩子在学校学习阿拉伯语。"]
    en_hyp = ["The weather is good today.", "I like reading books.", "Children learn Arabic at school."]
    en_ref = ["The weather is nice today.", "I like reading books.", "Children in Egypt learn Arabic at school."]
    zh = metrics.corpus_bleu(zh_hyp, zh_ref, "zh")
    en = metrics.corpus_bleu(en_hyp, en_ref, "en")
    assert zh == pytest.approx(_sacrebleu_cli(tmp_path, zh_hyp, zh_ref, "zh"), abs=1e-4)
    assert en == pytest.approx(_sacrebleu_cli(tmp_path, en_hyp, en_ref, "13a"), abs=1e-4)
    assert 0 < zh < 100 and 0 < en < 100
    # the tokenizer matters for Chinese: 13a sees each sentence as one word
    assert metrics.corpus_bleu(zh_hyp, zh_ref, "en") != pytest.approx(zh)


# --------------------------------------------------------------------------- GSM8K, SECEU, %Chinese


@pytest.mark.parametrize(
    ("text", "number"),
    [("11 × 8 = 88\n#### 88", "88"), ("so the answer is 1,234.", "1234"), ("#### -3.50", "-3.5"),
     ("12 apples, then 7\n#### 19 apples", "19"), ("no number", None), ("5.0 in all", "5")],
)  # fmt: skip
def test_final_number(text: str, number: str | None) -> None:
    assert metrics.final_number(text) == number


def test_gsm8k_exact() -> None:
    assert metrics.gsm8k_exact(" 27 + 22 = 49\n#### 49", "27 + 22 = 49\n#### 49") == 1.0
    assert metrics.gsm8k_exact(" 27 + 22 = 48", "27 + 22 = 49\n#### 49") == 0.0


def test_seceu_and_eq_hand_worked() -> None:
    assert metrics.seceu_distance([5, 0, 4, 1], [5, 0, 4, 1]) == 0.0
    # uniform 2.5 each vs [5, 0, 4, 1]: sqrt(6.25 + 6.25 + 2.25 + 2.25) = sqrt(17)
    assert metrics.seceu_distance([2.5] * 4, [5, 0, 4, 1]) == pytest.approx(math.sqrt(17))
    # 15 * (2.79 - 2.0) / 0.822 + 100
    assert metrics.eq_score(2.0, 2.79, 0.822) == pytest.approx(114.4160583941606)
    assert metrics.eq_score(2.79, 2.79, 0.822) == 100.0


def test_chinese_share_is_a_ratio_of_sums() -> None:
    # 我喜欢 (3 han) + Python (6 letters) + 3 (1 digit); 好 (1 han): 4 / 11, not the mean of 3/10 and 1
    assert metrics.chinese_share(["我喜欢Python3！", "好"]) == pytest.approx(4 / 11)


# --------------------------------------------------------------------------- sandboxed execution


def test_code_execution_pass_fail_timeout() -> None:
    assert passes("def f(x):\n    return x + 1\nassert f(1) == 2\n")
    assert not passes("assert 1 + 1 == 3\n")
    assert not passes("while True:\n    pass\n", time_limit_s=1.0)
    assert not passes("x = bytearray(4 << 30)\n")  # over the 1 GiB address-space limit
