"""A sweep's runs as a frontier fit reads them: run records to arrays, with every exclusion said
out loud, and the base model's own numbers (the baseline).

Contract:

- only `completed` runs enter a fit; every other run (failed, pruned, pending, running) is
  listed in `excluded` with its status and `error` — a failed run is never scored 0;
- a completed run without the fitted quantity (no averaged metric, no `val_loss[source]`) is
  excluded with that reason too;
- records whose `base_hash` differ are refused (one sweep directory, one study);
- fewer than `min_runs` usable runs, or fewer than 3 distinct ALMRs or 2 distinct LRs, are
  refused with how many are needed and how many there are;
- target `metric`: the record's `averaged_metric`, or the mean of `metric_keys` of its
  `scores` (`almr.evaluate.results.averaged_metric`); target `loss:SOURCE`: `val_loss[SOURCE]`;
  `loss:combined`: the unweighted mean of the final losses of the sources every completed run
  reports;
- the baseline (the base model before CPT): `SWEEP_DIR/baseline.json`
  (`{"val_loss": {...}, "scores": {...}}`) or else the mean over runs of their lowest-tokens
  `val_history` entry (the trainer validates before the first step), with where it came from;
- the general and additional source (`source_roles`): the `frontier.general_source` /
  `additional_source` given, which must be sources the runs validate; else from the language tags
  of `SWEEP_DIR/sweep.yaml` (`load_source_tags`): the first source tagged
  `mixture.additional_language`, and the first one tagged otherwise (general domain first); else
  (no tags) the sources named `zh` and `en`;
- a study has a metric when any completed run has one (`metric_absence`): then the metric fits run
  as always, and refuse too few runs; with none, the analysis fits the losses only and says why.
"""

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray

from almr.data.config import MixtureConfig, SourceConfig
from almr.errors import AlmrError, DataError
from almr.evaluate.results import averaged_metric
from almr.frontier.config import FrontierConfig
from almr.sweep.records import RunRecord

MIN_DISTINCT_ALMR = 3
MIN_DISTINCT_LR = 2


@dataclass
class Excluded:
    run_id: str
    almr: float
    lr: float
    status: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "almr": self.almr, "lr": self.lr, "status": self.status, "reason": self.reason}


@dataclass
class SweepArrays:
    """Usable runs of one target: X[:, 0] = ALMR, X[:, 1] = LR, y the target."""

    X: NDArray[np.float64]
    y: NDArray[np.float64]
    run_ids: list[str]
    excluded: list[Excluded] = field(default_factory=list)


def check_base_hash(records: list[RunRecord]) -> str:
    """The one base_hash of the records, or a DataError naming the groups."""
    hashes = Counter(r.base_hash for r in records)
    if len(hashes) > 1:
        groups = "; ".join(
            f"{h or '(empty)'}: {n} run(s), e.g. {next(r.run_id for r in records if r.base_hash == h)}"
            for h, n in hashes.most_common()
        )
        raise DataError(
            f"the sweep directory mixes runs of {len(hashes)} different base configs ({groups}); a frontier "
            "compares runs of one study only — move the other study's runs into their own sweep directory"
        )
    return next(iter(hashes), "")


def loss_sources(records: list[RunRecord]) -> list[str]:
    """Sources whose final loss every completed run reports (the members of `combined`)."""
    done = [r for r in records if r.status == "completed"]
    if not done:
        return []
    common = set(done[0].val_loss)
    for r in done[1:]:
        common &= set(r.val_loss)
    return sorted(common)


def target_value(record: RunRecord, target: str, metric_keys: list[str] | None, combined: list[str]) -> float | None:
    """The value a fit of `target` reads from one record, or None when the record lacks it."""
    if target == "metric":
        if metric_keys:
            try:
                return averaged_metric(record.scores, metric_keys)
            except AlmrError:
                return None
        return record.averaged_metric
    if target == "loss:combined":
        if not combined or any(s not in record.val_loss for s in combined):
            return None
        return float(np.mean([record.val_loss[s] for s in combined]))
    if target.startswith("loss:"):
        return record.val_loss.get(target.removeprefix("loss:"))
    raise DataError(f"unknown fit target {target!r}; use 'metric', 'loss:combined' or 'loss:SOURCE'")


def sweep_arrays(
    records: list[RunRecord], target: str, metric_keys: list[str] | None = None, min_runs: int = 6
) -> SweepArrays:
    """The usable runs of `target` (see the module docstring) or an AlmrError saying what is missing."""
    if not records:
        raise DataError("no run records to fit; run `almr sweep` first (records live in SWEEP_DIR/runs/*/record.json)")
    check_base_hash(records)
    combined = loss_sources(records)
    X, y, ids, excluded = [], [], [], []
    for r in records:
        if r.status != "completed":
            excluded.append(Excluded(r.run_id, r.almr, r.lr, r.status, r.error or f"run is {r.status}"))
            continue
        value = target_value(r, target, metric_keys, combined)
        if value is None or not np.isfinite(value):
            what = "averaged metric" if target == "metric" else f"val_loss[{target.removeprefix('loss:')}]"
            excluded.append(Excluded(r.run_id, r.almr, r.lr, r.status, f"completed but has no {what}"))
            continue
        X.append((r.almr, r.lr))
        y.append(float(value))
        ids.append(r.run_id)
    X_arr = np.asarray(X, dtype=float).reshape(-1, 2)
    n_almr = len(np.unique(X_arr[:, 0])) if len(X) else 0
    n_lr = len(np.unique(X_arr[:, 1])) if len(X) else 0
    why = f" ({len(excluded)} excluded: {_first_excluded(excluded)})" if excluded else ""
    if len(y) < min_runs:
        raise AlmrError(
            f"fitting the {target} surface needs at least {min_runs} completed runs, has {len(y)}{why}; "
            "wait for more runs or add runs to the sweep"
        )
    if n_almr < MIN_DISTINCT_ALMR or n_lr < MIN_DISTINCT_LR:
        raise AlmrError(
            f"the completed runs span {n_almr} distinct ALMR value(s) and {n_lr} distinct LR value(s); a frontier "
            f"needs at least {MIN_DISTINCT_ALMR} ALMRs (a regression line with a check) and {MIN_DISTINCT_LR} LRs — "
            "widen the sweep's ranges"
        )
    return SweepArrays(X_arr, np.asarray(y, dtype=float), ids, excluded)


def _first_excluded(excluded: list[Excluded]) -> str:
    return ", ".join(f"{e.run_id} {e.status}" for e in excluded[:5]) + (" …" if len(excluded) > 5 else "")


@dataclass
class Baseline:
    """The base model's own numbers before CPT, and where they came from."""

    val_loss: dict[str, float]
    scores: dict[str, float]
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {"val_loss": self.val_loss, "scores": self.scores, "source": self.source}


def load_baseline(sweep_dir: Path | None, records: list[RunRecord]) -> Baseline | None:
    """`SWEEP_DIR/baseline.json`, else the runs' lowest-tokens validation (step 0), else None."""
    if sweep_dir is not None:
        path = Path(sweep_dir) / "baseline.json"
        if path.is_file():
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                val = {str(k): float(v) for k, v in (raw.get("val_loss") or {}).items()}
                scores = {str(k): float(v) for k, v in (raw.get("scores") or {}).items()}
            except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as err:
                raise DataError(
                    f'{path}: not a baseline file ({err}); expected {{"val_loss": {{source: loss}}, '
                    '"scores": {task: score}}, or remove it to use the runs\' step-0 validation'
                ) from None
            if val:
                return Baseline(val, scores, str(path))
    firsts = []
    for r in records:
        entries = [e for e in r.val_history if isinstance(e.get("loss"), dict) and "tokens" in e]
        if entries:
            firsts.append(min(entries, key=lambda e: e["tokens"]))
    if not firsts:
        return None
    lowest = min(int(e["tokens"]) for e in firsts)
    at_lowest = [e for e in firsts if int(e["tokens"]) == lowest]
    sources = sorted({s for e in at_lowest for s in e["loss"]})
    val = {s: float(np.mean([e["loss"][s] for e in at_lowest if s in e["loss"]])) for s in sources}
    when = "step 0, before any training" if lowest == 0 else f"the earliest validation, at {lowest:,} tokens"
    return Baseline(val, {}, f"mean of {len(at_lowest)} run(s)' val_history at {when}")


# --------------------------------------------------------------------------- which source is which


@dataclass
class SourceTags:
    """The study's sources as its sweep.yaml tags them (data.sources order) and the additional language."""

    language: dict[str, str]
    domain: dict[str, str]
    additional_language: str
    where: str


def load_source_tags(sweep_dir: Path) -> SourceTags | None:
    """The sources' language and domain tags from `SWEEP_DIR/sweep.yaml` (the resolved spec `almr sweep`
    writes); None without the file. Read as plain YAML: only these keys matter here, and a spec of an
    older almr must not stop the analysis."""
    path = Path(sweep_dir) / "sweep.yaml"
    if not path.is_file():
        return None
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        sources = (raw.get("data") or {}).get("sources") or []
        language = {str(x["name"]): str(x.get("language", SourceConfig.model_fields["language"].default))
                    for x in sources}  # fmt: skip
        domain = {str(x["name"]): str(x.get("domain", SourceConfig.model_fields["domain"].default)) for x in sources}
        extra = (raw.get("mixture") or {}).get("additional_language")
    except (yaml.YAMLError, AttributeError, KeyError, TypeError) as err:
        raise DataError(
            f"{path}: cannot read data.sources[].name/language ({type(err).__name__}: {err}); restore the file "
            "`almr sweep` wrote, or set frontier.general_source and frontier.additional_source"
        ) from None
    default = MixtureConfig.model_fields["additional_language"].default
    return SourceTags(language, domain, str(extra or default), str(path))


@dataclass
class SourceRoles:
    """The general-language and additional-language validation sources of an analysis (None: not found),
    how they were chosen, and what the report should say about it."""

    general: str | None
    additional: str | None
    how: str
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"general": self.general, "additional": self.additional, "how": self.how, "notes": self.notes}


def validated_sources(records: list[RunRecord]) -> list[str]:
    """Every source some completed run reports a final validation loss for."""
    return sorted({s for r in records if r.status == "completed" for s in r.val_loss})


def source_roles(config: FrontierConfig, records: list[RunRecord], tags: SourceTags | None) -> SourceRoles:
    """`frontier.general_source` / `additional_source`, or the sources the tags name (module docstring)."""
    present = validated_sources(records)
    for key in ("general_source", "additional_source"):
        given = getattr(config, key)
        if given is not None and present and given not in present:
            raise AlmrError(
                f"frontier.{key}={given!r}: the completed runs report validation losses for {', '.join(present)}; "
                f"set it to one of them, or leave it unset to take it from the sources' language tags"
            )
    if config.general_source is not None and config.general_source == config.additional_source:
        raise AlmrError(
            f"frontier.general_source and frontier.additional_source are both {config.general_source!r}; the "
            "forgetting budget watches a general-language source other than the additional language's"
        )
    known = present or list(tags.language if tags else [])
    notes: list[str] = []
    if tags is not None and tags.language:
        extra = tags.additional_language
        additional = [s for s in tags.language if tags.language[s] == extra and s in known]
        general = [s for s in tags.language if tags.language[s] != extra and s in known]
        general.sort(key=lambda s: tags.domain.get(s) != "general")  # stable: data.sources order within each
        how = f"from the language tags in {tags.where} (mixture.additional_language {extra})"
        for key, role, found in (("additional_source", f"tagged {extra}", additional),
                                 ("general_source", f"not tagged {extra}", general)):  # fmt: skip
            if len(found) > 1:
                notes.append(
                    f"{len(found)} validated sources are {role} ({', '.join(found)}): {found[0]} was taken; "
                    f"set frontier.{key} to choose another"
                )
    else:
        # no tags (records without their sweep.yaml): sources named like the language, the old defaults
        additional = [s for s in ("zh",) if s in known or not known]
        general = [s for s in ("en",) if s in known or not known]
        how = "by name (no sweep.yaml with language tags): the sources named zh and en"
    roles = SourceRoles(
        general=config.general_source or (general[0] if general else None),
        additional=config.additional_source or (additional[0] if additional else None),
        how=how,
        notes=notes,
    )
    if config.general_source or config.additional_source:
        roles.how = "frontier.general_source / additional_source as set" + (
            f"; the other {how}" if not (config.general_source and config.additional_source) else ""
        )
    if roles.general == roles.additional and roles.general is not None:
        roles.general = next((s for s in general if s != roles.additional), None)
    return roles


def metric_absence(records: list[RunRecord], metric_keys: list[str] | None) -> str | None:
    """None when any completed run has the metric, or none has validation losses either (the metric fits
    run, or refuse as they always did); else why none has the metric, in words the report prints."""
    done = [r for r in records if r.status == "completed"]
    if any(target_value(r, "metric", metric_keys, []) is not None for r in done) or not any(r.val_loss for r in done):
        return None
    if not any(r.scores or r.probe_history for r in done):
        return (
            "the runs recorded no benchmark scores — no probe (cpt.probe.every_tokens 0) and no final "
            "evaluation — only validation losses"
        )
    keys = metric_keys or sorted({k for r in done if r.average is not None for k in r.average.terms})
    return (
        f"no completed run has an averaged metric: their scores lack {', '.join(keys) or 'the averaged keys'} "
        "(eval.average or frontier.metric_keys names a score that neither the probe nor the final evaluation "
        "produced)"
    )
