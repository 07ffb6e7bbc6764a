"""Tokenizing a source in N parts (`--parts N`, `--part i/N`, a Slurm array): the parts read as
one stream give the plan and the batches of one shard, byte for byte, whatever N; a re-run redoes
only missing or stale parts; conflicting parts are refused with the file and the fix."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from data_helpers import corpus, write_jsonl

from almr.data.config import BatchConfig, DataConfig, MixtureConfig
from almr.data.loader import PackedLoader, validation_sequences
from almr.data.manifest import read_manifest, split_files
from almr.data.plan import build_plan
from almr.data.shards import IndexedShard
from almr.data.tokenize import tokenize_sources
from almr.errors import DataError

SEQ, GBS = 16, 8


def _data(root: Path, tokenizer: Path) -> DataConfig:
    """zh in 5 train files of unequal sizes + 2 valid files, en in 4 train files."""
    sources = []
    for name, lang, sizes in (("zh", "zh", (30, 5, 60, 12, 25)), ("en", "en", (40, 10, 50, 20))):
        files = [
            write_jsonl(root / "raw" / name / f"t{k}.jsonl", corpus(lang, n, offset=100 * k))
            for k, n in enumerate(sizes)
        ]
        valid = [write_jsonl(root / "raw" / name / f"v{k}.jsonl", corpus(lang, 8, offset=900 + 10 * k)) for k in (0, 1)]
        sources.append(
            {
                "name": name,
                "language": lang,
                "train": [str(f) for f in files],
                "valid": [str(v) for v in valid] if name == "zh" else [],
            }
        )
    return DataConfig(
        tokenizer=str(tokenizer), shard_dir=str(root / "shards"), workers=1, chunk_documents=7, sources=sources
    )


def _quiet(message: str) -> None:
    pass


def _plan_and_batches(data: DataConfig) -> tuple[str, list[torch.Tensor], torch.Tensor]:
    plan = build_plan(
        data,
        MixtureConfig(almr=0.4, seed=5, max_epochs=20),
        BatchConfig(micro_batch_size=2, global_batch_size=GBS, seq_len=SEQ),
        token_budget=30 * SEQ * GBS,
    )
    batches = list(PackedLoader(plan, micro_batch_size=2))
    ids = [torch.cat([b[k] for b in batches]) for k in ("input_ids", "labels", "source_ids")]
    return plan.model_dump_json(), ids, validation_sequences(plan, "zh")["input_ids"]


def test_split_files_is_contiguous_and_balanced_by_bytes() -> None:
    files = [{"path": str(i), "size": s} for i, s in enumerate([10, 10, 10, 70, 5, 5, 40, 50])]
    runs = split_files(files, 3)
    assert [[f["path"] for f in run] for run in runs] == [["0", "1", "2", "3"], ["4", "5", "6"], ["7"]]
    assert [f for run in runs for f in run] == files  # the stream order, cut
    assert split_files(files, 1) == [files]
    assert [len(r) for r in split_files(files[:2], 4)] == [0, 1, 0, 1]  # more parts than files: some are empty
    assert [len(r) for r in split_files([{"size": 0}] * 4, 2)] == [2, 2]


@pytest.mark.parametrize("parts", [3, 9])  # 9: more parts than files, so some parts are empty
def test_parts_give_the_plan_and_batches_of_one_shard(tmp_path: Path, tokenizer_dir: Path, parts: int) -> None:
    data = _data(tmp_path, tokenizer_dir)
    tokenize_sources(data, progress=False, log=_quiet)
    one_bin = (tmp_path / "shards/zh/train.bin").read_bytes()
    one_lengths = IndexedShard(tmp_path / "shards/zh/train").lengths.copy()
    one_plan, one_ids, one_valid = _plan_and_batches(data)
    shutil.rmtree(tmp_path / "shards")

    manifests = tokenize_sources(data, progress=False, log=_quiet, parts=parts)
    assert [m["parts"] for m in manifests] == [parts, parts]
    assert not (tmp_path / "shards/zh/train.bin").exists()
    listed = manifests[0]["splits"]["train"]["parts"]
    assert len(listed) == min(parts, 5) and listed[0]["prefix"] == f"train-part-00000-of-{parts:05d}"
    joined = b"".join((tmp_path / "shards/zh" / f"{p['prefix']}.bin").read_bytes() for p in listed)
    assert joined == one_bin  # the parts, in order, are the one shard's token stream
    lengths = np.concatenate([IndexedShard(tmp_path / "shards/zh" / p["prefix"]).lengths for p in listed])
    assert np.array_equal(lengths, one_lengths)
    plan, ids, valid = _plan_and_batches(data)
    assert plan == one_plan  # the same plan, hash included
    for a, b in zip(ids, one_ids, strict=True):
        assert a.numpy().tobytes() == b.numpy().tobytes()
    assert valid.numpy().tobytes() == one_valid.numpy().tobytes()
    logs: list[str] = []
    tokenize_sources(data, progress=False, log=logs.append)  # one shard asked: the parts are up to date
    tokens = [m["splits"]["train"]["tokens"] for m in manifests]
    assert logs == [
        f"zh: up to date ({tokens[0]:,} train tokens in {parts} parts); nothing to do",
        f"en: up to date ({tokens[1]:,} train tokens in {parts} parts); nothing to do",
    ]


def test_rerun_redoes_only_the_missing_part(tmp_path: Path, tokenizer_dir: Path) -> None:
    data = _data(tmp_path, tokenizer_dir)
    names = ["zh"]
    logs: list[str] = []
    for i in (2, 0):  # by hand, in any order: no manifest until the last part
        (m,) = tokenize_sources(data, names, progress=False, log=logs.append, parts=3, part=i)
        assert m["part"] == i and read_manifest(data.shard_dir, "zh") is None
    assert logs[-1] == "zh: parts 1 of 3 still to do; the manifest follows the last"
    (manifest,) = tokenize_sources(data, names, progress=False, log=logs.append, parts=3, part=1)
    assert manifest["parts"] == 3 and read_manifest(data.shard_dir, "zh") == manifest
    folder = tmp_path / "shards/zh"
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.glob("*-of-00003*")}

    (folder / "train-part-00001-of-00003.bin").unlink()  # a part lost (a node's disk, a killed task)
    logs.clear()
    (again,) = tokenize_sources(data, names, progress=False, log=logs.append, parts=3)
    assert [line.split(":")[0] for line in logs] == ["zh part 0/3", "zh part 1/3", "zh part 2/3", "zh"]
    assert logs[0].endswith("up to date; nothing to do") and logs[2].endswith("up to date; nothing to do")
    assert logs[1].startswith("zh part 1/3: wrote ")
    now = {p.name: p.stat().st_mtime_ns for p in folder.glob("*-of-00003*")}
    redone = sorted(name for name in mtimes if now[name] != mtimes[name])
    # (the 2 valid files go to parts 0 and 2: part 1 has no valid shard)
    assert redone == ["part-00001-of-00003.json", "train-part-00001-of-00003.bin", "train-part-00001-of-00003.idx"]
    assert not (folder / "valid-part-00001-of-00003.bin").exists()
    assert again["splits"] == manifest["splits"]


def test_conflicting_parts_are_refused(tmp_path: Path, tokenizer_dir: Path, other_tokenizer_dir: Path) -> None:
    data = _data(tmp_path, tokenizer_dir)
    folder = tmp_path / "shards/zh"
    with pytest.raises(DataError, match=r"^--part 3/3: the part index must be in 0\.\.2 \(parts are numbered from 0"):
        tokenize_sources(data, ["zh"], progress=False, log=_quiet, parts=3, part=3)
    tokenize_sources(data, ["zh"], progress=False, log=_quiet, parts=3, part=0)
    changed_n = (
        rf"^source zh: {folder} holds part-00000-of-00003.json: 1 of 3 parts made from these same inputs, but this "
        rf"run asks for 2 parts. Finish that run with --parts 3 \(or --part i/3\), or delete its parts first: "
        rf"rm {folder}/\*-of-00003\*$"
    )
    with pytest.raises(DataError, match=changed_n):
        tokenize_sources(data, ["zh"], progress=False, log=_quiet, parts=2, part=1)
    with pytest.raises(DataError, match="but this run asks for one shard"):
        tokenize_sources(data, ["zh"], progress=False, log=_quiet)
    other = data.model_copy(update={"tokenizer": str(other_tokenizer_dir)})
    mixing = (
        rf"^source zh: {folder}/part-00000-of-00003.json was made with tokenizer {tokenizer_dir} \(fingerprint "
        r"[0-9a-f]{12}\), this run uses data.tokenizer = .* the parts of one source must come from one tokenizer. "
        rf"Set data.tokenizer back to finish that run, or delete its parts first: rm {folder}/\*-of-00003\*$"
    )
    with pytest.raises(DataError, match=mixing):
        tokenize_sources(other, ["zh"], progress=False, log=_quiet, parts=3, part=1)
    # a finished run with the old tokenizer is simply superseded: all its parts are redone
    tokenize_sources(data, ["zh"], progress=False, log=_quiet, parts=3)
    logs: list[str] = []
    (m,) = tokenize_sources(other, ["zh"], progress=False, log=logs.append, parts=3)
    assert m["tokenizer"]["path"] == str(other_tokenizer_dir) and sum("removed stale" in line for line in logs) == 3


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "almr.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_cli_part_commands_and_slurm_array(tmp_path: Path, tokenizer_dir: Path) -> None:
    data = _data(tmp_path, tokenizer_dir)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {**data.model_dump(), "slurm": {"partition": "cpu", "mem": "8G"}}}))
    out = _cli("data", "tokenize", str(config), "--part", "5/3")
    assert out.returncode == 2 and "--part 5/3: the part index must be in 0..2" in out.stderr, out.stderr
    out = _cli("data", "tokenize", str(config), "--part", "x", "--source", "zh")
    assert out.returncode == 2 and "--part x: write it as I/N" in out.stderr

    dry = _cli("data", "tokenize", str(config), "--parts", "2", "--slurm", "--dry-run", "--source", "zh")
    assert dry.returncode == 0, dry.stderr
    assert "#SBATCH --array=0-1%2" in dry.stdout and "#SBATCH --partition=cpu" in dry.stdout
    tasks = [line.split(": ", 1)[1] for line in dry.stdout.splitlines() if line.startswith("# task ")]
    assert tasks == [f"{sys.executable} -m almr.cli data tokenize {config} --part {i}/2 --source zh" for i in (0, 1)]
    assert not (tmp_path / "shards").exists()  # a dry run changes nothing
    for command in tasks:  # what each array task runs, run here
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert read_manifest(data.shard_dir, "zh")["parts"] == 2

    # submission through submitit's SlurmExecutor, against an sbatch that records what it is given
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"\n')
    (bindir / "sbatch").chmod(0o755)
    out = _cli("data", "tokenize", str(config), "--parts", "3", "--slurm")  # no Slurm on this machine
    assert out.returncode == 2 and "--slurm: no Slurm here (sbatch/srun not found)" in out.stderr
    (bindir / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit looks for srun before it submits
    (bindir / "srun").chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", HF_HUB_OFFLINE="1")
    run = subprocess.run(
        [sys.executable, "-m", "almr.cli", "data", "tokenize", str(config), "--parts", "3", "--slurm"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "submitted Slurm array 4242: 3 task(s) for en;" in run.stdout  # zh is done (in 2 parts)
    assert "#SBATCH --array=0-2%3" in (tmp_path / "submitted.sh").read_text()
    (tmp_path / "submitted.sh").unlink()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "almr.cli",
            "data",
            "tokenize",
            str(config),
            "--parts",
            "2",
            "--slurm",
            "--source",
            "zh",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert "every source is up to date; nothing submitted" in out.stdout, out.stderr


def test_parts_in_processes_equal_parts_in_turn(tmp_path: Path, tokenizer_dir: Path) -> None:
    data = _data(tmp_path, tokenizer_dir)
    (serial,) = tokenize_sources(data, ["zh"], progress=False, log=_quiet, parts=3)
    files = {p.name: p.read_bytes() for p in (tmp_path / "shards/zh").glob("*.bin")}
    shutil.rmtree(tmp_path / "shards")
    logs: list[str] = []
    (parallel,) = tokenize_sources(data, ["zh"], progress=False, log=logs.append, parts=3, jobs=2)
    assert parallel["splits"] == serial["splits"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "shards/zh").glob("*.bin")} == files
    assert sorted(line.split(":")[0] for line in logs) == ["zh", "zh part 0/3", "zh part 1/3", "zh part 2/3"]
