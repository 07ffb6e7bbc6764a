"""Where a run starts: from scratch, or with `--resume` from its newest complete checkpoint, but
only when that checkpoint was written by a config that gives the same trajectory."""

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from almr.errors import ConfigError
from almr.train.checkpoint import Checkpointer, read_meta

# A resume must continue the same trajectory: these sections decide it and must match the
# checkpoint's config, except for the keys after them, which change how the run is observed,
# stored or placed. Other sections (world, eval, sweep, ...) never affect a CPT run.
RESUME_MUST_MATCH = ("model.", "cpt.", "data.", "mixture.")
RESUME_MAY_CHANGE = (
    "cpt.run_dir", "cpt.checkpoint.", "cpt.validation.", "cpt.probe.",
    "cpt.tensorboard", "cpt.device", "cpt.compile", "cpt.gradient_checkpointing", "cpt.export.",
    "model.attn_implementation",
)  # fmt: skip


def resume_point(
    checkpointer: Checkpointer, record: Mapping[str, Any], resume: bool, run_dir: str, data: Any = None
) -> Path | None:
    """The checkpoint to continue from, or None for a fresh start. A fresh start refuses a run
    folder that holds checkpoints; a resume refuses one whose checkpoint's config (`config.yaml`)
    differs from `record` on a key that decides the trajectory, naming every such key, and one
    whose data (`data`: the loader's fingerprint, kept in the checkpoint's `complete` file)
    differs: the same config over re-tokenized shards is another trajectory."""
    latest = checkpointer.latest()
    if not resume:
        if latest is not None:
            raise ConfigError(
                f"{run_dir} already holds checkpoints (newest {latest.name}); continue it with "
                "--resume, or choose a new cpt.run_dir"
            )
        if checkpointer.is_writer and checkpointer.root.is_dir():
            shutil.rmtree(checkpointer.root)  # only unfinished .tmp folders of an earlier attempt
        return None
    if latest is None:
        raise ConfigError(f"--resume: no complete checkpoint under {checkpointer.root}; start the run without --resume")
    saved = yaml.safe_load((latest / "config.yaml").read_text(encoding="utf-8"))
    refuse_differences(latest, config_differences(saved, dict(record)), "cpt.run_dir")
    before = read_meta(latest).get("data")
    if data is not None and before is not None and before != data:
        refuse_differences(latest, data_differences(before, data), "cpt.run_dir")
    return latest


def data_differences(old: Any, new: Any) -> list[tuple[str, Any, Any]]:
    """(what, old, new) between two loader fingerprints: {"plan": hash, "sources": {name: input
    fingerprint}} for the packed loader (12 hex digits shown), or any other value as a whole."""
    if not (isinstance(old, Mapping) and isinstance(new, Mapping)):
        return [("data", old, new)]
    found = []
    old_sources, new_sources = old.get("sources") or {}, new.get("sources") or {}
    for name in sorted(set(old_sources) | set(new_sources)):
        a, b = old_sources.get(name), new_sources.get(name)
        if a != b:
            found.append((f"shards of source {name} (re-tokenized or changed files)", _short(a), _short(b)))
    if old.get("plan") != new.get("plan"):
        found.append(("data plan hash", _short(old.get("plan")), _short(new.get("plan"))))
    return found


def _short(value: Any) -> Any:
    return value[:12] if isinstance(value, str) else value


def refuse_differences(checkpoint: Path, differences: list[tuple[str, Any, Any]], run_dir_key: str) -> None:
    """A resume of `checkpoint` refused, naming every (key, old, new) that would change the
    trajectory; nothing when there is none. Shared by the CPT, SFT and DPO stages."""
    if differences:
        raise ConfigError(
            f"--resume: the checkpoint {checkpoint} was written by a different config or data; refused because\n"
            + "\n".join(f"  {key}: checkpoint {old!r}, now {new!r}" for key, old, new in differences)
            + f"\nrestore those values, or start a new {run_dir_key}"
        )


def write_run_config(path: Path, record: Mapping[str, Any]) -> None:
    """The resolved config as YAML (`config.yaml` of a run folder and of each checkpoint), the
    form `resume_point` compares against."""
    path.write_text(yaml.safe_dump(dict(record), sort_keys=False, allow_unicode=True), encoding="utf-8")


def config_differences(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    must_match: tuple[str, ...] = RESUME_MUST_MATCH,
    may_change: tuple[str, ...] = RESUME_MAY_CHANGE,
) -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) of every trajectory-deciding key whose value differs: keys under the
    `must_match` prefixes, except those under `may_change` (defaults: the CPT stage's)."""
    flat_old, flat_new = flatten(old), flatten(new)
    # a key the stored config lacks was added to almr after the run started: the run used what is
    # now its default, so only keys both configs name are compared
    keys = sorted(set(flat_old) & set(flat_new)) + sorted(set(flat_old) - set(flat_new))
    return [
        (key, flat_old.get(key), flat_new.get(key))
        for key in keys
        if flat_old.get(key) != flat_new.get(key) and key.startswith(must_match) and not key.startswith(may_change)
    ]


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {"a.b.c": value}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out
