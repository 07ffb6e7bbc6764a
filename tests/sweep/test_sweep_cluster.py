"""A study at cluster scale (issue #18): the Slurm script (unwrapped when piped, a port per job,
resources, requeue), storage URLs checked before any run, local runs on GPU nodes (torchrun, disjoint
GPUs, free ports), a run folder never owned twice, launches that fail retried by the next attempt, and
the checks of model, shards and plan before any run (issue #19, item 4). The CLI runs as a subprocess."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from almr.config import AlmrConfig
from almr.errors import ConfigError
from almr.sweep.launch import LocalLauncher, RunSpec, cpt_command, lock_run_folder
from almr.sweep.storage import check_storage, storage_url
from almr.sweep.study import local_gpus, plan_runs, run_sweep
from fake_runs import KEYS

FAKE_CPT = Path(__file__).parents[1] / "fake_cpt.py"
CLI = [sys.executable, "-m", "almr.cli"]


def spec(tmp_path: Path, **sweep: object) -> AlmrConfig:
    raw = {
        "mixture": {"almr": 0.5},
        "cpt": {"probe": {"every_tokens": 1000}},
        "eval": {"average": list(KEYS)},
        "sweep": {"almr": {"values": [0.2, 0.5]}, "lr": {"values": [1e-4, 1e-3]}, "parallel": 2,
                  "threads_per_run": 1, "sweep_dir": str(tmp_path / "sweep"), "poll_s": 0.05, **sweep},
    }  # fmt: skip
    return AlmrConfig.model_validate(raw)


def write_spec(tmp_path: Path, config: AlmrConfig) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="80")  # as narrow as a pipe gets: nothing may wrap
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=120)


# --------------------------------------------------------------------------- Slurm


def test_piped_slurm_dry_run_is_a_script_as_it_runs(tmp_path: Path) -> None:
    slurm = {"partition": "h100", "nodes": 2, "gpus_per_node": 8, "cpus_per_task": 96, "mem": "0", "exclusive": True,
             "signal_s": 120, "time_min": 60, "setup": ["source /opt/venv/bin/activate"]}  # fmt: skip
    path = write_spec(tmp_path, spec(tmp_path, launcher="slurm", slurm=slurm))
    out = cli("sweep", str(path), "--dry-run")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    run_dir = tmp_path / "sweep" / "runs"
    command = next(line for line in lines if line.startswith("export ALMR_RUN_COMMAND="))
    assert command == (
        "export ALMR_RUN_COMMAND='torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint "
        '"$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1):$(( 29500 + SLURM_JOB_ID % 10000 ))" '
        f'--rdzv_id "$SLURM_JOB_ID" -m almr.cli cpt {run_dir}/r000-almr0.2000-lr1.000e-04/config.yaml --no-progress '
        f"$(ls {run_dir}/r000-almr0.2000-lr1.000e-04/checkpoints/step_*/complete >/dev/null 2>&1 && echo --resume)'"
    )
    script = lines[lines.index("# r000-almr0.2000-lr1.000e-04") + 1 : lines.index("# r001-almr0.2000-lr1.000e-03")]
    for wanted in ("#SBATCH --cpus-per-task=96", "#SBATCH --mem=0", "#SBATCH --exclusive", "#SBATCH --requeue",
                   "#SBATCH --signal=USR2@120", "#SBATCH --nodes=2", "#SBATCH --time=60"):  # fmt: skip
        assert wanted in script
    assert lines[-1] == "dry run: 4 run(s) (all runs); nothing launched"
    assert not (tmp_path / "sweep").exists()
    no_requeue = cli("sweep", str(path), "--dry-run", "--set", "sweep.slurm.requeue=false")
    assert "#SBATCH --requeue" not in no_requeue.stdout and "#SBATCH --exclusive" in no_requeue.stdout


# --------------------------------------------------------------------------- storage


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not-a-url", "sweep.storage: 'not-a-url' is not a database URL; use sqlite:///PATH/study.db or "
                      "postgresql://USER:PASSWORD@HOST:5432/DBNAME"),
        ("oracle2://u@h/db", "sweep.storage: oracle2://u@h/db names an unknown database kind 'oracle2'; use "
                             "sqlite:///PATH/study.db or postgresql://USER:PASSWORD@HOST:5432/DBNAME"),
        ("mysql://u:pw@h/db", "sweep.storage: mysql://u:***@h/db needs a database driver that is not installed "
                              "(No module named 'MySQLdb'); pip install 'pymysql' and use mysql+pymysql://"),
    ],
)  # fmt: skip
def test_a_storage_url_that_cannot_work_is_refused_by_the_dry_run(tmp_path: Path, url: str, message: str) -> None:
    path = write_spec(tmp_path, spec(tmp_path))
    out = cli("sweep", str(path), "--dry-run", "--set", f"sweep.storage={url}")
    assert out.returncode == 2 and out.stdout == ""
    assert " ".join(out.stderr.split()) == f"error: {message}"


def test_an_unreachable_database_stops_the_study_before_any_run(tmp_path: Path) -> None:
    config = spec(tmp_path, storage="postgresql://almr:secret@127.0.0.1:9/studies")
    started: list[str] = []
    with pytest.raises(ConfigError) as err:
        run_sweep(config, LocalLauncher(command=lambda s: started.append(s.run_id) or []))
    assert str(err.value).startswith(
        "sweep.storage: cannot open postgresql://almr:***@127.0.0.1:9/studies: connection failed: connection to "
        'server at "127.0.0.1", port 9 failed: Connection refused'
    )
    assert "secret" not in str(err.value) and started == [] and not (tmp_path / "sweep").exists()
    assert storage_url(config.sweep) == "postgresql+psycopg://almr:secret@127.0.0.1:9/studies"  # psycopg 3


# --------------------------------------------------------------------------- local runs on GPU nodes


def test_local_gpus_are_shared_out_in_disjoint_slots(tmp_path: Path) -> None:
    eight = lambda: list(range(8))  # noqa: E731
    assert local_gpus(spec(tmp_path, parallel=2), eight) == (list(range(8)), 4)
    assert local_gpus(spec(tmp_path, parallel=2, gpus_per_run=1, gpus=[6, 7]), eight) == ([6, 7], 1)
    assert local_gpus(spec(tmp_path, parallel=4), list) == ([], 0)  # no GPU: one plain process per run
    cpu = spec(tmp_path, parallel=2).model_copy(update={"cpt": AlmrConfig().cpt.model_copy(update={"device": "cpu"})})
    assert local_gpus(cpu, eight) == ([], 0)
    with pytest.raises(ConfigError, match=r"sweep\.gpus_per_run=3 × sweep\.parallel=3 needs 9 GPUs, but 8 are"):
        local_gpus(spec(tmp_path, parallel=3, gpus_per_run=3), eight)
    with pytest.raises(ConfigError, match=r"sweep\.parallel=16 runs in flight but only 8 GPUs"):
        local_gpus(spec(tmp_path, parallel=16), eight)


def test_a_local_run_with_gpus_trains_under_torchrun_with_its_own_port(tmp_path: Path) -> None:
    run = RunSpec("r007", 0.5, 1e-4, tmp_path / "r007", spec(tmp_path), gpus=[2, 3], port=41234)
    assert cpt_command(run)[1:] == [
        "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2", "--rdzv_backend", "c10d",
        "--rdzv_endpoint", "127.0.0.1:41234", "--rdzv_id", "r007",
        "-m", "almr.cli", "cpt", str(tmp_path / "r007" / "config.yaml"), "--no-progress",
    ]  # fmt: skip
    cpu = RunSpec("r007", 0.5, 1e-4, tmp_path / "r007", spec(tmp_path), resume=True)
    assert cpt_command(cpu)[1:] == ["-m", "almr.cli", "cpt", str(tmp_path / "r007" / "config.yaml"),
                                    "--no-progress", "--resume"]  # fmt: skip
    dry = plan_runs(spec(tmp_path, gpus=[0, 1, 2, 3], gpus_per_run=2))
    assert [s.gpus for s in dry] == [[0, 1], [2, 3], [0, 1], [2, 3]]


ENV_DUMP = "import json, os, sys, time; time.sleep(0.3); json.dump(dict(os.environ), open(sys.argv[1], 'w'))"


def test_runs_in_flight_never_share_a_gpu_or_a_port(tmp_path: Path) -> None:
    seen: dict[str, list[str]] = {}

    def command(run: RunSpec) -> list[str]:
        seen[run.run_id] = cpt_command(run)  # what would run; the stand-in writes its environment and the metrics
        return [sys.executable, "-c", ENV_DUMP + "; " + FAKE, str(run.run_dir / "env.json"), str(run.config_path)]

    config = spec(tmp_path, almr={"values": [0.2, 0.5, 0.6]}, parallel=2, gpus_per_run=2, gpus=[4, 5, 6, 7])
    launcher = LocalLauncher(command=command, gpus=[4, 5, 6, 7], gpus_per_run=2, parallel=2)
    result = run_sweep(config, launcher)
    assert [r.status for r in result.records] == ["completed"] * 6
    spans = []
    for r in result.records:
        env = json.loads((tmp_path / "sweep" / "runs" / r.run_id / "env.json").read_text())
        port = seen[r.run_id][seen[r.run_id].index("--rdzv_endpoint") + 1]
        log = (tmp_path / "sweep" / "runs" / r.run_id / "metrics.jsonl").stat()
        spans.append((env["CUDA_VISIBLE_DEVICES"], port, log.st_mtime))
        assert env["CUDA_VISIBLE_DEVICES"] in ("4,5", "6,7") and env["OMP_NUM_THREADS"] == "1"
    assert {g for g, _, _ in spans} == {"4,5", "6,7"}
    assert len({p for _, p, _ in spans}) >= 2  # a free port per launch


FAKE = (
    "import json, yaml; c = yaml.safe_load(open(sys.argv[2])); d = c['cpt']['run_dir']; v = 40 + c['mixture']['almr']; "
    "open(d + '/metrics.jsonl', 'w').write(''.join(json.dumps(e) + chr(10) for e in ["
    "{'event': 'start', 'step': 0, 'tokens': 0}, "
    "{'event': 'probe', 'step': 1, 'tokens': 1000, 'scores': {'world_mmlu': v, 'world_ceval': v}}, "
    "{'event': 'end', 'step': 1, 'tokens': 1000}]))"
)


# --------------------------------------------------------------------------- the run folder's owner


def test_a_run_folder_another_process_owns_is_never_started_and_the_next_attempt_retries_it(tmp_path: Path) -> None:
    config = spec(tmp_path)
    busy = tmp_path / "sweep" / "runs" / "r001-almr0.2000-lr1.000e-03"
    busy.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(busy / "owner.lock")], stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    (busy / "owner.json").write_text(json.dumps({"host": "gpu-17", "driver": "d" * 32, "driver_pid": 4242,
                                                 "run_pid": 4343, "started": "2026-01-02T03:04:05"}))  # fmt: skip
    command = lambda run: [sys.executable, "-c", "import sys; " + FAKE, "-", str(run.config_path)]  # noqa: E731
    try:
        first = run_sweep(config, LocalLauncher(command=command))
    finally:
        holder.kill()
        holder.wait()
    assert [r.run_id for r in first.unstarted] == [busy.name]
    assert first.unstarted[0].error == (
        f"could not start: RunFolderBusy: {busy} is owned by driver dddddddddddd (pid 4242) on gpu-17, run pid 4343, "
        "since 2026-01-02T03:04:05; not started twice"
    )
    assert first.unstarted[0].status == "pending" and len(first.records) == 2  # nothing more was launched
    second = run_sweep(config, LocalLauncher(command=command))
    assert [r.status for r in second.records] == ["completed"] * 4 and second.unstarted == []
    assert lock_run_folder(busy) is not None  # the lock is free again once the runs ended


# --------------------------------------------------------------------------- before any run


@pytest.fixture(scope="module")
def world_inputs(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from almr.data.tokenize import tokenize_sources
    from almr.world.build import world_data
    from worlds import save_world_model

    root = tmp_path_factory.mktemp("inputs")
    model = save_world_model(small_world, root / "model")
    data = world_data(small_world, root / "shards").model_copy(update={"workers": 1})
    data = data.model_copy(update={"sources": [s for s in data.sources if s.name in ("en", "zh")]})
    tokenize_sources(data, progress=False, log=lambda m: None)
    return {"model": str(model), "data": data.model_dump(mode="json")}


def real_spec(tmp_path: Path, inputs: dict, **sweep: object) -> AlmrConfig:
    return AlmrConfig.model_validate({
        "model": {"name_or_path": inputs["model"]},
        "data": inputs["data"],
        "mixture": {"almr": 0.5, "additional_language": "zh", "token_budget": 20_000, "max_epochs": 100},
        "cpt": {"validation": {"every_steps": 1}, "device": "cpu",
                "batch": {"micro_batch_size": 4, "global_batch_size": 4, "seq_len": 64}},
        "sweep": {"almr": {"values": [0.1, 0.9]}, "lr": {"values": [1e-4, 1e-3]}, "parallel": 1,
                  "sweep_dir": str(tmp_path / "sweep"), "poll_s": 0.05, **sweep},
    })  # fmt: skip


@pytest.mark.slow  # several CLI processes that load torch and transformers (~60 s here)
def test_model_shards_and_plan_are_checked_once_before_any_run(tmp_path: Path, world_inputs: dict) -> None:
    config = real_spec(tmp_path, world_inputs)
    missing_model = write_spec(tmp_path, config)
    out = cli("sweep", str(missing_model), "--set", f"model.name_or_path={tmp_path / 'nope'}")
    assert out.returncode == 2 and not (tmp_path / "sweep").exists()
    assert " ".join(out.stderr.split()) == (
        f"error: model.name_or_path={tmp_path / 'nope'}: no such directory; point it at a Hugging Face model directory"
    )
    out = cli("sweep", str(missing_model), "--set", f"data.shard_dir={tmp_path / 'no-shards'}")
    assert out.returncode == 2 and not (tmp_path / "sweep").exists()
    assert " ".join(out.stderr.split()) == (
        "error: the study's runs cannot read their data (checked at ALMR 0.1): source en: no complete shards in "
        f"{tmp_path / 'no-shards' / 'en'}; run `almr data tokenize` first"
    )
    out = cli("sweep", str(missing_model), "--set", "mixture.max_epochs=1", "--set", "mixture.token_budget=2000000")
    assert out.returncode == 2 and not (tmp_path / "sweep").exists()
    assert "the study's runs cannot read their data (checked at ALMR 0.1)" in out.stderr


@pytest.mark.slow  # several CLI processes that load torch and transformers (~60 s here)
def test_a_launch_that_fails_exits_non_zero_and_is_retried(tmp_path: Path, world_inputs: dict) -> None:
    # Slurm without sbatch on this machine: every submission fails; the study says so and exits 1
    path = write_spec(tmp_path, real_spec(tmp_path, world_inputs, launcher="slurm"))
    out = cli("sweep", str(path))
    assert out.returncode == 1, out.stderr
    assert out.stdout.splitlines()[0].startswith("disk: ~")
    stderr = " ".join(out.stderr.split())
    assert stderr.startswith("1 run(s) could not be launched (r000-almr0.1000-lr1.000e-04): could not start: ")
    assert stderr.endswith(f"run `almr sweep {tmp_path / 'sweep'}/sweep.yaml` again to retry them")
    record = json.loads((tmp_path / "sweep/runs/r000-almr0.1000-lr1.000e-04/record.json").read_text())
    assert record["status"] == "pending"
    again = cli("sweep", str(tmp_path / "sweep" / "sweep.yaml"))  # the same run is tried again, no new one
    assert again.returncode == 1 and "could not be launched (r000-almr0.1000-lr1.000e-04)" in again.stderr
    assert sorted(p.name for p in (tmp_path / "sweep" / "runs").iterdir()) == ["r000-almr0.1000-lr1.000e-04"]


def test_the_disk_a_study_needs_is_printed_before_it_starts(tmp_path: Path, world_inputs: dict) -> None:
    from almr.sweep.preflight import parameter_count

    n = parameter_count(world_inputs["model"])
    assert 1e3 <= n < 1e6  # the world's tiny Llama: counted in K
    path = write_spec(tmp_path, real_spec(tmp_path, world_inputs))
    out = cli("sweep", str(path), "--dry-run", "--set", "sweep.keep.exports=best", "--set", "sweep.keep.best=1",
              "--set", "sweep.keep.training_state=false")  # fmt: skip
    assert out.returncode == 0, out.stderr
    mb = lambda b: f"{b / 1e6:.3g} MB"  # noqa: E731
    assert out.stdout.splitlines()[-1] == (
        f"disk: ~{mb(4 * n + 16 * n)} at most while the study runs, ~{mb(4 * n)} kept at its end (4 runs of a "
        f"{n / 1e3:.3g}K-parameter model; 1 in flight hold {mb(16 * n)} each, an ended run keeps 0 B, the best "
        f"runs' exports {mb(4 * n)}; sweep.keep sets what stays)"
    )


def test_postgresql_storage_runs_a_study(tmp_path: Path, postgres: str) -> None:
    from almr.sweep.launch import FunctionLauncher
    from fake_runs import Surface, fake_run

    config = spec(tmp_path, storage=postgres)
    check_storage(config.sweep)
    result = run_sweep(config, FunctionLauncher(fake_run(Surface.random(1))))
    assert [r.status for r in result.records] == ["completed"] * 4
    import optuna

    study = optuna.load_study(study_name="almr-sweep", storage=storage_url(config.sweep))
    assert sorted(t.value for t in study.trials) == sorted(r.averaged_metric for r in result.records)
    assert not (tmp_path / "sweep" / "study.db").exists()
    bad = postgres.rsplit("/", 1)[0] + "/no_such_db"
    with pytest.raises(ConfigError, match=r'sweep\.storage: cannot open .*/no_such_db: .*database "no_such_db" does '
                       r"not exist; check that the server runs"):  # fmt: skip
        check_storage(spec(tmp_path, storage=bad).sweep)


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A throwaway PostgreSQL server (initdb in a temporary folder, a free port, its socket there too), as
    the `postgres` user when this runs as root (PostgreSQL refuses root); skipped when it cannot start."""
    import shutil
    import socket
    import tempfile

    bindir = Path("/usr/lib/postgresql/15/bin")
    pg_ctl = bindir / "pg_ctl" if (bindir / "pg_ctl").exists() else shutil.which("pg_ctl")
    if not pg_ctl:
        pytest.skip("no PostgreSQL server here (pg_ctl not found; apt-get install postgresql)")
    bindir = Path(pg_ctl).parent
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="almr-pg-"))
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = root / "data"
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "almr"],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        subprocess.run([*as_user, str(pg_ctl), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                        f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True, timeout=60)  # fmt: skip
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"a throwaway PostgreSQL server could not start here: {err}")
    try:
        yield f"postgresql://almr@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(pg_ctl), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
        time.sleep(0)
