"""`almr sweep status SWEEP_DIR`: the run records as one table with a progress bar.

Contract: `status_view(sweep_dir)` reads `sweep.yaml` (for the planned number of runs and the
averaged keys) and every `runs/*/record.json`, and returns a rich renderable: the progress of
finished runs (completed, failed, pruned) over the total (the grid's points, or `sweep.max_runs`),
and a table with run_id, ALMR, LR, status, tokens, wall time, final validation loss per source,
averaged metric, and for failed runs the first line of the error. It reads files only, so it
can watch a sweep that another process or Slurm is running.
"""

from pathlib import Path

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from almr.config import load_config
from almr.errors import ConfigError
from almr.sweep.design import total_runs
from almr.sweep.records import RunRecord, load_records

FINAL = ("completed", "failed", "pruned")
STYLE = {"completed": "green", "failed": "red", "pruned": "yellow", "running": "cyan", "pending": "dim"}


def sweep_totals(sweep_dir: Path) -> tuple[int, list[RunRecord]]:
    """The runs the sweep in `sweep_dir` starts in all (from its sweep.yaml), and its records so far."""
    spec = Path(sweep_dir) / "sweep.yaml"
    if not spec.is_file():
        raise ConfigError(f"{sweep_dir} is not a sweep folder (no sweep.yaml); pass the folder `almr sweep` wrote")
    return total_runs(load_config(spec).sweep), load_records(Path(sweep_dir))


def status_view(sweep_dir: Path) -> RenderableType:
    total, records = sweep_totals(sweep_dir)
    done = sum(r.status in FINAL for r in records)
    counts = ", ".join(f"{n} {s}" for s in STYLE if (n := sum(r.status == s for r in records)))
    header = Text(f"{sweep_dir}: {done}/{total} runs finished ({counts or 'none yet'})")
    bar = ProgressBar(total=max(total, 1), completed=done, width=60)
    sources = sorted({s for r in records for s in r.val_loss})
    table = Table(show_lines=False)
    for col in ("run", "ALMR", "LR", "status", "tokens", "wall", *[f"val {s}" for s in sources], "avg metric"):
        table.add_column(col, justify="left" if col in ("run", "status") else "right")
    best = max((r.averaged_metric for r in records if r.status == "completed" and r.averaged_metric is not None),
               default=None)  # fmt: skip
    for r in records:
        metric = "-" if r.averaged_metric is None else f"{r.averaged_metric:.2f}"
        if best is not None and r.averaged_metric == best and r.status == "completed":
            metric = f"[bold]{metric} *[/]"
        status = f"[{STYLE.get(r.status, '')}]{r.status}[/]"
        if r.error:
            status += f"\n[dim]{r.error.splitlines()[0][:60]}[/]"
        table.add_row(
            r.run_id, f"{r.almr:.4g}", f"{r.lr:.3g}", status, f"{r.tokens:,}", f"{r.wall_time_s:.0f} s",
            *[f"{r.val_loss[s]:.4f}" if s in r.val_loss else "-" for s in sources], metric,
        )  # fmt: skip
    return Group(header, bar, table)


def is_finished(sweep_dir: Path) -> bool:
    total, records = sweep_totals(sweep_dir)
    return sum(r.status in FINAL for r in records) >= total
