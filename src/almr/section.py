"""The base of every config section: unknown keys are errors, defaults are validated too.

Each component declares its own sections beside its code (`data/config.py`,
`train/config.py`, ...); `almr.config` composes them into the whole config."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section: unknown keys are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True)
