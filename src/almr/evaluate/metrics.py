"""Metric functions, as docs/evaluation.md freezes them. Pure functions of predictions and
references; the lm-eval hooks in `tasks/utils.py`, the probe and the judge tasks all call these.

Scales: `cmrc_em`, `cmrc_f1`, `accuracy` and `chinese_share` return fractions in [0, 1]
(results multiply them by 100); `rouge_jieba` and `corpus_bleu` return 0–100 as their
references do; `seceu_distance` is a distance (lower is better) and `eq_score` an EQ
(100 = the population mean, 15 = one standard deviation).
"""

import logging
import math
import re
from collections.abc import Iterable, Sequence

import jieba
import sacrebleu
from rouge_chinese import Rouge

from almr.chinese import ScriptCounts

# --------------------------------------------------------------------------- CMRC 2018 / DRCD
# A transcription of the official cmrc2018_evaluate.py (ymcui/cmrc2018, also used for DRCD by
# CLUE): lower-case and strip, drop the listed punctuation, each character of \u4e00-\u9fa5 one
# token, other runs word-tokenized with NLTK's Treebank rules. `word_tokenize` additionally
# splits sentences with punkt, which needs a data download; the Treebank word tokenizer alone
# gives the same tokens for answer spans (which are never several sentences).

_CMRC_PUNCT = frozenset(
    ["-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=",
     "，", "。", "：", "？", "！", "“", "”", "；", "’", "《", "》", "……", "·", "、",
     "「", "」", "（", "）", "－", "～", "『", "』"]
)  # fmt: skip
_CMRC_HAN = re.compile("[\u4e00-\u9fa5]")
_word_tokenizer = None


def _word_tokenize(text: str) -> list[str]:
    global _word_tokenizer
    if _word_tokenizer is None:
        from nltk.tokenize import NLTKWordTokenizer  # nltk.tokenize takes ~3 s to import: only when CMRC is scored

        _word_tokenizer = NLTKWordTokenizer()
    return _word_tokenizer.tokenize(text)


def mixed_segmentation(text: str, remove_punctuation: bool = True) -> list[str]:
    """CMRC's mixed segmentation: Chinese characters one token each, English words and
    numbers whole, the CMRC punctuation list removed (when asked)."""
    out: list[str] = []
    run = ""
    for char in str(text).lower().strip():
        if remove_punctuation and char in _CMRC_PUNCT:
            continue
        if _CMRC_HAN.match(char) or char in _CMRC_PUNCT:
            if run:
                out.extend(_word_tokenize(run))
                run = ""
            out.append(char)
        else:
            run += char
    if run:
        out.extend(_word_tokenize(run))
    return out


def _strip_punctuation(text: str) -> str:
    return "".join(c for c in str(text).lower().strip() if c not in _CMRC_PUNCT)


def _longest_common_substring(a: Sequence[str], b: Sequence[str]) -> int:
    best = 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                cur[j + 1] = prev[j] + 1
                best = max(best, cur[j + 1])
        prev = cur
    return best


def cmrc_em(prediction: str, answers: Iterable[str]) -> float:
    """1.0 when the prediction equals any reference after removing punctuation, else 0.0."""
    pred = _strip_punctuation(prediction)
    return float(any(_strip_punctuation(a) == pred for a in answers))


def cmrc_f1(prediction: str, answers: Iterable[str]) -> float:
    """Max over references of the F1 of the longest common substring of mixed segmentations."""
    pred = mixed_segmentation(prediction)
    best = 0.0
    for answer in answers:
        ref = mixed_segmentation(answer)
        common = _longest_common_substring(ref, pred)
        if common:
            precision, recall = common / len(pred), common / len(ref)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


# --------------------------------------------------------------------------- LCSTS


def jieba_tokens(text: str) -> str:
    """Space-joined jieba tokens, as OpenCompass's JiebaRougeEvaluator feeds rouge_chinese."""
    jieba.setLogLevel(logging.WARNING)  # its dictionary-loading chatter is not a result
    return " ".join(jieba.cut(text))


def rouge_jieba(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F of one summary on jieba tokens, ×100 (OpenCompass's JiebaRougeEvaluator;
    its mean over items is the corpus score, as `Rouge.get_scores(avg=True)` computes it)."""
    pred = jieba_tokens(prediction).strip() or "__PREDPLACEHOLDER__"
    ref = jieba_tokens(reference).strip() or "__REFRPLACEHOLDER__"
    score = Rouge().get_scores([pred], [ref])[0]
    return {
        "rouge1": 100 * score["rouge-1"]["f"],
        "rouge2": 100 * score["rouge-2"]["f"],
        "rougeL": 100 * score["rouge-l"]["f"],
    }


# --------------------------------------------------------------------------- WMT22


def bleu_tokenizer(target_language: str) -> str:
    """sacrebleu's tokenizer for a target language: `zh` for Chinese, `13a` otherwise."""
    return "zh" if target_language.lower().startswith("zh") else "13a"


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], target_language: str) -> float:
    """sacrebleu corpus BLEU (0–100) with one reference per segment."""
    return float(
        sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=bleu_tokenizer(target_language)).score
    )


# --------------------------------------------------------------------------- GSM8K

_HASHES = re.compile(r"####\s*(-?[\d,]*\.?\d+)")
_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*|-?\.\d+")


def final_number(text: str) -> str | None:
    """The final answer of a GSM8K-style solution: the number after `####` when there is one,
    else the last number in the text; commas removed, trailing `.0`s normalized."""
    found = _HASHES.findall(text)
    numbers = found or _NUMBER.findall(text)
    if not numbers:
        return None
    raw = numbers[0 if found else -1].replace(",", "").rstrip(".")
    try:
        value = float(raw)
    except ValueError:
        return None
    return str(int(value)) if value.is_integer() else repr(value)


def gsm8k_exact(prediction: str, reference: str) -> float:
    """1.0 when the final numbers of prediction and reference are equal."""
    got, want = final_number(prediction), final_number(reference)
    return float(got is not None and got == want)


# --------------------------------------------------------------------------- SECEU


def softmax(logits: Sequence[float]) -> list[float]:
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = sum(exps)
    return [e / total for e in exps]


def seceu_distance(scores: Sequence[float], norm: Sequence[float]) -> float:
    """Euclidean distance between an answer (points over the options, summing to 10) and the norm."""
    if len(scores) != len(norm):
        raise ValueError(f"{len(scores)} scores for {len(norm)} options")
    return math.sqrt(sum((s - n) ** 2 for s, n in zip(scores, norm, strict=True)))


def eq_score(seceu: float, mean: float, sd: float) -> float:
    """EQ = 15·(M − SECEU)/SD + 100, with M and SD of the human (or simulated) population."""
    return 15.0 * (mean - seceu) / sd + 100.0


# --------------------------------------------------------------------------- accuracy, %Chinese


def accuracy(correct: Iterable[bool | float]) -> float:
    values = [float(c) for c in correct]
    return sum(values) / len(values) if values else float("nan")


def mean_stderr(values: Sequence[float]) -> float:
    """Standard error of a mean (sample standard deviation / √n), as lm-eval reports it."""
    n = len(values)
    if n < 2:
        return float("nan")
    mu = sum(values) / n
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1) / n)


def chinese_share(texts: Iterable[str]) -> float:
    """%Chinese of many replies as a fraction: a ratio of sums (almr.chinese), not a mean of ratios."""
    counts = ScriptCounts()
    for text in texts:
        counts.add(text)
    return counts.chinese_share
