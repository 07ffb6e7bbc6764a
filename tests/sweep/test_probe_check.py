"""The runs' probe is built once by the sweep before any run starts: its data and tasks are checked
there, its cost is stated, and an averaged metric it cannot produce is refused."""

from pathlib import Path

import pytest

from almr.config import AlmrConfig
from almr.errors import ConfigError, DataError
from almr.sweep.launch import FunctionLauncher
from almr.sweep.study import check_probe, run_sweep
from worlds import save_world_model


@pytest.fixture(scope="module")
def base_model(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_world_model(small_world, tmp_path_factory.mktemp("base") / "model")


def spec(tmp_path: Path, data_dir: Path, model: Path, **eval_: object) -> AlmrConfig:
    return AlmrConfig.model_validate({
        "model": {"name_or_path": str(model)},
        "mixture": {"almr": 0.5},
        "cpt": {"probe": {"every_tokens": 8192}},
        "eval": {"data_dir": str(data_dir), "average": ["world_mmlu", "world_ceval"],
                 "probe": {"tasks": ["world_mmlu", "world_ceval"], "items_per_task": 8}, **eval_},
        "sweep": {"almr": {"values": [0.2, 0.8]}, "lr": {"values": [1e-4, 1e-3], "low": 1e-5, "high": 1e-2},
                  "sweep_dir": str(tmp_path / "sweep"), "poll_s": 0.01},
    })  # fmt: skip


def test_the_probe_cost_is_stated_before_the_study(tmp_path: Path, small_world: Path, base_model: Path) -> None:
    line = check_probe(spec(tmp_path, small_world, base_model))
    assert line is not None
    # 8 items of each task, 4 choices each: 64 scored sequences
    assert line.startswith("probe: 16 items, 64 scored sequences (")
    assert "every 8,192 trained tokens: ~" in line and "of training compute" in line
    assert check_probe(spec(tmp_path, small_world, base_model).model_copy(
        update={"cpt": AlmrConfig().cpt})) is None  # fmt: skip


def test_missing_probe_data_stops_the_study_before_any_run(tmp_path: Path, base_model: Path) -> None:
    config = spec(tmp_path, tmp_path / "no-world", base_model)
    started: list[str] = []
    with pytest.raises(DataError, match=r"eval\.probe\.tasks: data missing for world_mmlu, world_ceval"):
        run_sweep(config, FunctionLauncher(lambda run, stop: started.append(run.run_id)))
    assert started == [] and not (tmp_path / "sweep" / "study.db").exists()


def test_an_average_the_probe_cannot_produce_is_refused(tmp_path: Path, small_world: Path, base_model: Path) -> None:
    config = spec(tmp_path, small_world, base_model, average=["world_mmlu", "world_eprstmt"])
    with pytest.raises(ConfigError, match=r"eval\.average: world_eprstmt is not produced by the probe"):
        check_probe(config)
