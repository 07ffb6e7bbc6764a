"""lm-eval's own task catalogue: any task lm-evaluation-harness knows, by name, without loading data.

Contract:

- `lm_eval_info(name)` describes a task or group of lm-eval's (`hellaswag`, `cmmlu`,
  `arc_easy`, …) as a `TaskInfo` of kind `builtin` — its output type, primary metric (the first
  of its `metric_list`; a group's first aggregate) and the Hugging Face dataset(s) its leaves read
  — from lm-eval's task index alone. A name lm-eval does not know raises a `ConfigError` listing
  the nearest names it does know.
- `load_tasks(infos, metadata, overrides)` builds the lm-eval `Task` objects of almr's own YAML
  tasks and lm-eval's, with `overrides` (`eval.task_overrides`: lm-eval config keys per task, e.g.
  a local `dataset_path`) merged into the registered configuration — lm-eval's own dict specs
  replace the registered config instead of merging into it.
- `configure_tasks(loaded, infos, max_gen_toks)` applies what almr decides for every suite:
  the registry's few-shot count, the fixed few-shot seed, the generation-token cap.

The index (a scan of lm-eval's ~15 000 task YAMLs, ~8 s here) is built once per process and only
when a name outside almr's registry is asked for.
"""

import dataclasses
import difflib
import functools
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

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=include_defaults)


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
    datasets = sorted({str(c.get("dataset_path")) for c in leaves if _is_hub_dataset(c)})
    return TaskInfo(
        name, "other", name, "builtin", primary, mode,  # type: ignore[arg-type]
        shots=int(first.get("num_fewshot") or 0), hf_dataset=",".join(datasets),
        source=f"lm-eval task ({entry.yaml_path})", runs_code=bool(first.get("unsafe_code")),
    )  # fmt: skip


def _leaf_configs(manager: Any, name: str) -> list[dict[str, Any]]:
    """The raw configs of the leaf tasks under `name` (itself when it is a task)."""
    entry = manager.task_index[name]
    children = entry.cfg.get("task")
    if isinstance(entry.cfg.get("task"), str) and entry.cfg.get("output_type") is not None:
        return [entry.cfg]
    if not isinstance(children, list):  # a tag: its member tasks
        members = [n for n, e in manager.task_index.items() if name in getattr(e, "tags", ())]
        return [c for member in members for c in _leaf_configs(manager, member)] or [entry.cfg]
    out = []
    for child in children:
        child_name = child if isinstance(child, str) else child.get("task") or child.get("group")
        if isinstance(child_name, str) and child_name in manager.task_index:
            out += _leaf_configs(manager, child_name)
    return out or [entry.cfg]


def _is_hub_dataset(cfg: Mapping[str, Any]) -> bool:
    path = cfg.get("dataset_path")
    return isinstance(path, str) and path not in _FILE_BUILDERS and not Path(path).exists()


def with_overrides(infos: Sequence[TaskInfo], overrides: Mapping[str, Mapping[str, Any]]) -> list[TaskInfo]:
    """`infos` with the data source an override names (`dataset_path`): a local copy or a file builder
    needs nothing from the Hugging Face cache."""
    out = []
    for info in infos:
        override = overrides.get(info.name, {})
        if "dataset_path" in override:
            info = dataclasses.replace(info, hf_dataset=override["dataset_path"] if _is_hub_dataset(override) else "")
        out.append(info)
    return out


def load_tasks(infos: Sequence[TaskInfo], metadata: Mapping[str, Any],
               overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    """lm-eval's task dict (`tasks`, `groups`, `group_map`) of `infos`, `overrides` merged in."""
    overrides = overrides or {}
    unknown = sorted(set(overrides) - {t.name for t in infos})
    if unknown:
        raise ConfigError(
            f"eval.task_overrides names {', '.join(unknown)}, which this suite does not run; "
            f"tasks here: {', '.join(t.name for t in infos)}"
        )
    from lm_eval.tasks._factory import TaskFactory

    manager = task_manager(any(t.kind == "builtin" for t in infos))
    # a factory of our own per call: almr's YAML tasks read data_dir/data_files from its metadata, while
    # the index (the slow part) is shared; and lm-eval's dict specs replace a registered config instead
    # of merging overrides into it, which the factory does
    factory = TaskFactory(meta=dict(metadata))
    built = [factory.build(manager.task_index[t.name], overrides=dict(overrides.get(t.name, {})) or None,
                           registry=manager.task_index) for t in infos]  # fmt: skip
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
        if top is not None:
            task.set_config(key="num_fewshot", value=shots[top])
        elif task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=1234)
        if max_gen_toks and task.get_config("output_type") == "generate_until":
            task.set_config(key="generation_kwargs", value={"max_gen_toks": max_gen_toks}, update=True)
