"""Launchers: local subprocesses (threads, failure with the log's tail, early stop by terminating the
process), the Slurm dry-run script, and the `almr sweep` / `almr sweep status` commands.

The local runs execute tests/fake_cpt.py: a fake `almr cpt` that reads ALMR and LR from the run's
config.yaml and writes metrics.jsonl from a known surface, slowly enough to be watched."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from typer.testing import CliRunner

from almr.cli import app
from almr.config import AlmrConfig
from almr.sweep.launch import LocalLauncher, RunSpec, sbatch_script
from almr.sweep.study import plan_runs, run_sweep
from fake_runs import KEYS

FAKE_CPT = Path(__file__).parents[1] / "fake_cpt.py"


def command(spec: RunSpec) -> list[str]:
    return [sys.executable, str(FAKE_CPT), str(spec.config_path)]


def spec(tmp_path: Path, **sweep: object) -> AlmrConfig:
    raw = {
        "mixture": {"almr": 0.5},
        "cpt": {"probe": {"every_tokens": 1000}},
        "eval": {"average": list(KEYS)},
        "sweep": {"almr": {"values": [0.2, 0.5, 0.8]}, "lr": {"values": [1e-4, 1e-3]}, "parallel": 3,
                  "threads_per_run": 2, "sweep_dir": str(tmp_path / "sweep"), "poll_s": 0.05, **sweep},
    }  # fmt: skip
    return AlmrConfig.model_validate(raw)


def test_local_runs_in_parallel_subprocesses_and_a_failed_run_keeps_its_log(tmp_path: Path) -> None:
    result = run_sweep(spec(tmp_path), LocalLauncher(command))
    by_point = {(r.almr, r.lr): r for r in result.records}
    assert len(by_point) == 6
    for (almr, _), r in by_point.items():
        starts = [json.loads(line) for line in (tmp_path / "sweep/runs" / r.run_id / "metrics.jsonl").open()]
        assert starts[0]["threads"] == "2"
        if almr == 0.8:
            assert r.status == "failed" and r.averaged_metric is None
            assert "exit code 3" in (r.error or "") and "CUDA out of memory (fake)" in (r.error or "")
        else:
            assert r.status == "completed" and r.tokens == 5000 and len(r.probe_history) == 5


def test_early_stopping_terminates_a_local_run_that_falls_behind(tmp_path: Path) -> None:
    # Grid order: ALMR-major, LR ascending; parallel 1. The first slow run (LR 1e-4, far below the
    # ridge here) has nothing to compare with and completes; the second trails the completed runs'
    # median at its first probes and is terminated.
    config = spec(tmp_path, almr={"values": [0.5, 0.6]}, lr={"values": [1e-3, 1e-4]}, parallel=1,
                  pruning={"enabled": True, "n_startup_runs": 1, "percentile": 50})  # fmt: skip
    result = run_sweep(config, LocalLauncher(command))
    by_point = {(r.almr, r.lr): r for r in result.records}
    assert [by_point[p].status for p in [(0.5, 1e-4), (0.5, 1e-3), (0.6, 1e-3)]] == ["completed"] * 3
    pruned = by_point[(0.6, 1e-4)]
    assert pruned.status == "pruned"
    assert 0 < len(pruned.probe_history) < 5 and pruned.tokens < 5000  # partial history kept
    lines = (tmp_path / "sweep/runs" / pruned.run_id / "metrics.jsonl").read_text().splitlines()
    events = [json.loads(x)["event"] for x in lines]
    assert "end" not in events  # the process was stopped before it finished


def test_slurm_dry_run_script_holds_the_resources_and_the_command(tmp_path: Path) -> None:
    slurm = {"partition": "h100", "account": "lm-cpt", "nodes": 4, "gpus_per_node": 8, "cpus_per_task": 96,
             "time_min": 720, "setup": ["source /opt/venv/bin/activate"]}  # fmt: skip
    config = spec(tmp_path, launcher="slurm", slurm=slurm)
    runs = plan_runs(config)
    assert len(runs) == 6 and not (tmp_path / "sweep").exists()  # a dry run writes nothing
    script = sbatch_script(runs[0], config.sweep.slurm, tmp_path / "sweep/slurm/%j")
    for line in ("#SBATCH --nodes=4", "#SBATCH --gpus-per-node=8", "#SBATCH --partition=h100",
                 "#SBATCH --account=lm-cpt", "#SBATCH --time=720", "#SBATCH --cpus-per-task=96",
                 "#SBATCH --ntasks-per-node=1", "source /opt/venv/bin/activate"):  # fmt: skip
        assert line in script
    assert "torchrun --nnodes 4 --nproc_per_node 8 --rdzv_backend c10d" in script
    assert f"-m almr.cli cpt {runs[0].run_dir}/config.yaml" in script and "--resume" in script
    assert "submitit.core._submit" in script


def test_cli_dry_run_and_status(tmp_path: Path) -> None:
    config = spec(tmp_path)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    out = CliRunner().invoke(app, ["sweep", str(path), "--dry-run"], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert out.output.count("-m almr.cli cpt") == 6 and "OMP_NUM_THREADS=2" in out.output
    run_sweep(config.model_copy(update={"sweep": config.sweep.model_copy(update={"almr": config.sweep.almr.model_copy(
        update={"values": [0.2, 0.8]})})}), LocalLauncher(command))  # fmt: skip
    out = CliRunner().invoke(app, ["sweep", "status", str(tmp_path / "sweep")], terminal_width=200)
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "4/4 runs finished (2 completed, 2 failed)" in text
    assert text.count("failed") >= 3 and text.count("completed") >= 3
    bad = CliRunner().invoke(app, ["sweep", str(path), "--set", "sweep.almr.low=0.9", "--set", "sweep.almr.high=0.1"])
    assert bad.exit_code != 0


DRIVER = """
import sys
from almr.config import AlmrConfig
from almr.sweep.launch import LocalLauncher
from almr.sweep.study import run_sweep

config = AlmrConfig.model_validate({
    "mixture": {"almr": 0.5},
    "cpt": {"probe": {"every_tokens": 1000}},
    "sweep": {"almr": {"values": [0.2, 0.5]}, "lr": {"values": [1e-4, 1e-3]}, "sweep_dir": sys.argv[1],
              "poll_s": 0.05},
})
hang = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"
run_sweep(config, LocalLauncher(command=lambda spec: [sys.executable, "-c", hang, str(spec.run_dir / "pid")],
                                grace_s=5))
"""


def test_sigterm_to_the_driver_stops_the_runs_in_flight(tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    driver = subprocess.Popen([sys.executable, str(script), str(tmp_path / "sweep")])
    pid_files: list[Path] = []
    deadline = time.monotonic() + 60
    while not pid_files and time.monotonic() < deadline:
        pid_files = [p for p in (tmp_path / "sweep" / "runs").glob("*/pid") if p.read_text()]
        time.sleep(0.1)
    assert pid_files, "the run never started"
    child = int(pid_files[0].read_text())
    driver.send_signal(signal.SIGTERM)
    assert driver.wait(timeout=30) != 0
    try:  # the run (its own process group) must be gone with the driver, not left running
        os.kill(child, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive
    record = json.loads((pid_files[0].parent / "record.json").read_text())
    assert record["status"] == "running"  # left for a resumed sweep to relaunch
