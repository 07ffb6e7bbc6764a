"""Result files, the paper-style table layout and the averaged metric."""

import csv
import io
from pathlib import Path

import pytest

from almr.errors import AlmrError, DataError
from almr.evaluate.results import averaged_metric, csv_table, load_result, markdown_table, save_result, scores


def _result(model: str, values: dict[str, float]) -> dict:
    families = {"world_ceval": ("chinese", "C-Eval"), "world_mmlu": ("english", "MMLU"),
                "world_wmt_zh-en": ("translation", "WMT zh→en"), "world_seceu": ("emotion", "SECEU")}  # fmt: skip
    primary = {"world_seceu": "eq", "world_wmt_zh-en": "bleu"}
    tasks = {}
    for task, value in values.items():
        metric = primary.get(task, "acc")
        tasks[task] = {"family": families[task][0], "title": families[task][1], "version": 1.0, "n_samples": 10,
                       "shots": 0, "mode": "loglikelihood", "primary": metric,
                       "metrics": {metric: {"value": value, "stderr": 1.0,
                                            "scale": "eq" if metric == "eq" else "0-100"}}}  # fmt: skip
    return {"format": "almr-eval/1", "model": model, "suite": "world", "limit": None, "created": "now",
            "wall_s": 1.0, "lm_eval_version": "0.4.13", "almr_version": "0.1.0", "tasks": tasks}  # fmt: skip


def test_averaged_metric_is_the_mean_of_the_chosen_scores() -> None:
    r = _result("a", {"world_ceval": 40.0, "world_mmlu": 70.0, "world_wmt_zh-en": 10.0, "world_seceu": 120.0})
    assert averaged_metric(r, ["world_ceval", "world_mmlu"]) == 55.0
    assert averaged_metric(r, ["world_ceval", "world_mmlu", "world_wmt_zh-en"]) == 40.0
    assert averaged_metric(r, ["world_mmlu:acc"]) == 70.0
    # a probe's output has the same keys
    probe = {"world_ceval": 20.0, "world_mmlu": 30.0, "world_seceu": 99.0}
    assert averaged_metric(probe, ["world_ceval", "world_mmlu"]) == 25.0
    with pytest.raises(AlmrError, match="eq scale"):
        averaged_metric(r, ["world_ceval", "world_seceu"])
    with pytest.raises(AlmrError, match="no score for world_lcsts"):
        averaged_metric(r, ["world_lcsts"])


def test_table_rows_models_grouped_columns_per_family() -> None:
    a = _result("base", {"world_ceval": 25.0, "world_mmlu": 60.0, "world_seceu": 90.0})
    b = _result("cpt-0.3", {"world_ceval": 45.5, "world_mmlu": 58.25, "world_wmt_zh-en": 12.0})
    md = markdown_table([a, b], ["world_ceval", "world_mmlu"]).splitlines()
    assert md[0] == "| Model | Chinese | English | Translation | Emotional intelligence | Avg |"
    assert md[1] == "|---|---:|---:|---:|---:|---:|"
    assert md[2] == "|  | **C-Eval** | **MMLU** | **WMT zh→en** | **SECEU** |  |"
    assert md[3] == "| base | 25.0 | 60.0 | – | 90.0 | 42.5 |"
    assert md[4] == "| cpt-0.3 | 45.5 | 58.2 | 12.0 | – | 51.9 |"
    rows = list(csv.reader(io.StringIO(csv_table([a, b], ["world_ceval", "world_mmlu"]))))
    assert rows[0] == ["Model", "Chinese", "English", "Translation", "Emotional intelligence", "Avg"]
    assert rows[1] == ["", "C-Eval", "MMLU", "WMT zh→en", "SECEU", ""]
    assert rows[3] == ["cpt-0.3", "45.5", "58.2", "12.0", "–", "51.9"]


def test_result_files_round_trip_and_bad_files_are_named(tmp_path: Path) -> None:
    r = _result("a", {"world_ceval": 40.0})
    assert load_result(save_result(r, tmp_path / "x" / "r.json")) == r
    assert scores(r) == {"world_ceval": 40.0, "world_ceval:acc": 40.0}
    (tmp_path / "bad.json").write_text('{"tasks": {}}')
    with pytest.raises(DataError, match="not an almr evaluation result"):
        load_result(tmp_path / "bad.json")
    with pytest.raises(DataError, match="does not exist"):
        load_result(tmp_path / "none.json")


def test_eval_table_command_writes_markdown_and_csv(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from almr.cli import app

    paths = [save_result(_result(m, {"world_ceval": v, "world_mmlu": 50.0}), tmp_path / f"{m}.json")
             for m, v in (("m1", 30.0), ("m2", 40.0))]  # fmt: skip
    out = CliRunner().invoke(app, ["eval", "table", *map(str, paths), "--average", "world_ceval,world_mmlu",
                                   "--markdown", str(tmp_path / "t.md"), "--csv", str(tmp_path / "t.csv")])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "| m2 | 40.0 | 50.0 | 45.0 |" in (tmp_path / "t.md").read_text()
    assert (tmp_path / "t.csv").read_text().splitlines()[2] == "m1,30.0,50.0,40.0"


def test_a_task_lm_eval_returned_no_score_for_is_listed_unscored() -> None:
    from almr.evaluate.registry import TASKS
    from almr.evaluate.results import from_lm_eval

    infos = [TASKS["world_ceval"], TASKS["world_mmlu"], TASKS["world_lcsts"]]
    raw = {"results": {"world_ceval": {"acc,none": 0.5, "acc_stderr,none": 0.1},  # scored
                       "world_mmlu": {"acc,none": None, "acc_stderr,none": "N/A"}},  # ran, but no value
           "n-samples": {"world_ceval": {"effective": 10}}}  # fmt: skip
    result = from_lm_eval([raw], infos, model="m", suite=None, limit=None, wall_s=0.0)
    assert result["tasks"]["world_ceval"]["metrics"]["acc"]["value"] == 50.0
    assert result["unscored"] == ["world_mmlu", "world_lcsts"]
    skipped = from_lm_eval([raw], infos, model="m", suite=None, limit=None, wall_s=0.0,
                           skipped={"world_lcsts": "no data"})  # fmt: skip
    assert skipped["unscored"] == ["world_mmlu"]
