"""`report.md` of a frontier analysis, written from the `frontier.json` summary alone (so that the
report and the machine-readable numbers cannot disagree). Sections: summary, runs, trade-off,
surfaces, metric frontier, loss frontier, recommendation, baselines, uncertainty, figures. A study
without a metric (`metric.present` false) says so first, with the reason, and its recommendation
is the loss-only one."""

import math
from collections.abc import Mapping
from typing import Any


def _n(x: Any, fmt: str = ".4g") -> str:
    return "–" if x is None else format(x, fmt)


def _lr(x: Any) -> str:
    return "–" if x is None else f"{x:.3g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _direction(rho: float | None, what: str) -> str:
    if rho is None:
        return ""
    if abs(rho) < 0.3:
        return f"hardly changes with {what}"
    return f"{'rises' if rho > 0 else 'falls'} as {what} grows"


def _has_metric(s: Mapping[str, Any]) -> bool:
    return s["metric_frontier"] is not None


def markdown_report(s: dict[str, Any]) -> str:
    sources = sorted({k for r in s["runs"] for k in r["val_loss"]})
    out = [f"# Frontier analysis of {s.get('sweep_dir', 'a sweep')}", ""]
    out += _summary_section(s) if _has_metric(s) else _loss_only_summary(s)
    out += _runs_section(s, sources)
    out += _tradeoff_section(s)
    out += _surfaces_section(s)
    out += _metric_frontier_section(s)
    out += _loss_frontier_section(s)
    out += _recommendation_section(s)
    out += _baselines_section(s)
    out += _uncertainty_and_figures(s)
    return "\n".join(out)


def _summary_section(s: dict[str, Any]) -> list[str]:
    rec, mfr, lfr = s["recommendation"], s["metric_frontier"], s["loss_frontier"]
    lin = mfr["forms"]["linear"]
    constraint = rec.get("constraint")
    cons = (
        f", subject to {constraint['source']} loss ≤ base {constraint['base']:.4f} + ε {constraint['epsilon']:g}"
        if constraint
        else " (no forgetting budget)"
    )
    ci = lin["ci95"]
    ci_text = (
        f" (95% bootstrap CI a ∈ [{ci['a'][0]:.3f}, {ci['a'][1]:.3f}], b ∈ [{ci['b'][0]:.3f}, {ci['b'][1]:.3f}])"
        if ci
        else " (no bootstrap CI: n_bootstrap = 0)"
    )
    undetermined = (
        " The interval of b includes 0: these runs do not tell whether the best LR falls or rises with ALMR; "
        "runs at more ALMRs (or the adaptive design) would."
        if ci and ci["b"][0] < 0.0 < ci["b"][1]
        else ""
    )
    counts = s["counts"]
    return [
        f"- **Recommendation**: ALMR **{rec['almr']:.3f}**, LR **{rec['lr']:.3g}**{cons}; expected averaged metric "
        f"{rec['metric']['mean']:.2f} ± {rec['metric']['std']:.2f}; probability of being best (within "
        f"{rec['radius']:g} of the studied ranges) **{rec['prob_best_within_radius']:.2f}**.",
        f"- **Metric frontier** (Eq. 1 analog): {frontier_equation(lin['coef'])}"
        f"{ci_text}; the form that fits best by leave-one-out error: **{mfr['selected_form']}**.{undetermined}",
        f"- **Loss frontier** (Eq. 2 analog): from the recommendation the {lfr['source']} loss falls fastest along "
        f"d log10 LR / d ALMR = {_n(lfr['slope_log10lr_per_almr'], '.3g')}.",
        f"- Runs: {counts['completed']} completed (fitted), {counts['failed']} failed, {counts['pruned']} pruned, "
        f"{counts['pending'] + counts['running']} unfinished; base config {s['base_hash'] or '(unnamed)'}.",
        *_metric_definition_line(s["metric"].get("definition")),
        "",
    ]


def _metric_definition_line(d: Mapping[str, Any] | None) -> list[str]:
    """The averaged metric the study ranks by: its name, weighted terms (0–100) and the scores' source."""
    if not d:
        return []
    where = " and ".join({"final_eval": "final evaluation", "probe": "last probe"}.get(x, x) for x in d["scores_from"])
    return [f"- **Averaged metric**: {d['described']} (each 0–100), from each run's {where or 'scores'}."]


def _loss_only_summary(s: dict[str, Any]) -> list[str]:
    """The summary of a study without a metric: why, what was fitted, and the loss-only recommendation."""
    rec, lfr, src, counts = s["recommendation"], s["loss_frontier"], s["sources"], s["counts"]
    objective = rec["objective"]
    return [
        f"**No averaged metric**: {s['metric']['reason']}. The metric surface, the metric frontier (Eq. 1) and "
        "the probe trajectories are absent; everything that needs validation losses only is fitted: the loss "
        "surfaces, the loss frontier (Eq. 2), D-CPT and CMR. A probe (cpt.probe.every_tokens) or a final "
        "evaluation of each run would add the metric and its frontier.",
        "",
        f"- **Recommendation (by loss)**: ALMR **{rec['almr']:.3f}**, LR **{rec['lr']:.3g}**: the lowest predicted "
        f"{src['additional']} validation loss, {objective['mean']:.4f} ± {objective['std']:.4f}, "
        f"{_budget_words(rec)}; probability of being best (within {rec['radius']:g} of the studied ranges) "
        f"**{rec['prob_best_within_radius']:.2f}**.",
        f"- **Loss frontier** (Eq. 2 analog): from the recommendation the {lfr['source']} loss falls fastest along "
        f"d log10 LR / d ALMR = {_n(lfr['slope_log10lr_per_almr'], '.3g')}.",
        f"- Sources: additional language {src['additional']}, general language {src['general'] or '–'} ({src['how']}).",
        f"- Runs: {counts['completed']} completed (fitted), {counts['failed']} failed, {counts['pruned']} pruned, "
        f"{counts['pending'] + counts['running']} unfinished; base config {s['base_hash'] or '(unnamed)'}.",
        *[f"- Note: {note}." for note in src["notes"]],
        "",
    ]


def _budget_words(rec: Mapping[str, Any]) -> str:
    c = rec.get("constraint")
    if not c:
        return "without a forgetting budget"
    rule = c.get("rule") or f"ε = {c['epsilon']:g}"
    return f"subject to {c['source']} loss ≤ base {c['base']:.4f} + tolerance ({rule})"


def _runs_section(s: dict[str, Any], sources: list[str]) -> list[str]:
    out = ["## Runs", ""]
    header = ["run", "ALMR", "LR", "status", "tokens", *[f"loss {x}" for x in sources], "averaged metric"]
    rows = []
    for r in s["runs"]:
        losses = [_n(r["val_loss"].get(x)) for x in sources]
        rows.append(
            [
                r["run_id"],
                f"{r['almr']:.3g}",
                _lr(r["lr"]),
                r["status"],
                f"{r['tokens']:,}",
                *losses,
                _n(r["averaged_metric"], ".2f"),
            ]
        )
    out += [*_table(header, rows), ""]
    if s["excluded"]:
        out += ["Excluded from every fit (never scored 0):", ""]
        out += [
            f"- {e['run_id']} (ALMR {e['almr']:.3g}, LR {e['lr']:.3g}): {e['status']} — {e['reason']}"
            for e in s["excluded"]
        ]
        out.append("")
    base = s["baseline"]
    if base:
        base_losses = ", ".join(f"{k} {v:.4f}" for k, v in base["val_loss"].items())
        out += [f"Base model before CPT ({base['source']}): {base_losses}.", ""]
    else:
        out += ["No base-model losses (no baseline.json, no step-0 validation): changes vs base are not shown.", ""]
    return out


def _tradeoff_section(s: dict[str, Any]) -> list[str]:
    out = ["## Trade-off: Chinese vs English as ALMR and LR grow", ""]
    rows = []
    for name, t in s["tradeoff"].items():
        rows.append(
            [
                name,
                _n(t.get("base")),
                _n(t["min"]),
                _n(t["max"]),
                _n(t["spearman_almr"], "+.2f"),
                _n(t["spearman_log_lr"], "+.2f"),
                f"{_direction(t['spearman_almr'], 'ALMR')}; {_direction(t['spearman_log_lr'], 'LR')}",
            ]
        )
    out += _table(["final value", "base", "min", "max", "ρ(ALMR)", "ρ(log LR)", "reading"], rows)
    return [*out, "", "ρ: Spearman rank correlation over the completed runs.", ""]


def _surfaces_section(s: dict[str, Any]) -> list[str]:
    out = ["## Surrogate surfaces (Gaussian processes over ALMR × log10 LR, both scaled to [0, 1])", ""]
    rows = []
    for name, info in s["surfaces"].items():
        ls = ", ".join(f"{v:.3g}" for v in info["length_scales"])
        rows.append([name, str(info["n_runs"]), ls, _n(info["noise_std"]), "; ".join(info["warnings"]) or "–"])
    header = ["surface", "runs", "length scales (ALMR, log LR)", "noise std", "optimizer notes"]
    return [*out, *_table(header, rows), ""]


def _metric_frontier_section(s: dict[str, Any]) -> list[str]:
    mfr = s["metric_frontier"]
    out = ["## Metric frontier (Eq. 1 analog)", ""]
    if mfr is None:
        return [*out, f"Absent: {s['metric']['reason']}. With no metric there is no surface to take peaks of.", ""]
    best = mfr["best_run"]
    out += [
        f"Best observed run: {best['run_id']} (ALMR {best['almr']:.3g}, LR {best['lr']:.3g}), metric "
        f"{best['metric']:.2f}. Peaks of the posterior mean (local maxima on the grid):",
        "",
    ]
    out += _table(
        ["ALMR", "LR", "metric mean", "std"],
        [[f"{p['almr']:.3f}", _lr(p["lr"]), f"{p['mean']:.2f}", f"{p['std']:.2f}"] for p in mfr["peaks"]],
    )
    out += ["", "Best LR per studied ALMR (the points the frontier regresses):", ""]
    ridge = mfr["ridge"]
    rows = [
        [f"{a:.3g}", _lr(10**x), f"{m:.2f}", "yes" if e else "no", "yes" if u else "no"]
        for a, x, m, e, u in zip(
            ridge["almr"], ridge["log10_lr"], ridge["metric"], ridge["at_edge"], ridge["used"], strict=True
        )
    ]
    out += [*_table(["ALMR", "LR*", "metric mean", "at LR range edge", "in regression"], rows), ""]
    if mfr["ridge_note"]:
        out += [f"Note: {mfr['ridge_note']}.", ""]
    rows = []
    for name, f in mfr["forms"].items():
        coef = ", ".join(
            f"{k} = {v:.3f}" + (f" [{f['ci95'][k][0]:.3f}, {f['ci95'][k][1]:.3f}]" if f["ci95"] else "")
            for k, v in f["coef"].items()
        )
        chosen = "**selected**" if name == mfr["selected_form"] else ""
        rows.append([name, f["equation"], coef, _n(f["loo_rmse"]), _n(f["aicc"], ".2f"), chosen])
    for name, why in mfr["skipped_forms"].items():
        rows.append([name, "–", f"not fitted: {why}", "–", "–", ""])
    out += _table(["form", "equation", "coefficients [95% CI]", "LOO RMSE", "AICc", ""], rows)
    return [*out, "", f"Criterion: {mfr['criterion']}; CIs from {mfr['n_bootstrap']} bootstrap refits of the GP.", ""]


def _loss_frontier_section(s: dict[str, Any]) -> list[str]:
    lfr = s["loss_frontier"]
    d = lfr["direction_scaled"]
    return [
        "## Loss frontier (Eq. 2 analog)",
        "",
        f"The steepest-descent curve of the fitted {lfr['source']} validation loss through the recommendation "
        f"(ALMR {lfr['start'][0]:.3f}, LR {lfr['start'][1]:.3g}), in the plane of ALMR and log10 LR scaled to the "
        f"studied ranges. Direction of fastest descent there: ({d[0]:+.3f}, {d[1]:+.3f}) in scaled units, i.e. "
        f"d log10 LR / d ALMR = {_n(lfr['slope_log10lr_per_almr'], '.3g')}. Followed downhill it ends at the "
        f"{lfr['descent_stop']} (ALMR {lfr['path']['almr'][-1]:.3f}, LR {lfr['path']['lr'][-1]:.3g}, loss "
        f"{lfr['path']['loss'][-1]:.4f}); uphill at the {lfr['ascent_stop']}.",
        "",
    ]


def _recommendation_section(s: dict[str, Any]) -> list[str]:
    rec, cfg = s["recommendation"], s["config"]
    constraint = rec.get("constraint")
    out = ["## Recommendation", ""]
    cr = rec["credible_region_95"]
    if _has_metric(s):
        out += [
            f"- (ALMR, LR) = ({rec['almr']:.3f}, {rec['lr']:.3g}); the metric frontier's LR at this ALMR: "
            f"{rec['frontier_lr_at_almr']:.3g}.",
            f"- Expected averaged metric {rec['metric']['mean']:.2f} ± {rec['metric']['std']:.2f} (posterior mean ± "
            "std).",
        ]
    else:
        src = s["sources"]["additional"]
        out += [
            f"- (ALMR, LR) = ({rec['almr']:.3f}, {rec['lr']:.3g}): the lowest posterior mean of the {src} validation "
            f"loss {_budget_words(rec)} (no averaged metric to maximize).",
            f"- Expected {src} loss {rec['objective']['mean']:.4f} ± {rec['objective']['std']:.4f} (posterior mean ± "
            "std).",
        ]
    out += [
        f"- P(best) = {rec['prob_best_within_radius']:.3f} that the best point lies within {rec['radius']:g} (scaled) "
        f"of it; P(this very grid cell, {rec['grid_size']}×{rec['grid_size']} grid) = {rec['prob_best_cell']:.3f}; "
        f"from {cfg['n_posterior_samples']} joint posterior samples.",
        f"- 95% credible region of the best point: ALMR [{cr['almr'][0]:.3f}, {cr['almr'][1]:.3f}], LR "
        f"[{cr['lr'][0]:.3g}, {cr['lr'][1]:.3g}].",
    ]
    if constraint:
        out.append(
            f"- Forgetting budget: {constraint['source']} loss ≤ {constraint['limit']:.4f} (base "
            f"{constraint['base']:.4f} + ε {constraint['epsilon']:g}); {100 * constraint['feasible_share']:.0f}% of "
            f"the studied box is feasible; P(budget holds here) = {_n(rec['prob_constraint_holds'], '.3f')}."
        )
    rows = []
    for src, v in rec["val_loss"].items():
        change = (rec.get("change_vs_base") or {}).get(src)
        rows.append([src, f"{v['mean']:.4f} ± {v['std']:.4f}", _n(change, "+.4f")])
    out += ["", "Predicted final validation losses at the recommendation:", ""]
    return [*out, *_table(["source", "loss (mean ± std)", "change vs base"], rows), ""]


def _baselines_section(s: dict[str, Any]) -> list[str]:
    bl, cfg = s["baselines"], s["config"]
    out = ["## Baselines on the same runs", "", f"Fitted to {bl['runs']}.", ""]
    rows = []
    for src, f in bl["dcpt"].items():
        p = f["params"]
        rows.append(
            [
                src,
                f["share"],
                f"{p['E']:.4g}",
                f"{p['B']:.4g}",
                f"{p['eta']:.3g}",
                f"{p['beta']:.3g}",
                f"{p['C']:.4g}",
                f"{p['gamma']:.3g}",
                f"{f['rmse_log']:.2e}",
                f"{f['r2']:.4f}",
                str(f["points"]),
            ]
        )
    if rows:
        out += [
            "D-CPT law L(r, D) = E + B·r^η/D^β + C/(r+ε)^γ (D in units of the budget, ε = "
            f"{cfg['dcpt_eps']:g}, Huber loss on log L, {cfg['dcpt_starts']} starts):",
            "",
        ]
        out += [*_table(["source", "r", "E", "B", "η", "β", "C", "γ", "RMSE log", "R²", "points"], rows), ""]
    for note in bl["notes"]:
        out.append(f"- {note}")
    if bl["cmr"]:
        c = bl["cmr"]
        cmr = "none (no ratio keeps the loss within the tolerance)" if c["almr"] is None else f"{c['almr']:.3f}"
        out += [
            f"- Critical Mixture Ratio: **{cmr}**: the largest ALMR whose predicted {s['sources']['general']} "
            f"loss after {c['budget_tokens']:,.0f} tokens stays ≤ base {c['base_loss']:.4f} + {c['rule']}."
        ]
    return [*out, "", *_choices_table(s), ""]


def _choices_table(s: dict[str, Any]) -> list[str]:
    """This analysis's pick beside a loss-only choice and the CMR, on the same surfaces (without a metric:
    their predicted additional-language loss instead of the metric)."""
    rec, bl = s["recommendation"], s["baselines"]
    gen, extra = s["sources"]["general"], s["sources"]["additional"]
    metric = _has_metric(s)

    def middle(pt: Mapping[str, Any]) -> str:
        if metric:
            return f"{pt['metric']['mean']:.2f} ± {pt['metric']['std']:.2f}"
        return _n(pt["val_loss"].get(extra, {}).get("mean"))

    pick = "this analysis (max metric)" if metric else f"this analysis (min {extra} loss within the budget)"
    rows = [[pick, f"{rec['almr']:.3f}", _lr(rec["lr"]), middle(rec), _n(rec["val_loss"].get(gen, {}).get("mean"))]]
    for label, pt in (
        ("lowest loss (loss-only choice)" if metric else "lowest combined loss", s["loss_optimum"]),
        ("CMR at the baseline LR", bl["cmr_point"]),
    ):
        if pt and "metric" in pt:
            rows.append([label, f"{pt['almr']:.3f}", _lr(pt["lr"]), middle(pt),
                         _n(pt["val_loss"].get(gen, {}).get("mean"))])  # fmt: skip
        elif pt:
            rows.append([label, f"{pt['almr']:.3f}", _lr(pt["lr"]), "outside the studied box", "–"])
    header = "predicted metric" if metric else f"predicted {extra} loss"
    return _table(["choice", "ALMR", "LR", header, f"predicted {gen or 'general-language'} loss"], rows)


def _uncertainty_and_figures(s: dict[str, Any]) -> list[str]:
    rec = s["recommendation"]
    target = rec["objective"]["target"] if "objective" in rec else "metric"
    out = [
        "## Uncertainty",
        "",
        f"The surfaces are GP posteriors from {s['surfaces'][target]['n_runs']} completed runs; their std is the "
        "uncertainty of the mean surface (the run-to-run noise is estimated separately, column 'noise std'). "
        f"The recommendation is the best cell of the posterior mean; with probability "
        f"{rec['prob_best_within_radius']:.2f} the true best lies within {rec['radius']:g} of the studied ranges "
        "of it, and the credible region above bounds where it may be. "
        + (
            "The frontier's CIs come from refitting the GP on bootstrap resamples of the runs; they cover the "
            "sampling of runs, not a change of model family. "
            if _has_metric(s)
            else ""
        )
        + "Nothing here extrapolates beyond the studied ranges except the D-CPT/CMR baseline, which says so.",
        "",
        "## Figures",
        "",
    ]
    figures = s.get("figures", {})
    metric = _has_metric(s)
    if "fig1" in figures and metric:
        out += [f"![Fig. 1: loss and averaged-metric surfaces with both frontiers]({figures['fig1']})", ""]
    elif "fig1" in figures:
        out += [f"![Fig. 1: loss surfaces, the loss frontier and the forgetting budget]({figures['fig1']})", ""]
    if "fig2" in figures and metric:
        out += [f"![Fig. 2: probe-metric trajectories of selected runs]({figures['fig2']})", ""]
    elif "fig2" in figures:
        out += [f"![Fig. 2: validation-loss trajectories of selected runs (no probe)]({figures['fig2']})", ""]
    return out


def frontier_equation(coef: Mapping[str, float]) -> str:
    """The linear metric frontier `log10 LR* = a ± b·ALMR`, its sign written out."""
    b = coef["b"]
    return f"log10 LR* = {coef['a']:.3f} {'−' if b < 0 else '+'} {abs(b):.3f}·ALMR"


# A recommendation within this share of the studied range (ALMR; log10 LR) of an edge of the box is
# "on the edge": the best point may lie outside what was studied.
EDGE_SHARE = 0.1


def box_edges(s: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The edges of the studied box the recommendation lies on (within EDGE_SHARE of the range), each
    `{axis, side, studied: [lo, hi], next: [lo, hi] | None}`: `next` is the range of a next study, the
    studied one extended past that edge by its own width (log10 width for LR; ALMR kept in [0, 1]), or
    None where the edge is ALMR's own limit 0 or 1."""
    rec, box = s["recommendation"], s.get("box")
    if not box:
        return []
    edges = []
    for axis, value, log in (("almr", rec["almr"], False), ("lr", rec["lr"], True)):
        lo, hi = box[axis]
        f = math.log10 if log else float
        width = f(hi) - f(lo)
        if not width > 0:
            continue
        u = (f(value) - f(lo)) / width
        tol = 1e-9  # the recommendation sits on a grid of the box: a cell exactly EDGE_SHARE in counts as on it
        for side, near in (("low", u <= EDGE_SHARE + tol), ("high", u >= 1 - EDGE_SHARE - tol)):
            if not near:
                continue
            nxt: list[float] | None
            if log:
                nxt = [lo / 10**width, hi] if side == "low" else [lo, hi * 10**width]
            elif (side == "low" and lo <= 0.0) or (side == "high" and hi >= 1.0):
                nxt = None
            else:
                nxt = [max(0.0, lo - width), hi] if side == "low" else [lo, min(1.0, hi + width)]
            edges.append({"axis": axis, "side": side, "studied": [lo, hi], "next": nxt})
    return edges


def edge_words(s: Mapping[str, Any]) -> str:
    """'' inside the box; else which edge the pick is on and the next study's range."""
    parts = []
    for e in box_edges(s):
        name, fmt = ("ALMR", ".3g") if e["axis"] == "almr" else ("LR", ".3g")
        lo, hi = e["studied"]
        where = f"{name} at the {'bottom' if e['side'] == 'low' else 'top'} of the studied [{lo:{fmt}}, {hi:{fmt}}]"
        if e["next"] is None:
            parts.append(f"{where}, which is ALMR's own limit")
        else:
            parts.append(f"{where}: the best may lie beyond it; next study {name} [{e['next'][0]:{fmt}}, "
                         f"{e['next'][1]:{fmt}}]")  # fmt: skip
    return "; on the edge of the studied box: " + "; ".join(parts) if parts else ""


def headline(s: Mapping[str, Any]) -> str:
    """The one line a frontier analysis ends with (`almr frontier`, `almr demo`): the recommended
    (ALMR, LR), its expected averaged metric and P(best), and the metric frontier's equation; and,
    when the pick lies on an edge of the studied box, which edge and the next study's range."""
    rec = s["recommendation"]
    if s["metric_frontier"] is None:
        return (
            f"recommended ALMR {rec['almr']:.3f}, LR {rec['lr']:.3g} by loss (no averaged metric): "
            f"{s['sources']['additional']} validation loss {rec['objective']['mean']:.4f} ± "
            f"{rec['objective']['std']:.4f} {_budget_words(rec)}, P(best) {rec['prob_best_within_radius']:.2f}"
            + edge_words(s)
        )
    coef = s["metric_frontier"]["forms"]["linear"]["coef"]
    return (
        f"recommended ALMR {rec['almr']:.3f}, LR {rec['lr']:.3g}: averaged metric {rec['metric']['mean']:.2f} ± "
        f"{rec['metric']['std']:.2f}, P(best) {rec['prob_best_within_radius']:.2f}; frontier {frontier_equation(coef)}"
        + edge_words(s)
    )
