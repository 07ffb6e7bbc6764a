"""The report's figures, copied or drawn into OUT/report/figures/: Fig. 1 (the frontier analysis's
surfaces and frontiers) and its Fig. 2 of the study's runs are reused as the frontier stage drew
them (almr.frontier.plots); the paper's Fig. 2 proper — benchmark trajectories along the formal
CPT — is drawn here from the formal CPT run's probe events."""

import json
import shutil
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from almr.evaluate.registry import TASKS


def copy_frontier_figure(frontier_dir: Path, name: str, figures: Path) -> Path | None:
    """The frontier stage's figure `name` (PNG, else its SVG twin) copied into `figures`; None if absent."""
    for candidate in (frontier_dir / name, (frontier_dir / name).with_suffix(".svg")):
        if candidate.is_file():
            figures.mkdir(parents=True, exist_ok=True)
            return Path(shutil.copyfile(candidate, figures / candidate.name))
    return None


def probe_events(metrics: Path) -> list[dict[str, Any]]:
    """The `probe` events of a run's metrics.jsonl (unreadable lines skipped: a run may be cut short)."""
    events = []
    if not metrics.is_file():
        return events
    for line in metrics.read_text(encoding="utf-8").splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (isinstance(e, dict) and e.get("event") == "probe" and isinstance(e.get("scores"), dict)
                and isinstance(e.get("tokens"), int | float)):  # fmt: skip
            events.append(e)
    return events


def plot_cpt_trajectories(events: list[dict[str, Any]], path: Path) -> Path | None:
    """One panel per probed task (its primary score) along the CPT's tokens; None without probe events."""
    tasks = sorted({k for e in events for k in e["scores"] if ":" not in k})
    if not tasks:
        return None
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.0), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        points = [(e["tokens"], e["scores"][task]) for e in events if isinstance(e["scores"].get(task), int | float)]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3)
        info = TASKS.get(task)
        ax.set_title(info.title if info else task, fontsize=10)
        ax.set_xlabel("CPT tokens")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("score")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
