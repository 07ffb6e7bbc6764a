"""`almr cpt` on real shards: the checks between the data plan and the model (tokenizer, length,
changed data on --resume) and what the command prints (exit code 2, one line, rank 0 only)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from almr.config import load_config
from almr.data.tokenize import tokenize_sources
from almr.errors import ConfigError
from almr.stages.cpt import plan_for, run_cpt
from train_toys import make_model_dir

os.environ["HF_HUB_OFFLINE"] = "1"
SEQ, GBS = 16, 4

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_corpus(path: Path, documents: int, seed: int) -> Path:
    """Documents of the toy tokenizer's words `t3` … `t255`."""
    rng = np.random.default_rng(seed)
    lines = [" ".join(f"t{i}" for i in rng.integers(3, 256, rng.integers(5, 40))) for _ in range(documents)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("model") / "tiny", vocab=256)


def config_file(tmp: Path, model: Path, tokenizer: Path, run_dir: Path, **cpt: object) -> Path:
    sources = [
        {"name": name, "language": name, "train": [str(write_corpus(tmp / "raw" / f"{name}.jsonl", n, seed))]}
        for name, n, seed in (("en", 300, 1), ("zh", 200, 2))
    ]
    raw = {
        "model": {"name_or_path": str(model)},
        "data": {"tokenizer": str(tokenizer), "shard_dir": str(tmp / "shards"), "workers": 1, "sources": sources},
        "mixture": {"almr": 0.25},
        "cpt": {"run_dir": str(run_dir), "random_init": True, "device": "cpu", "steps": 3,
                "batch": {"micro_batch_size": 2, "global_batch_size": GBS, "seq_len": SEQ},
                "optimizer": {"lr": 1e-3}, **cpt},
    }  # fmt: skip
    path = tmp / "cpt.yaml"
    path.write_text(yaml.safe_dump(raw))
    tokenize_sources(load_config(path).data, progress=False, log=lambda m: None)
    return path


def test_cpt_steps_alone_sets_the_token_budget(tmp_path: Path, model_dir: Path) -> None:
    config = load_config(config_file(tmp_path, model_dir, model_dir, tmp_path / "run"))
    plan = plan_for(config)
    assert (plan.token_budget, plan.steps, plan.total_sequences) == (3 * GBS * SEQ, 3, 3 * GBS)
    result = run_cpt(config, progress=False)
    assert (result.steps, result.tokens) == (3, 3 * GBS * SEQ)


def test_a_model_with_another_tokenizer_is_refused_naming_both(tmp_path: Path, model_dir: Path) -> None:
    other = make_model_dir(tmp_path / "other-model", vocab=300)
    config = load_config(config_file(tmp_path, other, model_dir, tmp_path / "run"))
    with pytest.raises(ConfigError) as err:
        run_cpt(config, progress=False)
    message = str(err.value)
    assert message.startswith(f"the tokenizer of model.name_or_path={other} (fingerprint ")
    assert f"300 tokens) is not the one the shards were made with, data.tokenizer={model_dir} (fingerprint " in message
    assert not (tmp_path / "run").exists()  # before any compute


def test_resume_on_re_tokenized_shards_is_refused(tmp_path: Path, model_dir: Path) -> None:
    path = config_file(tmp_path, model_dir, model_dir, tmp_path / "run")
    run_cpt(load_config(path, ["cpt.steps=2"]), progress=False)
    write_corpus(tmp_path / "raw" / "zh.jsonl", 150, 2)  # a shorter zh source, tokenized again
    config = load_config(path, ["cpt.steps=2"])
    tokenize_sources(config.data, progress=False, log=lambda m: None)
    with pytest.raises(ConfigError) as err:
        run_cpt(config, resume=True, progress=False)
    lines = str(err.value).splitlines()
    assert lines[0].endswith("was written by a different config or data; refused because")
    assert [line.split(":")[0] for line in lines[1:-1]] == [
        "  shards of source zh (re-tokenized or changed files)",
        "  data plan hash",
    ]


def almr(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "60"}
    return subprocess.run([sys.executable, "-m", "almr.cli", *args], capture_output=True, text=True, env=env)


def test_the_command_prints_one_unwrapped_line_and_resuming_a_finished_run_says_so(
    tmp_path: Path, model_dir: Path
) -> None:
    run_dir = tmp_path / "runs [draft]" / ("a-long-run-folder-name-" * 4)
    path = config_file(tmp_path, model_dir, model_dir, run_dir, steps=2)
    done = almr("cpt", str(path), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"2 steps, 128 tokens; checkpoint {run_dir}/checkpoints/step_00000002\n"
    again = almr("cpt", str(path), "--no-progress", "--resume")
    assert again.returncode == 0, again.stderr
    assert again.stdout == (
        f"{run_dir} is already finished: 2 steps, 128 tokens; checkpoint {run_dir}/checkpoints/step_00000002. "
        "Nothing was trained; a new cpt.run_dir starts another run\n"
    )
    events = [json.loads(line)["event"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert events.count("end") == 1 and "resume" not in events

    broken = Path(run_dir / "checkpoints/step_00000002/hf")  # a real model directory, its weights cut short
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    bad = almr("cpt", str(path), "--no-progress", "--set", f"model.name_or_path={broken}", "--set",
               "cpt.random_init=false", "--set", f"cpt.run_dir={tmp_path / 'run2'}")  # fmt: skip
    assert bad.returncode == 2 and bad.stdout == "" and "Traceback" not in bad.stderr
    assert bad.stderr == (
        f"error: model.name_or_path={broken}: a weights file (*.safetensors) is truncated or corrupt (Error while "
        "deserializing header: invalid header length); copy or download it again\n"
    )


def test_only_the_main_process_prints_the_summary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import almr.stages.cpt
    from almr.cli import app
    from almr.train.cpt import CptResult

    result = CptResult(tmp_path, 2, 128, tmp_path / "checkpoints/step_00000002", is_main=False)
    monkeypatch.setattr(almr.stages.cpt, "run_cpt", lambda config, **kwargs: result)
    (tmp_path / "c.yaml").write_text("cpt: {steps: 2}\n")
    assert CliRunner().invoke(app, ["cpt", str(tmp_path / "c.yaml")]).output == ""
    result.is_main = True
    assert CliRunner().invoke(app, ["cpt", str(tmp_path / "c.yaml")]).output == (
        f"2 steps, 128 tokens; checkpoint {tmp_path}/checkpoints/step_00000002\n"
    )
