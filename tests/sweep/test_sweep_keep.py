"""What a study keeps (`sweep.keep`, issue #18 item 5): the export of the best runs only, or none, and
the training state deleted once a run has ended; by default everything stays."""

from collections.abc import Callable
from pathlib import Path

import pytest

from almr.config import AlmrConfig
from almr.sweep.launch import FunctionLauncher, RunSpec
from almr.sweep.study import run_sweep
from fake_runs import KEYS, Surface, fake_run

SURFACE = Surface(a=-3.5, b=0.5, width=0.5, peak=0.5, spread=0.4, height=12.0, tilt=1.0)


def spec(tmp_path: Path, **keep: object) -> AlmrConfig:
    return AlmrConfig.model_validate({
        "mixture": {"almr": 0.5},
        "cpt": {"probe": {"every_tokens": 10_000}},
        "eval": {"average": list(KEYS)},
        "sweep": {"almr": {"values": [0.2, 0.5, 0.8]}, "lr": {"values": [1e-4, 1e-3], "low": 1e-5, "high": 1e-2},
                  "sweep_dir": str(tmp_path / "sweep"), "poll_s": 0.01, "keep": keep},
    })  # fmt: skip


def with_checkpoints() -> Callable[[RunSpec, Callable[[], bool]], None]:
    """A fake run that leaves two complete checkpoints, each with 1,000 bytes of state and 300 of export."""
    run = fake_run(SURFACE)

    def body(spec: RunSpec, should_stop: Callable[[], bool]) -> None:
        run(spec, should_stop)
        for step in ("step_00000005", "step_00000010"):
            folder = spec.run_dir / "checkpoints" / step
            (folder / "state").mkdir(parents=True)
            (folder / "hf").mkdir()
            (folder / "state" / "model.distcp").write_bytes(b"s" * 1000)
            (folder / "hf" / "model.safetensors").write_bytes(b"h" * 300)
            (folder / "complete").write_text("{}")

    return body


def kept(tmp_path: Path) -> dict[str, list[str]]:
    out = {}
    for run in sorted((tmp_path / "sweep" / "runs").iterdir()):
        files = sorted(str(p.relative_to(run / "checkpoints")) for p in (run / "checkpoints").rglob("*") if p.is_file())
        out[run.name] = files
    return out


def test_by_default_a_study_keeps_every_checkpoint(tmp_path: Path) -> None:
    run_sweep(spec(tmp_path), FunctionLauncher(with_checkpoints()))
    every = [f"{s}/{f}" for s in ("step_00000005", "step_00000010")
             for f in ("complete", "hf/model.safetensors", "state/model.distcp")]  # fmt: skip
    assert set(map(tuple, kept(tmp_path).values())) == {tuple(every)}


def test_a_study_can_keep_only_the_best_runs_export(tmp_path: Path) -> None:
    logs: list[str] = []
    result = run_sweep(spec(tmp_path, exports="best", best=2, training_state=False),
                       FunctionLauncher(with_checkpoints()), log=logs.append)  # fmt: skip
    ranked = sorted(result.records, key=lambda r: -(r.averaged_metric or 0))
    best = {r.run_id for r in ranked[:2]}
    for run, files in kept(tmp_path).items():
        assert files == (["step_00000010/hf/model.safetensors"] if run in best else []), run
    freed = sum(float(line.split()[2]) for line in logs if line.startswith("sweep.keep: freed"))
    assert freed * 1e9 == pytest.approx(6 * 2 * (1000 + 300 + 2) - 2 * 300, rel=0.05)  # all but 2 exports


def test_a_study_can_keep_no_export_but_the_training_state(tmp_path: Path) -> None:
    run_sweep(spec(tmp_path, exports="none"), FunctionLauncher(with_checkpoints()))
    for files in kept(tmp_path).values():
        assert files == [f"{s}/{f}" for s in ("step_00000005", "step_00000010") for f in
                         ("complete", "state/model.distcp")]  # fmt: skip
