"""The pipeline's report (almr.report.build_report) on hand-made output folders: exact cells with
their sources, the findings' verdicts for known differences, partial folders, the paper's numbers
for its presets, and a self-contained, escaped HTML page."""

import json
import re
import shutil
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from almr.config import AlmrConfig, load_config
from almr.evaluate.results import FORMAT, save_result
from almr.pairwise.report import write_report
from almr.report import build_report
from almr.report.build import paper_size
from almr.run.stages import STAGES

NEEDS = {stage.name: stage.inputs for stage in STAGES}

EVIL = "<script>alert(1)</script>"

# (value, stderr, n) per task: the primary metric of each world task, as `almr eval` stores it
PRIMARY = {"world_ceval": "acc", "world_lcsts": "rougeL", "world_mmlu": "acc", "world_cmrc": "f1",
           "world_eprstmt": "acc", "world_gsm8k": "exact_match", "world_zh_share": "zh_share",
           "world_seceu": "eq", "world_wmt_zh-en": "bleu"}  # fmt: skip


def demo() -> AlmrConfig:
    """The demo config, with the number of %Chinese questions the expected standard errors assume."""
    return load_config("demo", ["pipeline.zh_questions=100"])


def result(model: str, scores: dict[str, tuple[float, float | None, int]], seceu: float | None = None) -> dict:
    tasks: dict[str, Any] = {}
    for task, (value, stderr, n) in scores.items():
        metric = PRIMARY[task]
        metrics = {metric: {"value": value, "stderr": stderr, "scale": "eq" if metric == "eq" else "0-100"}}
        if task == "world_seceu":
            metrics["seceu"] = {"value": seceu, "stderr": 0.1, "scale": "distance"}
        tasks[task] = {"family": "chinese", "title": task, "version": 1.0, "n_samples": n, "shots": 0,
                       "mode": "loglikelihood", "primary": metric, "metrics": metrics}  # fmt: skip
    return {"format": FORMAT, "model": model, "suite": "world", "limit": 100, "created": "2026-11-30T00:00:00+00:00",
            "wall_s": 1.0, "lm_eval_version": "0.4.13", "almr_version": "0.1.0", "tasks": tasks,
            "skipped": {}}  # fmt: skip


def stage(out: Path, name: str, seconds: float) -> None:
    (out / name).mkdir(parents=True, exist_ok=True)
    (out / name / "stage.json").write_text(json.dumps({
        "stage": name, "fingerprint": "ab" * 8, "inputs": {}, "config": {}, "status": "done",
        "started": "2026-11-30T10:00:00+00:00", "finished": "2026-11-30T10:01:00+00:00", "seconds": seconds,
        "outputs": {"run": "run"} if name == "cpt" else {}}))  # fmt: skip


def pair(a: str, b: str, wins: int, ties: int, losses: int, ci: list[float]) -> dict[str, Any]:
    n = wins + ties + losses
    return {"a": a, "b": b, "wins": wins, "ties": ties, "losses": losses, "both_bad": 0, "n": n, "conversations": n,
            "win_rate": wins / n, "score_rate": (wins + ties / 2) / n, "ci_win_rate": ci,
            "ci_score_rate": ci}  # fmt: skip


def frontier_summary(lr: float) -> dict[str, Any]:
    return {
        "format": "almr-frontier/1", "box": {"almr": [0.1, 0.9], "lr": [3e-4, 3e-3]}, "counts": {"completed": 9},
        "metric_frontier": {"forms": {"linear": {"coef": {"a": -2.4, "b": -0.6}}}}, "sources": {},
        "recommendation": {"almr": 0.5, "lr": lr, "metric": {"mean": 71.82, "std": 0.96},
                           "prob_best_within_radius": 0.36, "radius": 0.1,
                           "credible_region_95": {"almr": [0.3, 0.7], "lr": [1e-3, 3e-3]}},
        "figures": {"fig1": "fig1_frontier.png", "fig2": "fig2_trajectories.png"},
    }  # fmt: skip


def png(path: Path) -> None:
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    fig.savefig(path, dpi=20)
    plt.close(fig)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """A whole demo pipeline's folder with known numbers."""
    out = tmp_path / "almr-demo"
    for i, name in enumerate(("world", "base", "study", "frontier", "cpt", "baselines", "sft", "dpo", "empathy",
                              "eval", "ablation", "pairwise")):  # fmt: skip
        stage(out, name, 10.0 * (i + 1))
    en = (85.0, 3.5, 100)
    save_result(result("base", {"world_ceval": (39.0, 4.9, 100), "world_lcsts": (12.8, 1.4, 100), "world_mmlu": en,
                                "world_zh_share": (100.0, None, 100), "world_gsm8k": (0.0, 0.0, 100)}),
                out / "eval/base.json")  # fmt: skip
    save_result(result("cpt", {"world_ceval": (70.0, 4.6, 100), "world_lcsts": (30.0, 1.5, 100),
                               "world_mmlu": (84.0, 3.6, 100)}), out / "eval/cpt.json")  # fmt: skip
    save_result(result("cpt-fixed", {"world_ceval": (60.0, 4.9, 100), "world_lcsts": (25.0, 1.5, 100),
                                     "world_mmlu": (80.0, 4.0, 100)}), out / "eval/cpt-fixed.json")  # fmt: skip
    # the chat models: C-SFT clearly above Instruct, C-DPO a hair above it (well within the noise)
    save_result(result("instruct", {"world_lcsts": (10.0, 1.0, 100), "world_cmrc": (20.0, 2.0, 100),
                                    "world_eprstmt": (50.0, 5.0, 100), "world_zh_share": (9.0, None, 100),
                                    "world_seceu": (95.0, None, 100)}, seceu=3.0),
                out / "eval/instruct.json")  # fmt: skip
    save_result(result("c-sft", {"world_lcsts": (25.0, 1.0, 100), "world_cmrc": (40.0, 2.0, 100),
                                 "world_eprstmt": (70.0, 4.6, 100), "world_zh_share": (96.0, None, 100),
                                 "world_seceu": (100.0, None, 100)}, seceu=2.5), out / "eval/c-sft.json")  # fmt: skip
    save_result(result("c-dpo", {"world_lcsts": (10.2, 1.0, 100), "world_cmrc": (20.1, 2.0, 100),
                                 "world_eprstmt": (50.0, 5.0, 100), "world_zh_share": (97.0, None, 100)}),
                out / "eval/c-dpo.json")  # fmt: skip
    save_result(result("c-sft-empathy", {"world_zh_share": (95.0, None, 100), "world_seceu": (120.0, None, 100)},
                       seceu=1.5), out / "eval/c-sft-empathy.json")  # fmt: skip
    (out / "eval/chinese_share.json").write_text(json.dumps({"base": 1.0, "instruct": 0.09}))
    for cell, lcsts in (("cpt_with-lang", 30.0), ("cpt_without-lang", 12.0), ("no-cpt_with-lang", 20.0),
                        ("no-cpt_without-lang", 5.0)):  # fmt: skip
        save_result(result(f"/x/{cell}/dpo/hf", {"world_lcsts": (lcsts, 1.0, 100), "world_ceval": (50.0, 1.0, 100)}),
                    out / "ablation" / cell / "eval.json")  # fmt: skip
    report = {"study": "study.db", "models": ["instruct", "c-sft-empathy"], "items": 40, "conversations": 40,
              "chinese": {"instruct": 9.5, "c-sft-empathy": 97.25}, "failures": [], "judges": {},
              "agreement": {"available": False, "reason": "one annotator"},
              "bootstrap": {"resamples": 1000, "confidence": 0.95, "unit": "conversation"},
              "human": {"votes": 40, "items_voted": 40, "voters": ["ann"], "position_bias": {"decisive": 0},
                        "bradley_terry": None,
                        "pairs": [pair("instruct", "c-sft-empathy", 4, 2, 34, [0.05, 0.2])]}}  # fmt: skip
    write_report(report, out / "pairwise")
    json.dump(frontier_summary(2.67e-3), (out / "frontier/frontier.json").open("w"))
    png(out / "frontier/fig1_frontier.png")
    png(out / "frontier/fig2_trajectories.png")
    (out / "cpt/run").mkdir(parents=True)
    (out / "cpt/choice.json").write_text(json.dumps({"almr": 0.5, "lr": 2.67e-3}))
    events = [{"event": "probe", "step": s, "tokens": 1000 * s, "scores": {"world_ceval": 40.0 + s}} for s in range(3)]
    (out / "cpt/run/metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events) + '{"cut sho')
    return out


def row(md: str, start: str) -> list[str]:
    """The cells of the Markdown table row starting with `start`."""
    line = next(line for line in md.splitlines() if line.startswith(f"| {start} |"))
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]


def section(md: str, heading: str) -> str:
    return md.split(heading, 1)[1].split("\n## ", 1)[0]


def test_every_table_has_its_numbers_and_their_files(out: Path) -> None:
    md_path, html_path = build_report(out, demo(), NEEDS, config_name="demo")
    assert (md_path, html_path) == (out / "report/report.md", out / "report/report.html")
    md = md_path.read_text()
    t4 = md.split("Table 4.", 1)[1]
    # the row names the (ALMR, LR) the formal CPT ran at (cpt/choice.json) and the fixed recipe's (config)
    assert row(t4, "CPT at the recommended (ALMR 0.5, LR 0.00267)") == [
        "CPT at the recommended (ALMR 0.5, LR 0.00267)", "70.00 ± 4.60", "30.00 ± 1.50", "84.00 ± 3.60", "—", "—",
        "eval/cpt.json"]  # fmt: skip
    assert row(t4, "CPT, fixed recipe (ALMR 0.2, LR 0.002)")[1] == "60.00 ± 4.90"
    # lm-eval's stderr of 0% is 0: the proportion's own, p = ½/101 over 100 items, is the floor
    assert row(t4, "Base")[4:] == ["0.00 ± 0.70", "—", "eval/base.json"]
    # %Chinese of chat replies (chinese_share.json in the world), with the standard error of a proportion over
    # the pipeline.zh_questions = 100 questions, p = (9 + ½)/101
    t1 = md.split("Table 1.", 1)[1]
    assert row(t1, "Instruct (SFT + DPO on English-dominant data, no CPT)")[1:] == [
        "—", "10.00 ± 1.00", "9.00 ± 2.92", "eval/instruct.json; eval/chinese_share.json"]  # fmt: skip
    assert row(t1, "Base")[3] == "100.00 ± 0.70"
    t6 = md.split("Table 6.", 1)[1]
    assert row(t6, "both (C-DPO)") == ["both (C-DPO)", "✓", "✓", "30.00 ± 1.00", "—", "50.00 ± 1.00",
                                       "ablation/cpt_with-lang/eval.json"]  # fmt: skip
    assert row(t6, "neither")[1:3] == ["", ""]
    t7 = md.split("Table 7.", 1)[1]
    assert row(t7, "C-SFT-Empathy") == ["C-SFT-Empathy", "1.50 ± 0.10", "120.00", "eval/c-sft-empathy.json"]
    t8 = md.split("Table 8.", 1)[1]
    assert row(t8, "instruct") == ["instruct", "N/A", "12.5 [5.0, 20.0]", "9.5", "pairwise/pairwise_report.json"]
    assert row(t8, "c-sft-empathy")[1:4] == ["87.5 [80.0, 95.0]", "N/A", "97.2"]
    stages = section(md, "## Stages and their wall time")
    assert row(stages, "cpt")[:3] == ["cpt", "done", "50.0"]
    assert row(stages, "total")[2] == f"{sum(10.0 * i for i in range(1, 13)):.1f}"
    assert "next study LR [0.0003, 0.03]" in section(md, "## The ALMR × LR study")
    assert "![Fig. 2: benchmark scores along the formal CPT" in md and (out / "report/figures/fig2_cpt_trajectories.png"
                                                                        ).is_file()  # fmt: skip
    assert "paper" not in row(t4, "Base")  # no paper columns for the demo world


def test_findings_are_decided_from_the_differences_and_their_noise(out: Path) -> None:
    md = build_report(out, demo(), NEEDS, config_name="demo")[0].read_text()
    findings = section(md, "## The paper's findings")
    verdicts = {r[0]: r for r in (row(findings, claim) for claim in (
        "CPT lifts the Chinese benchmarks and keeps the English ones",
        "C-SFT and C-DPO beat Instruct on the Chinese benchmarks",
        "Both CPT and the Chinese fine-tuning data are needed",
        "The empathy stage raises the emotional scores",
        "English-dominant fine-tuning answers Chinese questions in other languages; the Chinese chat models answer "
        "in Chinese (%Chinese)",
        "The deployed model (C-SFT-Empathy) wins the pairwise comparison against Instruct",
        "Not in the paper: the measured (ALMR, LR) beats a fixed recipe (ALMR 0.2, LR 0.002)"))}  # fmt: skip
    assert row(findings, "The empathy stage raises the emotional scores")[-1] == (
        "eval/c-sft-empathy.json; eval/c-sft.json")  # fmt: skip
    verdicts = {claim: cells[-2] for claim, cells in verdicts.items()}
    assert list(verdicts.values()) == ["**inconclusive**", "**inconclusive**", "**reproduced**", "**reproduced**",
                                       "**reproduced**", "**reproduced**", "**reproduced**"]  # fmt: skip
    # instruct vs c-sft-empathy 12.5% [5, 20]: read from the other side, 87.5% [80, 95], all above 50%
    assert "C-SFT-Empathy over Instruct, pairwise: 87.5% [80.0, 95.0] (bootstrap) → reproduced" in findings
    # Chinese: d = mean(31, 17.2) = 24.1, SE = √(4.9² + 4.6² + 1.4² + 1.5²)/2
    assert "CPT over base, Chinese: d = +24.10 ± 3.51 (SE) over C-Eval, LCSTS → reproduced" in findings
    # English: −1 ± 5.02 (100 items): a loss of 2 points is neither ruled out nor shown
    assert "CPT keeps English: d = -1.00 ± 5.02 (SE) over MMLU → inconclusive" in findings
    # C-SFT: (15 + 20 + 20)/3 over Instruct, far above its noise; C-DPO: 0.1 on average, far below it
    assert "C-SFT over Instruct: d = +18.33 ± 2.50 (SE) over LCSTS, CMRC, EPRSTMT → reproduced" in findings
    assert "C-DPO over Instruct: d = +0.10 ± 2.58 (SE) over LCSTS, CMRC, EPRSTMT → inconclusive" in findings
    # the ablation: CPT matters (30 vs 20 on LCSTS, C-Eval equal), and so does the data (30 vs 12)
    assert "CPT + Chinese data over Chinese data alone: d = +5.00 ± 1.00 (SE) over LCSTS, world_ceval" in findings
    assert "CPT + Chinese data over CPT alone: d = +9.00 ± 1.00 (SE) over LCSTS, world_ceval → reproduced" in findings
    # %Chinese: base 100 vs Instruct 9 from chinese_share.json; C-DPO's 97 from its result (not in that file)
    assert "Base over Instruct: d = +91.00 ± 3.00 (SE) over %Chinese → reproduced" in findings
    assert "C-DPO over Instruct: d = +88.00 ± 3.44 (SE) over %Chinese → reproduced" in findings
    # the empathy stage: SECEU distance 2.5 → 1.5 (lower is better), SE 0.1 each
    assert "d = +1.00 ± 0.14 (SE) over SECEU score (distance, lower is better) → reproduced" in findings
    assert "Rule: d is the mean difference" in md


def test_keeps_english_is_reproduced_when_the_loss_is_small_and_precise(out: Path) -> None:
    cpt = json.loads((out / "eval/cpt.json").read_text())
    cpt["tasks"]["world_mmlu"]["metrics"]["acc"].update(value=84.5, stderr=0.3)
    base = json.loads((out / "eval/base.json").read_text())
    base["tasks"]["world_mmlu"]["metrics"]["acc"]["stderr"] = 0.3
    save_result(cpt, out / "eval/cpt.json")
    save_result(base, out / "eval/base.json")
    md = build_report(out, demo(), NEEDS)[0].read_text()
    assert "CPT keeps English: d = -0.50 ± 0.42 (SE) over MMLU → reproduced" in md
    cpt["tasks"]["world_mmlu"]["metrics"]["acc"]["value"] = 70.0
    save_result(cpt, out / "eval/cpt.json")
    md = build_report(out, demo(), NEEDS)[0].read_text()
    assert "CPT keeps English: d = -15.00 ± 0.42 (SE) over MMLU → not reproduced" in md
    assert row(section(md, "## The paper's findings"), "CPT lifts the Chinese benchmarks and keeps the English ones"
               )[-2] == "**not reproduced**"  # fmt: skip


def test_a_partial_folder_renders_with_its_missing_cells_marked(out: Path) -> None:
    for gone in ("pairwise", "frontier", "ablation", "empathy"):
        shutil.rmtree(out / gone)
    (out / "eval/cpt.json").unlink()
    (out / "eval/c-sft-empathy.json").unlink()
    (out / "eval/c-dpo.json").write_text("{not json")
    md_path, html_path = build_report(out, demo(), NEEDS, config_name="demo")
    md = md_path.read_text()
    t4 = md.split("Table 4.", 1)[1]
    assert row(t4, "CPT at the recommended (ALMR 0.5, LR 0.00267)")[1:] == [
        "—", "—", "—", "—", "—", "— eval/cpt.json missing: run `almr run demo --until eval`"]  # fmt: skip
    t5 = md.split("Table 5.", 1)[1]
    # the empathy stage, which the eval stage needs, is not done: --until eval makes it first
    assert row(t5, "C-DPO")[-1] == "— eval/c-dpo.json unreadable (JSONDecodeError): run `almr run demo --until eval`"
    t7 = md.split("Table 7.", 1)[1]
    assert row(t7, "C-SFT-Empathy")[-1] == "— eval/c-sft-empathy.json missing: run `almr run demo --until eval`"
    assert row(md.split("Table 6.", 1)[1], "both (C-DPO)")[-1].endswith("run `almr run demo --only ablation`")
    t8 = md.split("Table 8.", 1)[1]
    assert row(t8, "instruct") == ["instruct", "N/A", "—", "9.0", "eval/chinese_share.json; — pairwise/report.json "
                                   "missing: run `almr run demo --until pairwise`"]  # fmt: skip
    assert "— frontier/frontier.json missing: run `almr run demo --only frontier`" in md
    assert row(section(md, "## Stages and their wall time"), "empathy") == [
        "empathy", "not run", "—", "—", "run `almr run demo --only empathy`"]  # fmt: skip
    findings = section(md, "## The paper's findings")
    empathy = row(findings, "The empathy stage raises the emotional scores")
    assert empathy[-2:] == ["**not measured**", "eval/c-sft.json"]
    assert row(findings, "CPT lifts the Chinese benchmarks and keeps the English ones")[-2] == "**not measured**"
    assert "<html" in html_path.read_text()


def test_the_html_page_is_self_contained_and_escapes_every_text(out: Path) -> None:
    report = json.loads((out / "pairwise/pairwise_report.json").read_text())
    report["models"][0] = EVIL
    report["human"]["pairs"][0]["a"] = EVIL
    report["models"][1] = report["human"]["pairs"][0]["b"] = "c|d"
    write_report(report, out / "pairwise")
    md, html = build_report(out, demo(), NEEDS)
    assert row(md.read_text().split("Table 8.", 1)[1], "c\\|d")[:2] == ["c\\|d", "87.5 [80.0, 95.0]"]
    page = html.read_text()
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page and "<link" not in page and 'src="http' not in page
    images = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(images) == 3 and all(src.startswith("data:image/png;base64,") for src in images)
    assert '<th colspan="3">Chinese</th>' in page  # Table 4's groups span their columns


def test_the_paper_presets_show_the_papers_numbers_beside_ours(out: Path) -> None:
    config = load_config("paper-llama3-8b")
    assert paper_size(config) == "8B" and paper_size(load_config("paper-llama3-70b")) == "70B"
    assert paper_size(demo()) is None
    save_result(result("base", {"world_ceval": (1.0, 0.1, 10)}) | {"tasks": {"ceval-valid": {
        "family": "chinese", "title": "C-Eval", "version": 1.0, "n_samples": 1346, "shots": 5, "mode": "loglikelihood",
        "primary": "acc", "metrics": {"acc": {"value": 50.0, "stderr": 1.3, "scale": "0-100"}}}}},
        out / "eval/base.json")  # fmt: skip
    md = build_report(out, config, NEEDS, config_name="paper-llama3-8b")[0].read_text()
    t4 = md.split("Table 4.", 1)[1]
    assert row(t4, "Base (paper: Llama-3)")[1:5] == ["50.00 ± 1.30", "49.38", "—", "9.64"]
    assert row(t4, "CPT, fixed recipe (ALMR 0.2, LR 0.0002) (paper: Llama-3-Chinese)")[2] == "50.50"
    t7 = md.split("Table 7.", 1)[1]
    titles = row(t7.split("|---", 1)[1].split("\n", 1)[1], "")  # the row of titles under the groups
    assert titles[1:5] == ["**TAPTAP**", "**paper**", "**Turing Test**", "**paper**"]
    assert row(t7, "C-SFT")[1:3] == ["—", "—"]  # the paper columns are there, empty: its Table 7 is 70B only
    t6 = md.split("Table 6.", 1)[1]
    assert row(t6, "CPT only (paper: CPT, w/o Chinese data)")[4] == "4.89"


def test_a_missing_result_whose_stages_are_done_is_made_by_the_eval_stage_alone(out: Path) -> None:
    (out / "eval/base.json").unlink()
    md = build_report(out, demo(), NEEDS, config_name="demo")[0].read_text()
    assert row(md.split("Table 4.", 1)[1], "Base")[-1] == "— eval/base.json missing: run `almr run demo --only eval`"


def test_outputs_of_an_unexpected_shape_cost_their_section_not_the_report(out: Path) -> None:
    (out / "pairwise/pairwise_report.json").write_text(json.dumps({"models": ["a", "b"], "human": {"pairs": [
        {"a": "a", "n": 3, "score_rate": 0.5}]}}))  # fmt: skip
    (out / "frontier/frontier.json").write_text(json.dumps({"recommendation": {"almr": 0.5}}))
    md = build_report(out, demo(), NEEDS, config_name="demo")[0].read_text()
    assert "— Table 8: the output of the pairwise stage could not be read (KeyError: 'b'); rerun it: `almr run demo " \
           "--only pairwise`" in md  # fmt: skip
    assert "- frontier/frontier.json could not be read as a frontier summary (KeyError: 'credible_region_95')" in md
    assert row(md.split("Table 4.", 1)[1], "Base")[1] == "39.00 ± 4.90"  # the rest is there


def test_a_win_rate_whose_interval_holds_half_is_inconclusive(out: Path) -> None:
    report = json.loads((out / "pairwise/pairwise_report.json").read_text())
    report["human"]["pairs"] = [pair("instruct", "c-sft-empathy", 18, 2, 20, [0.4, 0.6])]
    write_report(report, out / "pairwise")
    md = build_report(out, demo(), NEEDS)[0].read_text()
    assert "C-SFT-Empathy over Instruct, pairwise: 52.5% [40.0, 60.0] (bootstrap) → inconclusive" in md
