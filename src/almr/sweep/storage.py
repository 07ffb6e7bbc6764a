"""Where the study lives: `sweep.storage`, an Optuna RDB URL, checked before any run.

Contract:
- `storage_url(sweep)`: the URL Optuna opens — `sqlite:///SWEEP_DIR/study.db` by default; a
  `postgresql://` URL without a driver name is given the psycopg (3) driver when psycopg2 is not
  installed (`postgresql+psycopg://`: the `postgres` extra, `pip install 'almr[postgres]'`).
- `check_storage(sweep, connect=True)`: one ConfigError naming `sweep.storage` for a string that is
  not a database URL, a database kind SQLAlchemy does not know, a missing driver (with the pip
  command) and, with `connect`, a server that cannot be reached or refuses the login (the server's
  own reason, the URL shown without its password). `--dry-run` checks all but the connection.
"""

import importlib.util
from pathlib import Path

from almr.errors import ConfigError
from almr.sweep.config import SweepConfig

EXAMPLES = "sqlite:///PATH/study.db or postgresql://USER:PASSWORD@HOST:5432/DBNAME"
DRIVERS = {"postgresql": "almr[postgres]' (psycopg)", "mysql": "pymysql' and use mysql+pymysql://"}
CONNECT_TIMEOUT_S = 10


def storage_url(sweep: SweepConfig) -> str:
    url = sweep.storage or f"sqlite:///{Path(sweep.sweep_dir).resolve() / 'study.db'}"
    if url.startswith("postgresql://") and not _installed("psycopg2") and _installed("psycopg"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check_storage(sweep: SweepConfig, connect: bool = True) -> None:
    """Refuse a `sweep.storage` Optuna could not open (module docstring)."""
    if sweep.storage is None:
        return  # SQLite in the sweep folder: sqlite3 is part of Python, the folder is made by the driver
    import sqlalchemy
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    given = sweep.storage
    try:
        url = make_url(storage_url(sweep))
    except ArgumentError:
        raise ConfigError(f"sweep.storage: {given!r} is not a database URL; use {EXAMPLES}") from None
    shown = make_url(given).render_as_string(hide_password=True)  # as the user wrote it, without the password
    try:
        dialect = url.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(
            f"sweep.storage: {shown} names an unknown database kind {url.drivername!r}; use {EXAMPLES}"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        backend = url.get_backend_name()
        how = DRIVERS.get(backend, f"{err.name or 'its driver'}'")
        raise ConfigError(
            f"sweep.storage: {shown} needs a database driver that is not installed ({err}); pip install '{how}"
        ) from None
    if not connect:
        return
    args = {"connect_timeout": CONNECT_TIMEOUT_S} if url.get_backend_name() in ("postgresql", "mysql") else {}
    engine = sqlalchemy.create_engine(url, connect_args=args)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()
        raise ConfigError(
            f"sweep.storage: cannot open {shown}: {reason[0] if reason else type(err).__name__}; check that the "
            "server runs and accepts this user, password and database (create it first), or unset "
            "sweep.storage for SQLite in the sweep folder"
        ) from None
    finally:
        engine.dispose()
