"""The stage runner on tiny stages made here: skipping by fingerprint, invalidation of exactly the
stages downstream of a change (and the message that says why), --only/--from/--until, resuming an
interrupted pipeline (a stage that raised, a process killed mid-stage), the missing-input error,
the dry run (every stage, Slurm scripts chained by dependencies), a failing stage's log tail."""

import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from almr.config import AlmrConfig
from almr.errors import ConfigError
from almr.run.command import load_for_run, run_command
from almr.run.runner import Stage, StageContext

CALLS: list[tuple[str, bool]] = []


def _stage(name: str, reads: tuple[str, ...], inputs: tuple[str, ...] = (), fail: bool = False) -> Stage:
    def body(ctx: StageContext) -> dict[str, str]:
        CALLS.append((name, ctx.resume))
        print(f"third-party noise from {name}", file=sys.stderr)  # what transformers & co. print
        print(f"a library's print in {name}")
        subprocess.run([sys.executable, "-c", f"import os; os.write(2, b'child of {name} on fd 2')"], check=True)
        if fail and not (ctx.dir / "retry-ok").exists():
            (ctx.dir / "retry-ok").write_text("")
            raise RuntimeError(f"{name} broke")
        total = sum(int(ctx.input_path(i, "n").read_text()) for i in inputs) + 1
        (ctx.dir / "n.txt").write_text(str(total))
        ctx.say(f"{name} made {total}")
        return {"n": "n.txt"}

    return Stage(name, reads, inputs, body, outputs=f"{name}'s number", command=f"almr {name} {{config}}")


def stages(fail: str | None = None) -> list[Stage]:
    return [
        _stage("a", ("world.seed",), fail=fail == "a"),
        _stage("b", ("cpt.optimizer.lr", "cpt.run_dir"), ("a",), fail=fail == "b"),
        _stage("c", ("sft.steps",), ("a",), fail=fail == "c"),
        _stage("d", (), ("b", "c"), fail=fail == "d"),
    ]


def run(out: Path, config: AlmrConfig | None = None, fail: str | None = None, **kw: object) -> tuple[int, str]:
    CALLS.clear()
    text = io.StringIO()
    console = Console(file=text, width=300)
    code = run_command("test", out, stages=stages(fail), config=config or AlmrConfig(), console=console, live=False,
                       **kw)  # type: ignore[arg-type]  # fmt: skip
    return code, text.getvalue()


def test_a_done_pipeline_is_skipped_and_a_change_reruns_exactly_its_stages(tmp_path: Path) -> None:
    code, text = run(tmp_path)
    assert code == 0 and [c for c, _ in CALLS] == ["a", "b", "c", "d"]
    assert (tmp_path / "d" / "n.txt").read_text() == "5"  # (a=1 → b=2, c=2) → d = 5
    record = json.loads((tmp_path / "b" / "stage.json").read_text())
    assert record["status"] == "done" and record["outputs"] == {"n": "n.txt"} and record["seconds"] >= 0
    assert set(record["inputs"]) == {"a"}

    code, text = run(tmp_path)
    assert code == 0 and CALLS == []
    assert text.count("done, skipped") == 4

    # a key that does not change results (the run folder) reruns nothing
    code, text = run(tmp_path, AlmrConfig(cpt={"run_dir": "elsewhere"}))
    assert CALLS == []

    changed = AlmrConfig(cpt={"optimizer": {"lr": 0.5}})
    code, text = run(tmp_path, changed)
    assert [c for c, _ in CALLS] == ["b", "d"]  # a and c read nothing that changed
    assert "b: reruns: config cpt.optimizer.lr changed (3e-05 → 0.5)" in text
    assert "d: reruns: input b changed" in text


def test_selection_and_the_missing_input_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"stage b needs the output of stage a, which has not run.*--until a"):
        run(tmp_path, only=["b"])
    assert CALLS == []  # refused before any stage ran
    assert run(tmp_path, until="b")[0] == 0
    assert [c for c, _ in CALLS] == ["a", "b"]
    assert run(tmp_path, only=["c"])[0] == 0
    assert [c for c, _ in CALLS] == ["c"]
    assert run(tmp_path, start="b")[0] == 0
    assert [c for c, _ in CALLS] == ["d"]  # b and c are done
    with pytest.raises(ConfigError, match="no stage named 'x'"):
        run(tmp_path, only=["x"])
    with pytest.raises(ConfigError, match="--from d comes after --until b"):
        run(tmp_path, start="d", until="b")


def test_a_failed_stage_stops_with_its_log_tail_and_resumes_there(tmp_path: Path) -> None:
    code, text = run(tmp_path, fail="c")
    assert code == 1
    assert [c for c, _ in CALLS] == ["a", "b", "c"]  # d never started
    assert "stage c failed: RuntimeError: c broke" in text
    assert "third-party noise from c" in text  # the log's tail
    assert "rerun it (done stages are skipped): almr run test --out" in text and "--from c" in text
    log = (tmp_path / "a" / "log.txt").read_text()
    for noise in ("third-party noise from a", "a library's print in a", "child of a on fd 2"):
        assert noise not in text and noise in log  # a's output stayed in a's log
    assert json.loads((tmp_path / "c" / "stage.json").read_text())["status"] == "failed"

    code, text = run(tmp_path, fail="c")
    assert code == 0
    assert CALLS == [("c", True), ("d", False)]  # c continues (resume=True), a and b are skipped
    assert "c: resumes (failed before; continues)" in text


KILLED = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from almr.config import AlmrConfig
from almr.run.command import run_command
from almr.run.runner import Stage
from run.test_runner import stages

def killed(ctx):
    if not (ctx.dir / "second").exists():
        (ctx.dir / "second").write_text("")
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer or a lost node would
    (ctx.dir / "resumed.txt").write_text(str(ctx.resume))
    return {{"n": "resumed.txt"}}

table = stages()[:2] + [Stage("k", (), ("b",), killed)]
sys.exit(run_command("test", Path({out!r}), stages=table, config=AlmrConfig(), live=False))
"""


def test_a_killed_process_resumes_at_the_stage_it_was_in(tmp_path: Path) -> None:
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(KILLED.format(tests=str(Path(__file__).parents[1]), out=str(tmp_path / "o"))))
    first = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert first.returncode == -9
    assert json.loads((tmp_path / "o" / "k" / "stage.json").read_text())["status"] == "running"
    second = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "k: resumes (running before; continues)" in second.stdout
    assert "a: done, skipped" in second.stdout and "b: done, skipped" in second.stdout
    assert (tmp_path / "o" / "k" / "resumed.txt").read_text() == "True"


def test_dry_run_lists_every_stage_and_chains_slurm_jobs(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "almr.cli", "run", "demo", "--out", str(tmp_path / "p"), "--dry-run",
         "--set", "sweep.launcher=slurm", "--set", "sweep.slurm.partition=gpu", "--set", "parallel.gpus_per_node=8",
         "--set", "cpt.batch.global_batch_size=128", "--set", "sft.batch.global_batch_size=64",
         "--set", "dpo.batch.global_batch_size=64"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    from almr.run.stages import STAGES

    for stage in STAGES:
        assert f"\n{stage.name:<10} todo" in out.stdout
        assert f"#SBATCH --job-name=almr-{stage.name}\n" in out.stdout
    assert "#SBATCH --partition=gpu" in out.stdout
    assert "srun --kill-on-bad-exit=1 torchrun --nnodes 1 --nproc_per_node 8" in out.stdout  # the CPT: almr's trainer
    # TRL's trainers under accelerate with FSDP2; each node's task expands its own $SLURM_NODEID
    fsdp = tmp_path / "p" / "slurm" / "fsdp2.yaml"
    assert f"srun --kill-on-bad-exit=1 bash -c 'accelerate launch --config_file {fsdp} --num_machines 1 " \
           "--num_processes 8 --machine_rank $SLURM_NODEID" in out.stdout  # fmt: skip
    assert f"# {fsdp}\n" in out.stdout and "fsdp_version: 2" in out.stdout
    assert "jid_cpt=$(sbatch --parsable --dependency=afterok:$jid_world:$jid_base:$jid_frontier " in out.stdout
    assert "jid_world=$(sbatch --parsable " in out.stdout  # the first job waits for nothing
    assert "nothing was started" in out.stdout
    assert not (tmp_path / "p").exists()


def test_a_key_no_stage_reads_is_refused(tmp_path: Path) -> None:
    from almr.run.stages import STAGES

    with pytest.raises(ConfigError, match=r"no stage of `almr run` reads serve\.port"):
        load_for_run("demo", ["serve.port=9000"], STAGES)
    assert load_for_run("demo", ["cpt.optimizer.lr=0.01"], STAGES).cpt.optimizer.lr == 0.01


def test_slurm_submits_each_stage_after_its_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "sbatch-calls.txt"
    sbatch = bin_dir / "sbatch"  # a stand-in that numbers its jobs from 100 and records its arguments
    sbatch.write_text(f'#!/bin/bash\necho "$*" >> {calls}\necho $(( 99 + $(wc -l < {calls}) ))\n')
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.delenv("ALMR_STAGE_JOB", raising=False)
    config = AlmrConfig(sweep={"launcher": "slurm", "slurm": {"partition": "gpu"}})
    with pytest.raises(ConfigError, match="stage b needs the output of stage a"):
        run(tmp_path / "p", config, start="b")  # refused before anything is submitted
    assert not calls.exists()
    code, text = run(tmp_path / "p", config)
    assert code == 0 and CALLS == []  # submitted, not run here
    lines = calls.read_text().splitlines()
    assert [line.rsplit("/", 1)[1] for line in lines] == ["a.sbatch", "b.sbatch", "c.sbatch", "d.sbatch"]
    assert lines[0].startswith("--parsable ") and "--dependency" not in lines[0]
    assert "--dependency=afterok:100 " in lines[1] and "--dependency=afterok:100 " in lines[2]
    assert "--dependency=afterok:101:102 " in lines[3]  # d waits for b and c
    script = (tmp_path / "p" / "slurm" / "b.sbatch").read_text()
    assert "#SBATCH --partition=gpu" in script and "--only b" in script and "export ALMR_STAGE_JOB=1" in script
    assert "b: job 101" in text


def test_in_a_multi_process_job_only_the_first_process_clears_a_stale_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every process of a torchrun/accelerate stage job runs `almr run --only STAGE`; another
    process must neither clear the stage's folder nor start before the first one wrote its record."""
    assert run(tmp_path, until="a")[0] == 0
    keep = tmp_path / "a" / "made-by-the-first-process.txt"
    keep.write_text("in use")
    changed = AlmrConfig(world={"seed": 5})
    from almr.run.runner import Pipeline

    fingerprint = Pipeline(stages(), changed, tmp_path).states()["a"].fingerprint
    monkeypatch.setenv("RANK", "1")

    def first_process_starts() -> None:  # what process 0 does: clear (here: keep a file), write its record
        time.sleep(0.5)
        record = json.loads((tmp_path / "a" / "stage.json").read_text())
        record.update(fingerprint=fingerprint, status="running")
        (tmp_path / "a" / "stage.json").write_text(json.dumps(record))

    thread = threading.Thread(target=first_process_starts)
    thread.start()
    started = time.monotonic()
    code, _ = run(tmp_path, changed, only=["a"])
    thread.join()
    assert code == 0 and [c for c, _ in CALLS] == ["a"]
    assert time.monotonic() - started >= 0.5  # it waited for the first process's record
    assert keep.read_text() == "in use"  # and cleared nothing
    assert json.loads((tmp_path / "a" / "stage.json").read_text())["status"] == "running"  # nor wrote the record
