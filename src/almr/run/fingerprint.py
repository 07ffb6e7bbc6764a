"""A stage's fingerprint: a stable hash of the config keys it reads and of its input stages'
fingerprints. Two runs of a stage with equal fingerprints make the same outputs, so a done stage
whose fingerprint still matches is skipped; a change anywhere upstream changes every fingerprint
below it, so exactly the affected stages rerun.

Keys that change how a stage is observed, stored or placed but not what it computes (progress and
log cadence, run folders the pipeline sets itself, Slurm resources, endpoint retries) are left out:
changing them reruns nothing.
"""

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

# Dotted keys (a prefix ending in "." covers a whole sub-section) that never change a result.
NOT_RESULTS = (
    "cpt.run_dir", "cpt.checkpoint.", "cpt.tensorboard", "cpt.log_every_steps", "cpt.device", "cpt.compile",
    "cpt.gradient_checkpointing", "cpt.export.",
    "sft.run_dir", "sft.save_every_steps", "sft.keep_last", "sft.log_every_steps", "sft.device",
    "sft.gradient_checkpointing",
    "dpo.run_dir", "dpo.save_every_steps", "dpo.keep_last", "dpo.log_every_steps", "dpo.device",
    "dpo.gradient_checkpointing", "dpo.cache_reference",
    "sweep.sweep_dir", "sweep.launcher", "sweep.slurm.", "sweep.threads_per_run", "sweep.gpus", "sweep.gpus_per_run",
    "sweep.keep.", "sweep.poll_s",
    "eval.data_dir", "eval.batch_size", "eval.device", "eval.timeout_s", "eval.max_retries", "eval.retry_backoff_s",
    "ablation.out_dir", "ablation.cpt_model", "ablation.base_model",
    "pairwise.timeout_s", "pairwise.retries", "pairwise.backoff_s", "pairwise.concurrency", "pairwise.device",
    "pairwise.batch_size",
    "pipeline.progress_every_s",
)  # fmt: skip


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a.b": leaf, ...}` of a nested mapping (lists are leaves)."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, child in value.items():
            out.update(flatten(child, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


_EXACT = frozenset(k for k in NOT_RESULTS if not k.endswith("."))
_PREFIXES = tuple(k for k in NOT_RESULTS if k.endswith("."))


def affects_results(key: str) -> bool:
    return key not in _EXACT and not key.startswith(_PREFIXES)


def read_keys(config: BaseModel | Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The flattened values of the dotted `keys` (`cpt`, `world.model`, `eval.probe`) of `config`
    (or of its JSON dump), without the keys that do not change results: what a stage's
    fingerprint covers."""
    dumped = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    values: dict[str, Any] = {}
    for key in keys:
        node: Any = dumped
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"a stage reads the config key {key}, which the config does not have")
            node = node[part]
        values.update({k: v for k, v in flatten(node, key + ".").items() if affects_results(k)})
    return dict(sorted(values.items()))


def fingerprint(values: Mapping[str, Any], inputs: Mapping[str, str]) -> str:
    """sha256 of the config values and the input stages' fingerprints, in a canonical JSON form."""
    text = json.dumps({"config": dict(values), "inputs": dict(inputs)}, sort_keys=True, ensure_ascii=True,
                      separators=(",", ":"))  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()


def changes(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(key, old, new) for every key whose value differs, was added or was removed."""
    out = []
    for key in sorted(set(before) | set(now)):
        if before.get(key, "<unset>") != now.get(key, "<unset>"):
            out.append((key, _short(before.get(key, "<unset>")), _short(now.get(key, "<unset>"))))
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."
