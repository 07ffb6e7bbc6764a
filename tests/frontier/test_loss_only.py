"""A study whose runs recorded validation losses but no benchmark metric (issue #16, item 6): the
loss fits, D-CPT and CMR on sources named by their language tags, and a recommendation by loss at
the known optimum of a synthetic surface.

The surfaces (x = log10 LR, t = tokens / budget, budget 1e6 tokens):

    wiki_zh (tagged zh): 3.0 − ALMR·√t + 0.3·(x + 4)²·t   → final 3 − ALMR + 0.3·(x + 4)²
    web_en  (tagged en): 2.2 − 0.25·√t + 0.5·ALMR·t       → final 1.95 + 0.5·ALMR, base (t = 0) 2.2

The Chinese loss falls with the ALMR and is lowest at LR 1e-4; the English loss rises with the
ALMR. Within a budget ε on the English loss the best point is ALMR* = (0.25 + ε) / 0.5 at LR 1e-4:
0.544 with the default ε = cmr_tolerance 0.01 × base 2.2, 0.8 with ε = 0.15.
"""

import json

import numpy as np
import pytest

from almr.errors import AlmrError, DataError
from almr.frontier.analyze import analyze_records, analyze_sweep
from almr.frontier.config import FrontierConfig
from almr.frontier.report import headline
from almr.frontier.runs import SourceTags, load_baseline, load_source_tags, metric_absence, source_roles
from almr.sweep.records import RunRecord
from synthetic_records import synthetic_sweep

BUDGET = 1e6
ALMRS = [0.1, 0.3, 0.5, 0.7, 0.9]
LRS = list(10 ** np.linspace(-5, -3, 5))
BASE = {"web_en": 2.2, "wiki_zh": 3.2}
TAGS = SourceTags({"web_en": "en", "wiki_zh": "zh"}, {"web_en": "general", "wiki_zh": "general"}, "zh", "test")
FAST = {"n_bootstrap": 0, "n_posterior_samples": 300, "dcpt_starts": 4, "n_restarts_optimizer": 0}
SWEEP_YAML = """\
data:
  sources:
  - {name: web_en, language: en, domain: general, train: [web_en.jsonl], valid: [web_en.valid.jsonl]}
  - {name: wiki_zh, language: zh, domain: general, train: [wiki_zh.jsonl], valid: [wiki_zh.valid.jsonl]}
mixture: {additional_language: zh, almr: 0.5}
"""


def zh_loss(r: float, x: float, D: float) -> float:
    t = D / BUDGET
    return 3.0 - r * np.sqrt(t) + 0.3 * (x + 4.0) ** 2 * t


def en_loss(r: float, x: float, D: float) -> float:
    t = D / BUDGET
    return 2.2 - 0.25 * np.sqrt(t) + 0.5 * r * t


def best_almr(epsilon: float) -> float:
    return (0.25 + epsilon) / 0.5


def loss_only_records(**kw) -> list[RunRecord]:
    """synthetic_sweep's records with every benchmark number taken out: losses only."""
    records = synthetic_sweep(ALMRS, LRS, lambda r, x: 0.0, {"web_en": en_loss, "wiki_zh": zh_loss}, BASE,
                              tokens=int(BUDGET), loss_noise=0.001, **kw)  # fmt: skip
    return [r.model_copy(update={"scores": {}, "probe_history": [], "averaged_metric": None}) for r in records]


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """`analyze_sweep` on a sweep directory of loss-only records whose sweep.yaml tags the sources."""
    sweep = tmp_path_factory.mktemp("loss-only")
    for r in loss_only_records(failed=[3]):
        r.save(sweep / "runs" / r.run_id)
    (sweep / "sweep.yaml").write_text(SWEEP_YAML, encoding="utf-8")
    analysis = analyze_sweep(sweep, FrontierConfig(**FAST), sweep / "out")
    return analysis, sweep / "out"


def test_a_loss_only_study_is_recommended_at_the_known_optimum(analysed):
    analysis, _ = analysed
    rec = analysis.summary["recommendation"]
    # ε = 0.01 × 2.2: ALMR* = 0.544 at LR 1e-4; the 41-point grid steps 0.02 in ALMR and 0.05 in log10 LR
    assert rec["almr"] == pytest.approx(best_almr(0.022), abs=0.03)
    assert np.log10(rec["lr"]) == pytest.approx(-4.0, abs=0.1)
    assert rec["objective"]["target"] == "loss:wiki_zh" and rec["objective"]["sense"] == "minimize"
    assert rec["objective"]["mean"] == pytest.approx(3.0 - rec["almr"], abs=0.01)
    constraint = rec["constraint"]
    assert constraint["source"] == "web_en" and constraint["base"] == pytest.approx(2.2)
    assert constraint["limit"] == pytest.approx(2.2 * 1.01) and "0.01 × base loss" in constraint["rule"]
    assert rec["val_loss"]["web_en"]["mean"] <= constraint["limit"]
    assert rec["metric"] is None and rec["frontier_lr_at_almr"] is None


def test_the_summary_says_the_metric_is_absent_and_why(analysed):
    analysis, out = analysed
    summary = json.loads((out / "frontier.json").read_text())
    assert summary["metric"]["present"] is False and summary["metric"]["runs_with_metric"] == 0
    assert summary["metric"]["runs_with_val_loss"] == 24
    assert "no probe (cpt.probe.every_tokens 0) and no final evaluation" in summary["metric"]["reason"]
    assert summary["metric_frontier"] is None and analysis.metric is None
    assert "metric" not in summary["surfaces"]
    assert set(summary["surfaces"]) == {"loss:web_en", "loss:wiki_zh", "loss:combined"}
    assert [e["run_id"] for e in summary["excluded"]] == ["run-03"]
    assert summary["loss_frontier"]["start"] == [summary["recommendation"]["almr"], summary["recommendation"]["lr"]]
    for name in ("report.md", "frontier.json", "fig1_frontier.png", "fig2_trajectories.png"):
        assert (out / name).read_bytes()[:1], name
    report = (out / "report.md").read_text()
    assert report.count("**No averaged metric**: the runs recorded no benchmark scores") == 1
    assert "## Metric frontier (Eq. 1 analog)\n\nAbsent: the runs recorded no benchmark scores" in report
    assert f"ALMR **{summary['recommendation']['almr']:.3f}**" in report
    assert "this analysis (min wiki_zh loss within the budget)" in report
    line = headline(summary)
    assert line.startswith(f"recommended ALMR {summary['recommendation']['almr']:.3f}, LR 0.0001 by loss")


def test_dcpt_and_cmr_are_fitted_on_sources_named_by_their_language_tags(analysed):
    summary = analysed[0].summary
    assert summary["sources"]["general"] == "web_en" and summary["sources"]["additional"] == "wiki_zh"
    assert "language tags" in summary["sources"]["how"]
    dcpt = summary["baselines"]["dcpt"]
    assert set(dcpt) == {"wiki_zh", "web_en"}
    assert dcpt["wiki_zh"]["share"] == "ALMR" and dcpt["web_en"]["share"] == "1 − ALMR"
    assert dcpt["wiki_zh"]["points"] == 30  # 5 ALMRs × 6 validations after step 0, at the one LR
    cmr = summary["baselines"]["cmr"]
    assert cmr is not None and cmr["base_loss"] == pytest.approx(2.2) and 0.0 <= cmr["almr"] <= 1.0
    assert summary["baselines"]["notes"] == []


def test_an_explicit_budget_and_explicit_source_names_win():
    records = loss_only_records()
    config = FrontierConfig(epsilon=0.15, general_source="web_en", additional_source="wiki_zh", grid_size=21, **FAST)
    summary = analyze_records(records, config, load_baseline(None, records)).summary  # no tags: the names given
    rec = summary["recommendation"]
    assert rec["almr"] == pytest.approx(best_almr(0.15), abs=0.05) and np.log10(rec["lr"]) == pytest.approx(-4, abs=0.1)
    assert rec["constraint"]["rule"] == "ε = 0.15 (frontier.epsilon)"
    assert summary["sources"]["how"].startswith("frontier.general_source / additional_source as set")


def test_without_a_base_loss_the_loss_recommendation_is_unconstrained_and_says_so():
    records = loss_only_records()
    summary = analyze_records(records, FrontierConfig(grid_size=21, **FAST), None, TAGS).summary
    rec = summary["recommendation"]
    assert rec["constraint"] is None
    assert rec["almr"] == pytest.approx(0.9) and np.log10(rec["lr"]) == pytest.approx(-4, abs=0.1)
    assert any("unconstrained: no base-model web_en loss" in n for n in summary["sources"]["notes"])


def test_source_names_the_runs_do_not_have_are_refused_with_the_ones_present():
    records = loss_only_records()
    with pytest.raises(AlmrError, match=r"frontier.general_source='en': .* web_en, wiki_zh; set it to one of them"):
        analyze_records(records, FrontierConfig(general_source="en"), None)
    # no tags and no source named zh: the loss-only objective cannot be guessed
    with pytest.raises(AlmrError, match=r"set frontier.additional_source to one of them"):
        analyze_records(records, FrontierConfig(), None)


def test_roles_prefer_general_domain_sources_and_note_a_choice_among_several():
    tags = SourceTags(
        language={"code": "en", "web_en": "en", "wiki_zh": "zh", "news_zh": "zh", "wiki_en": "en"},
        domain={"code": "code", "web_en": "general", "wiki_zh": "general", "news_zh": "general", "wiki_en": "general"},
        additional_language="zh",
        where="sweep.yaml",
    )
    losses = {"code": 1.0, "web_en": 2.0, "wiki_zh": 3.0, "news_zh": 3.1, "wiki_en": 2.1}
    records = [RunRecord(run_id="r", almr=0.5, lr=1e-4, status="completed", val_loss=losses)]
    roles = source_roles(FrontierConfig(), records, tags)
    assert (roles.general, roles.additional) == ("web_en", "wiki_zh")
    assert roles.notes == [
        "2 validated sources are tagged zh (wiki_zh, news_zh): wiki_zh was taken; set frontier.additional_source "
        "to choose another",
        "3 validated sources are not tagged zh (web_en, wiki_en, code): web_en was taken; set "
        "frontier.general_source to choose another",
    ]
    # records without their sweep.yaml keep the old names
    plain = [RunRecord(run_id="r", almr=0.5, lr=1e-4, status="completed", val_loss={"en": 2.0, "zh": 3.0})]
    old = source_roles(FrontierConfig(), plain, None)
    assert (old.general, old.additional) == ("en", "zh")


def test_source_tags_are_read_from_the_sweeps_own_spec(tmp_path):
    assert load_source_tags(tmp_path) is None
    (tmp_path / "sweep.yaml").write_text(SWEEP_YAML, encoding="utf-8")
    tags = load_source_tags(tmp_path)
    assert tags is not None and tags.language == {"web_en": "en", "wiki_zh": "zh"} and tags.additional_language == "zh"
    (tmp_path / "sweep.yaml").write_text("data: {sources: [{language: en}]}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"sweep.yaml: cannot read data.sources\[\].name/language"):
        load_source_tags(tmp_path)


def test_the_reason_names_the_missing_keys_when_probes_ran():
    record = RunRecord(run_id="r", almr=0.5, lr=1e-4, status="completed", val_loss={"en": 2.0},
                       scores={"world_mmlu": 50.0}, average=["world_ceval"])  # fmt: skip
    assert "their scores lack world_ceval" in (metric_absence([record], None) or "")
    assert metric_absence([record.model_copy(update={"averaged_metric": 50.0})], None) is None
