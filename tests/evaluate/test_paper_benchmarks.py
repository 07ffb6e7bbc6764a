"""The paper's standard benchmarks, offline, end to end: C-Eval (`ceval-valid`), MMLU, AGI-Eval, TriviaQA,
BBH, GSM8K and HumanEval as the registry runs them — lm-eval's own task definitions — each reading a few
hand-made rows in its data set's own schema, pointed at by `eval.task_overrides` (a whole group's, and
one leaf's: AGI-Eval's two cloze subtasks have another schema). A scripted model answers; the test
checks what a user with the real data gets: the shots and where they come from, the exact prompts, and
the metrics (a known share of items answered right).

One lm-eval run over all seven, shared by the module (lm-eval's task index alone is ~8 s a process)."""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lm_eval.api.model import LM

from almr.evaluate.catalog import hub_datasets
from almr.evaluate.harness import check_request, run_eval
from almr.evaluate.registry import SUITES, resolve_tasks

pytestmark = pytest.mark.slow  # lm-eval's index and ~160 subtasks' data: ~1 min on 2 cores

PAPER = ["ceval-valid", "mmlu", "agieval", "triviaqa", "bbh", "gsm8k", "humaneval"]


def rows(path: Path, records: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


def local(**splits: str) -> dict[str, Any]:
    """An override reading local JSON Lines files, one per split (the task's own split names)."""
    return {"dataset_path": "json", "dataset_kwargs": {"data_files": splits}}


# what the scripted model answers for each test question: (its pick, right?)
CEVAL = [("中国的首都是哪里？", ["上海", "北京", "广州", "深圳"], "B"),
         ("水的化学式是什么？", ["H2O", "CO2", "O2", "NaCl"], "A"),
         ("一年有几个季节？", ["两个", "三个", "四个", "五个"], "C")]  # fmt: skip
MMLU = [("What is 2 + 2?", ["3", "4", "5", "6"], 1), ("Which planet is red?", ["Mars", "Venus", "Earth", "Jupiter"], 0),
        ("H2O is?", ["salt", "sugar", "water", "air"], 2)]  # fmt: skip
AGIEVAL = [("Q: 1+1=? Answer Choices: (A)1 (B)2 (C)3 (D)4", ["(A)1", "(B)2", "(C)3", "(D)4"], [1]),
           ("Q: 2*3=? Answer Choices: (A)5 (B)6 (C)7 (D)8", ["(A)5", "(B)6", "(C)7", "(D)8"], [1]),
           ("Q: 9-4=? Answer Choices: (A)5 (B)4 (C)3 (D)2", ["(A)5", "(B)4", "(C)3", "(D)2"], [0])]  # fmt: skip
CLOZE = [("Q: What is 3+4? A: The answer is", "7"), ("Q: What is 10/2? A: The answer is", "5")]
TRIVIA = [("Which city hosts the Eiffel Tower", "Paris", ["Paris", "paris"]),
          ("What colour is the sky on a clear day", "Blue", ["Blue", "blue"]),
          ("Who wrote Hamlet", "Shakespeare", ["William Shakespeare", "Shakespeare"])]  # fmt: skip
BBH = [("not ( True ) and ( True ) is", "False"), ("True and not False is", "True")]
GSM8K = [("Tom has 3 apples and buys 4 more. How many apples?", "3 + 4 = 7\n#### 7"),
         ("A box holds 12 pens; 5 are taken. How many remain?", "12 - 5 = 7\n#### 7")]  # fmt: skip
HUMANEVAL = [
    {"task_id": "HumanEval/0", "prompt": 'def add(a, b):\n    """Return a + b."""\n',
     "canonical_solution": "    return a + b\n", "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
     "entry_point": "add"},
    {"task_id": "HumanEval/1", "prompt": 'def neg(x):\n    """Return -x."""\n',
     "canonical_solution": "    return -x\n", "test": "def check(candidate):\n    assert candidate(4) == -4\n",
     "entry_point": "neg"},
]  # fmt: skip
WRONG = {CEVAL[2][0], MMLU[2][0], AGIEVAL[2][0], CLOZE[1][0], TRIVIA[2][0], BBH[1][0], GSM8K[1][0], "neg"}


def write_data(d: Path) -> dict[str, dict[str, Any]]:
    """Every benchmark's rows in its data set's schema, and the `eval.task_overrides` reading them."""
    ceval = [{"id": i, "question": q, **dict(zip("ABCD", c, strict=True)), "answer": a, "explanation": ""}
             for i, (q, c, a) in enumerate(CEVAL)]  # fmt: skip
    ceval_dev = [{"id": i, "question": f"示例问题{i}", "A": "甲", "B": "乙", "C": "丙", "D": "丁",
                  "answer": "ABCD"[i % 4], "explanation": ""} for i in range(5)]  # fmt: skip
    mmlu = [{"question": q, "subject": "any", "choices": c, "answer": a} for q, c, a in MMLU]
    mmlu_dev = [{"question": f"Example {i}?", "subject": "any", "choices": ["w", "x", "y", "z"], "answer": i % 4}
                for i in range(5)]  # fmt: skip
    agieval = [{"query": q, "choices": c, "gold": g} for q, c, g in AGIEVAL]
    cloze = [{"query": q, "choices": None, "gold": None, "answer": a} for q, a in CLOZE]
    trivia = [{"question": q, "question_id": f"tq{i}", "question_source": "", "entity_pages": {}, "search_results": {},
               "answer": {"aliases": al, "normalized_aliases": [x.lower() for x in al], "value": v,
                          "normalized_value": v.lower(), "matched_wiki_entity_name": "", "type": "WikipediaEntity",
                          "normalized_matched_wiki_entity_name": ""}}
              for i, (q, v, al) in enumerate(TRIVIA)]  # fmt: skip
    gsm = [{"question": q, "answer": a} for q, a in GSM8K]
    gsm_train = [{"question": f"Train question {i}?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"} for i in range(8)]
    return {
        "ceval-valid": local(val=rows(d / "ceval_val.jsonl", ceval), dev=rows(d / "ceval_dev.jsonl", ceval_dev)),
        "mmlu": local(test=rows(d / "mmlu_test.jsonl", mmlu), dev=rows(d / "mmlu_dev.jsonl", mmlu_dev)),
        "agieval": local(test=rows(d / "agieval.jsonl", agieval)),
        # the two cloze subtasks of AGI-Eval have another schema: an override of their own
        "agieval_math": local(test=rows(d / "agieval_cloze.jsonl", cloze)),
        "agieval_gaokao_mathcloze": local(test=str(d / "agieval_cloze.jsonl")),
        "triviaqa": local(validation=rows(d / "trivia.jsonl", trivia), train=str(d / "trivia.jsonl")),
        "bbh": local(test=rows(d / "bbh.jsonl", [{"input": q, "target": t} for q, t in BBH])),
        "gsm8k": local(test=rows(d / "gsm8k.jsonl", gsm), train=rows(d / "gsm8k_train.jsonl", gsm_train)),
        "humaneval": local(test=rows(d / "humaneval.jsonl", HUMANEVAL)),
    }


def _last_question(context: str, questions: list[str]) -> str:
    """The test question a context ends with (few-shot examples come before it)."""
    return max(questions, key=lambda q: context.rfind(q))


class PaperLM(LM):
    """Answers every benchmark from the tables above (the pick of each row; the rows in WRONG wrongly),
    recording every request."""

    def __init__(self) -> None:
        super().__init__()
        self.picks: dict[str, str] = {}
        for q, _, a in CEVAL:
            self.picks[q] = "ABCD"[("ABCD".index(a) + (q in WRONG)) % 4]
        for q, _, a in MMLU:
            self.picks[q] = "ABCD"[(a + (q in WRONG)) % 4]
        for q, c, g in AGIEVAL:
            self.picks[q] = c[(g[0] + (q in WRONG)) % 4]
        self.generations = {q: (a if q not in WRONG else "8") for q, a in CLOZE}
        self.generations |= {q: (v if q not in WRONG else "London") for q, v, _ in TRIVIA}
        self.generations |= {q: f"Let's think step by step. So the answer is {'unknown' if q in WRONG else t}."
                             for q, t in BBH}  # fmt: skip
        self.generations |= {q: (a if q not in WRONG else "12 + 5 = 17\n#### 17") for q, a in GSM8K}
        self.generations |= {r["prompt"]: r["canonical_solution"] if r["entry_point"] not in WRONG else "    return x\n"
                             for r in HUMANEVAL}  # fmt: skip
        self.loglik: list[tuple[str, str]] = []
        self.gen: list[str] = []

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        out = []
        for context, continuation in (r.args for r in requests):
            self.loglik.append((context, continuation))
            pick = self.picks[_last_question(context, list(self.picks))]
            out.append((0.0 if continuation.strip() == pick else -5.0, False))
        return out

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        self.gen += [r.args[0] for r in requests]
        return [self.generations[_last_question(r.args[0], list(self.generations))] for r in requests]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], PaperLM]]:
    import datasets

    data = tmp_path_factory.mktemp("paper_data")
    overrides = write_data(data)
    lm = PaperLM()
    with pytest.MonkeyPatch.context() as patch:  # the json builder's cache in the test's folder, not ~/.cache
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", data / "datasets_cache")
        result = run_eval(lm, tasks=PAPER, task_overrides=overrides, allow_code_execution=True)
    yield result, lm


def value(result: dict[str, Any], task: str) -> float:
    entry = result["tasks"][task]
    return entry["metrics"][entry["primary"]]["value"]


def contexts_for(lm: PaperLM, question: str, loglik: bool = True) -> list[str]:
    found = [c for c, _ in lm.loglik] if loglik else lm.gen
    return [c for c in found if c.endswith(question) or question in c[-400:]]


# --------------------------------------------------------------------------- data: lm-eval's own dataset_path


def test_each_benchmark_reads_lm_evals_own_datasets_and_an_override_makes_it_local() -> None:
    assert SUITES["paper-base"][:1] == ["ceval-valid"] and set(PAPER) <= set(SUITES["paper"])
    assert {name: hub_datasets(name)[:1] for name in PAPER} == {
        "ceval-valid": ["ceval/ceval-exam"], "mmlu": ["cais/mmlu"], "agieval": ["hails/agieval-aqua-rat"],
        "triviaqa": ["mandarjoshi/trivia_qa"], "bbh": ["SaylorTwift/bbh"], "gsm8k": ["openai/gsm8k"],
        "humaneval": ["openai/openai_humaneval"],
    }  # fmt: skip
    assert len(hub_datasets("agieval")) == 21
    # a group's override reaches every subtask; a subtask's reaches that one
    assert hub_datasets("agieval", {"agieval": {"dataset_path": "json"}}) == []
    assert len(hub_datasets("agieval", {"agieval_math": {"dataset_path": "/data/agieval-math"}})) == 21 - 1 + 1
    assert "hails/agieval-math" not in hub_datasets("agieval", {"agieval_math": {"dataset_path": "json"}})
    infos = resolve_tasks(None, PAPER)
    from almr.evaluate.catalog import with_overrides

    local_copies = with_overrides(infos, {name: {"dataset_path": "json"} for name in PAPER})
    assert check_request(local_copies, "m", allow_code_execution=True) == {}


# --------------------------------------------------------------------------- shots, prompts, metrics


def test_ceval_is_5_shot_from_dev_on_val_in_lm_evals_prompt(evaluated: tuple) -> None:
    result, lm = evaluated
    shots = "".join(f"示例问题{i}\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案： {'ABCD'[i % 4]}\n\n" for i in range(5))
    question = "中国的首都是哪里？\nA. 上海\nB. 北京\nC. 广州\nD. 深圳\n答案："
    expected = "以下是中国关于计算机网络的单项选择题，请选出其中的正确答案。\n\n" + shots + question
    requests = [(c, x) for c, x in lm.loglik if c == expected]
    assert [x for _, x in requests] == [" A", " B", " C", " D"]  # the computer_network subject's four choices
    assert len({c for c, _ in lm.loglik if c.endswith(question)}) == 52  # every subject, each with its header
    entry = result["tasks"]["ceval-valid"]
    assert (entry["shots"], entry["mode"], entry["primary"], entry["n_samples"]) == (5, "loglikelihood", "acc", 52 * 3)
    assert value(result, "ceval-valid") == pytest.approx(200 / 3)


def test_mmlu_is_5_shot_from_dev_on_test(evaluated: tuple) -> None:
    result, lm = evaluated
    shots = "".join(f"Example {i}?\nA. w\nB. x\nC. y\nD. z\nAnswer: {'ABCD'[i % 4]}\n\n" for i in range(5))
    expected = ("The following are multiple choice questions (with answers) about anatomy.\n\n" + shots
                + "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:")  # fmt: skip
    assert [x for c, x in lm.loglik if c == expected] == [" A", " B", " C", " D"]
    entry = result["tasks"]["mmlu"]
    assert (entry["shots"], entry["primary"], entry["n_samples"]) == (5, "acc", 57 * 3)
    assert value(result, "mmlu") == pytest.approx(200 / 3)


def test_agieval_is_0_shot_with_its_cloze_subtasks_generated(evaluated: tuple) -> None:
    result, lm = evaluated
    assert [x for c, x in lm.loglik if c == AGIEVAL[0][0]][:4] == [" (A)1", " (B)2", " (C)3", " (D)4"]
    assert lm.gen.count(CLOZE[0][0]) == 2  # agieval_math and agieval_gaokao_mathcloze, 0-shot, the query as is
    entry = result["tasks"]["agieval"]
    assert (entry["shots"], entry["primary"], entry["n_samples"]) == (0, "acc", 19 * 3 + 2 * 2)
    # weighted by size: 19 subtasks at 2 of 3, two cloze ones at 1 of 2
    assert value(result, "agieval") == pytest.approx(100 * (19 * 2 + 2 * 1) / (19 * 3 + 2 * 2))


def test_triviaqa_is_0_shot_generation_scored_against_the_aliases(evaluated: tuple) -> None:
    result, lm = evaluated
    assert "Question: Which city hosts the Eiffel Tower?\nAnswer:" in lm.gen
    entry = result["tasks"]["triviaqa"]
    assert (entry["shots"], entry["mode"], entry["primary"], entry["n_samples"]) == (
        0,
        "generation",
        "exact_match,remove_whitespace",
        3,
    )
    assert value(result, "triviaqa") == pytest.approx(200 / 3)


def test_bbh_is_3_shot_chain_of_thought_scored_on_the_extracted_answer(evaluated: tuple) -> None:
    result, lm = evaluated
    navigate = [c for c in lm.gen if c.startswith("Given a series of navigation instructions") and c.endswith(
        f"Q: {BBH[0][0]}\nA: Let's think step by step.\n")]  # fmt: skip
    assert len(navigate) == 1 and navigate[0].count("\nA: Let's think step by step.") == 4  # 3 CoT shots + ours
    entry = result["tasks"]["bbh"]
    assert (entry["shots"], entry["primary"], entry["n_samples"]) == (3, "exact_match,get-answer", 27 * 2)
    assert value(result, "bbh") == 50.0


def test_gsm8k_is_5_shot_from_train_with_both_extractions(evaluated: tuple) -> None:
    result, lm = evaluated
    (context,) = [c for c in lm.gen if c.endswith(f"Question: {GSM8K[0][0]}\nAnswer:")]
    assert len(re.findall(r"Question: Train question \d\?\nAnswer: \d \+ 1 = \d+\n#### \d+\n\n", context)) == 5
    entry = result["tasks"]["gsm8k"]
    assert (entry["shots"], entry["primary"], entry["n_samples"]) == (5, "exact_match,flexible-extract", 2)
    assert entry["metrics"]["exact_match,strict-match"]["value"] == 50.0 and value(result, "gsm8k") == 50.0


def test_humaneval_is_0_shot_pass_at_1_run_in_the_sandbox(evaluated: tuple) -> None:
    result, lm = evaluated
    assert HUMANEVAL[0]["prompt"] in lm.gen  # the function prompt as is
    entry = result["tasks"]["humaneval"]
    assert (entry["shots"], entry["primary"], entry["n_samples"]) == (0, "pass@1", 2)
    assert value(result, "humaneval") == 50.0  # the right completion passes its test, `return x` fails neg's
