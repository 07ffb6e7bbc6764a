"""`almr frontier SWEEP_DIR`: everything the analysis of one sweep computes, in one call.

`analyze_sweep(sweep_dir, config, out_dir)` reads the run records (`almr.sweep.records`), the
baseline (`data.load_baseline`), fits the recommendation, the metric frontier, a GP surface per
validation source and for the combined loss, the loss frontier through the recommendation, and
the D-CPT / CMR baselines, then writes to `out_dir` (default `SWEEP_DIR/frontier/`):
`frontier.json` (every number, machine-readable), `report.md`, `fig1_frontier.png` and
`fig2_trajectories.png`. Bad input (no records, mixed studies, too few runs, an impossible
forgetting budget) is refused before anything is written.

The D-CPT and CMR baselines use the runs at one LR, because those laws have no LR: the studied LR
nearest (in log10) to the recommended LR among those with completed runs at ≥ 3 ALMRs; if no LR
has that, all completed runs (said in the report).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from almr.errors import AlmrError, DataError
from almr.frontier.baselines import DCPTLaw, critical_mixture_ratio, dcpt_points
from almr.frontier.config import FrontierConfig
from almr.frontier.data import Baseline, check_base_hash, load_baseline, loss_sources, sweep_arrays
from almr.frontier.frontier import LossFrontier, MetricFrontier
from almr.frontier.recommend import Recommender
from almr.frontier.surface import GPSurface
from almr.sweep.records import RunRecord, load_records


@dataclass
class Analysis:
    """The fitted estimators and the JSON summary of one sweep."""

    records: list[RunRecord]
    baseline: Baseline | None
    recommender: Recommender
    metric: MetricFrontier
    loss: LossFrontier
    loss_surfaces: dict[str, GPSurface]
    dcpt: dict[str, DCPTLaw]
    summary: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


def analyze_sweep(sweep_dir: Path, config: FrontierConfig, out_dir: Path | None = None) -> Analysis:
    """Fit everything, write frontier.json, report.md and the two figures; return the Analysis."""
    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / "runs").is_dir():
        raise DataError(f"{sweep_dir} has no runs/ folder; pass a sweep directory made by `almr sweep`")
    records = load_records(sweep_dir)
    if not records:
        raise DataError(f"{sweep_dir / 'runs'} holds no run records (*/record.json); run `almr sweep` first")
    analysis = analyze_records(records, config, load_baseline(sweep_dir, records))
    analysis.summary["sweep_dir"] = str(sweep_dir)
    write_outputs(analysis, config, Path(out_dir) if out_dir is not None else sweep_dir / "frontier")
    return analysis


def analyze_records(records: list[RunRecord], config: FrontierConfig, baseline: Baseline | None) -> Analysis:
    """The fits of `analyze_sweep` on records in memory."""
    base_hash = check_base_hash(records)
    keys = list(config.metric_keys or []) or None
    common = {
        "kernel": config.kernel,
        "n_restarts_optimizer": config.n_restarts_optimizer,
        "min_runs": config.min_runs,
        "random_state": config.random_state,
    }
    rec = Recommender(
        metric_keys=keys,
        epsilon=config.epsilon,
        constraint_source=config.general_source,
        grid_size=config.grid_size,
        n_samples=config.n_posterior_samples,
        radius=config.prob_radius,
        **common,
    ).fit(records, baseline)
    mf = MetricFrontier(
        metric_keys=keys, forms=config.forms, grid_size=config.grid_size, n_bootstrap=config.n_bootstrap, **common
    ).fit(records)
    sources = loss_sources(records)
    if config.loss_source != "combined" and config.loss_source not in sources:
        raise AlmrError(
            f"frontier.loss_source={config.loss_source!r}: the completed runs report val_loss for "
            f"{', '.join(sources) or 'no source'}; use one of them or 'combined'"
        )
    lf = LossFrontier(source=config.loss_source, start=(rec.almr_, rec.lr_), grid_size=config.grid_size, **common)
    lf.fit(records)
    surfaces: dict[str, GPSurface] = {}
    for src in [*sources, "combined"] if sources else []:
        if src == config.loss_source:
            surfaces[src] = lf.surface_
            continue
        data = sweep_arrays(records, f"loss:{src}", None, config.min_runs)
        surfaces[src] = GPSurface(
            kernel=config.kernel,
            n_restarts_optimizer=config.n_restarts_optimizer,
            box=mf.surface_.box_,
            random_state=config.random_state,
        ).fit(data.X, data.y)

    dcpt, baselines = _baselines(records, config, rec, baseline)
    summary = _summary(records, config, base_hash, baseline, rec, mf, lf, surfaces, baselines)
    return Analysis(records, baseline, rec, mf, lf, surfaces, dcpt, summary)


# --------------------------------------------------------------------------- baselines on the same runs


def _baseline_runs(records: list[RunRecord], lr: float) -> tuple[list[RunRecord], str]:
    done = [r for r in records if r.status == "completed"]
    for value in sorted({r.lr for r in done}, key=lambda v: abs(np.log10(v) - np.log10(lr))):
        at = [r for r in done if r.lr == value]
        if len({r.almr for r in at}) >= 3:
            return at, f"the {len(at)} completed runs at LR {value:.3g} (the studied LR nearest the recommended one)"
    return done, "all completed runs (no single studied LR has completed runs at ≥ 3 ALMRs)"


def _baselines(records: list[RunRecord], config: FrontierConfig, rec: Recommender, baseline: Baseline | None):
    runs, which = _baseline_runs(records, rec.lr_)
    laws: dict[str, DCPTLaw] = {}
    out: dict[str, Any] = {"runs": which, "lr": float(np.median([r.lr for r in runs])), "dcpt": {}, "notes": []}
    for src, additional in ((config.additional_source, True), (config.general_source, False)):
        r, D, loss = dcpt_points(runs, src, additional)
        if not loss:
            out["notes"].append(f"D-CPT for {src}: the runs have no validation history of {src}")
            continue
        try:
            law = DCPTLaw(
                eps=config.dcpt_eps,
                huber_delta=config.dcpt_huber_delta,
                n_starts=config.dcpt_starts,
                random_state=config.random_state,
            ).fit(r, D, loss)
        except AlmrError as err:
            out["notes"].append(f"D-CPT for {src}: {err}")
            continue
        laws[src] = law
        out["dcpt"][src] = {
            "share": "ALMR" if additional else "1 − ALMR",
            "params": law.params_,
            "d_ref_tokens": law.d_ref_,
            "huber_objective": law.objective_,
            "rmse_log": law.rmse_log_,
            "r2": law.r2_,
            "points": law.n_points_,
        }
    gen = config.general_source
    out["cmr"] = None
    if gen in laws and baseline is not None and gen in baseline.val_loss:
        base = baseline.val_loss[gen]
        if config.epsilon is not None:
            tol, rule = config.epsilon, f"ε = {config.epsilon:g} (frontier.epsilon)"
        else:
            tol, rule = (
                config.cmr_tolerance * base,
                f"{config.cmr_tolerance:g} × base loss = {config.cmr_tolerance * base:.4g}",
            )
        budget = float(max(r.tokens for r in runs))
        cmr = critical_mixture_ratio(laws[gen], budget, base, tol)
        out["cmr"] = {"almr": cmr, "tolerance": tol, "rule": rule, "base_loss": base, "budget_tokens": budget}
    elif gen in laws:
        out["notes"].append(f"CMR: no base-model {gen} loss (baseline.json or step-0 validation)")
    return laws, out


# --------------------------------------------------------------------------- the JSON summary


def _f(x: Any) -> Any:
    """Plain floats (None for NaN/inf) for JSON."""
    if isinstance(x, np.ndarray):
        return [_f(v) for v in x.tolist()]
    if isinstance(x, list | tuple):
        return [_f(v) for v in x]
    if isinstance(x, dict):
        return {k: _f(v) for k, v in x.items()}
    if isinstance(x, float | np.floating):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer | np.bool_):
        return x.item()
    return x


def _point(surfaces: dict[str, GPSurface], metric: GPSurface, almr: float, lr: float) -> dict[str, Any]:
    m, s = metric.predict(almr, lr, return_std=True)
    losses = {}
    for src, surf in surfaces.items():
        lm, ls = surf.predict(almr, lr, return_std=True)
        losses[src] = {"mean": float(lm), "std": float(ls)}
    return {"almr": almr, "lr": lr, "metric": {"mean": float(m), "std": float(s)}, "val_loss": losses}


def _surface_info(s: GPSurface) -> dict[str, Any]:
    return {
        "kernel": str(s.kernel_),
        "length_scales": s.length_scales_,
        "noise_std": s.noise_std_,
        "n_runs": s.n_train_,
        "warnings": s.warnings_,
    }


def _summary(records, config, base_hash, baseline, rec, mf, lf, surfaces, baselines) -> dict[str, Any]:
    box = mf.surface_.box_
    inside = lambda a, lr: box[0] <= a <= box[1] and box[2] <= np.log10(lr) <= box[3]  # noqa: E731
    runs = [
        {
            "run_id": r.run_id,
            "almr": r.almr,
            "lr": r.lr,
            "status": r.status,
            "tokens": r.tokens,
            "val_loss": r.val_loss,
            "averaged_metric": r.averaged_metric,
            "error": r.error,
        }
        for r in sorted(records, key=lambda r: (r.almr, r.lr))
    ]
    forms = {}
    for name, fit in mf.forms_.items():
        ci = mf.coef_ci_.get(name)
        forms[name] = {
            "equation": fit.equation,
            "coef": dict(zip("abc", fit.coef.tolist(), strict=False)),
            "ci95": None if ci is None else {k: list(v) for k, v in zip("abc", ci.tolist(), strict=False)},
            "loo_rmse": fit.loo_rmse,
            "aicc": fit.aicc,
            "rmse": fit.rmse,
        }
    # what a loss-only choice would pick: the lowest combined loss in the studied box
    comb = lf.grid_ if config.loss_source == "combined" else None
    loss_opt = None
    if comb is not None:
        i, j = np.unravel_index(np.argmin(comb["mean"]), comb["mean"].shape)
        loss_opt = _point(surfaces, mf.surface_, float(comb["almr"][i]), float(comb["lr"][j]))
    cmr_point = None
    if baselines["cmr"] and baselines["cmr"]["almr"] is not None:
        a = baselines["cmr"]["almr"]
        cmr_point = {"almr": a, "lr": baselines["lr"], "inside_studied_box": bool(inside(a, baselines["lr"]))}
        if cmr_point["inside_studied_box"]:
            cmr_point.update(_point(surfaces, mf.surface_, a, baselines["lr"]))
    recommendation = _point(surfaces, mf.surface_, rec.almr_, rec.lr_)
    recommendation.update(
        {
            "prob_best_within_radius": rec.prob_best_,
            "radius": config.prob_radius,
            "prob_best_cell": rec.prob_best_cell_,
            "grid_size": config.grid_size,
            "credible_region_95": rec.credible_,
            "constraint": rec.constraint_,
            "prob_constraint_holds": rec.prob_constraint_,
            "frontier_lr_at_almr": float(mf.predict_lr(rec.almr_)[0]),
        }
    )
    if baseline is not None:
        recommendation["change_vs_base"] = {
            s: recommendation["val_loss"][s]["mean"] - baseline.val_loss[s]
            for s in recommendation["val_loss"]
            if s in baseline.val_loss
        }
    return _f(
        {
            "format": "almr-frontier/1",
            "base_hash": base_hash,
            "config": config.model_dump(mode="json"),
            "baseline": None if baseline is None else baseline.as_dict(),
            "runs": runs,
            "counts": {
                s: sum(r.status == s for r in records) for s in ("completed", "failed", "pruned", "pending", "running")
            },
            "excluded": [e.as_dict() for e in mf.excluded_],
            "box": {"almr": [box[0], box[1]], "lr": [10 ** box[2], 10 ** box[3]]},
            "surfaces": {
                "metric": _surface_info(mf.surface_),
                **{f"loss:{k}": _surface_info(v) for k, v in surfaces.items()},
            },
            "metric_frontier": {
                "peaks": mf.peaks_,
                "best_run": mf.best_run_,
                "ridge": {k: v for k, v in mf.ridge_.items()},
                "ridge_note": mf.ridge_note_,
                "forms": forms,
                "skipped_forms": mf.skipped_forms_,
                "selected_form": mf.form_,
                "criterion": "lowest leave-one-out RMSE of log10 LR* over the ridge points",
                "n_bootstrap": mf.n_bootstrap_done_,
            },
            "loss_frontier": {
                "source": config.loss_source,
                "start": lf.start_,
                "direction_scaled": lf.direction_,
                "slope_log10lr_per_almr": lf.slope_,
                "gradient_scaled": lf.gradient_,
                "descent_stop": lf.descent_stop_,
                "ascent_stop": lf.ascent_stop_,
                "path": {"almr": lf.path_["almr"], "lr": lf.path_["lr"], "loss": lf.path_["loss"]},
            },
            "recommendation": recommendation,
            "loss_optimum": loss_opt,
            "baselines": {**baselines, "cmr_point": cmr_point},
            "tradeoff": _tradeoff(records, baseline),
        }
    )


def _tradeoff(records: list[RunRecord], baseline: Baseline | None) -> dict[str, Any]:
    """Spearman ρ of each final loss (and its change from the base) and of the metric with ALMR and log LR."""
    done = [r for r in records if r.status == "completed"]
    out: dict[str, Any] = {}
    if len(done) < 3:
        return out
    almr = np.array([r.almr for r in done])
    log_lr = np.log10([r.lr for r in done])
    columns = {f"val_loss:{s}": [r.val_loss.get(s, np.nan) for r in done] for s in loss_sources(records)}
    columns["averaged_metric"] = [np.nan if r.averaged_metric is None else r.averaged_metric for r in done]
    for name, values in columns.items():
        y = np.asarray(values, dtype=float)
        ok = np.isfinite(y)
        if ok.sum() < 3:
            continue
        entry = {
            "spearman_almr": float(spearmanr(almr[ok], y[ok]).statistic),
            "spearman_log_lr": float(spearmanr(log_lr[ok], y[ok]).statistic),
            "min": float(y[ok].min()),
            "max": float(y[ok].max()),
        }
        src = name.removeprefix("val_loss:")
        if baseline is not None and src in baseline.val_loss:
            entry["base"] = baseline.val_loss[src]
        out[name] = entry
    return out


def write_outputs(analysis: Analysis, config: FrontierConfig, out_dir: Path) -> dict[str, Path]:
    import json

    from almr.frontier.plots import plot_fig1, plot_fig2
    from almr.frontier.report import markdown_report

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "fig1": plot_fig1(analysis, out_dir / "fig1_frontier.png", svg=config.svg),
        "fig2": plot_fig2(analysis, out_dir / "fig2_trajectories.png", svg=config.svg),
    }
    analysis.summary["figures"] = {k: v.name for k, v in files.items()}
    files["json"] = out_dir / "frontier.json"
    files["json"].write_text(json.dumps(analysis.summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    files["report"] = out_dir / "report.md"
    files["report"].write_text(markdown_report(analysis.summary), encoding="utf-8")
    analysis.files = files
    return files
