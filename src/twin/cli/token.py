"""``twin token``: the bearer tokens of twin's HTTP doors (the worker API, twin ocpi's /status,
the dashboard). A running door reads the store again when it changes: a token added or
revoked here counts within a second, without a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from twin.cli.app import Json, app, err, fail, print_json
from twin.tokens import ROLES, TokenError, TokenStore, store_path, with_article

token_app = typer.Typer(help="Bearer tokens for the API and the dashboard: add, list, revoke.", no_args_is_help=True)
app.add_typer(token_app, name="token")

DataDir = Annotated[str, typer.Option("--data-dir", help="The store is DATA_DIR/api-tokens.json (as `twin up "
                                      "--data-dir`) unless --api-tokens says otherwise.")]  # fmt: skip
StoreOpt = Annotated[str | None, typer.Option("--api-tokens", help="The token store file. (env TWIN_API_TOKENS)")]


def _store(api_tokens: str | None, data_dir: str) -> TokenStore:
    path = store_path(api_tokens, data_dir)
    assert path is not None  # a data directory always names one
    return TokenStore(path)


@token_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Who the token is for: recorded as `requested_by` of its commands.")],
    role: Annotated[str, typer.Option("--role", help=f"One of {', '.join(ROLES)}.")] = "viewer",
    data_dir: DataDir = "twin-data",
    api_tokens: StoreOpt = None,
    json_out: Json = False,
) -> None:
    """Add a token and print it, once: the store keeps only its hash."""
    store = _store(api_tokens, data_dir)
    try:
        token, made = store.add(name, role)
    except TokenError as exc:
        fail(str(exc))
    if json_out:
        print_json({**made.shown(), "token": token, "store": str(store.path)})
        return
    print(token, flush=True)
    err.print(f"{with_article(made.role)} token for {made.name!r} in {store.path}: it is shown this once")


@token_app.command("list")
def list_tokens(data_dir: DataDir = "twin-data", api_tokens: StoreOpt = None, json_out: Json = False) -> None:
    """The tokens' names, roles and when they were made (the tokens themselves are not kept)."""
    store = _store(api_tokens, data_dir)
    try:
        rows = [e.shown() for e in store.entries()]
    except TokenError as exc:
        fail(str(exc))
    if json_out:
        print_json({"store": str(store.path), "tokens": rows})
        return
    if not Path(store.path).exists():
        err.print(f"no token store at {store.path}")
    table = Table(title=f"{len(rows)} tokens in {store.path}")
    for column in ("name", "role", "created at"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["name"], r["role"], r["created_at"])
    err.print(table)


@token_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    data_dir: DataDir = "twin-data",
    api_tokens: StoreOpt = None,
    json_out: Json = False,
) -> None:
    """Revoke a token: a running API refuses it within a second."""
    store = _store(api_tokens, data_dir)
    try:
        gone = store.revoke(name)
    except TokenError as exc:
        fail(str(exc))
    if not gone:
        fail(f"no token named {name!r} in {store.path}")
    if json_out:
        print_json({"revoked": name, "store": str(store.path)})
    else:
        err.print(f"revoked {name!r} in {store.path}")
