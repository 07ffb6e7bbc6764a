"""The errors almr reports to a user as one clear message (exit code 2), not a traceback."""


class AlmrError(Exception):
    """Bad input found before any compute is spent: the message names what and the fix."""


class ConfigError(AlmrError):
    """A configuration key, value or file is wrong."""


class DataError(AlmrError):
    """A data file or record is wrong; the message names the file, line and field."""
