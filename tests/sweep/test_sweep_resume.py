"""A resumed adaptive study never repeats a point (issue #18, item 1): the driver is a real process with
the real Optuna storage (SQLite) and the local launcher, killed with SIGKILL or interrupted with Ctrl-C
(SIGINT) after two runs completed while two were in flight, then resumed. The runs are fake `almr cpt`
processes (FAKE below): r000 and r001 end at once, the others take ~12 s (long enough that the interrupt
finds them in flight on a loaded machine)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from almr.config import AlmrConfig
from almr.sweep.design import initial_point

FAKE = """
import json, sys, time
from pathlib import Path
import yaml
config = yaml.safe_load(Path(sys.argv[1]).read_text())
almr, lr, run_dir = config["mixture"]["almr"], config["cpt"]["optimizer"]["lr"], Path(config["cpt"]["run_dir"])
pause = 0.0 if run_dir.name[:4] in ("r000", "r001") else 2.5
value = 40 + 10 * almr - abs(lr - 1e-4) * 1e4
with (run_dir / "metrics.jsonl").open("a") as out:
    out.write(json.dumps({"event": "start", "step": 0, "tokens": 0}) + "\\n")
    out.flush()
    for step in range(1, 6):
        time.sleep(pause)
        scores = {"world_mmlu": value, "world_ceval": value}
        out.write(json.dumps({"event": "probe", "step": step, "tokens": step * 1000, "scores": scores}) + "\\n")
        out.flush()
    out.write(json.dumps({"event": "end", "step": 5, "tokens": 5000}) + "\\n")
"""

DRIVER = """
import signal, sys
# a shell that starts a job in the background (nohup … &) makes it ignore SIGINT, and Python keeps an
# ignored SIGINT ignored: restore Ctrl-C as a terminal gives it
signal.signal(signal.SIGINT, signal.default_int_handler)
from almr.config import AlmrConfig
from almr.sweep.launch import LocalLauncher
from almr.sweep.study import run_sweep

config = AlmrConfig.model_validate_json(open(sys.argv[1]).read())
fake = sys.argv[2]
run_sweep(config, LocalLauncher(command=lambda spec: [sys.executable, fake, str(spec.config_path)], grace_s=5),
          log=lambda line: print(line, flush=True))
"""


def spec(tmp_path: Path) -> AlmrConfig:
    return AlmrConfig.model_validate({
        "mixture": {"almr": 0.5},
        "cpt": {"probe": {"every_tokens": 1000}},
        "eval": {"average": ["world_mmlu", "world_ceval"]},
        "sweep": {"design": "adaptive", "almr": {"low": 0.0, "high": 1.0}, "lr": {"low": 1e-5, "high": 1e-3},
                  "n_initial": 4, "max_runs": 6, "parallel": 2, "sweep_dir": str(tmp_path / "sweep"),
                  "poll_s": 0.05, "seed": 3},
    })  # fmt: skip


def records(sweep_dir: Path) -> dict[str, dict]:
    out = {}
    for path in sorted((sweep_dir / "runs").glob("*/record.json")):
        try:
            out[path.parent.name] = json.loads(path.read_text())
        except json.JSONDecodeError:  # being replaced: read again at the next look
            continue
    return out


def drive(tmp_path: Path) -> subprocess.Popen:
    config, fake, driver = tmp_path / "spec.json", tmp_path / "fake_cpt.py", tmp_path / "driver.py"
    config.write_text(spec(tmp_path).model_dump_json())
    fake.write_text(FAKE)
    driver.write_text(DRIVER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([sys.executable, str(driver), str(config), str(fake)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def wait_for(what, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow  # ~30 s each: two driver processes and six fake runs
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "ctrl-c"])
def test_a_resumed_adaptive_study_never_repeats_a_point(tmp_path: Path, how: signal.Signals) -> None:
    sweep_dir = tmp_path / "sweep"
    first = drive(tmp_path)

    def two_done_two_running() -> bool:
        recs = records(sweep_dir)
        done = sum(r["status"] == "completed" for r in recs.values())
        running = [rid for rid, r in recs.items() if r["status"] == "running"]
        return done == 2 and len(running) == 2 and all((sweep_dir / "runs" / rid / "metrics.jsonl").is_file()
                                                       for rid in running)  # fmt: skip

    wait_for(two_done_two_running)
    first.send_signal(how)
    first.wait(timeout=30)
    in_flight = sorted(rid for rid, r in records(sweep_dir).items() if r["status"] == "running")
    assert [rid[:4] for rid in in_flight] == ["r002", "r003"]

    started = time.monotonic()
    second = drive(tmp_path)
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 0, out
    assert time.monotonic() - started < 60  # not after the 120 s a silent driver's runs wait

    recs = records(sweep_dir)
    points = [(r["almr"], r["lr"]) for r in recs.values()]
    assert len(recs) == 6 and {r["status"] for r in recs.values()} == {"completed"}
    assert len(set(points)) == 6  # no point twice
    sweep = spec(tmp_path).sweep
    expected = [initial_point(sweep, i) for i in range(4)]
    assert [(r["almr"], r["lr"]) for r in list(recs.values())[:4]] == [(p["almr"], p["lr"]) for p in expected]
    study = optuna.load_study(study_name="almr-sweep", storage=f"sqlite:///{sweep_dir / 'study.db'}")
    assert len(study.trials) == 6 and {t.state.name for t in study.trials} == {"COMPLETE"}
    for rid in in_flight:
        log = (sweep_dir / "runs" / rid / "run.log").read_text()
        starts = [line for line in log.splitlines() if line.startswith("# ")]
        events = [json.loads(x)["event"] for x in (sweep_dir / "runs" / rid / "metrics.jsonl").read_text().splitlines()]
        if how == signal.SIGKILL:
            # the run outlived its driver and was reattached, not started a second time
            assert len(starts) == 1 and f"reattach {rid}" in out
            assert events.count("start") == 1 and events[-1] == "end"
        else:  # Ctrl-C stopped it; the resumed driver started it again in its folder
            assert len(starts) == 2 and f"start {rid}" in out
            assert events.count("start") == 2 and events[-1] == "end"
