"""The demo world's study config, kept here for the modules that import it from here; the pipeline
itself is `almr.run` (`almr run`, `almr demo`)."""

from pathlib import Path

from almr.config import AlmrConfig
from almr.run.posttrain import study_config as _study_config


def study_config(world_dir: Path, base: Path, out_dir: Path, config: AlmrConfig) -> AlmrConfig:
    """The study's base config from the world's base model on the world's shards (`out_dir/shards`),
    its records in `out_dir/sweep` (see `almr.run.posttrain.study_config`)."""
    return _study_config(world_dir, base, Path(out_dir) / "shards", Path(out_dir) / "sweep", config)
