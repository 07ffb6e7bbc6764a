"""The ablation of the paper's Table 6 (`almr ablation CONFIG`): is CPT needed, and is the additional
language's fine-tuning data needed? Four cells — {with, without} CPT × {with, without} Chinese
fine-tuning data — each fine-tuned by the same SFT and DPO stages (the config's `sft` and `dpo`
sections) and evaluated on the same tasks.

A cell "without CPT" starts from `ablation.base_model`, "with CPT" from `ablation.cpt_model`; a cell
"without" the language leaves out every SFT and DPO data set tagged `ablation.language`. Everything
lands under `ablation.out_dir/<cell>/` (`sft/`, `dpo/`, `eval.json`) and the table in `table.md`. The
study is resumable: a stage whose `summary.json` exists is reused, an interrupted one resumes from
its checkpoints, an evaluation already written is read back.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from almr.config import AlmrConfig
from almr.durable import atomic_write_text
from almr.errors import ConfigError
from almr.evaluate.harness import run_eval
from almr.evaluate.results import markdown_table, save_result
from almr.processes import await_main_process, is_main_process
from almr.stages.dpo import run_dpo
from almr.stages.sft import run_sft
from almr.train.config import local_model


@dataclass(frozen=True)
class Cell:
    cpt: bool  # starts from the CPT checkpoint (else from the base model)
    language_data: bool  # the additional language's fine-tuning data takes part

    @property
    def name(self) -> str:
        return f"{'cpt' if self.cpt else 'no-cpt'}_{'with' if self.language_data else 'without'}-lang"

    def label(self, language: str) -> str:
        """The row name of Table 6."""
        parts = ["C-DPO" if self.cpt else "C-DPO w/o CPT"]
        if not self.language_data:
            parts.append(f"w/o {language} data")
        return ", ".join(parts)


CELLS = (Cell(True, True), Cell(True, False), Cell(False, True), Cell(False, False))


def run_ablation(config: AlmrConfig, *, progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """Fine-tune and evaluate the four cells (reusing what is done); returns the table's path."""
    spec = config.ablation
    _check(config)
    out_dir = Path(spec.out_dir)
    results = []
    for cell in CELLS:
        log(f"ablation cell {cell.name}: {cell.label(spec.language)}")
        model_dir = fine_tune_cell(config, cell, out_dir / cell.name, progress, log)
        result = _evaluate(config, model_dir, out_dir / cell.name / "eval.json")
        result["model"] = cell.label(spec.language)
        results.append(result)
    path = out_dir / "table.md"
    if is_main_process():
        atomic_write_text(path, table(results, spec.language))
    log(f"ablation table: {path}")
    return path


def cell_config(config: AlmrConfig, cell: Cell, cell_dir: Path, stage: str) -> AlmrConfig:
    """The config of one cell's SFT (`stage="sft"`) or DPO stage: its start model, run folder and data."""
    spec = config.ablation
    start = spec.cpt_model if cell.cpt else spec.base_model
    if stage == "dpo":
        start = str(cell_dir / "sft" / "hf")
    section = getattr(config, stage)
    excluded = list(section.exclude_languages)
    if not cell.language_data and spec.language not in excluded:
        excluded.append(spec.language)
    update = {
        "model": local_model(config.model, start),
        stage: section.model_copy(update={"run_dir": str(cell_dir / stage), "exclude_languages": excluded}),
    }
    return AlmrConfig.model_validate(config.model_copy(update=update).model_dump())


def table(results: list[dict[str, Any]], language: str) -> str:
    """Table 6's layout: one row per cell, the tasks' primary scores as columns."""
    header = (
        f"Ablation (Table 6): C-DPO with and without CPT, with and without the {language} fine-tuning data.\n\n"
    )
    return header + markdown_table(results)


def fine_tune_cell(config: AlmrConfig, cell: Cell, cell_dir: Path, progress: bool, log: Callable[[str], None]) -> Path:
    """SFT then DPO of one cell into `cell_dir` (each step skipped when done, resumed from its
    checkpoints when interrupted); the DPO model's directory."""
    for stage, run in (("sft", run_sft), ("dpo", run_dpo)):
        stage_config = cell_config(config, cell, cell_dir, stage)
        run_dir = cell_dir / stage
        if (run_dir / "summary.json").is_file():
            log(f"  {stage}: done ({run_dir})")
            continue
        resume = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
        log(f"  {stage}: {'resuming' if resume else 'training'} in {run_dir}")
        run(stage_config, resume=resume, progress=progress)
    return cell_dir / "dpo" / "hf"


def _evaluate(config: AlmrConfig, model_dir: Path, path: Path) -> dict[str, Any]:
    """The cell's scores, evaluated by the first process of a multi-process launch (the others wait
    for its file rather than each evaluating the same model)."""
    if not is_main_process():
        await_main_process(path)
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    result = run_eval(
        str(model_dir), tasks=config.ablation.tasks, limit=config.eval.limit, data_dir=config.eval.data_dir,
        batch_size=config.eval.batch_size, max_gen_toks=config.eval.max_gen_toks,
    )  # fmt: skip
    save_result(result, path)
    return result


def _check(config: AlmrConfig) -> None:
    """Refuse a study that cannot run, before any compute."""
    spec = config.ablation
    for key in ("cpt_model", "base_model"):
        value = getattr(spec, key)
        if not value:
            raise ConfigError(f"ablation.{key} is not set; point it at a Hugging Face model directory")
        if not (Path(value) / "config.json").is_file():
            raise ConfigError(f"ablation.{key}={value} is not a Hugging Face model directory (no config.json)")
    check_language_data(config)


def check_language_data(config: AlmrConfig) -> None:
    """Refuse fine-tuning data that cannot be split into with and without `ablation.language`."""
    spec = config.ablation
    for stage in ("sft", "dpo"):
        datasets = getattr(config, stage).datasets
        if not datasets:
            raise ConfigError(f"{stage}.datasets is empty; the ablation fine-tunes every cell on them")
        if any(d.language_field for d in datasets):
            continue  # tagged per record: the data reader refuses a mix that leaves nothing
        languages = {d.language for d in datasets}
        if spec.language not in languages:
            raise ConfigError(
                f"no {stage}.datasets entry is tagged language: {spec.language} (tags: {', '.join(sorted(languages))});"
                " the 'without' cells would equal the 'with' cells — tag the data sets or set ablation.language"
            )
        if languages == {spec.language}:
            raise ConfigError(
                f"every {stage}.datasets entry is tagged {spec.language}: the 'without' cells would have no data"
            )
