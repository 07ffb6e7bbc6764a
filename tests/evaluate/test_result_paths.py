"""Default result files: named by run and step (a checkpoint), run (an export), or host, port and served
model (an endpoint), so that different checkpoints keep their own files; and a default file holding
another evaluation is never replaced."""

import os
from pathlib import Path

import pytest

from almr.errors import AlmrError
from almr.evaluate.results import default_result_path, model_label, refuse_other_result, save_result


def test_model_labels() -> None:
    assert model_label("runs/cpt-a/checkpoints/step_00000300/hf") == "cpt-a-step_00000300"
    assert model_label("/data/runs/b/checkpoints/step_00000040/hf/") == "b-step_00000040"
    assert model_label("runs/sft-a/hf") == "sft-a"
    assert model_label("models/Meta-Llama-3-8B") == "Meta-Llama-3-8B"
    assert model_label("http://10.0.0.5:8000/v1", "meta-llama/Meta-Llama-3-8B") == (
        "10.0.0.5_8000-meta-llama--Meta-Llama-3-8B"
    )
    assert model_label("https://api.example.com/v1", "m:1 b") == "api.example.com-m_1_b"
    assert default_result_path("runs/a/checkpoints/step_2/hf", "paper-base") == Path("eval/a-step_2-paper-base.json")
    # two checkpoints of one run, two runs: four files
    paths = {default_result_path(f"runs/{run}/checkpoints/step_{n}/hf", "world") for run in "ab" for n in (1, 2)}
    assert len(paths) == 4


def test_a_default_file_of_another_evaluation_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "eval" / "a-world.json"
    mine = {"format": "almr-eval/1", "model": "runs/a/hf", "suite": "world", "tasks": {"world_mmlu": {}}}
    refuse_other_result(path, mine)  # no file yet
    save_result(mine, path)
    refuse_other_result(path, {**mine, "tasks": {"world_mmlu": {"n_samples": 3}}})  # the same evaluation again
    other = {**mine, "model": "other/a/hf"}
    with pytest.raises(AlmrError) as err:
        refuse_other_result(path, other)
    assert str(err.value) == (
        f"{path} holds another evaluation (its model is {os.path.abspath('runs/a/hf')!r}, this one's "
        f"{os.path.abspath('other/a/hf')!r}); not replaced: pass --out PATH to keep both, or remove it"
    )
    with pytest.raises(AlmrError, match=r"its tasks is \['world_mmlu'\], this one's \['world_ceval'\]"):
        refuse_other_result(path, {**mine, "tasks": {"world_ceval": {}}})
    path.write_text("notes")
    with pytest.raises(AlmrError) as err:
        refuse_other_result(path, mine)
    assert str(err.value) == f"{path} exists and is not an almr evaluation result; pass --out PATH to write elsewhere"
