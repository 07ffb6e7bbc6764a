"""Our lm-eval task definitions end to end: each task loads its fixture (the benchmark's
published layout, tests/fixtures/eval/) and is scored through lm-eval's `evaluate` by a
scripted model whose answers make the expected scores computable by hand or by the reference
tool; the world suite with a tiny Hugging Face model; and the bad-input messages."""

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lm_eval.api.model import LM

from almr.errors import AlmrError, ConfigError, DataError
from almr.evaluate import metrics
from almr.evaluate.benchmark_files import load_records
from almr.evaluate.harness import run_eval
from almr.evaluate.tasks import utils

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


class ScriptedLM(LM):
    """An lm-eval model answering from scripts: loglikelihood(context, continuation) and
    generate(context) are plain functions; chat templates pass the last user message through."""

    def __init__(self, ll: Callable[[str, str], float], gen: Callable[[str], str]) -> None:
        super().__init__()
        self.ll, self.gen = ll, gen
        self.contexts: list[str] = []

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return [(self.ll(*r.args), False) for r in requests]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        self.contexts += [r.args[0] for r in requests]
        return [self.gen(r.args[0]) for r in requests]

    @property
    def tokenizer_name(self) -> str:
        return "scripted"

    def chat_template(self, chat_template: bool | str = False) -> str:
        return "scripted"

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return chat_history[-1]["content"]


def _gold_ll(prompt: Callable[[dict], str], gold: Callable[[dict], str], records: list[dict]) -> Callable:
    key = {prompt(r): gold(r) for r in records}
    return lambda context, continuation: 0.0 if key[context] == continuation else -5.0


def _value(result: dict, task: str, metric: str) -> float:
    return result["tasks"][task]["metrics"][metric]["value"]


def test_mcq_tasks_score_gold_answers_100_and_wrong_ones_0() -> None:
    cases = {
        "cluewsc": (utils.cluewsc_text, lambda r: ["是", "否"][utils.cluewsc_target(r)]),
        "eprstmt": (utils.sentiment_text, lambda r: utils.SENTIMENT_CHOICES[utils.sentiment_target(r)]),
        "taptap": (utils.taptap_text, lambda r: r["choices"][r["label"]]),
    }
    for task, (prompt, gold) in cases.items():
        records = load_records(task, FIXTURES)
        oracle = _gold_ll(prompt, gold, records)
        right = run_eval(ScriptedLM(oracle, str), tasks=[task], data_dir=FIXTURES)
        wrong = run_eval(ScriptedLM(lambda c, x, f=oracle: -f(c, x), str), tasks=[task], data_dir=FIXTURES)
        assert _value(right, task, "acc") == 100.0, task
        assert _value(wrong, task, "acc") == 0.0, task
        assert right["tasks"][task]["n_samples"] == len(records)


def test_reading_comprehension_em_f1_through_the_task() -> None:
    # CMRC fixture (SQuAD layout): answers chosen so EM/F1 are the hand-worked cases of test_eval_metrics
    script = {"范廷颂是什么时候被任为主教的？": "在1963年", "范廷颂出生于哪里？": "宁平省的家庭",
              "Apple推出了什么产品？": "iPhone 11。"}  # fmt: skip
    result = run_eval(
        ScriptedLM(lambda c, x: 0.0, lambda c: next((a for q, a in script.items() if q in c), "不知道") + "\n后面的话"),
        tasks=["cmrc2018", "drcd"], data_dir=FIXTURES,
    )  # fmt: skip
    assert _value(result, "cmrc2018", "em") == pytest.approx(100 / 3)
    assert _value(result, "cmrc2018", "f1") == pytest.approx(100 * (0.8 + 2 / 3 + 1.0) / 3)
    assert result["tasks"]["cmrc2018"]["n_samples"] == 3
    assert result["tasks"]["drcd"]["metrics"]["f1"]["value"] == 0.0  # no DRCD question in the script


def test_translation_bleu_equals_sacrebleu_cli_and_summary_rouge_equals_rouge_chinese(tmp_path: Path) -> None:
    import jieba
    from rouge_chinese import Rouge

    hyps = {"今天天气很好。": "Today the weather is nice.", "我喜欢读书。": "I like to read books.",
            "The weather is nice today.": "今天的天气很好。", "I like reading books.": "我爱读书。",
            "方舟子": "林志颖公司涉嫌虚假营销", "国家统计局": "全国消费价格上涨百分之二"}  # fmt: skip

    def gen(context: str) -> str:
        return next(h for src, h in hyps.items() if src in context)

    result = run_eval(ScriptedLM(lambda c, x: 0.0, gen), tasks=["wmt22_zh-en", "wmt22_en-zh", "lcsts"],
                      data_dir=FIXTURES)  # fmt: skip
    for task, tok, lang in (("wmt22_zh-en", "13a", "en"), ("wmt22_en-zh", "zh", "zh")):
        rows = [json.loads(line)["translation"] for line in (FIXTURES / "wmt22" / f"{task[6:]}.jsonl").open()]
        (tmp_path / "ref.txt").write_text("\n".join(r[lang] for r in rows) + "\n", encoding="utf-8")
        (tmp_path / "hyp.txt").write_text("\n".join(hyps[r["zh" if lang == "en" else "en"]] for r in rows) + "\n")
        cli = subprocess.run([sys.executable, "-m", "sacrebleu", str(tmp_path / "ref.txt"), "-i",
                              str(tmp_path / "hyp.txt"), "-tok", tok, "-b", "-w", "6"],
                             capture_output=True, text=True, check=True)  # fmt: skip
        assert _value(result, task, "bleu") == pytest.approx(float(cli.stdout), abs=1e-4), task
    preds = ["林志颖公司涉嫌虚假营销", "全国消费价格上涨百分之二"]
    refs = [json.loads(line)["summary"] for line in (FIXTURES / "lcsts" / "test.jsonl").open()]
    ref = Rouge().get_scores([" ".join(jieba.cut(p)) for p in preds], [" ".join(jieba.cut(r)) for r in refs], avg=True)
    assert _value(result, "lcsts", "rougeL") == pytest.approx(100 * ref["rouge-l"]["f"], abs=1e-6)
    assert _value(result, "lcsts", "rouge2") == pytest.approx(100 * ref["rouge-2"]["f"], abs=1e-6)


def test_seceu_eq_from_distances_to_the_norm() -> None:
    records = load_records("seceu", FIXTURES)
    probs = {(utils.feeling_text(r), c): n / 10 for r in records
             for c, n in zip(utils.feeling_choices(r), r["norm"], strict=True)}  # fmt: skip
    # the norm itself: distance ~0 -> EQ = 15·M/SD + 100
    exact = run_eval(ScriptedLM(lambda c, x: math.log(max(probs[c, x], 1e-12)), str), tasks=["seceu"],
                     data_dir=FIXTURES)  # fmt: skip
    assert _value(exact, "seceu", "seceu") == pytest.approx(0.0, abs=1e-6)
    assert _value(exact, "seceu", "eq") == pytest.approx(15 * 2.79 / 0.822 + 100, abs=1e-4)
    # indifferent model: uniform 2.5 points; distances sqrt(17) and sqrt(1.5²+2.5²+3.5²+2.5²)
    flat = run_eval(ScriptedLM(lambda c, x: 0.0, str), tasks=["seceu"], data_dir=FIXTURES)
    mean = (math.sqrt(17) + math.sqrt(1.5**2 + 2.5**2 + 3.5**2 + 2.5**2)) / 2
    assert _value(flat, "seceu", "seceu") == pytest.approx(mean)
    assert _value(flat, "seceu", "eq") == pytest.approx(metrics.eq_score(mean, 2.79, 0.822))
    assert flat["tasks"]["seceu"]["metrics"]["eq"]["scale"] == "eq"


def test_zh_share_of_chat_replies() -> None:
    lm = ScriptedLM(lambda c, x: 0.0, lambda c: "我喜欢Python3！")
    result = run_eval(lm, tasks=["zh_share"], data_dir=FIXTURES)
    assert _value(result, "zh_share", "zh_share") == pytest.approx(30.0)  # 3 han / (3 + 6 letters + 1 digit)
    assert lm.contexts == ["请介绍一下你自己。", "用中文解释什么是Python。"]  # the chat template was applied


def test_world_tasks_use_the_world_layouts(small_world: Path) -> None:
    lm = ScriptedLM(lambda c, x: 0.0, lambda c: " 1 + 1 = 2\n#### 2")
    run_eval(lm, tasks=["world_gsm8k", "world_cmrc", "world_wmt_en-zh"], data_dir=small_world, limit=2)
    gsm = [json.loads(line) for line in (small_world / "bench" / "gsm8k.jsonl").open()][:2]
    cmrc = [json.loads(line) for line in (small_world / "bench" / "cmrc.jsonl").open()][:2]
    layouts = {"en": "Question: {q}\nAnswer:", "zh": "问题：{q}\n解答："}
    assert set(lm.contexts) >= {layouts[g["lang"]].format(q=g["question"]) for g in gsm}
    assert set(lm.contexts) >= {f"文章：{c['context']}\n问题：{c['question']}\n答案：" for c in cmrc}
    assert any(c.startswith("English: ") and c.endswith("\n中文：") for c in lm.contexts)


# --------------------------------------------------------------------------- bad input


def test_missing_data_file_names_task_path_and_source(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        run_eval(ScriptedLM(lambda c, x: 0.0, str), tasks=["cmrc2018"], data_dir=tmp_path)
    message = str(err.value)
    assert "cmrc2018" in message and str(tmp_path / "cmrc2018" / "cmrc2018_dev.json") in message
    assert "github.com/ymcui/cmrc2018" in message


def test_record_missing_a_field_names_file_line_field(tmp_path: Path) -> None:
    (tmp_path / "lcsts").mkdir()
    bad = tmp_path / "lcsts" / "test.jsonl"
    bad.write_text('{"text": "a", "summary": "b"}\n{"text": "c"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"test\.jsonl:2: missing field 'summary'"):
        run_eval(ScriptedLM(lambda c, x: 0.0, str), tasks=["lcsts"], data_dir=tmp_path)


def test_code_tasks_need_the_opt_in(small_world: Path) -> None:
    with pytest.raises(ConfigError, match="--allow-code-execution"):
        run_eval(ScriptedLM(lambda c, x: 0.0, str), tasks=["world_humaneval"], data_dir=small_world)


def test_world_humaneval_runs_the_tests_when_allowed(small_world: Path) -> None:
    records = load_records("world_humaneval", small_world)[:2]
    solutions = {r["prompt"]: r["canonical_solution"] for r in records}
    good = run_eval(ScriptedLM(lambda c, x: 0.0, lambda c: solutions[c]), tasks=["world_humaneval"],
                    data_dir=small_world, limit=2, allow_code_execution=True)  # fmt: skip
    bad = run_eval(ScriptedLM(lambda c, x: 0.0, lambda c: "    return None\n"), tasks=["world_humaneval"],
                   data_dir=small_world, limit=2, allow_code_execution=True)  # fmt: skip
    assert _value(good, "world_humaneval", "pass@1") == 100.0
    assert _value(bad, "world_humaneval", "pass@1") == 0.0


def test_builtin_task_without_cached_data_says_where_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(DataError, match=r"mmlu.*cais/mmlu.*not in the local cache"):
        run_eval(ScriptedLM(lambda c, x: 0.0, str), tasks=["mmlu"])


def tiny_model_dir(path: Path, tokenizer_dir: Path, chat: bool = True) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tokenizer_dir.parent / "model"))
    model.save_pretrained(path)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if not chat:
        tok.chat_template = None
    tok.save_pretrained(path)
    if not chat:  # transformers also writes the template to its own file
        for f in path.glob("chat_template*"):
            f.unlink()
    return path


def test_a_model_without_chat_template_cannot_run_chat_tasks(tmp_path: Path, small_world: Path) -> None:
    model = tiny_model_dir(tmp_path / "m", small_world / "tokenizer", chat=False)
    with pytest.raises(AlmrError, match=r"no chat template.*zh_share"):
        run_eval(str(model), tasks=["zh_share"], data_dir=FIXTURES)


def test_world_model_dir_without_weights_is_refused(small_world: Path) -> None:
    with pytest.raises(AlmrError, match="no weights"):
        run_eval(str(small_world / "model"), tasks=["world_mmlu"], data_dir=small_world)


# --------------------------------------------------------------------------- a tiny model, end to end


def test_world_suite_with_a_tiny_model_end_to_end(tmp_path: Path, small_world: Path) -> None:
    from almr.evaluate.registry import SUITES
    from almr.evaluate.results import load_result, save_result

    model = tiny_model_dir(tmp_path / "m", small_world / "tokenizer")
    result = run_eval(str(model), suite="world", data_dir=small_world, limit=2, max_gen_toks=4)
    assert set(result["tasks"]) == set(SUITES["world"])
    for task, entry in result["tasks"].items():
        assert entry["n_samples"] == 2, task
        assert entry["version"] == 1.0
        main = entry["metrics"][entry["primary"]]
        assert main["value"] is not None and math.isfinite(main["value"]), task
        if main["scale"] == "0-100":
            assert 0.0 <= main["value"] <= 100.0, task
    assert result["model"] == str(model) and result["limit"] == 2 and result["wall_s"] > 0
    assert load_result(save_result(result, tmp_path / "r.json")) == result
