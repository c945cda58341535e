"""``ptyhpc serve`` and ``ptyhpc token`` (registered in :mod:`ptyhpc.cli`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

__all__ = ["serve", "token_app"]

token_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="API tokens of the service: create (prints the token), revoke, list.")

_CONFIG = typer.Option(..., "--config", help="service.yaml")


def _sessions(config: Path):
    from .config import load_config  # noqa: PLC0415
    from .db import make_engine, migrate, sessions  # noqa: PLC0415

    cfg = load_config(config)
    cfg.results_root.mkdir(parents=True, exist_ok=True)
    engine = make_engine(cfg.db_url)
    migrate(engine)
    return sessions(engine)


def _fail(msg: str, code: int = 2):
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


@token_app.command("create")
def token_create(config: Path = _CONFIG,
                 user: str = typer.Option(..., "--user", help="user name the token acts as"),
                 role: str = typer.Option("user", "--role", help="user | staff | admin")):
    """Create a token and print it alone on stdout (it is stored only as a hash: keep it)."""
    from .auth import create_token  # noqa: PLC0415

    try:
        typer.echo(create_token(_sessions(config), user, role))
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))


@token_app.command("revoke")
def token_revoke(token: str = typer.Argument(..., help="the token, or its id (the part after 'pty_')"),
                 config: Path = _CONFIG):
    """Revoke a token: requests with it are refused from now on."""
    from .auth import revoke_token  # noqa: PLC0415

    try:
        row = revoke_token(_sessions(config), token)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    except KeyError as exc:
        _fail(exc.args[0])
    typer.echo(f"revoked token {row.id} of {row.user} ({row.role})", err=True)


@token_app.command("list")
def token_list(config: Path = _CONFIG):
    """Tokens (ids, users, roles, revoked or not) as JSON; secrets are never shown."""
    from .auth import list_tokens  # noqa: PLC0415

    try:
        typer.echo(json.dumps(list_tokens(_sessions(config)), indent=2))
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))


def serve(config: Path = typer.Option(..., "--config", help="service.yaml (see docs/service.md)"),
          port: int = typer.Option(None, help="override the configured port (0: any free port)")):
    """Run the job service: API under /v1, dashboard at /, on the configured host and port."""
    import uvicorn  # noqa: PLC0415

    from .app import create_app  # noqa: PLC0415
    from .config import load_config  # noqa: PLC0415

    try:
        cfg = load_config(config)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    if port is not None:
        cfg = cfg.model_copy(update={"port": port})
    app = create_app(cfg)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", timeout_graceful_shutdown=5)
