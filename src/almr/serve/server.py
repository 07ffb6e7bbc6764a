"""`almr serve`: build the engine and the store from the `serve` section and run uvicorn."""

from pathlib import Path

from almr.errors import ConfigError
from almr.serve.auth import LOOPBACK, hash_token, new_token
from almr.serve.config import ServeConfig
from almr.serve.engine import Engine
from almr.serve.store import Store


def served_name(model_dir: str | Path, config: ServeConfig) -> str:
    return config.model_name or Path(model_dir).resolve().name


def build_engine(model_dir: str | Path, config: ServeConfig) -> Engine:
    """The upstream engine when `serve.upstream` is set, else the model in this process."""
    name = served_name(model_dir, config)
    if config.upstream:
        from almr.serve.upstream import UpstreamEngine

        return UpstreamEngine(config.upstream, model_name=name, upstream_model=config.upstream_model)
    from almr.serve.transformers_engine import TransformersEngine  # heavy: torch, transformers

    engine = TransformersEngine(
        model_dir, model_name=name, batching=config.batching, device=config.device, dtype=config.dtype
    )
    engine.load()  # a wrong directory is one message before the server starts listening
    return engine


def check_exposure(config: ServeConfig) -> None:
    if not config.auth.required and config.host not in LOOPBACK:
        raise ConfigError(
            f"serve.auth.required=false with serve.host={config.host}: a server without tokens may only listen on "
            "a loopback address; set serve.host=127.0.0.1 or make tokens with `almr serve token add NAME`"
        )


def run_server(model_dir: str | Path, config: ServeConfig) -> None:
    """Serve until interrupted."""
    import uvicorn

    from almr.serve.app import create_app

    check_exposure(config)
    store = Store(config.store)
    app = create_app(config, build_engine(model_dir, config), store)
    try:
        uvicorn.run(app, host=config.host, port=config.port, log_level="info", timeout_graceful_shutdown=5)
    finally:
        store.close()


def add_token(store_url: str, name: str, admin: bool = False) -> str:
    """A new token for user `name` (made if new; an old token stops working); shown once, stored hashed."""
    token = new_token()
    store = Store(store_url)
    try:
        store.add_user(name, hash_token(token), admin)
    finally:
        store.close()
    return token
