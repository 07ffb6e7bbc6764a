"""The averaged metric as a named, weighted list (`eval.average`): the weighted mean, the plain-list
form existing configs use, refusals of bad keys, weights and scales, old run records, tables."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from almr.config import AlmrConfig, load_config
from almr.errors import AlmrError, ConfigError
from almr.evaluate.config import AverageConfig
from almr.evaluate.results import averaged_metric, markdown_table, save_result
from almr.sweep.records import RunRecord


def _result(model: str, values: dict[str, float]) -> dict:
    """An almr-eval result with one accuracy per task."""
    tasks = {
        task: {"family": "chinese", "title": task, "version": 1.0, "n_samples": 4, "shots": 0,
               "mode": "loglikelihood", "primary": "acc",
               "metrics": {"acc": {"value": value, "stderr": None, "scale": "0-100"}}}
        for task, value in values.items()
    }  # fmt: skip
    return {"format": "almr-eval/1", "model": model, "suite": None, "limit": 4, "created": "now", "wall_s": 1.0,
            "lm_eval_version": "0.4.13", "almr_version": "0.1.0", "tasks": tasks}  # fmt: skip


def test_the_averaged_metric_is_the_weighted_mean_of_its_terms() -> None:
    values = {"world_ceval": 40.0, "world_mmlu": 70.0, "world_eprstmt": 10.0, "world_seceu": 120.0}
    zh_heavy = AverageConfig(name="zh-heavy", terms={"world_ceval": 2, "world_mmlu": 1, "world_eprstmt": 1})
    assert averaged_metric(values, zh_heavy) == 40.0  # (2·40 + 70 + 10) / 4
    assert averaged_metric(values, {"world_ceval": 0.5, "world_mmlu": 1.5}) == 62.5  # (20 + 105) / 2
    assert averaged_metric(values, ["world_ceval", "world_mmlu"]) == 55.0  # a list weighs each key 1
    # a result file's keys: a task for its primary metric, or task:metric
    result = _result("m", {"world_ceval": 40.0, "world_mmlu": 70.0})
    assert averaged_metric(result, {"world_ceval:acc": 3, "world_mmlu": 1}) == 47.5  # (120 + 70) / 4
    assert zh_heavy.describe() == "zh-heavy = (2·world_ceval + 1·world_mmlu + 1·world_eprstmt) / 4"
    assert AverageConfig.model_validate(["world_ceval", "world_mmlu"]).describe() == (
        "avg = mean of world_ceval, world_mmlu"
    )
    with pytest.raises(AlmrError, match=r"averaged metric zh-heavy: no score for world_eprstmt; present: world_ceval"):
        averaged_metric({"world_ceval": 1.0}, zh_heavy.model_copy(update={"terms": {"world_eprstmt": 1.0}}))


def test_a_plain_list_still_loads_and_the_weighted_form_reads_from_yaml_and_set(tmp_path: Path) -> None:
    assert AlmrConfig().eval.average.terms == {"world_mmlu": 1.0, "world_ceval": 1.0, "world_eprstmt": 1.0}
    listed = tmp_path / "listed.yaml"
    listed.write_text("eval:\n  average: [world_mmlu, world_ceval]\n")
    average = load_config(listed).eval.average
    assert (average.name, average.terms) == ("avg", {"world_mmlu": 1.0, "world_ceval": 1.0})
    assert load_config(None, ["eval.average=[world_ceval]"]).eval.average.terms == {"world_ceval": 1.0}
    weighted = tmp_path / "weighted.yaml"
    weighted.write_text("eval:\n  average:\n    name: zh-heavy\n    terms: {world_ceval: 2, world_mmlu: 1}\n")
    average = load_config(weighted, ["eval.average.terms.world_cmrc:f1=0.5"]).eval.average
    assert (average.name, average.terms) == ("zh-heavy", {"world_ceval": 2.0, "world_mmlu": 1.0, "world_cmrc:f1": 0.5})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{terms: {world_ceval: 0}}", r"eval\.average: the weight of world_ceval is 0\.0; weights must be positive"),
        ("{terms: {world_ceval: -2}}", r"the weight of world_ceval is -2\.0; weights must be positive"),
        ("{terms: {world_ceval: .inf}}", r"the weight of world_ceval is inf; weights must be positive and finite"),
        ("[world_ceval, world_seceu]", r"eval\.average: world_seceu is on the eq scale, not 0-100; leave it out"),
        ("[world_seceu:seceu]", r"world_seceu:seceu is on the distance scale, not 0-100"),
        ("['world_ceval:']", r"'world_ceval:' is not a score key; write TASK .* or TASK:METRIC"),
        ("[':acc']", r"':acc' is not a score key"),
        ("[world_ceval, world_mmlu, world_ceval]", r"lists world_ceval more than once; list each key once"),
        ("[]", r"eval\.average: names no score; give at least one key"),
        ("{name: x}", r"eval\.average\.terms: required"),
    ],
)
def test_bad_keys_weights_and_scales_are_refused_naming_the_key(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"eval.average={value}"])


def test_averaged_metric_refuses_a_bad_list_with_one_message() -> None:
    with pytest.raises(ConfigError, match=r"averaged metric: world_seceu is on the eq scale, not 0-100"):
        averaged_metric({"world_seceu": 100.0}, ["world_seceu"])
    with pytest.raises(ConfigError, match=r"averaged metric: the weight of world_ceval is 0\.0"):
        averaged_metric({"world_ceval": 1.0}, {"world_ceval": 0})


def test_run_records_keep_the_definition_and_old_records_still_load(tmp_path: Path) -> None:
    base = {"run_id": "r000", "almr": 0.5, "lr": 1e-3, "status": "completed", "averaged_metric": 50.0}
    old = RunRecord.model_validate({**base, "average": ["world_ceval", "world_mmlu"]})  # written as a list
    assert old.average == AverageConfig(terms={"world_ceval": 1.0, "world_mmlu": 1.0})
    assert RunRecord.model_validate({**base, "average": []}).average is None  # from before `average` was kept
    new = RunRecord.model_validate({**base, "average": {"name": "zh-heavy", "terms": {"world_ceval": 2}}})
    new.save(tmp_path)
    stored = json.loads((tmp_path / "record.json").read_text())
    assert stored["average"] == {"name": "zh-heavy", "terms": {"world_ceval": 2.0}}
    assert RunRecord.model_validate(stored) == new


def test_tables_name_a_weighted_metric_and_eval_table_takes_weights(tmp_path: Path) -> None:
    a = _result("base", {"world_ceval": 25.0, "world_mmlu": 61.0})
    md = markdown_table([a], AverageConfig(name="zh-heavy", terms={"world_ceval": 3, "world_mmlu": 1}))
    assert md.splitlines()[2] == "|  | **world_ceval** | **world_mmlu** | **zh-heavy** |"
    assert md.splitlines()[3] == "| base | 25.0 | 61.0 | 34.0 |"  # (75 + 61) / 4
    path = save_result(a, tmp_path / "a.json")
    cli = [sys.executable, "-m", "almr.cli", "eval", "table", str(path)]
    out = subprocess.run([*cli, "--average", "world_ceval=3,world_mmlu"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "| base | 25.0 | 61.0 | 34.0 |" in out.stdout
    bad = subprocess.run([*cli, "--average", "world_ceval=three"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "--average 'world_ceval=three': expected KEY or KEY=WEIGHT with a number" in " ".join(bad.stderr.split())
