"""almr's lm-eval task definitions (YAML) and their `!function` hooks (utils.py); TASKS_DIR is this folder.

A task file names the task and its data (`dataset_kwargs.almr_task`) and `include:`s a template
holding everything else: `_mcq_template` and `_gen_template` (the keys of every multiple-choice
and generation task), and one `_<family>_template` per family whose tasks differ only in their
data (`_cmrc_template`: cmrc2018, drcd, world_cmrc; `_wmt_en-zh_template`: wmt22_en-zh,
world_wmt_en-zh; ...). Templates have no `.yaml` suffix, so lm-eval does not index them as tasks.
"""

from pathlib import Path

TASKS_DIR = Path(__file__).parent
