"""`build_report(OUT, config)`: the pipeline's report, OUT/report/report.md and one self-contained
OUT/report/report.html, from whatever the stages have written so far (a missing file shows as "—"
with the command that makes it; the report always renders).

Sections: what this is; the paper's findings, each reproduced or not with its noise (findings.py);
the recommendation of the ALMR × LR study with its uncertainty and, on the edge of the studied box,
the next range (Fig. 1, the study's Fig. 2); Tables 1, 4, 5, 6, 7, 8 in the paper's layouts
(tables.py, table8.py), with the paper's numbers beside ours for its Llama-3 presets; the paper's
Fig. 2 from the formal CPT; each stage's wall time; every file read.
"""

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from almr.config import AlmrConfig
from almr.frontier.report import box_edges, edge_words, headline
from almr.report.collect import Measured, Outputs, measure
from almr.report.document import MISSING, Block, Bullets, Figure, Heading, Paragraph, Table, to_html, to_markdown
from almr.report.figures import copy_frontier_figure, plot_cpt_trajectories, probe_events
from almr.report.findings import RULE, Finding, WinRate, compare
from almr.report.table8 import table8, win_rate
from almr.report.tables import (
    TABLE1,
    TABLE5,
    TABLE7,
    Filled,
    is_percent_scale,
    load_ablation,
    load_models,
    model_table,
    table4_spec,
    table6_spec,
)

_LLAMA3 = re.compile(r"llama[-_ ]?3(?:\.\d)?[-_ ]?(8|70)b", re.IGNORECASE)
ZH_SHARE_KEYS = ("world_zh_share", "zh_share")


def paper_size(config: AlmrConfig) -> str | None:
    """The model size ("8B" or "70B") when the config starts from Llama-3 8B or 70B (the paper's presets), else None."""
    found = _LLAMA3.search(config.model.name_or_path or "")
    return f"{found.group(1)}B" if found else None


def build_report(out_dir: Path, config: AlmrConfig, needs: Mapping[str, Sequence[str]], *,
                 config_name: str = "CONFIG") -> tuple[Path, Path]:  # fmt: skip
    """Write OUT/report/report.md (figures in OUT/report/figures/) and OUT/report/report.html; return
    their paths. `needs` is the pipeline's stages in order with the stages each needs (the runner's
    table: `{stage.name: stage.inputs}`); `config_name` is how the user names the config (`demo`, a
    preset, a file) in the commands the report suggests."""
    out_dir = Path(out_dir)
    out = Outputs(out_dir, needs, config_name)
    report_dir = out_dir / "report"
    figures = report_dir / "figures"
    report_dir.mkdir(parents=True, exist_ok=True)
    world = not config.names_a_model
    size = None if world else paper_size(config)

    pipeline = getattr(config, "pipeline", None)
    shares = out.zh_shares(getattr(pipeline, "zh_questions", None))
    t1 = model_table(TABLE1, *load_models(out, TABLE1), world=world, size=size, shares=shares)
    fixed, chosen = _recipes(out, config)
    spec4 = table4_spec(fixed, chosen)
    t4 = model_table(spec4, *load_models(out, spec4), world=world, size=size)
    t4.table.notes.append("The CPT row's (ALMR, LR): cpt/choice.json; the fixed recipe's: baselines.fixed_cpt.")
    t5 = model_table(TABLE5, *load_models(out, TABLE5), world=world, size=size)
    spec6 = table6_spec(config.ablation.language)
    t6 = model_table(spec6, *load_ablation(out, spec6), world=world, size=size)
    t7 = model_table(TABLE7, *load_models(out, TABLE7), world=world, size=size)
    t8 = _guarded(out, lambda: [table8(out, paper_size=None if world else size)], "Table 8", "pairwise")

    blocks: list[Block] = [Heading(1, f"almr report: {config_name}"), Paragraph(_intro(out_dir, world, size, config))]
    blocks += _findings_section(findings(out, t4, t5, t6, t7, shares, world, fixed))
    blocks += _guarded(out, lambda: _recommendation_section(out, figures), "The recommendation", "frontier")
    blocks.append(Heading(2, "Tables"))
    for filled in (t1, t4, t5, t6, t7):
        blocks.append(filled.table)
    blocks += t8
    blocks += _guarded(out, lambda: _cpt_figure(out, figures), "Fig. 2", "cpt")
    blocks += _stages_section(out)
    blocks += _files_section(out)

    md, page = report_dir / "report.md", report_dir / "report.html"
    md.write_text(to_markdown(blocks, report_dir), encoding="utf-8")
    page.write_text(to_html(blocks, f"almr report: {config_name}"), encoding="utf-8")
    return md, page


def _guarded(out: Outputs, make: Callable[[], list[Block]], what: str, stage: str) -> list[Block]:
    """`make()`, or a line saying that `what` could not be read: a file of unexpected shape (another
    version, a hand edit) costs its own section, never the report."""
    try:
        return make()
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, OSError) as err:
        return [Paragraph(f"{MISSING} {what}: the output of the {stage} stage could not be read ({type(err).__name__}: "
                          f"{err}); rerun it: {out.rerun(stage)}")]  # fmt: skip


def _recipes(out: Outputs, config: AlmrConfig) -> tuple[str, str]:
    """(ALMR, LR) of the fixed recipe (the baselines section) and of the formal CPT (cpt/choice.json), in words."""
    fixed_cpt = getattr(getattr(config, "baselines", None), "fixed_cpt", None)
    fixed = f"ALMR {fixed_cpt.almr:g}, LR {fixed_cpt.lr:.3g}" if fixed_cpt else "ALMR 0.2, a conventional LR"
    choice = out.json("cpt/choice.json").data or {}
    almr, lr = choice.get("almr"), choice.get("lr")
    ok = isinstance(almr, int | float) and isinstance(lr, int | float)
    return fixed, f"ALMR {almr:.3g}, LR {lr:.3g}" if ok else "ALMR, LR"


def _intro(out_dir: Path, world: bool, size: str | None, config: AlmrConfig) -> str:
    when = datetime.now(UTC).isoformat(timespec="seconds")
    if world:
        what = ("The demo world: each of the paper's tables in its layout with the world's stand-in benchmarks, and "
                "each of the paper's findings decided from our numbers with their noise.")  # fmt: skip
    elif size:
        what = (f"The paper's Llama-3 {size} preset ({config.model.name_or_path}): the paper's own numbers stand "
                "beside ours where the benchmark is the same.")  # fmt: skip
    else:
        what = (f"Real models ({config.model.name_or_path}); the paper's numbers are shown only for Llama-3 8B and "
                "70B.")  # fmt: skip
    return (f"{what} Built {when} from `{out_dir}`; every number's file is named in its row (paths relative to "
            f"that folder), \"{MISSING}\" marks what is not there yet.")  # fmt: skip


# ------------------------------------------------------------------------------------------ findings


def _pick(filled: Filled, label: str, group: str | None = None, percent_only: bool = True) -> dict[str, Measured]:
    """Row `label`'s scores in `filled`, of the columns of `group` (None: all), on the 0–100 scale."""
    row = filled.values.get(label, {})
    out = {}
    for c in filled.cols:
        m = row.get(c.title)
        if m is None or (group is not None and c.group != group):
            continue
        if percent_only and m.key is not None and not is_percent_scale(m.key):
            continue
        out[c.title] = m
    return out


def _zh_share(out: Outputs, label: str, shares: dict[str, Measured], world: bool) -> Measured:
    """%Chinese of a model's chat replies: chinese_share.json in the world (its zh_share task scores raw
    continuations), the zh_share task elsewhere, each falling back on the other."""
    loaded = out.eval_result(label)
    m = measure(loaded.data, ZH_SHARE_KEYS if not world else (), loaded.path)
    if m.value is None and label in shares:
        return shares[label]
    return m if m.value is not None else measure(loaded.data, ZH_SHARE_KEYS, loaded.path)


def findings(out: Outputs, t4: Filled, t5: Filled, t6: Filled, t7: Filled, shares: dict[str, Measured],
             world: bool, fixed: str) -> list[Finding]:  # fmt: skip
    """The paper's findings (Sections 5.1–5.4, Tables 1 and 8) and what the measured (ALMR, LR) bought."""
    zh, en = "Chinese", "English"
    cpt_matters = compare("CPT + Chinese data over Chinese data alone", "better", _pick(t6, "cpt_with-lang"),
                          _pick(t6, "no-cpt_with-lang"))  # fmt: skip
    data_matters = compare("CPT + Chinese data over CPT alone", "better", _pick(t6, "cpt_with-lang"),
                           _pick(t6, "cpt_without-lang"))  # fmt: skip
    emotion = []
    for c in t7.cols:
        if c.title == "EQ":  # the EQ is the SECEU distance rescaled: the same comparison, without a stored SE
            continue
        a, b = t7.values["c-sft-empathy"][c.title], t7.values["c-sft"][c.title]
        lower = frozenset({c.title}) if c.lower_is_better else frozenset()
        emotion.append(compare(f"C-SFT-Empathy over C-SFT on {c.title}", "better", {c.title: a}, {c.title: b}, lower))
    wins = WinRate("C-SFT-Empathy over Instruct, pairwise", *win_rate(out, "c-sft-empathy", "instruct"))
    zh_share = {label: {"%Chinese": _zh_share(out, label, shares, world)}
                for label in ("base", "instruct", "c-dpo", "c-sft-empathy")}  # fmt: skip
    return [
        Finding("CPT lifts the Chinese benchmarks and keeps the English ones", "Table 4", [
            compare("CPT over base, Chinese", "better", _pick(t4, "cpt", zh), _pick(t4, "base", zh)),
            compare("CPT keeps English", "keeps", _pick(t4, "cpt", en), _pick(t4, "base", en)),
        ]),
        Finding("C-SFT and C-DPO beat Instruct on the Chinese benchmarks", "Table 5", [
            compare("C-SFT over Instruct", "better", _pick(t5, "c-sft", zh), _pick(t5, "instruct", zh)),
            compare("C-DPO over Instruct", "better", _pick(t5, "c-dpo", zh), _pick(t5, "instruct", zh)),
        ]),
        Finding("Both CPT and the Chinese fine-tuning data are needed", "Table 6", [cpt_matters, data_matters]),
        Finding("The empathy stage raises the emotional scores", "Table 7", emotion),
        Finding("English-dominant fine-tuning answers Chinese questions in other languages; the Chinese chat models "
                "answer in Chinese (%Chinese)", "Tables 1, 8", [
            compare("Base over Instruct", "better", zh_share["base"], zh_share["instruct"]),
            compare("C-DPO over Instruct", "better", zh_share["c-dpo"], zh_share["instruct"]),
            compare("C-SFT-Empathy over Instruct", "better", zh_share["c-sft-empathy"], zh_share["instruct"]),
        ]),
        Finding("The deployed model (C-SFT-Empathy) wins the pairwise comparison against Instruct", "Table 8",
                [wins]),
        Finding(f"Not in the paper: the measured (ALMR, LR) beats a fixed recipe ({fixed})",
                "Table 4", [compare("CPT over fixed-recipe CPT", "better", _pick(t4, "cpt"), _pick(t4, "cpt-fixed"))]),
    ]  # fmt: skip


def _findings_section(found: list[Finding]) -> list[Block]:
    rows = []
    for f in found:
        files = list(dict.fromkeys(path for c in f.comparisons for path in c.sources()))
        rows.append([f.claim, f.where, "; ".join(c.words() for c in f.comparisons), f"**{f.verdict}**",
                     "; ".join(files) or MISSING])  # fmt: skip
    header = ["Finding", "Table", "Evidence (d: mean difference, ± its standard error)", "Verdict", "Source"]
    return [
        Heading(2, "The paper's findings, reproduced or not"),
        Table([header], rows),
        Paragraph(RULE),
    ]


# ------------------------------------------------------------------------------------------ recommendation


def _recommendation_section(out: Outputs, figures: Path) -> list[Block]:
    blocks: list[Block] = [Heading(2, "The ALMR × LR study and its recommendation")]
    loaded = out.first(["frontier/frontier.json", "frontier/summary.json"])
    s = loaded.data
    if s is None:
        return [*blocks, Paragraph(f"{MISSING} {out.missing_note(loaded, 'frontier')}")]
    try:
        items = _recommendation_items(s, loaded.path)
    except (KeyError, TypeError, ValueError) as err:
        items = [f"{loaded.path} could not be read as a frontier summary ({type(err).__name__}: {err})"]
    blocks.append(Bullets(items))
    names = s.get("figures") or {}
    frontier_dir = out.out_dir / "frontier"
    for key, default, caption in (
        ("fig1", "fig1_frontier.png", "Fig. 1: validation-loss and averaged-metric surfaces over (ALMR, LR) with "
                                      "both frontiers and the recommendation"),
        ("fig2", "fig2_trajectories.png", "The study's Fig. 2: probe trajectories of selected runs of the study"),
    ):  # fmt: skip
        path = copy_frontier_figure(frontier_dir, str(names.get(key, default)), figures)
        if path is None:
            blocks.append(Paragraph(f"{MISSING} {caption.split(':')[0]}: frontier/{default} is missing: run "
                                    f"{out.rerun('frontier')}"))  # fmt: skip
        else:
            blocks.append(Figure(path, f"{caption} (from frontier/{path.name})"))
    return blocks


def _recommendation_items(s: dict[str, Any], source: str) -> list[str]:
    rec = s["recommendation"]
    cr = rec["credible_region_95"]
    items = [f"**{headline(s)}** (from `{source}`)."]
    if rec.get("metric"):
        items.append(f"Uncertainty: averaged metric {rec['metric']['mean']:.2f} ± {rec['metric']['std']:.2f} "
                     "(posterior mean ± std of the surrogate surface).")  # fmt: skip
    items.append(f"P(best within {rec['radius']:g} of the studied ranges) = {rec['prob_best_within_radius']:.2f}; "
                 f"95% credible region of the best point: ALMR [{cr['almr'][0]:.3f}, {cr['almr'][1]:.3f}], LR "
                 f"[{cr['lr'][0]:.3g}, {cr['lr'][1]:.3g}].")  # fmt: skip
    box = s.get("box")
    if box:
        where = edge_words(s).removeprefix("; ")
        items.append(
            f"Studied box: ALMR [{box['almr'][0]:.3g}, {box['almr'][1]:.3g}] × LR [{box['lr'][0]:.3g}, "
            f"{box['lr'][1]:.3g}]; "
            + (f"the pick is {where.removeprefix('on the edge of the studied box: ')}." if box_edges(s) else
               "the pick lies inside it (not within a tenth of the range of any edge).")
        )  # fmt: skip
    counts = s.get("counts") or {}
    if counts:
        items.append(f"Runs: {counts.get('completed', 0)} completed, {counts.get('failed', 0)} failed, "
                     f"{counts.get('pruned', 0)} pruned.")  # fmt: skip
    return items


def _cpt_figure(out: Outputs, figures: Path) -> list[Block]:
    stage = out.stage("cpt") or {}
    run = (stage.get("outputs") or {}).get("run", "run")
    metrics = out.out_dir / "cpt" / str(run) / "metrics.jsonl"
    caption = "Fig. 2: benchmark scores along the formal CPT (probe events of the run)"
    path = plot_cpt_trajectories(probe_events(metrics), figures / "fig2_cpt_trajectories.png")
    rel = metrics.relative_to(out.out_dir).as_posix()
    if path is None:
        return [Heading(2, "Fig. 2"), Paragraph(f"{MISSING} no probe events in {rel}: run {out.rerun('cpt')} "
                                                "(with cpt.probe.every_tokens > 0)")]  # fmt: skip
    return [Heading(2, "Fig. 2"), Figure(path, f"{caption}; from {rel}")]


# ------------------------------------------------------------------------------------------ stages, files


def _stages_section(out: Outputs) -> list[Block]:
    rows, total = [], 0.0
    for name in out.needs:
        if name == "report":
            continue
        st = out.stage(name)
        if st is None:
            rows.append([name, "not run", MISSING, MISSING, f"run {out.rerun(name)}"])
            continue
        seconds = st.get("seconds")
        ok = isinstance(seconds, int | float)
        total += float(seconds) if ok else 0.0
        rows.append([name, str(st.get("status", "?")), f"{seconds:.1f}" if ok else MISSING,
                     str(st.get("finished", MISSING)), f"{name}/stage.json"])  # fmt: skip
    rows.append(["total", "", f"{total:.1f}", "", ""])
    return [Heading(2, "Stages and their wall time"),
            Table([["Stage", "Status", "Seconds", "Finished", "Source"]], rows)]  # fmt: skip


def _files_section(out: Outputs) -> list[Block]:
    read = sorted(out.loaded())
    items = [f"`{path}`" + ("" if problem is None else f": {problem}") for path, problem in read]
    return [Heading(2, "Files read"), Bullets(items or ["none"])]
