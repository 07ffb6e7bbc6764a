"""almr's lm-eval task definitions (YAML) and their `!function` hooks (utils.py); TASKS_DIR is this folder."""

from pathlib import Path

TASKS_DIR = Path(__file__).parent
