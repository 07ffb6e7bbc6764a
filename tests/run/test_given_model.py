"""`almr run` on a config that names its base model (model.name_or_path) and its own data, as a
user with Llama-3 weights runs it: no world is built, the world stage tokenizes the config's
sources with the model's tokenizer, the base stage is that model as it is, and each later stage
reads the data sets the config names. A local model directory and the small world's files stand
in for Llama-3 and the paper's data (nothing comes from a hub). A selection whose stages lack a data
set is refused, naming the keys, before anything is written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_vllm_engine import fake_vllm

from almr.evaluate.harness import run_eval
from almr.sweep.records import load_records
from worlds import save_world_model


def user_config(world: Path, tmp_path: Path) -> Path:
    """A config file as a user writes it for their own model: every path their own."""
    model = save_world_model(world, tmp_path / "my-model")
    manifest = json.loads((world / "world.json").read_text())
    sources = [{"name": name, "language": info["language"], "domain": info["domain"],
                "train": [str(world / info["train"])], "valid": [str(world / info["valid"])]}
               for name, info in manifest["sources"].items()]  # fmt: skip
    esc = json.loads((world / "esc" / "train.json").read_text())
    dialogues = tmp_path / "logged.jsonl"
    with dialogues.open("w", encoding="utf-8") as out:
        for i, d in enumerate(d for d in esc if d.get("lang") == "zh"):
            turn = next(t["content"] for t in d["dialog"] if t["speaker"] == "seeker")
            out.write(json.dumps({"id": f"log-{i}", "turns": [{"role": "user", "content": turn}]}) + "\n")
            if i == 3:
                break
    raw = {
        "model": {"name_or_path": str(model), "dtype": "float32"},
        "data": {"shard_dir": str(tmp_path / "shards"), "sources": sources},
        "mixture": {"additional_language": "zh", "sub_weights": {"en": 0.74, "math": 0.13, "code": 0.13}},
        "cpt": {"batch": {"micro_batch_size": 4, "global_batch_size": 4, "seq_len": 64}, "total_tokens": 1024,
                "validation": {"every_steps": 2, "max_sequences": 8}, "probe": {"every_tokens": 512},
                "schedule": {"warmup_steps": 0}},
        "eval": {"data_dir": str(world), "limit": 3, "max_gen_toks": 8, "probe": {"items_per_task": 4}},
        "sweep": {"design": "grid", "almr": {"values": [0.2, 0.5, 0.8]},
                  "lr": {"values": [1e-3, 1e-2], "low": 1e-4, "high": 1e-1}, "parallel": 2},
        "frontier": {"n_bootstrap": 5, "n_posterior_samples": 50, "grid_size": 11, "dcpt_starts": 2,
                     "n_restarts_optimizer": 0},
        "sft": {"steps": 2, "batch": {"micro_batch_size": 2, "global_batch_size": 2, "seq_len": 128},
                "datasets": [{"path": str(world / "sft" / "train.jsonl"), "language_field": "lang"}]},
        "dpo": {"steps": 2, "batch": {"micro_batch_size": 2, "global_batch_size": 2, "seq_len": 128},
                "datasets": [{"path": str(world / "dpo" / "train.jsonl"), "format": "preference",
                              "language_field": "lang"}]},
        "empathy": {"steps": 2, "datasets": [{"path": str(world / "esc" / "train.json"), "format": "esconv"}]},
        "baselines": {"instruct": {"model": str(model)}},
        "pairwise": {"max_new_tokens": 4},
        "pipeline": {"dialogues": str(dialogues), "eval_tasks": ["world_ceval", "world_zh_share"],
                     "judge": False, "zh_questions": 2, "zh_new_tokens": 4},
    }  # fmt: skip
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def almr_run(config: Path, out: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": path or os.environ["PATH"]}
    return subprocess.run([sys.executable, "-m", "almr.cli", "run", str(config), "--out", str(out), *args],
                          capture_output=True, text=True, env=env, timeout=1500)  # fmt: skip


def test_a_stage_without_its_data_set_is_refused_before_anything_runs(small_world: Path, tmp_path: Path) -> None:
    config = user_config(small_world, tmp_path)
    raw = yaml.safe_load(config.read_text())
    sft = raw["sft"].pop("datasets")
    del raw["pipeline"]["dialogues"]
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    done = almr_run(config, out, "--until", "empathy")
    assert done.returncode == 2, done.stdout + done.stderr
    said = done.stdout + done.stderr
    assert "sft.datasets: not set; C-SFT's chat data sets (the sft stage)" in said
    assert "pipeline.dialogues: not set; the pairwise study's dialogues (JSONL) (the empathy stage)" in said
    assert not out.exists() and not (tmp_path / "shards").exists()  # refused before any compute
    until_cpt = almr_run(config, out, "--until", "frontier", "--dry-run")
    assert until_cpt.returncode == 0 and "would be refused" not in until_cpt.stdout
    raw["sft"]["datasets"] = sft
    del raw["dpo"]["datasets"][0]["language_field"]
    config.write_text(yaml.safe_dump(raw))
    whole = almr_run(config, out, "--dry-run")
    assert "would be refused: no dpo.datasets entry is tagged language: zh" in whole.stdout
    # without the world's files, the world's default probe and the eval tasks are refused up front too
    del raw["eval"]["data_dir"]
    config.write_text(yaml.safe_dump(raw))
    bare = almr_run(config, out, "--dry-run").stdout
    assert "would be refused: eval.probe.tasks: the defaults are the demo world's" in bare
    assert "would be refused: ablation.tasks: the defaults are the demo world's" in bare
    assert "would be refused: pipeline.eval_tasks (eval.data_dir=None): " in bare and "world_ceval" in bare


@pytest.mark.slow
def test_the_pipeline_runs_on_a_model_the_config_names(small_world: Path, tmp_path: Path) -> None:
    config = user_config(small_world, tmp_path)
    raw = yaml.safe_load(config.read_text())
    raw["pipeline"] |= {"engine": "vllm", "judge": True}  # each chat model behind (a stand-in) vllm serve
    config.write_text(yaml.safe_dump(raw))
    fake_vllm(tmp_path / "bin", tmp_path / "vllm-calls.txt")
    out = tmp_path / "out"
    done = almr_run(config, out, path=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not (out / "world" / "world.json").exists()  # no demo world: the config's data, tokenized
    world = json.loads((out / "world" / "stage.json").read_text())
    assert world["outputs"]["shards"] == str((tmp_path / "shards").resolve())  # outside OUT: absolute
    assert {p.name for p in (tmp_path / "shards").iterdir() if p.is_dir()} == {"en", "zh", "math", "code"}
    base = json.loads((out / "base" / "stage.json").read_text())
    assert base["outputs"]["model"] == str((tmp_path / "my-model").resolve())
    assert not (out / "base" / "run").exists()  # the given model is used as it is, not pretrained
    records = load_records(out / "study" / "sweep")
    assert len(records) == 6 and all(r.status == "completed" for r in records)
    labels = ("base", "cpt", "c-sft", "c-dpo", "c-sft-empathy", "cpt-fixed", "instruct")
    for label in labels:
        result = json.loads((out / "eval" / f"{label}.json").read_text())
        assert set(result["tasks"]) == {"world_ceval", "world_zh_share"}, label  # the world's: no chat tasks
    # scored through its (stand-in) vllm server, the CPT model gets what it gets in this process
    cpt_model = out / "cpt" / json.loads((out / "cpt" / "stage.json").read_text())["outputs"]["model"]
    here = run_eval(str(cpt_model), tasks=["world_ceval", "world_zh_share"], limit=3, data_dir=small_world,
                    max_gen_toks=8, dtype="float32")  # fmt: skip
    assert json.loads((out / "eval" / "cpt.json").read_text())["tasks"] == here["tasks"]
    copied = (out / "empathy" / "data" / "dialogues.jsonl").read_text().splitlines()
    assert len(copied) == 4
    pairwise = json.loads((out / "pairwise" / "pairwise_report.json").read_text())
    assert pairwise["items"] > 0 and set(pairwise["models"]) == {"c-sft-empathy", "c-dpo", "instruct"}
    calls = (tmp_path / "vllm-calls.txt").read_text().splitlines()
    served = [(line.split("--served-model-name ")[1].split()[0], line.split("--gpu-memory-utilization ")[1])
              for line in calls]  # fmt: skip
    # the eval stage: every model behind its own server, one at a time with the whole GPU
    assert sorted(served[:7]) == sorted((label, "0.900") for label in labels)
    # the pairwise stage: the compared models at once, sharing it
    assert sorted(served[7:]) == [("c-dpo", "0.300"), ("c-sft-empathy", "0.300"), ("instruct", "0.300")]
    assert "LLM judge" in done.stdout  # the empathy model's own server judged
    report = (out / "report" / "report.md").read_text()
    assert "Table 4" in report and "Table 8" in report
