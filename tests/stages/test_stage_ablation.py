"""The Table 6 ablation on the small world: four cells, each SFT → DPO → evaluation, the table in
the paper's layout, the language's data left out exactly in the 'without' cells, and a rerun that
reuses every finished stage."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from almr.config import AlmrConfig
from almr.errors import ConfigError
from almr.stages.ablation import CELLS, cell_config, run_ablation
from worlds import save_world_model


def _config(small_world: Path, tmp_path: Path) -> AlmrConfig:
    base, cpt = save_world_model(small_world, tmp_path / "base", 1), save_world_model(small_world, tmp_path / "cpt", 2)
    short = {"steps": 1, "device": "cpu", "batch": {"micro_batch_size": 2, "global_batch_size": 2, "seq_len": 96}}
    sft_data = {"path": str(small_world / "sft" / "train.jsonl"), "language_field": "lang"}
    dpo_data = {"path": str(small_world / "dpo" / "train.jsonl"), "format": "preference", "language_field": "lang"}
    ablation = {"out_dir": str(tmp_path / "ablation"), "cpt_model": str(cpt), "base_model": str(base),
                "tasks": ["world_eprstmt"]}  # fmt: skip
    raw: dict[str, Any] = {
        "sft": {**short, "datasets": [sft_data]},
        "dpo": {**short, "datasets": [dpo_data]},
        "ablation": ablation,
        "eval": {"data_dir": str(small_world), "limit": 4},
    }
    return AlmrConfig.model_validate(raw)


def test_cells_start_from_the_right_model_and_leave_out_the_language(small_world: Path, tmp_path: Path) -> None:
    config = _config(small_world, tmp_path)
    starts, excluded = {}, {}
    for cell in CELLS:
        sft = cell_config(config, cell, tmp_path / cell.name, "sft")
        dpo = cell_config(config, cell, tmp_path / cell.name, "dpo")
        starts[cell.name] = Path(sft.model.name_or_path).name
        excluded[cell.name] = (sft.sft.exclude_languages, dpo.dpo.exclude_languages)
        assert dpo.model.name_or_path == str(tmp_path / cell.name / "sft" / "hf")
        assert sft.sft.run_dir == str(tmp_path / cell.name / "sft")
    assert starts == {"cpt_with-lang": "cpt", "cpt_without-lang": "cpt", "no-cpt_with-lang": "base",
                      "no-cpt_without-lang": "base"}  # fmt: skip
    assert excluded["cpt_with-lang"] == ([], []) and excluded["no-cpt_without-lang"] == (["zh"], ["zh"])


def test_four_cells_make_the_table_and_a_rerun_reuses_them(small_world: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    config = _config(small_world, tmp_path)
    lines: list[str] = []
    table = run_ablation(config, progress=False, log=lines.append).read_text(encoding="utf-8")
    for row in ("| C-DPO |", "| C-DPO, w/o zh data |", "| C-DPO w/o CPT |", "| C-DPO w/o CPT, w/o zh data |"):
        assert row in table
    summary = json.loads((tmp_path / "ablation/cpt_without-lang/sft/summary.json").read_text(encoding="utf-8"))
    with_lang = json.loads((tmp_path / "ablation/cpt_with-lang/sft/summary.json").read_text(encoding="utf-8"))
    assert summary["skipped"] and not with_lang["skipped"]  # the Chinese dialogues were left out, and only there
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "ablation").rglob("summary.json")}
    lines.clear()
    run_ablation(config, progress=False, log=lines.append)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert sum("done" in line for line in lines) == 8  # 4 cells × (SFT, DPO), nothing retrained


def test_an_ablation_whose_data_has_no_such_language_is_refused(small_world: Path, tmp_path: Path) -> None:
    config = _config(small_world, tmp_path)
    whole = config.sft.datasets[0].model_copy(update={"language_field": None, "language": "en"})
    broken = config.model_copy(update={"sft": config.sft.model_copy(update={"datasets": [whole]})})
    with pytest.raises(ConfigError, match=r"no sft\.datasets entry is tagged language: zh"):
        run_ablation(broken, log=lambda _: None)
    missing = config.model_copy(update={"ablation": config.ablation.model_copy(update={"base_model": None})})
    with pytest.raises(ConfigError, match=r"ablation\.base_model is not set"):
        run_ablation(missing, log=lambda _: None)


def test_a_later_process_reads_the_first_process_s_evaluation_instead_of_evaluating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from almr.durable import atomic_write_text
    from almr.stages import ablation

    def no_evaluation(*_: Any, **__: Any) -> None:
        raise AssertionError("a process other than the first evaluated the cell")

    monkeypatch.setattr(ablation, "run_eval", no_evaluation)
    monkeypatch.setenv("RANK", "1")
    path = tmp_path / "cell" / "eval.json"
    path.parent.mkdir()
    scores = {"model": "cell", "results": {"world_ceval": {"acc": 41.0}}}
    writer = threading.Timer(0.3, lambda: atomic_write_text(path, json.dumps(scores)))
    writer.start()
    config = AlmrConfig.model_validate({"ablation": {"tasks": ["world_ceval"]}})
    assert ablation._evaluate(config, tmp_path / "model", path) == scores
    writer.join()
