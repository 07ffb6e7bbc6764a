"""lm-eval's own task catalogue: any task lm-evaluation-harness knows, by name, without loading data.

Contract:

- `lm_eval_info(name)` describes a task or group of lm-eval's (`hellaswag`, `cmmlu`,
  `arc_easy`, …) as a `TaskInfo` of kind `builtin` — its output type, primary metric (the first
  of its `metric_list`; a group's first aggregate) and the Hugging Face dataset(s) its leaves read
  — from lm-eval's task index alone. A name lm-eval does not know raises a `ConfigError` listing
  the nearest names it does know.
- `hub_datasets(name, overrides)` / `with_overrides(infos, overrides)`: the Hugging Face datasets an
  lm-eval task or group reads, from each leaf's own `dataset_path` (never a hand-written copy), after
  the overrides — what the offline check looks for in the local cache.
- `load_tasks(infos, metadata, overrides)` builds the lm-eval `Task` objects of almr's own YAML
  tasks and lm-eval's, with `overrides` (`eval.task_overrides`: lm-eval config keys per task, e.g.
  a local `dataset_path`) merged into the registered configuration — lm-eval's own dict specs
  replace the registered config instead of merging into it. A key may name a task asked for or any
  group, tag or task below it (`mmlu` for every subject, `mmlu_anatomy` for one); the deeper wins.
- `configure_tasks(loaded, infos, max_gen_toks)` applies what almr decides for every suite:
  the registry's few-shot count, the fixed few-shot seed, the generation-token cap.

The index (a scan of lm-eval's ~15 000 task YAMLs, ~8 s here) is built once per process and only
when an lm-eval task (one of the registry's built-in ones, or a name outside it) is asked for.
"""

import dataclasses
import difflib
import functools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from almr.errors import ConfigError
from almr.evaluate.registry import TASKS, TaskInfo
from almr.evaluate.tasks import TASKS_DIR

# dataset_path values that name a `datasets` file builder, not a Hugging Face repository
_FILE_BUILDERS = {"json", "csv", "parquet", "arrow", "text", "pandas"}


@functools.cache
def task_manager(include_defaults: bool) -> Any:
    """lm-eval's TaskManager over almr's YAML tasks (and lm-eval's own when `include_defaults`)."""
    from lm_eval.tasks import TaskManager  # ~3 s to import: only when lm-eval tasks are looked up

    # almr's humaneval replaces lm-eval's on purpose (tasks/humaneval.yaml): not worth a warning each time
    logging.getLogger("lm_eval.tasks._index").addFilter(_OwnOverrides())
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=include_defaults)


class _OwnOverrides(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not ("overrides existing task" in str(record.msg) and len(args) > 1 and str(TASKS_DIR) in str(args[1]))


def lm_eval_info(name: str) -> TaskInfo:
    """A `TaskInfo` for a task, group or tag lm-eval knows (see the module doc)."""
    manager = task_manager(True)
    entry = manager.task_index.get(name)
    if entry is None:
        near = difflib.get_close_matches(name, manager.all_tasks, n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise ConfigError(
            f"unknown task {name!r}: neither almr's registry (`almr eval tasks`) nor lm-eval know it{hint}"
        )
    leaves = _leaf_configs(manager, name)
    first = leaves[0]
    output = first.get("output_type", "generate_until")
    mode = {"multiple_choice": "loglikelihood", "loglikelihood": "loglikelihood"}.get(output, "generation")
    if output == "loglikelihood_rolling":
        mode = "perplexity"
    metrics = entry.cfg.get("aggregate_metric_list") or first.get("metric_list") or [{"metric": "acc"}]
    primary = metrics[0]["metric"] if isinstance(metrics, list) else "acc"
    datasets = hub_datasets(name)
    return TaskInfo(
        name, "other", name, "builtin", primary, mode,  # type: ignore[arg-type]
        shots=int(first.get("num_fewshot") or 0), hf_dataset=",".join(datasets),
        source=f"lm-eval task ({entry.yaml_path})", runs_code=bool(first.get("unsafe_code")),
    )  # fmt: skip


def _leaf_configs(manager: Any, name: str) -> list[dict[str, Any]]:
    """The raw configs of the leaf tasks under `name` (itself when it is a task)."""
    return [cfg for _, cfg, _ in _walk(manager, name)] or [manager.task_index[name].cfg or {}]


def _walk(manager: Any, name: str, path: tuple[str, ...] = ()) -> list[tuple[str, dict[str, Any], tuple[str, ...]]]:
    """(leaf task, its raw config, the names from `name` down to it) for every leaf under `name`."""
    entry = manager.task_index[name]
    path = (*path, name)
    if entry.cfg is None or getattr(entry.kind, "name", "") == "TAG":  # a tag: its member tasks
        members = sorted(entry.tags) if entry.cfg is None else [n for n, e in manager.task_index.items()
                                                                if name in getattr(e, "tags", ())]  # fmt: skip
        return [leaf for m in members if m in manager.task_index for leaf in _walk(manager, m, path)]
    children = entry.cfg.get("task")
    if not isinstance(children, list):  # a task (its `task` is its own name)
        return [(name, entry.cfg, path)]
    out = []
    for child in children:
        child_name = child if isinstance(child, str) else child.get("task") or child.get("group")
        if isinstance(child_name, str) and child_name in manager.task_index:
            out += _walk(manager, child_name, path)
    return out


def _is_hub_dataset(cfg: Mapping[str, Any]) -> bool:
    path = cfg.get("dataset_path")
    return isinstance(path, str) and path not in _FILE_BUILDERS and not Path(path).exists()


def hub_datasets(name: str, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """The Hugging Face datasets lm-eval's task or group `name` reads — each leaf's own `dataset_path`,
    after `overrides` (`eval.task_overrides`, on the task, a subgroup or a leaf) — that are hub
    repositories, not local folders or file builders (json, parquet, …)."""
    overrides = overrides or {}
    found = set()
    for _, cfg, path in _walk(task_manager(True), name):
        merged = dict(cfg)
        for step in path:
            merged |= overrides.get(step, {})
        if _is_hub_dataset(merged):
            found.add(str(merged["dataset_path"]))
    return sorted(found)


def _names_under(name: str) -> set[str]:
    """`name` and every group, tag and task below it in lm-eval's index."""
    return {step for _, _, path in _walk(task_manager(True), name) for step in path}


def with_overrides(infos: Sequence[TaskInfo], overrides: Mapping[str, Mapping[str, Any]]) -> list[TaskInfo]:
    """`infos` with the Hugging Face datasets each lm-eval task reads (`hf_dataset`, comma-separated) taken
    from lm-eval's own configs after `overrides`: a local copy or a file builder needs nothing from the
    Hugging Face cache."""
    return [dataclasses.replace(info, hf_dataset=",".join(hub_datasets(info.name, overrides)))
            if info.kind == "builtin" else info for info in infos]  # fmt: skip


def load_tasks(infos: Sequence[TaskInfo], metadata: Mapping[str, Any],
               overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    """lm-eval's task dict (`tasks`, `groups`, `group_map`) of `infos`, `overrides` merged in: keyed by a
    task asked for, or by a group, tag or task below one (`ceval-valid` for all its subjects,
    `ceval-valid_law` for one); a key further down wins."""
    overrides = overrides or {}
    builtin = any(t.kind == "builtin" for t in infos)
    known = {t.name for t in infos}
    if set(overrides) - known and builtin:
        known |= {n for t in infos if t.kind == "builtin" for n in _names_under(t.name)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(
            f"eval.task_overrides names {', '.join(unknown)}, which this suite does not run; "
            f"tasks here: {', '.join(t.name for t in infos)} (or a group or task below one of lm-eval's)"
        )
    from lm_eval.tasks._factory import TaskFactory

    class Factory(TaskFactory):
        """lm-eval's factory with the overrides of each group and task by its name, applied where it is built
        (lm-eval's own merges only the top entry's into every task below it)."""

        def _build_task(self, entry: Any, more: dict[str, Any] | None) -> Any:
            return super()._build_task(entry, {**(more or {}), **overrides.get(entry.name, {})} or None)

        def _build_group(self, group_name: str, raw_cfg: dict[str, Any], more: dict[str, Any] | None,
                         registry: dict[str, Any]) -> Any:  # fmt: skip
            merged = {**(more or {}), **overrides.get(group_name, {})} or None
            return super()._build_group(group_name, raw_cfg, merged, registry)

    manager = task_manager(builtin)
    # a factory of our own per call: almr's YAML tasks read data_dir/data_files from its metadata, while
    # the index (the slow part) is shared; and lm-eval's dict specs replace a registered config instead
    # of merging overrides into it, which the factory does
    factory = Factory(meta=dict(metadata))
    built = [factory.build(manager.task_index[t.name], overrides=None, registry=manager.task_index) for t in infos]
    return manager.load([obj for item in built for obj in (item if isinstance(item, list) else [item])])


def configure_tasks(loaded: Mapping[str, Any], infos: Sequence[TaskInfo], max_gen_toks: int | None,
                    overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:  # fmt: skip
    """The registry's few-shot counts (C-Eval 5-shot from dev, …) over the YAML's unless an override
    sets `num_fewshot`, lm-eval's fixed few-shot seed, and the cap on generated tokens, on every leaf
    task of `loaded`."""
    overridden = {name for name, keys in (overrides or {}).items() if "num_fewshot" in keys}
    shots = {t.name: t.shots for t in infos if t.name in TASKS and t.name not in overridden}
    for name, task in loaded["tasks"].items():
        top = next((t for t in shots if name == t or name.startswith(t)), None)
        if top is not None and name not in overridden:
            task.set_config(key="num_fewshot", value=shots[top])
        elif task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=1234)
        if max_gen_toks and task.get_config("output_type") == "generate_until":
            task.set_config(key="generation_kwargs", value={"max_gen_toks": max_gen_toks}, update=True)
