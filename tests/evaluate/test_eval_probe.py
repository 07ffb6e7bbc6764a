"""The probe: lm-eval's numbers on the same items, fixed seeded subsets, every lm-eval task, refusals
before compute, and two FSDP2 processes scoring what one does."""

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from almr.errors import ConfigError, DataError
from almr.evaluate.config import EvalConfig
from almr.evaluate.probe import WORLD_PROBE, TaskProbe, choose_items, probe_from_config
from torchrun_launch import launch

TESTS = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def tiny(small_world: Path) -> tuple[torch.nn.Module, object]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(small_world / "model"))
    return model, AutoTokenizer.from_pretrained(small_world / "tokenizer")


def _lm_eval_reference(probe: TaskProbe, model: torch.nn.Module, tok: Any, **kwargs: Any) -> dict[str, Any]:
    """lm-eval's own `simple_evaluate` with its HFLM on the probe's tasks and items."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=4, **kwargs)
    tasks = list(probe._loaded["tasks"].values())  # the same Task objects, so the same configuration
    return lm_eval.simple_evaluate(model=lm, tasks=tasks, samples=probe.samples, bootstrap_iters=0)["results"]


def test_probe_equals_lm_eval_on_the_same_multiple_choice_items(small_world: Path, tiny: tuple) -> None:
    model, tok = tiny
    probe = TaskProbe(WORLD_PROBE, tok, items_per_task=8, data_dir=small_world, max_length=256)
    model.train()
    got = probe(model, step=5, tokens=1000)
    assert model.training  # mode restored
    ref = _lm_eval_reference(probe, model, tok)
    for task in ("world_mmlu", "world_ceval", "world_eprstmt"):
        assert got[task] == pytest.approx(100 * ref[task]["acc,none"]), task
        assert got[f"{task}:acc"] == got[task]
    assert got["world_seceu"] == pytest.approx(ref["world_seceu"]["eq,none"], rel=1e-6)
    assert {len(v) for v in probe.samples.values()} == {8}
    # rows: every chosen item's choices (4 for MMLU, C-Eval, SECEU; 2 sentiments for EPRSTMT)
    assert probe.n_sequences == 8 * 4 + 8 * 4 + 8 * 2 + 8 * 4
    assert probe.last_seconds_ > 0
    assert probe(model) == got  # the same items and few-shot examples at every call


def test_probe_generation_tasks_equal_lm_eval(small_world: Path, tiny: tuple) -> None:
    from lm_eval.models.huggingface import HFLM

    from almr.evaluate.probe_lm import ProbeLM

    model, tok = tiny
    probe = TaskProbe(["world_lcsts", "world_gsm8k"], tok, items_per_task=3, data_dir=small_world, max_gen_toks=6,
                      batch_size=4, max_length=256)  # fmt: skip
    got = probe(model)
    ref = _lm_eval_reference(probe, model, tok, max_gen_toks=6)
    assert got["world_lcsts"] == pytest.approx(100 * ref["world_lcsts"]["rougeL,none"])
    assert got["world_gsm8k"] == pytest.approx(100 * ref["world_gsm8k"]["exact_match,none"])
    requests = [r for r in probe._requests() if r.request_type == "generate_until"]
    ours = ProbeLM(model, tok, probe.encode, batch_size=4, max_length=256, max_gen_toks=6).generate_until(requests)
    theirs = HFLM(pretrained=model, tokenizer=tok, batch_size=4, max_gen_toks=6).generate_until(requests)
    assert ours == theirs and len(ours) == 6 and any(ours)
    assert probe.cost().generations == 6


def test_subsets_are_seeded_and_stratified_by_subject() -> None:
    def task(n: int) -> SimpleNamespace:
        return SimpleNamespace(eval_docs=list(range(n)))

    loaded = {"tasks": {"g_algebra": task(30), "g_law": task(10), "solo": task(5)},
              "group_map": {"g": ["g_algebra", "g_law"]}}  # fmt: skip
    infos = [SimpleNamespace(name="g"), SimpleNamespace(name="solo")]
    picked = choose_items(loaded, infos, 8, seed=3)  # type: ignore[arg-type]
    # 8 items over subjects of 30 and 10 documents: 6 and 2; a task smaller than 8 gives all it has
    assert {k: len(v) for k, v in picked.items()} == {"g_algebra": 6, "g_law": 2, "solo": 5}
    assert picked == choose_items(loaded, infos, 8, seed=3)  # type: ignore[arg-type]
    assert picked["g_algebra"] != choose_items(loaded, infos, 8, seed=4)["g_algebra"]  # type: ignore[arg-type]
    assert all(v == sorted(set(v)) and max(v) < len(loaded["tasks"][k].eval_docs) for k, v in picked.items())


def test_probe_from_config_reads_the_eval_section(small_world: Path, tiny: tuple) -> None:
    _, tok = tiny
    section = {"items_per_task": 3, "tasks": ["world_mmlu"], "batch_size": 8, "seed": 5}
    probe = probe_from_config(EvalConfig(data_dir=str(small_world), probe=section), tok, max_length=256)
    assert (probe.tasks, probe.items_per_task, probe.batch_size, probe.seed) == (("world_mmlu",), 3, 8, 5)
    assert probe.samples == choose_items(probe._loaded, probe.infos, 3, 5)
    with pytest.raises(ConfigError, match=r"names the demo world's world_mmlu but eval\.data_dir is not set"):
        probe_from_config(EvalConfig(probe=section), tok)
    with pytest.raises(ConfigError, match=r"eval\.probe\.tasks is empty"):
        probe_from_config(EvalConfig(probe={"tasks": []}), tok)


@pytest.mark.parametrize(
    ("tasks", "kwargs", "message"),
    [
        (["world_gsm8k"], {}, r"generation task\(s\) world_gsm8k need a cap .* eval\.probe\.max_gen_toks"),
        (["zh_share"], {}, r"zh_share need a chat template"),
        (["belle_eval"], {}, r"belle_eval are scored by an LLM judge"),
        (["world_humaneval"], {"max_gen_toks": 8}, r"world_humaneval run model-written code"),
        (["world_mmlu"], {"max_length": 16}, r"world_mmlu, document \d+ needs \d+ tokens .* window of 16"),
    ],
)
def test_unprobeable_requests_are_refused_before_any_compute(
    small_world: Path, tiny: tuple, tasks: list[str], kwargs: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        TaskProbe(tasks, tiny[1], items_per_task=4, data_dir=small_world, **kwargs)


def test_missing_world_data_is_named_before_any_compute(tmp_path: Path, tiny: tuple) -> None:
    with pytest.raises(DataError, match=r"world_mmlu"):
        TaskProbe(["world_mmlu"], tiny[1], data_dir=tmp_path)


# --------------------------------------------------------------------------- lm-eval's own tasks

ARC_ROWS = [
    ("Which gas do plants take in?", ["oxygen", "carbon dioxide", "helium", "neon"], "B"),
    ("What is frozen water?", ["ice", "steam", "sand", "air"], "A"),
    ("How many legs has a spider?", ["six", "four", "eight", "ten"], "C"),
    ("What gives light by day?", ["the moon", "a lamp", "a star", "the sun"], "D"),
    ("What do bees make?", ["honey", "milk", "silk", "wax paper"], "A"),
    ("Which is a metal?", ["wood", "iron", "glass", "cloth"], "B"),
]


def arc_override(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """lm-eval's built-in `arc_easy`, its dataset pointed at a few rows in its own schema."""
    path = tmp_path / "arc_easy.jsonl"
    rows = [{"id": f"q{i}", "question": q, "choices": {"text": c, "label": list("ABCD")}, "answerKey": a}
            for i, (q, c, a) in enumerate(ARC_ROWS)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    override = {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": {"test": str(path)}},
                "training_split": None, "validation_split": None}  # fmt: skip
    return {"arc_easy": override}


@pytest.mark.slow  # lm-eval's task index: ~10 s to scan once per process
def test_builtin_lm_eval_task_through_the_probe(tmp_path: Path, small_world: Path, tiny: tuple) -> None:
    model, tok = tiny
    probe = TaskProbe(["arc_easy", "world_mmlu"], tok, items_per_task=4, data_dir=small_world,
                      overrides=arc_override(tmp_path), max_length=256)  # fmt: skip
    got = probe(model)
    ref = _lm_eval_reference(probe, model, tok)
    assert len(probe.samples["arc_easy"]) == 4 and probe.n_sequences == 4 * 4 + 4 * 4
    for key in ("acc", "acc_norm"):
        assert got[f"arc_easy:{key}"] == pytest.approx(100 * ref["arc_easy"][f"{key},none"])
    assert got["arc_easy"] == got["arc_easy:acc"]  # the primary metric: the first of its metric_list

    with pytest.raises(ConfigError, match=r"unknown task 'arc_eazy'.*did you mean arc_easy"):
        TaskProbe(["arc_eazy"], tok)
    with pytest.raises(DataError, match=r"arc_challenge: its Hugging Face dataset allenai/ai2_arc .*hf download"):
        TaskProbe(["arc_challenge"], tok)  # no override: its data would come from the (empty) cache


_WORKER = """
import json, os, sys
sys.path.insert(0, {tests!r})
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from almr.evaluate.probe import TaskProbe
from almr.train.parallel import init_distributed, parallelize
env = init_distributed("cpu")
torch.manual_seed(1)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained({world!r} + "/model"))
tok = AutoTokenizer.from_pretrained({world!r} + "/tokenizer")
probe = TaskProbe({tasks!r}, tok, items_per_task=7, data_dir={world!r}, max_gen_toks=5, batch_size=4, max_length=256)
model = parallelize(model, env, gradient_checkpointing=False, compile=False)
scores = probe(model)
with open({out!r} + f"/rank{{env.rank}}.json", "w") as f:
    json.dump(scores, f)
"""


@pytest.mark.slow  # two torchrun processes: ~40 s
def test_two_fsdp_processes_probe_what_one_does(tmp_path: Path, small_world: Path, tiny: tuple) -> None:
    tasks = ["world_mmlu", "world_seceu", "world_lcsts"]  # log-likelihood and generation
    script = tmp_path / "worker.py"
    script.write_text(_WORKER.format(tests=str(TESTS), world=str(small_world), tasks=tasks, out=str(tmp_path)))
    launch(str(script))
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0 == rank1  # every process gets every score

    torch.manual_seed(1)
    from transformers import AutoConfig, AutoModelForCausalLM

    one = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(small_world / "model"))
    probe = TaskProbe(tasks, tiny[1], items_per_task=7, data_dir=small_world, max_gen_toks=5, batch_size=4,
                      max_length=256)  # fmt: skip
    expected = probe(one)
    assert rank0.keys() == expected.keys()
    for key, value in expected.items():
        assert rank0[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
