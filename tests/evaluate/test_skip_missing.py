"""The base-model suite and `--skip-missing`: which tasks are skipped and why (data files missing
under the data directory, built-in datasets missing from the Hugging Face cache, chat tasks for a
model without a chat template), a real run of the rest, and the refusals — every missing task
named at once without the flag, nothing left to run with it. The docs' example commands are
checked against the suites they run."""

import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from huggingface_hub import constants
from transformers import AutoTokenizer

from almr.cli import main
from almr.errors import AlmrError, ConfigError, DataError
from almr.evaluate.harness import check_request, missing_data, run_eval
from almr.evaluate.registry import SUITES, TASKS, resolve_tasks
from almr.evaluate.results import load_result, save_result
from worlds import save_world_model

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
DOCS = Path(__file__).parents[2] / "docs" / "evaluation.md"

PAPER_BASE = [
    "ceval-valid", "cmrc2018", "drcd", "lcsts", "cluewsc", "eprstmt", "mmlu", "agieval", "triviaqa", "bbh", "gsm8k",
    "humaneval", "wmt22_zh-en", "wmt22_en-zh", "seceu", "taptap",
]  # fmt: skip
WORLD_SOURCE = "`almr world build DIR` writes it to DIR/bench/"
AGIEVAL = [
    "aqua-rat", "gaokao-biology", "gaokao-chemistry", "gaokao-chinese", "gaokao-english", "gaokao-geography",
    "gaokao-history", "gaokao-mathcloze", "gaokao-mathqa", "gaokao-physics", "jec-qa-ca", "jec-qa-kd", "logiqa-en",
    "logiqa-zh", "lsat-ar", "lsat-lr", "lsat-rc", "math", "sat-en", "sat-en-without-passage", "sat-math",
]  # fmt: skip


def cache_reason(dataset: str, cache: Path, task: str, download: str = "") -> str:
    """The reason a built-in task's Hugging Face dataset(s) (lm-eval's own dataset_path) is not here."""
    many = "," in dataset
    download = download or ("`hf download --repo-type dataset NAME` for each" if many else
                            f"`hf download --repo-type dataset {dataset}`")  # fmt: skip
    which = f"datasets {dataset.replace(',', ', ')} are" if many else f"dataset {dataset} is"
    where = "" if many else f"; https://huggingface.co/datasets/{dataset}"
    return (
        f"its Hugging Face {which} not in the local cache {cache}; download once on a machine online "
        f"({download}, or run lm_eval once) and copy the cache here, set HF_HUB_CACHE, or point "
        f"eval.task_overrides.{task}.dataset_path at a local copy{where}"
    )


def file_reason(path: Path, task: str) -> str:
    return f"data file {path} does not exist; get it from {TASKS[task].source}"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, so that which built-in datasets are "downloaded" is up to the test."""
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    return hub


@pytest.fixture(scope="module")
def base_model(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The world's tiny model saved without a chat template, as a CPT checkpoint is."""
    out = save_world_model(small_world, tmp_path_factory.mktemp("base") / "model")
    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(out)
    for path in out.glob("chat_template*"):  # transformers also writes the template to its own file
        path.unlink()
    return out


def without(src: Path, dst: Path, *removed: str) -> Path:
    """A copy of the benchmark folder `src` without the files or folders `removed` (relative)."""
    shutil.copytree(src, dst)
    for rel in removed:
        target = dst / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return dst


# --------------------------------------------------------------------------- the suite


def test_paper_base_is_the_paper_suite_without_its_chat_task() -> None:
    assert SUITES["paper-base"] == PAPER_BASE
    assert SUITES["paper"] == [*PAPER_BASE, "zh_share"]


def test_paper_base_is_listed_by_eval_tasks_and_in_the_suite_help(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    for argv in (["eval", "tasks"], ["eval", "--help"]):
        monkeypatch.setattr(sys, "argv", ["almr", *argv])
        with pytest.raises(SystemExit) as info:
            main()
        assert info.value.code == 0
        out = capsys.readouterr().out
        if argv[-1] == "tasks":
            assert f"| paper-base | {', '.join(PAPER_BASE)} |" in out.splitlines()
        else:
            assert "paper, paper-base (paper-base: the paper's suite without chat tasks" in out
            assert "--skip-missing" in out


# --------------------------------------------------------------------------- which tasks, which reasons


def test_skipped_tasks_and_reasons_for_a_data_dir_with_files_missing(tmp_path: Path, cache: Path) -> None:
    data = without(FIXTURES, tmp_path / "bench", "lcsts", "taptap/test.jsonl", "seceu/population.json")
    for present in ("cais--mmlu", "openai--gsm8k", "SaylorTwift--bbh"):  # lm-eval 0.4.13's bbh reads SaylorTwift/bbh
        (cache / f"datasets--{present}").mkdir()
    skipped = check_request(resolve_tasks("paper-base", None), "ckpt", data_dir=data, allow_code_execution=True,
                            skip_missing=True)  # fmt: skip
    agieval = ",".join(f"hails/agieval-{name}" for name in AGIEVAL)  # one dataset per subtask
    assert skipped == {
        "ceval-valid": cache_reason("ceval/ceval-exam", cache, "ceval-valid"),
        "lcsts": f"data file {data / 'lcsts' / 'test.jsonl'} does not exist; get it from "
        "http://icrc.hitsz.edu.cn/Article/show/139.html (LCSTS PART_III, on application)",
        "agieval": cache_reason(agieval, cache, "agieval"),
        "triviaqa": cache_reason("mandarjoshi/trivia_qa", cache, "triviaqa"),
        "humaneval": cache_reason("openai/openai_humaneval", cache, "humaneval"),
        "seceu": file_reason(data / "seceu" / "population.json", "seceu"),
        "taptap": file_reason(data / "taptap" / "test.jsonl", "taptap"),
    }
    assert list(skipped) == [name for name in PAPER_BASE if name in skipped]  # in the suite's order


def test_without_a_data_dir_each_of_our_tasks_says_how_to_pass_one() -> None:
    nope = FIXTURES / "nope.jsonl"
    missing = missing_data(resolve_tasks(None, ["cmrc2018", "world_mmlu"]), None, {"world_mmlu": str(nope)})
    assert missing == {
        "cmrc2018": "no data directory given; pass --data-dir DIR holding cmrc2018/cmrc2018_dev.json "
        f"(or --data-file cmrc2018=PATH); get it from {TASKS['cmrc2018'].source}",
        "world_mmlu": f"data file {nope} does not exist; get it from {WORLD_SOURCE}",
    }


def test_nothing_is_skipped_when_every_file_is_there(cache: Path) -> None:
    assert check_request(resolve_tasks("emotion", None), "ckpt", data_dir=FIXTURES, skip_missing=True) == {}


# --------------------------------------------------------------------------- refusals


def test_without_the_flag_the_error_names_every_missing_task_and_the_flag(tmp_path: Path, cache: Path) -> None:
    data = without(FIXTURES, tmp_path / "bench", "lcsts", "taptap")
    with pytest.raises(DataError) as err:
        run_eval("ckpt", tasks=["cmrc2018", "lcsts", "taptap", "mmlu", "eprstmt"], data_dir=data)
    assert str(err.value) == (
        "data missing for 3 of the 5 tasks asked for (pass --skip-missing to skip them and run the other 2, "
        "or get the data):\n"
        f"  lcsts: {file_reason(data / 'lcsts' / 'test.jsonl', 'lcsts')}\n"
        f"  taptap: {file_reason(data / 'taptap' / 'test.jsonl', 'taptap')}\n"
        f"  mmlu: {cache_reason('cais/mmlu', cache, 'mmlu')}"
    )


def test_without_the_flag_a_request_with_no_data_at_all_says_get_the_data(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        run_eval("ckpt", tasks=["taptap"], data_dir=tmp_path)
    assert str(err.value) == (
        "data missing for the task asked for (get the data, or choose other tasks):\n"
        f"  taptap: {file_reason(tmp_path / 'taptap' / 'test.jsonl', 'taptap')}"
    )


def test_every_task_missing_is_refused_with_the_flag(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(DataError) as err:
        run_eval("ckpt", tasks=["lcsts", "gsm8k"], data_dir=tmp_path, skip_missing=True)
    assert str(err.value) == (
        "nothing to run: --skip-missing skipped every task asked for:\n"
        f"  lcsts: {file_reason(tmp_path / 'lcsts' / 'test.jsonl', 'lcsts')}\n"
        f"  gsm8k: {cache_reason('openai/gsm8k', cache, 'gsm8k')}"
    )


def test_code_tasks_are_refused_without_the_opt_in_even_with_the_flag(cache: Path) -> None:
    with pytest.raises(ConfigError) as err:
        check_request(resolve_tasks("paper-base", None), "ckpt", data_dir=FIXTURES, skip_missing=True)
    assert str(err.value) == (
        "humaneval run model-written code; pass --allow-code-execution to run it in a sandboxed subprocess with a "
        f"time limit, or leave these tasks out (--tasks {','.join(n for n in PAPER_BASE if n != 'humaneval')})"
    )


def test_a_chat_task_on_a_base_model_is_refused_naming_the_base_suite(base_model: Path, small_world: Path) -> None:
    with pytest.raises(AlmrError) as err:
        run_eval(str(base_model), tasks=["world_mmlu", "zh_share"], data_dir=small_world,
                 data_files={"zh_share": str(FIXTURES / "zh_share" / "prompts.jsonl")})  # fmt: skip
    assert str(err.value) == (
        f"model {base_model} has no chat template, so it cannot answer the chat task(s) zh_share; evaluate an "
        "instruction-tuned model (SFT output) or leave them out: --suite paper-base is the paper's suite for a base "
        "(CPT) model, and --skip-missing skips every task the model or the data cannot serve"
    )


def test_only_chat_tasks_on_a_base_model_leave_nothing_to_run(base_model: Path) -> None:
    with pytest.raises(AlmrError) as err:
        run_eval(str(base_model), tasks=["zh_share"], data_dir=FIXTURES, skip_missing=True)
    assert str(err.value) == (
        "nothing to run: --skip-missing skipped every task asked for:\n"
        f"  zh_share: model {base_model} has no chat template, so it cannot answer a chat task; evaluate an "
        "instruction-tuned model"
    )


# --------------------------------------------------------------------------- a real run of the rest


def test_skip_missing_runs_the_rest_and_records_what_it_skipped(
    tmp_path: Path, small_world: Path, base_model: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    world = tmp_path / "world"
    without(small_world / "bench", world / "bench", "lcsts.jsonl")
    out = tmp_path / "result.json"
    argv = ["eval", "--model", str(base_model), "--tasks", "world_mmlu,world_lcsts,world_eprstmt,zh_share,mmlu",
            "--data-dir", str(world), "--data-file", f"zh_share={FIXTURES / 'zh_share' / 'prompts.jsonl'}",
            "--limit", "2", "--skip-missing", "--out", str(out)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["almr", *argv])
    with pytest.raises(SystemExit) as info:
        main()
    printed = capsys.readouterr()
    assert info.value.code == 0, printed.err
    skipped = {
        "world_lcsts": f"data file {world / 'bench' / 'lcsts.jsonl'} does not exist; get it from {WORLD_SOURCE}",
        "mmlu": cache_reason("cais/mmlu", cache, "mmlu"),
        "zh_share": f"model {base_model} has no chat template, so it cannot answer a chat task; evaluate an "
        "instruction-tuned model",
    }
    reported = [line for line in printed.err.splitlines() if line.startswith("skipped ")]  # among progress bars
    assert reported == [f"skipped {name}: {reason}" for name, reason in skipped.items()]
    result = load_result(out)
    assert result["skipped"] == skipped
    assert list(result["tasks"]) == ["world_mmlu", "world_eprstmt"]
    for entry in result["tasks"].values():
        assert entry["n_samples"] == 2 and entry["primary"] == "acc"
        assert entry["metrics"]["acc"]["value"] in (0.0, 50.0, 100.0)
    assert f"wrote {out}" in printed.out


def test_result_files_from_before_skipped_still_load(tmp_path: Path) -> None:
    old = {"format": "almr-eval/1", "model": "m", "suite": "world", "limit": 2, "wall_s": 1.0, "tasks": {}}
    assert load_result(save_result(old, tmp_path / "old.json")) == old
    bad = save_result({**old, "skipped": ["lcsts"]}, tmp_path / "bad.json")
    with pytest.raises(DataError) as err:
        load_result(bad)
    assert str(err.value) == f"{bad}: \"skipped\" must map each skipped task to its reason, got ['lcsts']"


# --------------------------------------------------------------------------- the docs' examples


def _doc_commands() -> list[list[str]]:
    """The `almr eval` commands of docs/evaluation.md's code blocks, continuation lines joined."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    commands = [shlex.split(line.removeprefix("$ "), comments=True) for line in lines]
    return [c for c in commands if c[:2] == ["almr", "eval"] and c[2:3] != ["table"] and c[2:3] != ["tasks"]]


def test_the_docs_examples_pass_the_code_opt_in_where_their_tasks_run_code() -> None:
    commands = _doc_commands()
    suites = []
    for command in commands:
        suite = command[command.index("--suite") + 1] if "--suite" in command else None
        listed = command[command.index("--tasks") + 1].split(",") if "--tasks" in command else []
        if any(TASKS[n].runs_code for n in SUITES.get(suite or "", []) + listed):
            assert "--allow-code-execution" in command, " ".join(command)
        suites.append(suite)
    assert suites == ["world", "chinese", "paper", "paper-base", None, "world", "paper-base"]
    assert "--skip-missing" in commands[3] and "--skip-missing" in commands[6]
    assert commands[5][-6:] == ["--device", "cuda", "--dtype", "bfloat16", "--batch-size", "32"]
