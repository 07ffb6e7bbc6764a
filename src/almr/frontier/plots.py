"""The paper-style figures of a frontier analysis (matplotlib, Agg backend: files only, no display).

Fig. 1 (`plot_fig1`): two contour panels over ALMR × LR (LR axis logarithmic) — left the
validation loss of the loss frontier's source (posterior mean), right the averaged metric
(posterior mean) — with the runs coloured by status, the metric peaks, the ridge points, the
metric frontier (selected form, dashed, with its 95% bootstrap band; the linear form dotted when
another won), the loss frontier (steepest-descent curve through the recommendation, arrow toward
lower loss), the CMR when it lies in the box, and the recommendation (red star). A study without a
metric (`metric` None) shows on the right the recommendation's objective instead — the
additional language's validation loss — with the budget's boundary on the general loss (red,
dash-dot: the recommendation lies on its feasible side), and no metric frontier.

Fig. 2 (`plot_fig2`): probe-metric trajectories against tokens for selected runs — the run
nearest the recommendation, the best and worst observed, the lowest and highest ALMR — left the
averaged probe metric, right each probe task of the run nearest the recommendation. Runs without
probes (a loss-only study): the validation-loss trajectories of the same kind of selection (best
and worst by the recommendation's objective), left the additional language's loss, right the
general language's.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window on a cluster node or in a test
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from almr.errors import AlmrError
from almr.evaluate.results import Average, averaged_metric
from almr.frontier.frontier import LossFrontier, MetricFrontier
from almr.frontier.recommend import Recommender
from almr.frontier.surface import GPSurface
from almr.sweep.records import RunRecord

STATUS_STYLE = {
    "completed": {"marker": "o", "color": "black", "label": "completed run"},
    "failed": {"marker": "x", "color": "red", "label": "failed run (excluded)"},
    "pruned": {"marker": "v", "color": "grey", "label": "pruned run (excluded)"},
}


def _runs(ax: Axes, records: Sequence[RunRecord]) -> None:
    for status in ("completed", "failed", "pruned", "pending", "running"):
        rs = [r for r in records if r.status == status]
        if not rs:
            continue
        style = STATUS_STYLE.get(status, {"marker": ".", "color": "grey", "label": f"{status} run (excluded)"})
        face = style["color"] if style["marker"] == "x" else "white"
        edge = None if style["marker"] == "x" else style["color"]
        ax.scatter(
            [r.almr for r in rs],
            [r.lr for r in rs],
            s=22,
            marker=style["marker"],
            edgecolors=edge,
            facecolors=face,
            linewidths=1.0,
            label=style["label"],
            zorder=4,
            clip_on=False,  # runs on the edges of the studied box are drawn whole, not halved
        )


def _save(fig: Figure, path: Path, svg: bool) -> Path:
    fig.savefig(path, dpi=130, bbox_inches="tight")
    if svg:
        fig.savefig(path.with_suffix(".svg"), bbox_inches="tight")
    plt.close(fig)
    return path


def plot_fig1(
    path: Path,
    *,
    records: Sequence[RunRecord],
    metric: MetricFrontier | None,
    loss: LossFrontier,
    recommender: Recommender,
    cmr_point: dict[str, Any] | None,
    svg: bool = False,
) -> Path:
    """Fig. 1 (the module docstring) of fitted frontiers; `cmr_point` is the summary's
    `baselines.cmr_point`, drawn when it lies inside the studied box; `metric` None: a loss-only study."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    _surface_panel(fig, axes[0], loss.grid_, f"validation loss ({loss.source})", "viridis_r", records)
    if metric is not None:
        _surface_panel(fig, axes[1], metric.grid_, "averaged metric", "viridis", records)
    else:
        objective = recommender.target.removeprefix("loss:")
        _surface_panel(fig, axes[1], recommender.grid_, f"validation loss ({objective})", "viridis_r", records)
        _budget_line(axes[1], recommender)
    axes[0].set_ylabel("learning rate")
    for ax, main in ((axes[1], True), (axes[0], False)):
        _frontiers(ax, metric, loss, recommender, main)
    if metric is not None:
        _metric_marks(axes[1], metric)
    if cmr_point and cmr_point.get("inside_studied_box"):
        axes[0].axvline(cmr_point["almr"], color="tab:orange", lw=1.2, ls="-.", label=f"CMR = {cmr_point['almr']:.2f}")
    for ax in axes:
        ax.legend(fontsize=7, loc="best", framealpha=0.8)
    if metric is not None:
        fig.suptitle("ALMR × LR study: loss surface and averaged-metric surface with both frontiers")
    else:
        fig.suptitle("ALMR × LR study without a benchmark metric: loss surfaces, loss frontier, forgetting budget")
    return _save(fig, path, svg)


def _budget_line(ax: Axes, rec: Recommender) -> None:
    """The boundary of the forgetting budget (general loss = base + ε) on the recommender's grid."""
    if rec.constraint_ is None:
        return
    grid, limit = rec.grid_, rec.constraint_["limit"]
    values = rec.constraint_grid_
    if values.min() < limit < values.max():  # a boundary inside the box; otherwise all or none is feasible
        ax.contour(grid["almr"], grid["lr"], values.T, levels=[limit], colors="red", linewidths=1.4,
                   linestyles="dashdot")  # fmt: skip
        ax.plot([], [], color="red", ls="-.", label=f"{rec.constraint_['source']} loss = base + ε (budget)")


def _surface_panel(fig: Figure, ax: Axes, grid: dict[str, Any], title: str, cmap: str,
                   records: Sequence[RunRecord]) -> None:  # fmt: skip
    """One contour panel of a posterior-mean grid over the studied box, with the runs."""
    cs = ax.contourf(grid["almr"], grid["lr"], grid["mean"].T, levels=14, cmap=cmap)
    ax.contour(grid["almr"], grid["lr"], grid["mean"].T, levels=14, colors="white", linewidths=0.3, alpha=0.5)
    fig.colorbar(cs, ax=ax, label=title)
    ax.set_yscale("log")
    ax.set_xlabel("ALMR")
    ax.set_title(title)
    _runs(ax, records)
    ax.set_xlim(grid["almr"][0], grid["almr"][-1])
    ax.set_ylim(grid["lr"][0], grid["lr"][-1])


def _frontiers(ax: Axes, metric: MetricFrontier | None, loss: LossFrontier, rec: Recommender, main: bool) -> None:
    """Both frontiers and the recommendation on one panel; `main` (the metric panel) stresses the
    metric frontier and its band, the other the loss frontier and its arrow toward lower loss."""
    if metric is not None:
        _metric_frontier(ax, metric, main)
    path_a, path_l = loss.path_["almr"], loss.path_["lr"]
    ax.plot(
        path_a,
        path_l,
        "-",
        color="tab:blue" if not main else "0.65",
        lw=1.8 if not main else 1.0,
        label="loss frontier (steepest descent)",
        zorder=5,
    )
    if not main and len(path_a) > 2:
        ax.annotate(
            "",
            xy=(path_a[-1], path_l[-1]),
            xytext=(path_a[-2], path_l[-2]),
            arrowprops={"arrowstyle": "->", "color": "tab:blue", "lw": 1.5},
            zorder=6,
        )
    ax.scatter(
        [rec.almr_],
        [rec.lr_],
        marker="*",
        s=220,
        color="red",
        edgecolors="white",
        zorder=7,
        label=f"recommendation (P(best) {rec.prob_best_:.2f})",
        clip_on=False,
    )


def _metric_frontier(ax: Axes, metric: MetricFrontier, main: bool) -> None:
    """The metric frontier's selected form; on the metric panel (`main`) its band and the linear form."""
    band = metric.band_[metric.form_]
    ax.plot(
        band["almr"],
        10 ** band["log10_lr"],
        "--",
        color="black" if main else "0.65",
        lw=1.8 if main else 1.0,
        label=f"metric frontier ({metric.form_})",
        zorder=5,
    )
    if main:
        ax.fill_between(
            band["almr"],
            10 ** band["lo"],
            10 ** band["hi"],
            color="black",
            alpha=0.15,
            label="95% bootstrap band",
            zorder=3,
        )
        if metric.form_ != "linear":
            lin = metric.band_["linear"]
            ax.plot(lin["almr"], 10 ** lin["log10_lr"], ":", color="black", lw=1.2, label="linear form")


def _metric_marks(ax: Axes, metric: MetricFrontier) -> None:
    """The metric surface's peaks and its best LR per studied ALMR (the points the frontier regresses)."""
    peaks = metric.peaks_
    ax.scatter(
        [p["almr"] for p in peaks],
        [p["lr"] for p in peaks],
        marker="^",
        s=70,
        color="white",
        edgecolors="black",
        zorder=6,
        label="peaks (local maxima)",
        clip_on=False,
    )
    ridge = metric.ridge_
    ax.scatter(
        ridge["almr"],
        10 ** ridge["log10_lr"],
        marker="D",
        s=24,
        color="gold",
        edgecolors="black",
        zorder=6,
        label="best LR per studied ALMR",
        clip_on=False,
    )


def probe_trajectory(record: RunRecord, keys: list[str] | None) -> tuple[list[int], list[float]]:
    """(tokens, averaged metric) at each probe of a run: the mean of `keys` (frontier.metric_keys),
    else the weighted mean of the record's own `average` (the sweep's eval.average), so the last
    point is the run's averaged_metric when its scores came from the probe; NaN where a key is missing."""
    ys = [_probe_metric(e["scores"], keys or record.average or None) for e in record.probe_history]
    return [e["tokens"] for e in record.probe_history], [np.nan if y is None else y for y in ys]


def _probe_metric(scores: dict[str, float], average: Average | None) -> float | None:
    if not average:
        return float(np.mean(list(scores.values()))) if scores else None
    try:
        return averaged_metric(scores, average)
    except AlmrError:
        return None


def selected_runs(
    records: Sequence[RunRecord], recommender: Recommender, surface: GPSurface
) -> list[tuple[str, RunRecord]]:
    """(label, record) of the runs Fig. 2 shows: nearest the recommendation (in `surface`'s scaled
    plane), best, worst, ALMR extremes."""
    done = [r for r in records if r.status == "completed" and r.probe_history]
    if not done:
        return []
    U = surface.scale([r.almr for r in done], [r.lr for r in done])
    target = surface.scale(recommender.almr_, recommender.lr_)[0]
    ranked = [r for r in done if r.averaged_metric is not None]
    picks = [("nearest recommendation", done[int(np.argmin(np.linalg.norm(U - target, axis=1)))])]
    if ranked:
        picks.append(("best observed", max(ranked, key=lambda r: r.averaged_metric)))
        picks.append(("worst observed", min(ranked, key=lambda r: r.averaged_metric)))
    picks.append(("lowest ALMR", min(done, key=lambda r: (r.almr, -(r.averaged_metric or 0)))))
    picks.append(("highest ALMR", max(done, key=lambda r: (r.almr, r.averaged_metric or 0))))
    seen, out = set(), []
    for label, r in picks:
        if r.run_id not in seen:
            seen.add(r.run_id)
            out.append((label, r))
    return out


def plot_fig2(
    path: Path,
    *,
    records: Sequence[RunRecord],
    recommender: Recommender,
    surface: GPSurface,
    metric_keys: list[str] | None,
    svg: bool = False,
) -> Path:
    """Fig. 2 (the module docstring): the runs of `selected_runs`, their averaged metric over `metric_keys`
    (frontier.metric_keys; None: each run's own average) along tokens."""
    picks = selected_runs(records, recommender, surface)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    if not picks and recommender.target.startswith("loss:") and _loss_trajectories(axes, records, recommender, surface):
        return _save(fig, path, svg)
    if not picks:
        for ax in axes:
            ax.text(
                0.5,
                0.5,
                "no probe history in the completed runs\n(cpt.probe.every_tokens = 0?)",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
            ax.set_axis_off()
        return _save(fig, path, svg)
    for label, r in picks:
        xs, ys = probe_trajectory(r, metric_keys)
        axes[0].plot(
            xs,
            ys,
            marker="o",
            ms=3,
            label=f"{label}: ALMR {r.almr:.2f}, LR {r.lr:.2g}",
        )
    axes[0].set_xlabel("tokens")
    axes[0].set_ylabel("averaged metric (probe)")
    axes[0].set_title("averaged metric during CPT, selected runs")
    axes[0].legend(fontsize=7)
    label, r = picks[0]
    tasks = sorted({t for e in r.probe_history for t in e["scores"]})
    for task in tasks:
        xs = [e["tokens"] for e in r.probe_history if task in e["scores"]]
        axes[1].plot(
            xs, [e["scores"][task] for e in r.probe_history if task in e["scores"]], marker="o", ms=3, label=task
        )
    axes[1].set_xlabel("tokens")
    axes[1].set_ylabel("score (0-100)")
    axes[1].set_title(f"each probe task: ALMR {r.almr:.2f}, LR {r.lr:.2g} ({label})")
    axes[1].legend(fontsize=7)
    return _save(fig, path, svg)


def _loss_trajectories(axes: Any, records: Sequence[RunRecord], rec: Recommender, surface: GPSurface) -> bool:
    """Fig. 2 of a loss-only study (the module docstring) on `axes`; False when no run has a history."""
    objective, general = rec.target.removeprefix("loss:"), rec.constraint_source
    done = [r for r in records if r.status == "completed" and len(r.val_history) > 1 and objective in r.val_loss]
    if not done:
        return False
    U = surface.scale([r.almr for r in done], [r.lr for r in done])
    target = surface.scale(rec.almr_, rec.lr_)[0]
    picks = [
        ("nearest recommendation", done[int(np.argmin(np.linalg.norm(U - target, axis=1)))]),
        (f"lowest {objective} loss", min(done, key=lambda r: r.val_loss[objective])),
        (f"highest {objective} loss", max(done, key=lambda r: r.val_loss[objective])),
        ("lowest ALMR", min(done, key=lambda r: (r.almr, r.val_loss[objective]))),
        ("highest ALMR", max(done, key=lambda r: (r.almr, -r.val_loss[objective]))),
    ]
    panels = [(axes[0], objective), *([(axes[1], general)] if general else [])]
    if not general:
        axes[1].set_axis_off()
    seen: set[str] = set()
    for label, r in picks:
        if r.run_id in seen:
            continue
        seen.add(r.run_id)
        for ax, src in panels:
            points = [(e["tokens"], e["loss"][src]) for e in r.val_history if src in (e.get("loss") or {})]
            if points:
                tokens, losses = zip(*points, strict=True)
                ax.plot(tokens, losses, marker="o", ms=3, label=f"{label}: ALMR {r.almr:.2f}, LR {r.lr:.2g}")
    for ax, src in panels:
        ax.set_xlabel("tokens")
        ax.set_ylabel(f"validation loss ({src})")
        ax.set_title(f"{src} validation loss, selected runs")
        if ax.lines:
            ax.legend(fontsize=7)
    axes[0].figure.suptitle("validation loss during CPT (no probe, so no benchmark-metric trajectories)")
    return True
