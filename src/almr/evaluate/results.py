"""Evaluation results: one JSON per evaluation, the paper-style tables, the averaged metric.

A result file (`format: almr-eval/1`) holds the model, suite, limit, creation time, wall
time, lm-eval version and, per task: family, title, task version, number of samples, shots,
mode, primary metric and every metric as `{value, stderr, scale}`; and `skipped`, the tasks asked
for but not run (`--skip-missing`) with the reason of each. Fractions (accuracy, EM,
F1, pass@1, %Chinese) are stored ×100, so every `0-100` metric reads as a percentage;
BLEU and ROUGE are 0–100 already; SECEU is a distance and EQ an EQ (scales `distance`, `eq`).

`scores(result)` flattens a result to `{task: primary, "task:metric": value}`; the averaged
metric (`eval.average`, an `AverageConfig`: a name and weighted keys) is the weighted mean of
chosen keys of such a mapping — of a result file or of a probe's output, which uses the same task
names — and refuses a key that is missing or not on a 0–100 scale.
"""

import csv
import io
import json
import math
import os
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lm_eval
from pydantic import ValidationError

import almr
from almr.durable import atomic_write_text
from almr.errors import AlmrError, ConfigError, DataError
from almr.evaluate.config import DEFAULT_AVERAGE_NAME, AverageConfig
from almr.evaluate.registry import FAMILIES, TASKS, TaskInfo

FORMAT = "almr-eval/1"
FRACTIONS = {"acc", "acc_norm", "em", "f1", "exact_match", "pass@1", "zh_share", "human_rate", "win_rate"}
SCALES = {"eq": "eq", "seceu": "distance"}


def _scale(metric: str) -> tuple[float, str]:
    base = metric.split(",")[0]
    if base in SCALES:
        return 1.0, SCALES[base]
    return (100.0 if base in FRACTIONS else 1.0), "0-100"


def _number(value: Any) -> float | None:
    return (
        float(value)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        else None
    )


def _leaves(raw: dict[str, Any], name: str) -> list[str]:
    subtasks = raw.get("group_subtasks", {}).get(name)
    if not subtasks:
        return [name]
    return [leaf for sub in subtasks for leaf in _leaves(raw, sub)]


def _task_metrics(entry: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in entry.items():
        if "," not in key or "_stderr," in key:
            continue
        metric, filt = key.split(",", 1)
        name = metric if filt == "none" else f"{metric},{filt}"
        factor, scale = _scale(metric)
        got = _number(value)
        stderr = _number(entry.get(f"{metric}_stderr,{filt}"))
        out[name] = {
            "value": None if got is None else got * factor,
            "stderr": None if stderr is None else stderr * factor,
            "scale": scale,
        }
    return out


def from_lm_eval(raw_list: Sequence[dict[str, Any]], infos: Sequence[TaskInfo], *, model: str, suite: str | None,
                 limit: int | None, wall_s: float,
                 skipped: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """One almr result from the dicts lm-eval's `evaluate` returned (one per pass); `skipped` is
    `{task: reason}` of the tasks asked for but not run (`--skip-missing`)."""
    tasks: dict[str, Any] = {}
    for raw in raw_list:
        for info in infos:
            if info.name not in raw.get("results", {}) and info.name not in raw.get("group_subtasks", {}):
                continue
            leaves = _leaves(raw, info.name)
            entry = raw["results"].get(info.name)
            metrics = _task_metrics(entry) if entry else {}
            if not metrics:  # a group without an aggregate: the mean of its subtasks' metrics
                per_leaf = [_task_metrics(raw["results"][leaf]) for leaf in leaves if leaf in raw["results"]]
                for name in {m for leaf in per_leaf for m in leaf}:
                    values = [leaf[name]["value"] for leaf in per_leaf if leaf.get(name, {}).get("value") is not None]
                    if values:
                        metrics[name] = {"value": sum(values) / len(values), "stderr": None, "scale": _scale(name)[1]}
            versions = {leaf: raw.get("versions", {}).get(leaf) for leaf in leaves}
            tasks[info.name] = {
                "family": info.family,
                "title": info.title,
                "version": versions[info.name] if len(leaves) == 1 else versions,
                "n_samples": sum(int(raw.get("n-samples", {}).get(leaf, {}).get("effective", 0)) for leaf in leaves),
                "shots": info.shots,
                "mode": info.mode,
                "primary": primary_key(info.primary, metrics),
                "metrics": metrics,
            }
    return {
        "format": FORMAT,
        "model": model,
        "suite": suite,
        "limit": limit,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": round(wall_s, 3),
        "lm_eval_version": getattr(lm_eval, "__version__", "unknown"),
        "almr_version": getattr(almr, "__version__", "unknown"),
        "tasks": tasks,
        "skipped": dict(skipped or {}),
        "unscored": unscored(tasks, infos, skipped or {}),
    }


def unscored(tasks: Mapping[str, Mapping[str, Any]], infos: Sequence[TaskInfo],
             skipped: Mapping[str, str]) -> list[str]:  # fmt: skip
    """The tasks asked for that lm-eval returned no primary score for (not run, or every metric
    None) and that were not skipped on purpose: a result must not pass for complete without them."""
    missing = []
    for info in infos:
        entry = tasks.get(info.name)
        value = entry["metrics"].get(entry["primary"], {}).get("value") if entry and entry["primary"] else None
        if value is None and info.name not in skipped:
            missing.append(info.name)
    return missing


def judge_result(scored: Mapping[str, Mapping[str, Any]], infos: Sequence[TaskInfo], *, model: str, judge: str,
                 limit: int | None, wall_s: float) -> dict[str, Any]:  # fmt: skip
    """One almr result from `judge.run_judge_task` outputs; unjudged items are listed under `failures`."""
    tasks = {}
    for info in infos:
        r = scored[info.name]
        tasks[info.name] = {
            "family": info.family, "title": info.title, "version": 1.0, "n_samples": r["n_judged"],
            "n_items": r["n_items"], "shots": 0, "mode": "judge", "primary": r["metric"], "judge": judge,
            "metrics": {r["metric"]: {"value": r["value"], "stderr": None, "scale": "0-100"}},
            "failures": list(r["failures"]),
        }  # fmt: skip
    return {
        "format": FORMAT, "model": model, "suite": "judge", "limit": limit,
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "wall_s": round(wall_s, 3),
        "lm_eval_version": None, "almr_version": getattr(almr, "__version__", "unknown"), "tasks": tasks,
    }  # fmt: skip


def primary_key(primary: str, metrics: Mapping[str, Any]) -> str:
    """The metric key holding the primary metric: `primary` itself, else the first filtered variant
    (`exact_match,flexible-extract` …), preferring a flexible extraction."""
    if primary in metrics:
        return primary
    variants = sorted(k for k in metrics if k.split(",")[0] == primary)
    flexible = [k for k in variants if "flexible" in k]
    return (flexible or variants or [primary])[0]


# --------------------------------------------------------------------------- files


def save_result(result: Mapping[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return path


def model_label(model: str, endpoint_model: str | None = None) -> str:
    """The name a model's result files carry: `<run>-<step>` for a CPT checkpoint's export
    (`…/<run>/checkpoints/<step>/hf`), `<run>` for another run's `hf/` export (`…/<run>/hf`), the
    folder's own name otherwise; `<host>_<port>-<served model>` for an endpoint (`/` in a model id as
    `--`)."""
    if model.startswith(("http://", "https://")):
        where = urllib.parse.urlsplit(model)
        host = f"{where.hostname}_{where.port}" if where.port else str(where.hostname)
        return _safe(f"{host}-{endpoint_model}" if endpoint_model else host)
    parts = Path(os.path.abspath(model)).parts
    if "checkpoints" in parts[1:-1]:
        at = len(parts) - 1 - parts[::-1].index("checkpoints")
        return _safe(f"{parts[at - 1]}-{parts[at + 1]}")
    if parts[-1] == "hf" and len(parts) > 2:
        return _safe(parts[-2])
    return _safe(parts[-1] or "model")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name.replace("/", "--"))


def default_result_path(model: str, label: str, endpoint_model: str | None = None) -> Path:
    """Where `almr eval` and `almr eval judge` write a result unless told: `eval/<model label>-<label>.json`
    (`model_label`), so that the results of different checkpoints and endpoints do not share a file."""
    return Path("eval") / f"{model_label(model, endpoint_model)}-{label}.json"


def refuse_other_result(path: str | Path, result: Mapping[str, Any]) -> None:
    """Refuse to replace a result file at `path` that holds another evaluation (another model or served
    model, suite or set of tasks); the same evaluation run again may replace its own file."""
    path = Path(path)
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        old = None
    if not isinstance(old, dict) or old.get("format") != FORMAT or not isinstance(old.get("tasks"), dict):
        raise AlmrError(f"{path} exists and is not an almr evaluation result; pass --out PATH to write elsewhere")
    mine, theirs = _identity(result), _identity(old)
    if mine != theirs:
        what = "; ".join(f"its {key} is {theirs[key]!r}, this one's {mine[key]!r}" for key in mine
                         if mine[key] != theirs[key])  # fmt: skip
        raise AlmrError(f"{path} holds another evaluation ({what}); not replaced: pass --out PATH to keep both, "
                        "or remove it")  # fmt: skip


def _identity(result: Mapping[str, Any]) -> dict[str, Any]:
    model = str(result.get("model"))
    if not model.startswith(("http://", "https://")):
        model = os.path.abspath(model)
    tasks = sorted({*result.get("tasks", {}), *result.get("skipped", {})})
    return {"model": model, "endpoint_model": result.get("endpoint_model"), "suite": result.get("suite"),
            "tasks": tasks}  # fmt: skip


def load_result(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"result file {path} does not exist; `almr eval --model … --out {path}` writes one")
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(result, dict) or result.get("format") != FORMAT or not isinstance(result.get("tasks"), dict):
        raise DataError(f'{path}: not an almr evaluation result (expected "format": "{FORMAT}" and "tasks")')
    # "skipped" came later; files written before it have none, which reads as nothing skipped
    if not isinstance(result.get("skipped", {}), dict):
        raise DataError(f'{path}: "skipped" must map each skipped task to its reason, got {result["skipped"]!r}')
    return result


# --------------------------------------------------------------------------- scores, averaged metric


def scores(result: Mapping[str, Any]) -> dict[str, float]:
    """`{task: primary value, "task:metric": value}` of a result (values as stored, see module doc)."""
    out: dict[str, float] = {}
    for task, entry in result["tasks"].items():
        for metric, m in entry["metrics"].items():
            if m["value"] is not None:
                out[f"{task}:{metric}"] = m["value"]
        main = entry["metrics"].get(entry["primary"])
        if main and main["value"] is not None:
            out[task] = main["value"]
    return out


def scale_of(key: str) -> str:
    """The scale of a score key (`task`: its primary metric; `task:metric`): `0-100`, `eq` or `distance`.
    A task almr does not list is taken to report accuracy."""
    task, _, metric = key.partition(":")
    info = TASKS.get(task)
    return _scale(metric or (info.primary if info else "acc"))[1]


Average = AverageConfig | Sequence[str] | Mapping[str, float]


def as_average(average: Average) -> AverageConfig:
    """`average` as an `AverageConfig`: as it is, or built from a list of keys (weights 1) or a
    `{key: weight}` mapping; a bad key, weight or scale is a ConfigError naming it."""
    if isinstance(average, AverageConfig):
        return average
    raw = {"terms": dict(average)} if isinstance(average, Mapping) else list(average)
    try:
        return AverageConfig.model_validate(raw)
    except ValidationError as err:
        why = err.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"averaged metric: {why}") from None


def averaged_metric(values: Mapping[str, Any], average: Average) -> float:
    """The weighted mean Σ wᵢ·xᵢ / Σ wᵢ of the keys of `average` (a task name for its primary metric,
    or `task:metric`; each on the 0–100 scale); a list of keys weighs each 1.

    `values` is a result (as `load_result` returns it) or a flat mapping such as a probe's scores.
    """
    avg = as_average(average)
    flat = scores(values) if "tasks" in values and "format" in values else dict(values)
    missing = [key for key in avg.terms if flat.get(key) is None]
    if missing:
        present = ", ".join(sorted(flat)) or "none"
        raise AlmrError(f"averaged metric {avg.name}: no score for {', '.join(missing)}; present: {present}")
    return sum(weight * float(flat[key]) for key, weight in avg.terms.items()) / sum(avg.terms.values())


def check_average_produced(average: AverageConfig, infos: Sequence[TaskInfo], producer: str, tasks_key: str) -> None:
    """Refuse an averaged metric with a key that `producer` (the probe, a final evaluation), running
    `infos` (named by the config key `tasks_key`), does not report. almr's own tasks report exactly
    their primary and listed metrics; an lm-eval task's list is lm-eval's, known only once it has run."""
    by_name = {info.name: info for info in infos}
    for key in average.terms:
        task, _, metric = key.partition(":")
        if task not in by_name:
            raise ConfigError(
                f"eval.average: {key} is not produced by {producer}, which runs {', '.join(by_name)}; add {task} "
                f"to {tasks_key} or leave {key} out of eval.average"
            )
        info = by_name[task]
        if metric and info.kind == "ours" and metric.split(",")[0] not in (info.primary, *info.metrics):
            known = ", ".join(dict.fromkeys((info.primary, *info.metrics)))
            raise ConfigError(f"eval.average: {task} reports {known}, not {metric}; use one of them in {key}")


# --------------------------------------------------------------------------- tables (the paper's Tables 4–5)


def _columns(results: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """(family, task, title) of every task any result has, in family order, then registry order."""
    present = {task for r in results for task in r["tasks"]}
    order = list(TASKS)
    ranked = sorted(
        present, key=lambda t: (list(FAMILIES).index(_family(results, t)), order.index(t) if t in order else 999, t)
    )
    return [(_family(results, t), t, _title(results, t)) for t in ranked]


def _family(results: Sequence[Mapping[str, Any]], task: str) -> str:
    for r in results:
        if task in r["tasks"]:
            return r["tasks"][task].get("family", "chinese")
    return "chinese"


def _title(results: Sequence[Mapping[str, Any]], task: str) -> str:
    for r in results:
        if task in r["tasks"]:
            return r["tasks"][task].get("title", task)
    return task


def table_rows(
    results: Sequence[Mapping[str, Any]], average: Average = ()
) -> tuple[list[str], list[str], list[list[str]]]:
    """(family header, benchmark header, rows): one row per result (model), one column per task's
    primary metric, grouped by family, and an `Avg` column (titled with the metric's name unless it
    is the default) when `average` names keys."""
    avg = as_average(average) if average else None
    cols = _columns(results)
    families, titles, rows = ["Model"], [""], []
    last = None
    for family, _, title in cols:
        families.append(FAMILIES[family] if family != last else "")
        titles.append(title)
        last = family
    if avg is not None:
        families.append("Avg")
        titles.append("" if avg.name == DEFAULT_AVERAGE_NAME else avg.name)
    for r in results:
        flat = scores(r)
        row = [str(r.get("model", "?"))]
        row += [f"{flat[task]:.1f}" if task in flat else "–" for _, task, _ in cols]
        if avg is not None:
            try:
                row.append(f"{averaged_metric(flat, avg):.1f}")
            except AlmrError:
                row.append("–")
        rows.append(row)
    return families, titles, rows


def markdown_table(results: Sequence[Mapping[str, Any]], average: Average = ()) -> str:
    """Families in the header row (over the first column of each group), benchmarks in the row below."""
    families, titles, rows = table_rows(results, average)
    lines = ["| " + " | ".join(families) + " |", "|" + "---|" + "---:|" * (len(families) - 1)]
    lines.append("| " + " | ".join(f"**{t}**" if t else "" for t in titles) + " |")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_table(results: Sequence[Mapping[str, Any]], average: Average = ()) -> str:
    """Two header rows (family, benchmark), then one row per model."""
    families, titles, rows = table_rows(results, average)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(families)
    writer.writerow(titles)
    writer.writerows(rows)
    return buf.getvalue()
