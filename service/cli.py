"""`python -m service`: serve, migrate, keys, export, verify."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import trio
from agent_chain import audit
from agent_chain.bundle import BundleHeader
from hypercorn.config import Config

from . import logs
from .config import Settings
from .core import credentials, export, seal_key
from .runtime import prepare_storage, tune_gc_for_serving
from .storage import migrations, seal_keys, tenants
from .storage.database import Database, with_database
from .storage.embedded import EmbeddedPostgres
from .supervisor import supervise

log = logging.getLogger("service")

_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: os.environ.get("CHAIN_DATA_DIR", ".data"),
    show_default=".data",
    help="Where the embedded PostgreSQL and the seal key live.",
)


@contextmanager
def database_url(data_dir: Path) -> Iterator[str]:
    """DATABASE_URL if set; else the embedded PostgreSQL under data_dir, started if
    needed and stopped afterwards only if this process started it."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    server = EmbeddedPostgres(data_dir / "pg")
    started_here = not server.running()
    url = server.start()
    try:
        yield url
    finally:
        if started_here:
            server.stop()


class ProgressPrinter:
    """A progress callback that prints at most once per `every` seconds."""

    def __init__(self, out: Callable[[str], None], verb: str, every: float = 1.0) -> None:
        self._out = out
        self._verb = verb
        self._every = every
        self._next = time.monotonic() + every

    def __call__(self, records: int, done: int, total: int) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._every
        share = 100 * done / total if total else 100.0
        self._out(f"{self._verb} {records:,} records ({share:.0f}%)")


def _stderr(message: str) -> None:
    click.echo(message, err=True)


@click.group()
@click.option("--log-level", default=lambda: os.environ.get("LOG_LEVEL", "INFO"))
def main(log_level: str) -> None:
    """Authoritative ingestion service for hash-chained AI-agent events."""
    logs.configure(log_level.upper())


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="hypercorn trio worker processes sharing one database",
)
@_data_dir_option
def serve(host: str, port: int, workers: int, data_dir: Path) -> None:
    """Serve the API (embedded PostgreSQL unless DATABASE_URL is set)."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["CHAIN_DATA_DIR"] = str(data_dir)
    key_file = Path(os.environ.get("SEAL_KEY_FILE") or data_dir / "seal_key.pem").resolve()
    os.environ["SEAL_KEY_FILE"] = str(key_file)

    with database_url(data_dir) as url:
        os.environ["DATABASE_URL"] = url
        try:
            Settings.from_env()  # settings that cannot work fail here, not in each worker
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        signer = seal_key.load_or_create(key_file)
        # Fail here, once, rather than in every worker.
        with_database(url, lambda db: prepare_storage(db, signer))
        if workers > 1:
            metrics_dir = data_dir / f"metrics-{os.getpid()}"
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir()
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)

        config = Config()
        config.bind = [f"{host}:{port}"]
        config.worker_class = "trio"
        # One worker serves in this process; N > 1 spawns N sharing one socket.
        config.workers = workers
        config.application_path = "service.app:create_app_from_env()"
        config.graceful_timeout = 10
        config.accesslog = None  # ours is service.access, with the request id
        # A Logger (not "-") makes hypercorn log through the root logger: JSON.
        config.errorlog = logging.getLogger("hypercorn.error")
        config.keep_alive_timeout = 75
        log.info(
            "serving on http://%s:%d with %d worker(s), seal key %s",
            host,
            port,
            workers,
            signer.key_id,
        )
        try:
            code = supervise(config) if workers > 1 else trio.run(_serve_here, config)
        finally:
            if workers > 1:
                shutil.rmtree(os.environ.pop("PROMETHEUS_MULTIPROC_DIR"), ignore_errors=True)
        sys.exit(code)


async def _serve_here(config: Config) -> int:
    """One worker, in this process, shut down gracefully on SIGINT or SIGTERM."""
    from hypercorn.trio import serve

    from .app import create_app

    async def signalled() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("received %s; shutting down", signal.Signals(signum).name)
                return

    app = create_app(Settings.from_env())
    tune_gc_for_serving()
    await serve(app, config, shutdown_trigger=signalled)
    return 0


@main.command()
@_data_dir_option
def migrate(data_dir: Path) -> None:
    """Apply pending database migrations."""
    with database_url(data_dir) as url:
        applied = with_database(url, migrations.migrate)
    click.echo(f"applied {len(applied)} migration(s)", err=True)


@main.group()
def keys() -> None:
    """API keys of tenants, and the server's seal key."""


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant name (created on first use).")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice([s.value for s in credentials.Scope]),
)
@_data_dir_option
def keys_create(tenant: str, scopes: tuple[str, ...], data_dir: Path) -> None:
    """Create an API key; prints the key alone on stdout (it is shown only once)."""
    api_key = credentials.new_api_key()
    scope_set = frozenset(credentials.Scope(s) for s in scopes)

    async def work(db: Database) -> None:
        await migrations.migrate(db)
        await tenants.create_api_key(db, tenant, scope_set, api_key.api_key_id, api_key.secret_hash)

    with database_url(data_dir) as url:
        with_database(url, work)
    click.echo(api_key.token)


@keys.command("list")
@click.option("--tenant", default=None)
@_data_dir_option
def keys_list(tenant: str | None, data_dir: Path) -> None:
    """List API keys (never their secrets)."""

    async def work(db: Database) -> list[tenants.ApiKeyRow]:
        return await tenants.list_api_keys(db, tenant)

    with database_url(data_dir) as url:
        rows = with_database(url, work)
    for row in rows:
        state = f"revoked {row.revoked_at:%Y-%m-%dT%H:%M:%SZ}" if row.revoked_at else "active"
        click.echo(
            f"{row.api_key_id}\t{row.tenant}\t{','.join(sorted(row.scopes))}\t"
            f"{row.created_at:%Y-%m-%dT%H:%M:%SZ}\t{state}"
        )


@keys.command("revoke")
@click.argument("key_id")
@_data_dir_option
def keys_revoke(key_id: str, data_dir: Path) -> None:
    """Revoke an API key by its id (the 16 hex chars after 'csk_')."""
    parsed = credentials.parse_token(key_id)
    api_key_id = parsed[0] if parsed else key_id

    async def work(db: Database) -> bool:
        return await tenants.revoke_api_key(db, api_key_id)

    with database_url(data_dir) as url:
        if not with_database(url, work):
            raise click.ClickException(f"no active key {api_key_id}")
    click.echo(f"revoked {api_key_id}", err=True)


@keys.command("rotate-seal")
@_data_dir_option
def keys_rotate_seal(data_dir: Path) -> None:
    """Make a new seal key the active one; old keys stay listed for verification.

    Running servers keep signing with the key they loaded until restarted.
    """
    key_file = Path(os.environ.get("SEAL_KEY_FILE") or data_dir / "seal_key.pem")
    with database_url(data_dir) as url:
        if key_file.exists():
            old = seal_key.load(key_file)
            with_database(url, lambda db: prepare_storage(db, old))
        signer, kept = seal_key.rotate(key_file)

        async def activate(db: Database) -> None:
            await seal_keys.register(db, signer.key_id, signer.public_key, activate=True)

        with_database(url, activate)
    if kept:
        click.echo(f"previous key kept in {kept}", err=True)
    click.echo(signer.key_id)


@main.command("export")
@click.argument("session_id")
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The bundle file to write (replaced only once it is complete).",
)
@click.option("--tenant", default=None, help="Tenant name, when the id exists under several.")
@_data_dir_option
def export_bundle(session_id: str, out_path: Path, tenant: str | None, data_dir: Path) -> None:
    """Write a session's evidence bundle: its records and the keys that signed its seals."""
    try:
        sid = str(uuid.UUID(session_id))
    except ValueError:
        raise click.BadParameter("not a UUID", param_hint="SESSION_ID") from None
    partial = out_path.with_name(f"{out_path.name}.partial")
    progress = ProgressPrinter(_stderr, "exported")
    try:
        with database_url(data_dir) as url, partial.open("wb") as out:

            async def work(db: Database) -> BundleHeader | str:
                return await export.export(db, sid, tenant, out, progress)

            outcome = with_database(url, work)
            out.flush()
            os.fsync(out.fileno())
        if isinstance(outcome, str):
            raise click.ClickException(outcome)
        os.replace(partial, out_path)
    finally:
        partial.unlink(missing_ok=True)
    click.echo(
        f"exported {outcome.events + outcome.seals:,} records ({outcome.events:,} events, "
        f"{outcome.seals:,} seals) of session {sid} (tenant {outcome.tenant}) to {out_path}",
        err=True,
    )


@main.command("verify")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def verify_bundle(bundle: Path) -> None:
    """Check an evidence bundle offline: no database, no network.

    Prints what was checked, or the first record that does not hold; exits 0
    only when every record, link, seal and signature holds.
    """
    report = audit.verify_bundle(bundle, progress=ProgressPrinter(_stderr, "verified"))
    click.echo(report.text())
    sys.exit(0 if report.ok else 1)
