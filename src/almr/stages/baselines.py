"""The `baselines` stage: the models the paper compares its own against, built by the same stages
from the same base model on the same world, so that the report shows what the measured (ALMR, LR)
and the Chinese fine-tuning bought.

- **Instruct** (`build_instruct`): SFT then DPO on the base model, no CPT, on English-dominant
  fine-tuning data — the world's `instruct/sft.jsonl` and `instruct/dpo.jsonl` (a few Chinese
  user turns, some answered in English), the way Llama-3-Instruct was made from a base that saw
  little Chinese. It is the ablation's "without CPT" cell (`almr.stages.ablation.cell_config`) on
  that data, so the paper's headline failure — answering Chinese questions in another language —
  can happen here, and the eval stage measures whether it does.
- **Fixed-recipe CPT** (`build_fixed_cpt`): CPT in the style of Chinese-LLaMA — ALMR 0.2 (its 2:8
  mixture) and a conventional learning rate (`baselines.fixed_cpt`) — on the formal CPT's token
  budget and mixture weights, built as the study builds its runs (`almr.run.posttrain.study_config`).

Without a world (`world_dir` None: a config that names its model), the Instruct baseline trains on
`baselines.instruct.sft_datasets`/`dpo_datasets` and the fixed recipe on the config's data sources.

Each writes under its `out_dir`: the run folders, and `model`, a relative link to the final Hugging
Face directory. Running again reuses a finished run; an interrupted one resumes.
"""

import shutil
from collections.abc import Callable
from pathlib import Path

from almr.config import AlmrConfig
from almr.data.config import ChatDatasetConfig
from almr.data.tokenize import tokenize_sources
from almr.errors import ConfigError
from almr.run.posttrain import formal_cpt, study_config
from almr.stages.ablation import Cell, fine_tune_cell
from almr.stages.cpt import plan_for
from almr.world.build import MANIFEST

# The ablation's cell without CPT and with every data set: the instruct sets' own few Chinese
# dialogues take part (sft/dpo.exclude_languages still apply).
INSTRUCT_CELL = Cell(cpt=False, language_data=True)


def instruct_datasets(world_dir: Path) -> tuple[list[ChatDatasetConfig], list[ChatDatasetConfig]]:
    """The world's English-dominant SFT and DPO sets, tagged per record by the user's language."""
    folder = Path(world_dir) / "instruct"
    sft = [ChatDatasetConfig(path=str(folder / "sft.jsonl"), format="messages", language_field="lang")]
    dpo = [ChatDatasetConfig(path=str(folder / "dpo.jsonl"), format="preference", language_field="lang")]
    return sft, dpo


def instruct_config(config: AlmrConfig, world_dir: Path | None, base_model: Path) -> AlmrConfig:
    """`config` with the Instruct baseline's data in its sft and dpo sections and the base model as the
    ablation's start model: what `cell_config(…, INSTRUCT_CELL, …)` turns into each stage's config."""
    spec = config.baselines.instruct
    world_sft, world_dpo = instruct_datasets(world_dir) if world_dir is not None else ([], [])
    update = {
        "sft": config.sft.model_copy(update={"datasets": spec.sft_datasets or world_sft}),
        "dpo": config.dpo.model_copy(update={"datasets": spec.dpo_datasets or world_dpo}),
        "ablation": config.ablation.model_copy(update={"base_model": str(base_model)}),
    }
    return AlmrConfig.model_validate(config.model_copy(update=update).model_dump())


def build_instruct(config: AlmrConfig, world_dir: Path | None, base_model: Path, out_dir: Path,
                   progress: bool = True, log: Callable[[str], None] = print) -> Path:  # fmt: skip
    """SFT then DPO from `base_model` on English-dominant data into `out_dir/{sft,dpo}`; returns
    `out_dir/model`, the final chat model."""
    base_model, out_dir = Path(base_model), Path(out_dir)
    _check_base_model(base_model, "instruct")
    chained = instruct_config(config, world_dir, base_model)
    spec = config.baselines.instruct
    for key, datasets in (("sft_datasets", chained.sft.datasets), ("dpo_datasets", chained.dpo.datasets)):
        if not datasets:
            raise ConfigError(f"baselines.instruct.{key}: empty; without the demo world the Instruct baseline "
                              "trains on the data sets named there (or set baselines.instruct.model)")  # fmt: skip
        _check_datasets(datasets, world_dir, key, from_world=not getattr(spec, key))
    out_dir.mkdir(parents=True, exist_ok=True)
    final = fine_tune_cell(chained, INSTRUCT_CELL, out_dir, progress, log)
    return _link(out_dir / "model", final)


def fixed_cpt_config(config: AlmrConfig, world_dir: Path | None, base_model: Path, out_dir: Path,
                     shard_dir: Path | None = None) -> AlmrConfig:  # fmt: skip
    """The study's config from `base_model` on the world, or on the config's data without one
    (`study_config`; shards in `shard_dir`, default `out_dir/shards`) with the recipe's ALMR: what
    `formal_cpt` trains at the recipe's LR."""
    study = study_config(world_dir, Path(base_model), Path(shard_dir or Path(out_dir) / "shards"),
                         Path(out_dir) / "sweep", config)  # fmt: skip
    mixture = study.mixture.model_copy(update={"almr": config.baselines.fixed_cpt.almr})
    return AlmrConfig.model_validate(study.model_copy(update={"mixture": mixture}).model_dump())


def build_fixed_cpt(config: AlmrConfig, world_dir: Path | None, base_model: Path, out_dir: Path,
                    progress: bool = True, *, shard_dir: Path | None = None) -> Path:  # fmt: skip
    """CPT from `base_model` at the fixed recipe into `out_dir/run`, on the formal CPT's budget (the
    cpt section), as the cpt stage trains (`formal_cpt`); the mixture plan it trains on in
    `out_dir/plan.json`; returns `out_dir/model`, the final checkpoint's Hugging Face directory."""
    base_model, out_dir = Path(base_model), Path(out_dir)
    _check_base_model(base_model, "fixed_cpt")
    if world_dir is not None and not (Path(world_dir) / MANIFEST).is_file():
        raise ConfigError(f"baselines.fixed_cpt: {world_dir} is not a world directory (no {MANIFEST}); "
                          "the world stage makes it")  # fmt: skip
    spec = config.baselines.fixed_cpt
    study = fixed_cpt_config(config, world_dir, base_model, out_dir, shard_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenize_sources(study.data, progress=progress)  # nothing to do when the shards are current
    plan = plan_for(study)
    (out_dir / "plan.json").write_text(plan.model_dump_json(indent=1) + "\n", encoding="utf-8")
    return _link(out_dir / "model", formal_cpt(study, spec.almr, spec.lr, out_dir / "run", progress))


def _link(link: Path, target: Path) -> Path:
    """`link` → `target` as a relative symbolic link, so that the whole output folder can move."""
    if link.is_symlink() or link.exists():
        if link.resolve() == target.resolve():
            return link
        if link.is_symlink() or link.is_file():
            link.unlink()
        else:
            shutil.rmtree(link)
    try:
        link.symlink_to(target.resolve().relative_to(link.parent.resolve()), target_is_directory=True)
    except FileExistsError:  # another process of the same job linked it a moment ago
        if link.resolve() != target.resolve():
            raise
    return link


def _check_base_model(base_model: Path, key: str) -> None:
    if not (base_model / "config.json").is_file():
        what = "does not exist" if not base_model.exists() else "is not a Hugging Face model directory (no config.json)"
        raise ConfigError(
            f"baselines.{key}: the base model {base_model} {what}; the base stage makes it "
            "(`almr run CONFIG --only base`, or `almr world pretrain`)"
        )


def _check_datasets(datasets: list[ChatDatasetConfig], world_dir: Path | None, key: str, from_world: bool) -> None:
    for dataset in datasets:
        if Path(dataset.path).exists():
            continue
        if from_world and world_dir is not None:
            raise ConfigError(
                f"baselines.instruct: the world {world_dir} has no {Path(dataset.path).relative_to(world_dir)} (built "
                "before the Instruct sets existed, or not a world); `almr world build` completes it in place"
            )
        raise ConfigError(f"baselines.instruct.{key}: {dataset.path} does not exist; fix the path")
