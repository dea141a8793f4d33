"""``istore``: a thin shell over the store, the same functions the HTTP routes call.

This module holds the group and ``serve``, ``sql`` and ``keys``; ``istore.transfer``
has ``import``/``export`` and ``istore.upkeep`` the maintenance commands."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import sys
import time
from typing import Any

import click
import orjson

from istore.common import data_option, settings_for
from store.errors import StoreError
from store.location import Location
from store.version import VERSION


class _Shell(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StoreError as exc:
            click.echo(f"Error: {exc.message}", err=True)
            sys.exit(1)


@click.group(cls=_Shell)
@click.version_option(VERSION, prog_name="istore")
def main() -> None:
    """interaction-store: a durable, queryable store of LLM interactions."""
    # What we write (tables, logs, keys, exports) holds users' conversations: readable
    # by the service's own user only, whatever the shell's umask.
    os.umask(0o077)


# -- serve -------------------------------------------------------------------------------
class _Workers(click.ParamType):
    """1–64, or ``auto`` (the settings turn it into the usable cores)."""

    name = "N|auto"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | str:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        n = click.IntRange(1, 64).convert(value, param, ctx)
        return int(n)


WORKERS = _Workers()


@main.command()
@data_option
@click.option("--host", default=None, help="Listen address (default: $ISTORE_HOST or 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: $ISTORE_PORT or 8080).")
@click.option("--gateway-config", default=None, help="Gateway routing file (TOML).")
@click.option(
    "--load-sample-if-empty",
    is_flag=True,
    help="Load the sample (sample_data/sample.py, the last 14 days) into an empty store "
    "first (what `make serve` does).",
)
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="Serve on a non-loopback address although no API key exists (anyone may do anything).",
)
@click.option(
    "--workers",
    type=WORKERS,
    default=None,
    help="Server processes, each with its own write-ahead log; `auto`: one per usable core "
    "(default: $ISTORE_WORKERS or 1; more than one weakens idempotency by id and OTLP "
    "joins: docs/operations.md).",
)
@click.option(
    "--wal-dir",
    default=None,
    help="This writer's write-ahead log folder (default: $ISTORE_WAL_DIR or <data>/wal).",
)
@click.option("--worker-index", type=int, default=None, hidden=True)
def serve(
    data: str | None,
    host: str | None,
    port: int | None,
    gateway_config: str | None,
    load_sample_if_empty: bool,
    insecure_no_auth: bool,
    workers: int | str | None,
    wal_dir: str | None,
    worker_index: int | None,
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    from api.app import create_app
    from service.keys import KeyRing

    settings = settings_for(
        data=data,
        host=host,
        port=port,
        gateway_config=gateway_config,
        workers=workers,
        wal_dir=wal_dir,
    )
    from api.logs import configure

    configure(settings.log_level, settings.log_format)
    state = settings.shared_state()
    keys = KeyRing(state.document("keys.json"))
    secured = keys.active()
    with contextlib.suppress(StoreError):  # a bad file is the maintenance job's to report
        # Read now, so that a copy of its own from before the rules were shared is
        # uploaded at start, like the keys.
        state.document("retention.json").read()
    if not secured and not _is_loopback(settings.host) and not insecure_no_auth:
        raise click.UsageError(
            f"refusing to listen on {settings.host}: no API key is configured, so anyone who "
            "can reach the port could read and write everything. Create one with "
            "`istore keys create --scope admin`, or pass --insecure-no-auth"
        )
    if settings.workers > 1 and worker_index is None:
        from istore import workers as supervisor

        if load_sample_if_empty and not settings.wal_dir:
            with settings.open_store() as first:
                _load_sample(first)
        argv = [f"--{k.replace('_', '-')}={v}" for k, v in {
            "data": data, "host": host, "port": port, "gateway_config": gateway_config,
        }.items() if v is not None]  # fmt: skip
        argv += ["--insecure-no-auth"] if insecure_no_auth else []
        sys.exit(supervisor.supervise(settings, argv))
    if worker_index is None and not settings.wal_dir and not Location.parse(settings.data).remote:
        from istore import workers as supervisor

        # Logs of an earlier `--workers N` run go into the tables first.
        for d in supervisor.drain_orphans(settings, 0, own_log=False):
            click.echo(f"Replayed the write-ahead log in {d} into the tables")
    store = settings.open_store()
    # A SIGTERM from here on stops the server cleanly (the store below is closed: the
    # log flushed into the tables), even one that arrives while it is still starting.
    stopping: list[Any] = [False]

    def stop(*_: Any) -> None:
        server = stopping[0]
        if isinstance(server, uvicorn.Server):
            server.should_exit = True  # uvicorn also stops at once if not serving yet
        else:
            stopping[0] = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    try:
        if load_sample_if_empty:
            _load_sample(store)
        name = store.location.uri
        if worker_index is not None:
            name += f" (worker {worker_index}, log {store.wal_dir})"
        where = f"istore serving {name} on http://{settings.host}:{settings.port}"
        if secured:
            click.echo(f"{where} (API keys required)")
        else:
            banner = (
                "WARNING: no API key is configured: every request may read, write and delete "
                "everything. Create one with `istore keys create --scope admin`."
            )
            if not _is_loopback(settings.host):
                banner = "WARNING: --insecure-no-auth on a non-loopback address. " + banner
            click.secho(banner, fg="red", bold=True, err=True)
            click.echo(f"{where} (no API key: open)")
        listening = None
        if worker_index is not None:
            from istore.workers import listen

            listening = listen(settings.host, settings.port)
        app = create_app(settings, store=store)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            # a worker listens in the port's SO_REUSEPORT group
            fd=listening.fileno() if listening is not None else None,
            log_config=None,  # api.logs configured it
            access_log=False,  # ours is istore.access (ISTORE_ACCESS_LOG)
            loop="uvloop",
            http="httptools",
            timeout_graceful_shutdown=int(settings.shutdown_timeout_s) or None,
        )
        # uvicorn stops accepting, finishes in-flight requests and runs the lifespan
        # shutdown on SIGTERM/SIGINT, then re-raises the signal to the handler that was
        # there before it (``stop``, harmless by then), so that the store below is closed
        # and the process exits 0.
        server = uvicorn.Server(config)
        if stopping[0] is True:  # asked to stop while starting
            server.should_exit = True
        stopping[0] = server
        server.run()
    finally:
        started = time.monotonic()
        store.close()
        logging.getLogger("istore").info(
            "stopped: the write-ahead log is flushed into the tables (%.2f s)",
            time.monotonic() - started,
        )


def _load_sample(store: Any) -> None:
    """The sample (``sample_data/sample.py``: dated up to today), into an empty store."""
    if not _is_empty(store):
        return
    from sample_data.sample import load

    n = load(store)
    click.echo(f"Loaded the sample ({n['interactions']} interactions, {n['feedback']} feedback, "
               f"{n['comparisons']} comparisons, {n['outcomes']} outcomes, the last 14 days) "
               f"into {store.root}")  # fmt: skip


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_empty(store: Any) -> bool:
    return int(store.query("SELECT count(*) AS n FROM interactions").column("n")[0].as_py()) == 0


# -- sql ---------------------------------------------------------------------------------
@main.command()
@data_option
@click.argument("query")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "vertical", "json", "ndjson", "csv", "parquet", "arrow"]),
    default="table",
    show_default=True,
    help="table: one line per row, or a block per row when wider than the terminal; "
    "vertical: always a block per row.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to this file.")
@click.option("--max-rows", type=int, default=None, help="Most rows to return.")
def sql(data: str | None, query: str, fmt: str, output: str | None, max_rows: int | None) -> None:
    """Run one read-only SELECT over the views interactions, feedback, comparisons and
    outcomes (helpers: label(labels, key), message_text(messages),
    last_user_message(messages))."""
    import pyarrow as pa

    from store.output import JSON_OPTIONS, encode, rows
    from store.reader import open as open_store

    if fmt in ("parquet", "arrow") and output is None:
        raise click.UsageError(f"--format {fmt} is binary: give an output file with -o")
    settings = settings_for(data=data)
    out = open(output, "wb") if output is not None else sys.stdout.buffer
    try:
        with (
            open_store(settings.data) as reader,
            reader.sql_result(
                query, timeout_s=settings.sql_timeout_s, max_rows=max_rows or settings.sql_max_rows
            ) as result,
        ):
            if fmt in ("table", "vertical", "json"):  # whole tables: the row limit bounds them
                table = pa.Table.from_batches(list(result.batches), schema=result.schema)
                if fmt in ("table", "vertical"):
                    from istore.render import render

                    out.write(render(table, vertical=True if fmt == "vertical" else None).encode())
                else:  # a plain array of rows on the command line
                    out.write(orjson.dumps(rows(table), default=str,
                                           option=JSON_OPTIONS | orjson.OPT_INDENT_2)
                              + b"\n")  # fmt: skip
            else:  # streamed: written as they are encoded, within the time limit
                for chunk in encode(result.schema, result.batches, fmt, check=result.check):
                    out.write(chunk)
    finally:
        if output is not None:
            out.close()
        else:
            out.flush()
    if result.truncated:
        click.echo(f"(cut at {result.rows} rows)", err=True)


# -- keys --------------------------------------------------------------------------------
@main.group()
def keys() -> None:
    """API keys: create, list, revoke. While no key exists the server is open."""


@keys.command("create")
@data_option
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(["ingest", "read", "admin"]),
    help="ingest: write; read: list, stats, SQL, export; admin: everything. Repeatable.",
)
@click.option(
    "--use-case",
    "use_cases",
    multiple=True,
    help="Limit the key to this use case (repeatable). Default: every use case.",
)
@click.option("--name", default=None, help="A name to recognise the key by.")
def keys_create(
    data: str | None, scopes: tuple[str, ...], use_cases: tuple[str, ...], name: str | None
) -> None:
    """Create a key. Its secret is printed once, as the last line."""
    from service.keys import KeyRing
    from store.schema import USE_CASE_RE

    for uc in use_cases:
        if not USE_CASE_RE.match(uc):
            raise click.BadParameter(f"{uc!r} is not a valid use case key", param_hint="--use-case")
    settings = settings_for(data=data)
    ring = KeyRing(settings.shared_state().document("keys.json"))
    record, secret = ring.create(list(scopes), list(use_cases), name)
    limit = ", ".join(record["use_cases"]) if record["use_cases"] else "all use cases"
    click.echo(
        f"Created key {record['id']}"
        + (f" ({record['name']})" if record["name"] else "")
        + f": scope {', '.join(record['scopes'])}; {limit}."
    )
    click.echo("The secret is shown only now; store it safely:", err=True)
    click.echo(secret)


@keys.command("list")
@data_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_list(data: str | None, as_json: bool) -> None:
    """Every key's id, name, scopes, use cases and times (never secrets)."""
    from service.keys import KeyRing

    rows = KeyRing(settings_for(data=data).shared_state().document("keys.json")).describe()
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
        return
    if not rows:
        click.echo("No API keys: the server is open (loopback only).")
        return
    click.echo(
        f"{'id':<14}{'name':<16}{'scopes':<18}{'use cases':<22}{'created':<22}"
        f"{'last used':<22}revoked"
    )
    for r in rows:
        click.echo(
            f"{r['id']:<14}{(r['name'] or '-'):<16}{','.join(r['scopes']):<18}"
            f"{','.join(r['use_cases'] or ['*']):<22}{r['created_at']:<22}"
            f"{(r['last_used_at'] or '-'):<22}{r['revoked_at'] or '-'}"
        )


@keys.command("revoke")
@data_option
@click.argument("key")
def keys_revoke(data: str | None, key: str) -> None:
    """Revoke the key with this id (or name). A running server stops accepting it at once
    (on object storage, every server within ISTORE_STATE_REFRESH_S)."""
    from service.keys import KeyRing

    record = KeyRing(settings_for(data=data).shared_state().document("keys.json")).revoke(key)
    click.echo(f"Revoked key {record['id']} at {record['revoked_at']}")


def _register() -> None:
    from istore import transfer, upkeep

    for command in (transfer.import_, transfer.export, upkeep.compact, upkeep.vacuum,
                    upkeep.delete, upkeep.doctor, upkeep.retention, upkeep.stats):  # fmt: skip
        main.add_command(command)


_register()

if __name__ == "__main__":
    main()
