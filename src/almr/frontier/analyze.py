"""`almr frontier SWEEP_DIR`: everything the analysis of one sweep computes, in one call.

`analyze_sweep(sweep_dir, config, out_dir)` reads the run records (`almr.sweep.records`), the
baseline (`runs.load_baseline`), fits the recommendation, the metric frontier, a GP surface per
validation source and for the combined loss, the loss frontier through the recommendation, and
the D-CPT / CMR baselines, then writes to `out_dir` (default `SWEEP_DIR/frontier/`):
`frontier.json` (every number, machine-readable), `report.md`, `fig1_frontier.png` and
`fig2_trajectories.png`. Bad input (no records, mixed studies, too few runs, an impossible
forgetting budget, a general or additional source the runs do not validate) is refused before
anything is written.

A study whose runs recorded validation losses but no benchmark metric (no probe, no final
evaluation) still gets its answer: the metric surface and frontier are absent (frontier.json's
`metric` says why), everything that needs losses only is fitted, and the recommendation is the
lowest additional-language loss within the budget on the general-language loss: ε =
`frontier.epsilon` when set, else the CMR's tolerance `cmr_tolerance` × the base model's loss.

The D-CPT and CMR baselines use the runs at one LR, because those laws have no LR: the studied LR
nearest (in log10) to the recommended LR among those with completed runs at ≥ 3 ALMRs; if no LR
has that, all completed runs (said in the report).
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from almr.errors import AlmrError, DataError
from almr.evaluate.results import as_average
from almr.frontier.baselines import DCPTLaw, critical_mixture_ratio, dcpt_points
from almr.frontier.config import FrontierConfig
from almr.frontier.frontier import LossFrontier, MetricFrontier
from almr.frontier.plots import plot_fig1, plot_fig2
from almr.frontier.recommend import Recommender
from almr.frontier.report import markdown_report
from almr.frontier.runs import (
    Baseline,
    SourceRoles,
    SourceTags,
    check_base_hash,
    load_baseline,
    load_source_tags,
    loss_sources,
    metric_absence,
    source_roles,
    sweep_arrays,
)
from almr.frontier.surface import GPSurface
from almr.sweep.records import RunRecord, load_records


@dataclass
class Analysis:
    """The fitted estimators and the JSON summary of one sweep."""

    records: list[RunRecord]
    baseline: Baseline | None
    recommender: Recommender
    metric: MetricFrontier | None  # None: the runs have no averaged metric (summary["metric"]["reason"])
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
    tags = load_source_tags(sweep_dir)
    analysis = analyze_records(records, config, load_baseline(sweep_dir, records), tags)
    analysis.summary["sweep_dir"] = str(sweep_dir)
    write_outputs(analysis, config, Path(out_dir) if out_dir is not None else sweep_dir / "frontier")
    return analysis


def analyze_records(
    records: list[RunRecord], config: FrontierConfig, baseline: Baseline | None, tags: SourceTags | None = None
) -> Analysis:
    """The fits of `analyze_sweep` on records in memory; `tags`: the sources' language tags (sweep.yaml)."""
    base_hash = check_base_hash(records)
    keys = list(config.metric_keys or []) or None
    roles = source_roles(config, records, tags)
    common = {
        "kernel": config.kernel,
        "n_restarts_optimizer": config.n_restarts_optimizer,
        "min_runs": config.min_runs,
        "random_state": config.random_state,
    }
    absent = metric_absence(records, keys)
    mf: MetricFrontier | None = None
    if absent is None:
        rec = Recommender(
            metric_keys=keys,
            epsilon=config.epsilon,
            constraint_source=roles.general,
            grid_size=config.grid_size,
            n_samples=config.n_posterior_samples,
            radius=config.prob_radius,
            **common,
        ).fit(records, baseline)
        mf = MetricFrontier(
            metric_keys=keys, forms=config.forms, grid_size=config.grid_size, n_bootstrap=config.n_bootstrap, **common
        ).fit(records)
        box = mf.surface_.box_
        budget_rule = None if config.epsilon is None else f"ε = {config.epsilon:g} (frontier.epsilon)"
    else:
        rec, budget_rule = _loss_recommender(records, config, baseline, roles, common)
        box = rec.surface_.box_
    sources = loss_sources(records)
    if config.loss_source != "combined" and config.loss_source not in sources:
        raise AlmrError(
            f"frontier.loss_source={config.loss_source!r}: the completed runs report val_loss for "
            f"{', '.join(sources) or 'no source'}; use one of them or 'combined'"
        )
    lf = LossFrontier(source=config.loss_source, start=(rec.almr_, rec.lr_), grid_size=config.grid_size, **common)
    lf.fit(records)
    fitted = {config.loss_source: lf.surface_}
    if mf is None:
        fitted.setdefault(rec.target.removeprefix("loss:"), rec.surface_)
    surfaces = _loss_surfaces(records, config, sources, fitted, box)
    dcpt, baselines = _baselines(records, config, rec, baseline, roles)
    summary = _summary(records=records, config=config, base_hash=base_hash, baseline=baseline, rec=rec, mf=mf,
                       lf=lf, surfaces=surfaces, baselines=baselines, roles=roles, absent=absent,
                       budget_rule=budget_rule)  # fmt: skip
    return Analysis(records, baseline, rec, mf, lf, surfaces, dcpt, summary)


def _loss_recommender(records: list[RunRecord], config: FrontierConfig, baseline: Baseline | None,
                      roles: SourceRoles, common: dict[str, Any]) -> tuple[Recommender, str | None]:  # fmt: skip
    """Without a metric: the lowest additional-language loss within the budget on the general-language
    loss (`frontier.epsilon`, else the CMR's tolerance); the fitted Recommender and the budget's rule
    (None: unconstrained, with the reason in `roles.notes`)."""
    if roles.additional is None:
        present = sorted({s for r in records if r.status == "completed" for s in r.val_loss})
        raise AlmrError(
            "the runs have no averaged metric, so the recommendation minimizes the additional language's "
            f"validation loss, and no validated source is tagged as it (the runs validate {', '.join(present)}); "
            "set frontier.additional_source to one of them"
        )
    general = roles.general
    epsilon, rule = None, None
    if config.epsilon is not None:
        epsilon, rule = _budget(config, 0.0)  # ε as set; the Recommender refuses without the base loss it needs
    elif general is not None and baseline is not None and general in baseline.val_loss:
        epsilon, rule = _budget(config, baseline.val_loss[general])
    else:
        why = "no general-language source" if general is None else f"no base-model {general} loss (baseline.json)"
        roles.notes.append(
            f"the loss-only recommendation is unconstrained: {why}, so the {roles.additional} loss is minimized "
            "without a forgetting budget (likely at the highest ALMR and LR studied)"
        )
    rec = Recommender(
        epsilon=epsilon,
        constraint_source=general,
        target=f"loss:{roles.additional}",
        grid_size=config.grid_size,
        n_samples=config.n_posterior_samples,
        radius=config.prob_radius,
        **common,
    ).fit(records, baseline)
    return rec, rule


def _budget(config: FrontierConfig, base: float) -> tuple[float, str]:
    """The tolerance on the general loss above the base model's, and the rule that set it: ε of the
    forgetting budget when set, else `cmr_tolerance` × base (the CMR's own)."""
    if config.epsilon is not None:
        return config.epsilon, f"ε = {config.epsilon:g} (frontier.epsilon)"
    tol = config.cmr_tolerance * base
    return tol, f"{config.cmr_tolerance:g} × base loss = {tol:.4g}"


def _loss_surfaces(records: list[RunRecord], config: FrontierConfig, sources: list[str], fitted: dict[str, GPSurface],
                   box: tuple[float, float, float, float]) -> dict[str, GPSurface]:  # fmt: skip
    """A GP surface of each source's final validation loss and of the combined loss, over the analysis's
    box (the surfaces already `fitted` — the loss frontier's, the loss-only recommendation's — as they are)."""
    surfaces: dict[str, GPSurface] = {}
    for src in [*sources, "combined"] if sources else []:
        if src in fitted:
            surfaces[src] = fitted[src]
            continue
        data = sweep_arrays(records, f"loss:{src}", None, config.min_runs)
        surfaces[src] = GPSurface(
            kernel=config.kernel,
            n_restarts_optimizer=config.n_restarts_optimizer,
            box=box,
            random_state=config.random_state,
        ).fit(data.X, data.y)
    return surfaces


# --------------------------------------------------------------------------- baselines on the same runs


def _baseline_runs(records: list[RunRecord], lr: float) -> tuple[list[RunRecord], str]:
    done = [r for r in records if r.status == "completed"]
    for value in sorted({r.lr for r in done}, key=lambda v: abs(np.log10(v) - np.log10(lr))):
        at = [r for r in done if r.lr == value]
        if len({r.almr for r in at}) >= 3:
            return at, f"the {len(at)} completed runs at LR {value:.3g} (the studied LR nearest the recommended one)"
    return done, "all completed runs (no single studied LR has completed runs at ≥ 3 ALMRs)"


def _baselines(records: list[RunRecord], config: FrontierConfig, rec: Recommender, baseline: Baseline | None,
               roles: SourceRoles) -> tuple[dict[str, DCPTLaw], dict[str, Any]]:  # fmt: skip
    """The D-CPT laws (additional and general source) and the CMR, fitted to the runs at one LR
    (module docstring); the summary's `baselines` section (without `cmr_point`)."""
    runs, which = _baseline_runs(records, rec.lr_)
    laws, fits, notes = _dcpt_laws(runs, config, roles)
    gen = roles.general
    cmr = None
    if gen in laws and baseline is not None and gen in baseline.val_loss:
        cmr = _cmr(laws[gen], runs, config, baseline.val_loss[gen])
    elif gen in laws:
        notes.append(f"CMR: no base-model {gen} loss (baseline.json or step-0 validation)")
    out = {"runs": which, "lr": float(np.median([r.lr for r in runs])), "dcpt": fits, "notes": notes, "cmr": cmr}
    return laws, out


def _dcpt_laws(runs: list[RunRecord], config: FrontierConfig,
               roles: SourceRoles) -> tuple[dict[str, DCPTLaw], dict[str, Any], list[str]]:  # fmt: skip
    """The D-CPT law of the additional and of the general source, their summaries, and why a law is missing."""
    laws: dict[str, DCPTLaw] = {}
    fits: dict[str, Any] = {}
    notes: list[str] = []
    for src, additional in ((roles.additional, True), (roles.general, False)):
        if src is None:
            key = "additional_source" if additional else "general_source"
            notes.append(f"D-CPT for the {'additional' if additional else 'general'} language: no validated "
                         f"source found for it ({roles.how}); set frontier.{key}")  # fmt: skip
            continue
        r, D, loss = dcpt_points(runs, src, additional)
        if not loss:
            notes.append(f"D-CPT for {src}: the runs have no validation history of {src}")
            continue
        try:
            law = DCPTLaw(
                eps=config.dcpt_eps,
                huber_delta=config.dcpt_huber_delta,
                n_starts=config.dcpt_starts,
                random_state=config.random_state,
            ).fit(r, D, loss)
        except AlmrError as err:
            notes.append(f"D-CPT for {src}: {err}")
            continue
        laws[src] = law
        fits[src] = {
            "share": "ALMR" if additional else "1 − ALMR",
            "params": law.params_,
            "d_ref_tokens": law.d_ref_,
            "huber_objective": law.objective_,
            "rmse_log": law.rmse_log_,
            "r2": law.r2_,
            "points": law.n_points_,
        }
    return laws, fits, notes


def _cmr(general: DCPTLaw, runs: list[RunRecord], config: FrontierConfig, base: float) -> dict[str, Any]:
    """The Critical Mixture Ratio at the runs' budget, with its tolerance and the rule that set it."""
    tol, rule = _budget(config, base)
    budget = float(max(r.tokens for r in runs))
    cmr = critical_mixture_ratio(general, budget, base, tol)
    return {"almr": cmr, "tolerance": tol, "rule": rule, "base_loss": base, "budget_tokens": budget}


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


def _point(surfaces: dict[str, GPSurface], metric: GPSurface | None, almr: float, lr: float) -> dict[str, Any]:
    """The surfaces' posterior at one (ALMR, LR); `metric` None (a loss-only study): `"metric": None`."""
    predicted = None
    if metric is not None:
        m, s = metric.predict(almr, lr, return_std=True)
        predicted = {"mean": float(m), "std": float(s)}
    losses = {}
    for src, surf in surfaces.items():
        lm, ls = surf.predict(almr, lr, return_std=True)
        losses[src] = {"mean": float(lm), "std": float(ls)}
    return {"almr": almr, "lr": lr, "metric": predicted, "val_loss": losses}


def _surface_info(s: GPSurface) -> dict[str, Any]:
    return {
        "kernel": str(s.kernel_),
        "length_scales": s.length_scales_,
        "noise_std": s.noise_std_,
        "n_runs": s.n_train_,
        "warnings": s.warnings_,
    }


def _summary(
    *,
    records: list[RunRecord],
    config: FrontierConfig,
    base_hash: str,
    baseline: Baseline | None,
    rec: Recommender,
    mf: MetricFrontier | None,
    lf: LossFrontier,
    surfaces: dict[str, GPSurface],
    baselines: dict[str, Any],
    roles: SourceRoles,
    absent: str | None,
    budget_rule: str | None,
) -> dict[str, Any]:
    """`frontier.json`: every number of the analysis in plain JSON types (`report.md` is written from it).
    Without a metric (`absent`: why), `metric_frontier` and every predicted metric are null."""
    metric = None if mf is None else mf.surface_
    box = (metric or rec.surface_).box_
    done = [r for r in records if r.status == "completed"]
    return _f(
        {
            "format": "almr-frontier/1",
            "base_hash": base_hash,
            "config": config.model_dump(mode="json"),
            "sources": roles.as_dict(),
            "metric": {
                "present": absent is None,
                "reason": absent,
                "runs_with_metric": sum(r.averaged_metric is not None for r in done),
                "runs_with_val_loss": sum(bool(r.val_loss) for r in done),
                "definition": _metric_definition(done, config.metric_keys),
            },
            "baseline": None if baseline is None else baseline.as_dict(),
            "runs": _runs_summary(records),
            "counts": {
                s: sum(r.status == s for r in records) for s in ("completed", "failed", "pruned", "pending", "running")
            },
            "excluded": [e.as_dict() for e in (rec if mf is None else mf).excluded_],
            "box": {"almr": [box[0], box[1]], "lr": [10 ** box[2], 10 ** box[3]]},
            "surfaces": {
                **({} if metric is None else {"metric": _surface_info(metric)}),
                **{f"loss:{k}": _surface_info(v) for k, v in surfaces.items()},
            },
            "metric_frontier": None if mf is None else _metric_frontier_summary(mf),
            "loss_frontier": _loss_frontier_summary(lf),
            "recommendation": _recommendation_summary(rec, mf, surfaces, baseline, config, budget_rule),
            "loss_optimum": _loss_optimum(lf, metric, surfaces) if config.loss_source == "combined" else None,
            "baselines": {**baselines, "cmr_point": _cmr_point(baselines, box, metric, surfaces)},
            "tradeoff": _tradeoff(records, baseline),
        }
    )


def _metric_definition(done: list[RunRecord], metric_keys: list[str] | None) -> dict[str, Any] | None:
    """What the fitted metric is — frontier.metric_keys (weights 1) when set, else the runs' own
    averaged metric (eval.average) — and where the runs' scores came from (final_eval, probe)."""
    average = as_average(metric_keys) if metric_keys else next((r.average for r in done if r.average), None)
    if average is None:
        return None
    scores_from = sorted({r.scores_from for r in done if r.scores_from})
    return {"name": average.name, "terms": average.terms, "scores_from": scores_from,
            "described": average.describe()}  # fmt: skip


def _runs_summary(records: list[RunRecord]) -> list[dict[str, Any]]:
    return [
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


def _metric_frontier_summary(mf: MetricFrontier) -> dict[str, Any]:
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
    return {
        "peaks": mf.peaks_,
        "best_run": mf.best_run_,
        "ridge": dict(mf.ridge_.items()),
        "ridge_note": mf.ridge_note_,
        "forms": forms,
        "skipped_forms": mf.skipped_forms_,
        "selected_form": mf.form_,
        "criterion": "lowest leave-one-out RMSE of log10 LR* over the ridge points",
        "n_bootstrap": mf.n_bootstrap_done_,
    }


def _loss_frontier_summary(lf: LossFrontier) -> dict[str, Any]:
    return {
        "source": lf.source,
        "start": lf.start_,
        "direction_scaled": lf.direction_,
        "slope_log10lr_per_almr": lf.slope_,
        "gradient_scaled": lf.gradient_,
        "descent_stop": lf.descent_stop_,
        "ascent_stop": lf.ascent_stop_,
        "path": {"almr": lf.path_["almr"], "lr": lf.path_["lr"], "loss": lf.path_["loss"]},
    }


def _recommendation_summary(rec: Recommender, mf: MetricFrontier | None, surfaces: dict[str, GPSurface],
                            baseline: Baseline | None, config: FrontierConfig,
                            budget_rule: str | None) -> dict[str, Any]:  # fmt: skip
    recommendation = _point(surfaces, None if mf is None else mf.surface_, rec.almr_, rec.lr_)
    constraint = None if rec.constraint_ is None else {**rec.constraint_, "rule": budget_rule}
    recommendation.update(
        {
            "objective": {
                "target": rec.target,
                "sense": "maximize" if rec.target == "metric" else "minimize",
                "mean": rec.value_mean_,
                "std": rec.value_std_,
            },
            "prob_best_within_radius": rec.prob_best_,
            "radius": config.prob_radius,
            "prob_best_cell": rec.prob_best_cell_,
            "grid_size": config.grid_size,
            "credible_region_95": rec.credible_,
            "constraint": constraint,
            "prob_constraint_holds": rec.prob_constraint_,
            "frontier_lr_at_almr": None if mf is None else float(mf.predict_lr(rec.almr_)[0]),
        }
    )
    if baseline is not None:
        recommendation["change_vs_base"] = {
            s: recommendation["val_loss"][s]["mean"] - baseline.val_loss[s]
            for s in recommendation["val_loss"]
            if s in baseline.val_loss
        }
    return recommendation


def _loss_optimum(lf: LossFrontier, metric: GPSurface | None, surfaces: dict[str, GPSurface]) -> dict[str, Any]:
    """What a combined-loss choice would pick: the lowest combined loss in the studied box (on lf's grid)."""
    comb = lf.grid_
    i, j = np.unravel_index(np.argmin(comb["mean"]), comb["mean"].shape)
    return _point(surfaces, metric, float(comb["almr"][i]), float(comb["lr"][j]))


def _cmr_point(baselines: dict[str, Any], box: tuple[float, float, float, float], metric: GPSurface | None,
               surfaces: dict[str, GPSurface]) -> dict[str, Any] | None:  # fmt: skip
    """The CMR at the baselines' LR, with the surfaces' predictions there when it lies in the studied box."""
    if not baselines["cmr"] or baselines["cmr"]["almr"] is None:
        return None
    a, lr = baselines["cmr"]["almr"], baselines["lr"]
    inside = box[0] <= a <= box[1] and box[2] <= np.log10(lr) <= box[3]
    point = {"almr": a, "lr": lr, "inside_studied_box": bool(inside)}
    if point["inside_studied_box"]:
        point.update(_point(surfaces, metric, a, lr))
    return point


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
    """Fig. 1, Fig. 2, frontier.json and report.md into `out_dir`; their paths (also in `analysis.files`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    surface = analysis.recommender.surface_ if analysis.metric is None else analysis.metric.surface_
    files = {
        "fig1": plot_fig1(
            out_dir / "fig1_frontier.png", records=analysis.records, metric=analysis.metric, loss=analysis.loss,
            recommender=analysis.recommender, cmr_point=analysis.summary["baselines"].get("cmr_point"),
            svg=config.svg,
        ),
        "fig2": plot_fig2(
            out_dir / "fig2_trajectories.png", records=analysis.records, recommender=analysis.recommender,
            surface=surface, metric_keys=config.metric_keys, svg=config.svg,
        ),
    }  # fmt: skip
    analysis.summary["figures"] = {k: v.name for k, v in files.items()}
    files["json"] = out_dir / "frontier.json"
    files["json"].write_text(json.dumps(analysis.summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    files["report"] = out_dir / "report.md"
    files["report"].write_text(markdown_report(analysis.summary), encoding="utf-8")
    analysis.files = files
    return files
