"""The CPT stage connects the data plan, the probe and the trainer; its own decisions are tested here
(its whole path runs in tests/stages/test_base_model.py and in the sweep and pipeline tests)."""

import pytest

from almr.config import load_config
from almr.errors import ConfigError
from almr.stages.cpt import build_probe, run_cpt


def test_no_probe_when_probing_is_off_or_no_model_is_named() -> None:
    assert build_probe(load_config(None, ["cpt.probe.every_tokens=0", "model.name_or_path=/nowhere"])) is None
    assert build_probe(load_config(None, ["cpt.probe.every_tokens=1000"])) is None  # the trainer names it first


def test_a_missing_model_is_refused_before_the_data_plan_is_read(tmp_path) -> None:
    # no sources at all: reading the plan would fail too, but the cheaper, clearer message comes first
    config = load_config(None, [f"cpt.run_dir={tmp_path / 'run'}", "cpt.steps=1"])
    with pytest.raises(ConfigError, match=r"model\.name_or_path is not set"):
        run_cpt(config, progress=False)
