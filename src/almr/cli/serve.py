"""`almr serve MODEL_DIR`: the OpenAI-compatible server and chat page; `almr serve token add NAME`,
`almr serve export FILE`, `almr serve delete-user NAME`: the store's users and data."""

from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from almr.cli.common import ConfigOption, SetOption, load, say
from almr.errors import ConfigError


class _ServeGroup(TyperGroup):
    """`almr serve MODEL_DIR` and `almr serve token add NAME` side by side: a first word that names a
    subcommand is that subcommand, anything else is the model directory."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] in self.commands:
            super().parse_args(ctx, [])
            ctx._protected_args, ctx.args = args[:1], args[1:]  # type: ignore[attr-defined]
            return ctx.args
        ctx.allow_interspersed_args = True  # options may follow MODEL_DIR, as for any command
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_ServeGroup, invoke_without_command=True, help="Serve a chat model: OpenAI API, chat page, "
                  "conversation store (docs/serving.md).")  # fmt: skip
token_app = typer.Typer(help="Bearer tokens of the server's users.")
app.add_typer(token_app, name="token")


@app.callback()
def serve(
    ctx: typer.Context,
    model_dir: Annotated[str | None, typer.Argument(help="A Hugging Face chat model directory (an SFT/DPO run's "
                                                    "hf/).")] = None,
    upstream: Annotated[str | None, typer.Option("--upstream", help="Forward generation to this vLLM/SGLang URL "
                                                 "(http://HOST:PORT/v1).")] = None,
    print_vllm_command: Annotated[bool, typer.Option("--print-vllm-command", help="Print the `vllm serve` line for "
                                                     "MODEL_DIR and exit.")] = False,
    host: Annotated[str | None, typer.Option("--host", help="Listen address (serve.host).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Listen port (serve.port).")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:  # fmt: skip
    """almr serve MODEL_DIR [--upstream URL] [--print-vllm-command]: serve the model until interrupted."""
    if ctx.invoked_subcommand is not None:
        return
    if model_dir is None:
        say(ctx.get_help())
        raise typer.Exit(0)
    settings = _settings(config, set_, upstream=upstream, host=host, port=port)
    from almr.serve.server import run_server, served_name

    if print_vllm_command:
        from almr.serve.upstream import vllm_command

        if not Path(model_dir).is_dir():
            raise ConfigError(f"{model_dir} is not a model directory")
        say(vllm_command(model_dir, served_name(model_dir, settings)))
        return
    run_server(model_dir, settings)


@token_app.command("add")
def token_add(
    name: Annotated[str, typer.Argument(help="The user's name (made if new; an old token stops working).")],
    admin: Annotated[bool, typer.Option("--admin", help="May export conversations and delete users.")] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Make a bearer token for NAME in the store (serve.store); printed once, stored hashed."""
    from almr.serve.server import add_token

    settings = _settings(config, set_)
    say(add_token(settings.store, name, admin))


@app.command("export")
def export(
    out: Annotated[Path, typer.Argument(help="JSONL file: one conversation (its message tree) per line.")],
    user: Annotated[str | None, typer.Option("--user", help="Only this user's conversations.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Export the stored conversations (serve.store) to JSONL."""
    from almr.serve.store import Store

    store = Store(_settings(config, set_).store)
    try:
        with out.open("w", encoding="utf-8") as f:
            n = store.export(f, user)
    finally:
        store.close()
    say(f"wrote {n} conversations to {out}")


@app.command("delete-user")
def delete_user(
    name: Annotated[str, typer.Argument(help="The user whose data is deleted, with the user.")],
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Delete a user and all their conversations from the store (a request to be forgotten)."""
    from almr.serve.store import NotFound, Store

    store = Store(_settings(config, set_).store)
    try:
        n = store.delete_user_data(name)
    except NotFound:
        raise ConfigError(f"no user {name} in {store.url}") from None
    finally:
        store.close()
    say(f"deleted user {name} and {n} conversations")


def _settings(config: Path | None, set_: list[str] | None, **options: Any) -> Any:
    overrides = list(set_ or []) + [f"serve.{key}={value}" for key, value in options.items() if value is not None]
    return load(config, overrides).serve
