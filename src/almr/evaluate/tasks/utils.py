"""`!function` hooks of almr's lm-eval tasks: loading local files, prompts, and metrics.

Every prompt of a world task is built from `almr.prompts`, the layouts the world's corpora use,
so that a model pretrained on the world is scored in the layout it learned. The paper's
tasks over public data reuse the same layouts (they are ordinary cloze/QA layouts).
Metric functions live in `almr.evaluate.metrics`; this module only adapts them to lm-eval's
`process_results` (per item) and `aggregation` (per corpus) hooks.
"""

from collections.abc import Sequence
from typing import Any

from almr import prompts
from almr.chinese import ScriptCounts
from almr.evaluate import metrics
from almr.evaluate.benchmark_files import load_records
from almr.evaluate.codeexec import passes

Doc = dict[str, Any]


def load(almr_task: str, data_dir: str | None = None, data_files: dict[str, str] | None = None, **_: Any) -> Any:
    """`custom_dataset`: lm-eval calls it with the TaskManager's metadata (data_dir, data_files)
    and the task's dataset_kwargs (almr_task)."""
    import datasets  # heavy (pyarrow, pandas): only when lm-eval loads a task

    return {"test": datasets.Dataset.from_list(load_records(almr_task, data_dir, data_files))}


# --------------------------------------------------------------------------- multiple choice (log-likelihood)


def mmlu_text(doc: Doc) -> str:
    return prompts.QA["en"].format(question=doc["question"])


def ceval_text(doc: Doc) -> str:
    return prompts.QA["zh"].format(question=doc["question"])


def ceval_choices(doc: Doc) -> list[str]:
    return [doc[k] for k in "ABCD"]


def ceval_target(doc: Doc) -> int:
    return "ABCD".index(doc["answer"])


SENTIMENT_CHOICES = [prompts.SENTIMENT_LABELS["Positive"], prompts.SENTIMENT_LABELS["Negative"]]


def sentiment_text(doc: Doc) -> str:
    return prompts.SENTIMENT.format(sentence=doc["sentence"])


def sentiment_target(doc: Doc) -> int:
    return 0 if doc["label"] == "Positive" else 1


def cluewsc_text(doc: Doc) -> str:
    # After OpenCompass's FewCLUE_cluewsc_ppl: the question, then 是/否 scored as continuations.
    return f"{doc['text']}\n此处，代词“{doc['target']['span2_text']}”被用于指代“{doc['target']['span1_text']}”吗？"


def cluewsc_target(doc: Doc) -> int:
    return 0 if doc["label"] == "true" else 1


def taptap_text(doc: Doc) -> str:
    return f"{doc['text']}\n情绪："


def feeling_text(doc: Doc) -> str:
    return prompts.FEELING[doc["lang"]].format(scenario=doc["scenario"], subject=doc["subject"])


def feeling_choices(doc: Doc) -> list[str]:
    # The world's layout: " {emotion}" after "… felt" in English, "{emotion}" after "感到很" in Chinese.
    return [(" " if doc["lang"] == "en" else "") + e for e in doc["emotions"]]


def seceu_results(doc: Doc, results: Sequence[Any]) -> dict[str, Any]:
    """The model's answer is its probability over the options ×10 (they sum to 10, as a
    respondent's points do); SECEU is the distance of that answer to the norm."""
    lls = [r[0] if isinstance(r, tuple | list) else r for r in results]
    answer = [10.0 * p for p in metrics.softmax(lls)]
    distance = metrics.seceu_distance(answer, doc["norm"])
    return {"seceu": distance, "eq": (distance, doc["pop_mean"], doc["pop_sd"])}


def eq_aggregate(items: Sequence[tuple[float, float, float]]) -> float:
    distances = [d for d, _, _ in items]
    return metrics.eq_score(sum(distances) / len(distances), items[0][1], items[0][2])


# --------------------------------------------------------------------------- generation


def _first_line(text: str) -> str:
    return text.strip().split("\n")[0].strip()


def reading_text(doc: Doc) -> str:
    return prompts.READING.format(context=doc["context"], question=doc["question"])


def cmrc_results(doc: Doc, results: Sequence[str]) -> dict[str, float]:
    """CMRC 2018's official EM and F1 of the first line of the reply (CMRC 2018, DRCD, world_cmrc)."""
    prediction = _first_line(results[0])
    answers = doc["answers"]["text"]
    return {"em": metrics.cmrc_em(prediction, answers), "f1": metrics.cmrc_f1(prediction, answers)}


def summary_text(doc: Doc) -> str:
    return prompts.SUMMARY.format(text=doc["text"])


def summary_results(doc: Doc, results: Sequence[str]) -> dict[str, float]:
    return metrics.rouge_jieba(_first_line(results[0]), doc["summary"])


def math_text(doc: Doc) -> str:
    return prompts.MATH[doc["lang"]].format(question=doc["question"])


def math_results(doc: Doc, results: Sequence[str]) -> dict[str, float]:
    return {"exact_match": metrics.gsm8k_exact(results[0], doc["answer"])}


def zh_en_text(doc: Doc) -> str:
    return prompts.TRANSLATE["zh-en"].format(source=doc["translation"]["zh"])


def en_zh_text(doc: Doc) -> str:
    return prompts.TRANSLATE["en-zh"].format(source=doc["translation"]["en"])


def zh_en_results(doc: Doc, results: Sequence[str]) -> dict[str, tuple[str, str]]:
    return {"bleu": (_first_line(results[0]), doc["translation"]["en"])}


def en_zh_results(doc: Doc, results: Sequence[str]) -> dict[str, tuple[str, str]]:
    return {"bleu": (_first_line(results[0]), doc["translation"]["zh"])}


def bleu_en(items: Sequence[tuple[str, str]]) -> float:
    return metrics.corpus_bleu([h for h, _ in items], [r for _, r in items], "en")


def bleu_zh(items: Sequence[tuple[str, str]]) -> float:
    return metrics.corpus_bleu([h for h, _ in items], [r for _, r in items], "zh")


def zh_share_results(doc: Doc, results: Sequence[str]) -> dict[str, tuple[int, int]]:
    counts = ScriptCounts().add(results[0])
    return {"zh_share": (counts.han, counts.other)}


def zh_share_aggregate(items: Sequence[tuple[int, int]]) -> float:
    """A ratio of sums over all replies, as DESIGN.md defines %Chinese; a fraction in [0, 1]."""
    han = sum(h for h, _ in items)
    total = han + sum(o for _, o in items)
    return han / total if total else 0.0


def prompt_text(doc: Doc) -> str:
    return doc["prompt"]


def code_text(doc: Doc) -> str:
    return doc["prompt"]


def code_results(doc: Doc, results: Sequence[str]) -> dict[str, float]:
    """pass@1 of one greedy completion: the tests run in a sandboxed subprocess (`codeexec`)."""
    program = doc["prompt"] + results[0] + "\n\n" + doc["test"] + f"\n\ncheck({doc['entry_point']})\n"
    return {"pass@1": float(passes(program))}
