"""``istore``: a thin shell over the store, the same functions the HTTP routes call."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson

from service.settings import Settings
from store.errors import StoreError, StoreLocked
from store.location import Location


def _settings(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


data_option = click.option(
    "--data", "data", default=None, help="Data root (default: $ISTORE_DATA or ./data)."
)


class _Shell(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StoreError as exc:
            click.echo(f"Error: {exc.message}", err=True)
            sys.exit(1)


@click.group(cls=_Shell)
@click.version_option("0.1.0", prog_name="istore")
def main() -> None:
    """interaction-store: a durable, queryable store of LLM interactions."""
    # What we write (tables, logs, keys, exports) holds users' conversations: readable
    # by the service's own user only, whatever the shell's umask.
    os.umask(0o077)


# -- serve -------------------------------------------------------------------------------
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
    type=click.IntRange(1, 64),
    default=None,
    help="Server processes, each with its own write-ahead log (default: $ISTORE_WORKERS or 1).",
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
    workers: int | None,
    wal_dir: str | None,
    worker_index: int | None,
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    from api.app import create_app
    from service.keys import KeyRing

    settings = _settings(
        data=data,
        host=host,
        port=port,
        gateway_config=gateway_config,
        workers=workers,
        wal_dir=wal_dir,
    )
    from api.logs import configure

    configure(settings.log_level, settings.log_format)
    keys = KeyRing(settings.state_folder())
    secured = keys.active()
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


# -- import ------------------------------------------------------------------------------
def _import_files(
    store: Any, paths: list[Path], *, progress: bool, use_case: str | None = None,
    skip_invalid: bool = False,
) -> Any:  # fmt: skip
    from ingest.importer import import_files

    size = sum(p.stat().st_size for p in paths)
    out = sys.stderr if progress else _Null()
    with click.progressbar(length=size, label="Importing", file=out) as bar:  # type: ignore[arg-type]
        return import_files(store, paths, use_case=use_case, skip_invalid=skip_invalid,
                            progress=bar.update)  # fmt: skip


class _Unclosed:
    """Standard output as a file to write to and close, which leaves it open."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, data: bytes) -> int:
        return int(self.stream.write(data))

    def close(self) -> None:
        self.stream.flush()

    def __enter__(self) -> _Unclosed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Null:
    def write(self, _: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


@main.command("import")
@data_option
@click.option(
    "--use-case",
    default=None,
    help="Use case for records without one (OpenAI fine-tuning and Adaptive dataset files).",
)
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Leave out invalid records (counted, the first few shown) instead of stopping.",
)
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def import_(
    data: str | None, use_case: str | None, skip_invalid: bool, files: tuple[str, ...]
) -> None:
    """Import files of records: NDJSON (one per line) or a JSON array, gzipped or not
    (.gz). A record is an interaction, a gateway log ({"request", "response"}), an
    OpenAI fine-tuning example ({"messages"} ending with the assistant's) or an Adaptive
    dataset line ({"messages", "completion"})."""
    from ingest.importer import ImportFailed

    settings = _settings(data=data)
    with settings.open_store() as store:
        try:
            result = _import_files(store, [Path(f) for f in files], progress=True,
                                   use_case=use_case, skip_invalid=skip_invalid)  # fmt: skip
        except ImportFailed as exc:
            r = exc.result
            click.echo(f"Error: {exc.message}", err=True)
            upto = f" (up to {r.last_good})" if r.last_good else ""
            again = f"; {r.read - r.stored} were already stored" if r.read != r.stored else ""
            click.echo(
                f"Stored {r.stored} new interactions from the records before it{upto}{again}. "
                "Fix the record and import again (records with an id, and fine-tuning "
                "examples, are not stored twice), or pass --skip-invalid.",
                err=True,
            )
            sys.exit(1)
    if result.skipped:
        n = result.skipped
        first = ", the first:" if n > len(result.errors) else ":"
        click.echo(f"Skipped {n} invalid record{'s' if n != 1 else ''}{first}", err=True)
        for line in result.errors:
            click.echo(f"  {line}", err=True)
    dup = (
        f" ({result.read - result.stored} were already stored)"
        if result.read != result.stored
        else ""
    )
    skipped = f"; {result.skipped} invalid skipped" if result.skipped else ""
    click.echo(
        f"Imported {result.stored} of {result.read} interactions into {store.root}{dup}{skipped}"
    )


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
    settings = _settings(data=data)
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


# -- export ------------------------------------------------------------------------------
@main.command()
@data_option
@click.option(
    "--format",
    "fmt",
    default="openai",
    show_default=True,
    type=click.Choice(
        ["openai", "adaptive", "parquet", "dpo", "openai-dpo", "adaptive-preference", "preference"]
    ),  # fmt: skip
)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Output file (- for standard output); with --split NAME.train.EXT and "
                   "NAME.validation.EXT.")  # fmt: skip
@click.option("--filter", "filters", multiple=True, metavar="NAME=VALUE",
              help="A filter as in the API, e.g. use_case=support or label=topic:x "
                   "(repeatable).")  # fmt: skip
@click.option("--include-errors", is_flag=True, help="Keep status=error interactions.")
@click.option("--include-feedback", is_flag=True, help="adaptive: add {metric: value} feedbacks.")
@click.option("--metric", default=None, help="Feedback metric that scores (pairs, dedupe).")
@click.option("--min-margin", type=float, default=0.0, show_default=True)
@click.option("--no-comparisons", is_flag=True, help="No pairs from explicit comparisons.")
@click.option("--dedupe", is_flag=True, help="One example per prompt (best-scored, else newest).")
@click.option("--max-examples", type=int, default=None)
@click.option("--split", type=float, default=None, help="Train share, e.g. 0.9 (by prompt hash).")
@click.option("--min-turns", type=int, default=None, help="At least this many user messages.")
@click.option("--max-chars", type=int, default=None)
@click.option("--manifest", "manifest_in", type=click.Path(exists=True, dir_okay=False),
              default=None,
              help="Repeat the export a manifest describes (same versions, filters, options) "
                   "and check the files come out identical.")  # fmt: skip
def export(
    data: str | None, fmt: str, output: str, filters: tuple[str, ...], include_errors: bool,
    include_feedback: bool, metric: str | None, min_margin: float, no_comparisons: bool,
    dedupe: bool, max_examples: int | None, split: float | None, min_turns: int | None,
    max_chars: int | None, manifest_in: str | None,
) -> None:  # fmt: skip
    """Export a fine-tuning dataset; writes OUTPUT and OUTPUT.manifest.json (versions,
    filters, options, rows, sha256 of each file). With -o - the data goes to standard
    output and the rest (rows, sha256, versions) to standard error, with no manifest."""
    import hashlib

    from store.export import PAIR_FORMATS, Exporter, ExportOptions, manifest
    from store.filters import filter_from_kwargs
    from store.reader import open as open_store

    versions = None
    expected: dict[str, str] | None = None
    if manifest_in is not None:
        if Path(f"{output}.manifest.json").resolve() == Path(manifest_in).resolve():
            raise click.UsageError("-o would overwrite the manifest being checked; choose another")
        old = orjson.loads(Path(manifest_in).read_bytes())
        expected = old.get("sides")
        versions = old["versions"]
        options = ExportOptions(**{**old["options"], "filters": old["filters"]})
    else:
        parsed = _filter_options(filters)
        options = ExportOptions(
            format=fmt, include_errors=include_errors, include_feedback=include_feedback,
            metric=metric, min_margin=min_margin, comparisons=not no_comparisons, dedupe=dedupe,
            max_examples=max_examples, split=split, min_turns=min_turns, max_chars=max_chars,
            filters={k: v if len(v) > 1 or k not in ("from", "to") else v[0]
                     for k, v in parsed.items()},
        )  # fmt: skip
    to_stdout = output == "-"
    if to_stdout and options.split is not None:
        raise click.UsageError("--split writes two files: give -o FILE, not -")
    flt = filter_from_kwargs(options.filters)
    settings = _settings(data=data)
    out = Path(output)

    def open_out(path: Path) -> Any:
        return _Unclosed(sys.stdout.buffer) if to_stdout else open(path, "wb")  # noqa: SIM115

    digests: dict[str, str] = {}
    rows: dict[str, int] = {}
    with open_store(settings.data) as reader:
        exporter = Exporter(reader.store, reader.store.snapshot_at(versions), flt, options)
        for warning in exporter.warnings(getattr(flt, "use_case", ())):
            click.echo(f"warning: {warning}", err=True)
        if options.format == "parquet":
            digest = hashlib.sha256()
            with open_out(out) as f:
                for chunk in exporter.parquet():
                    f.write(chunk)
                    digest.update(chunk)
            digests[out.name], rows[out.name] = digest.hexdigest(), exporter.rows
        else:
            sides = ("train", "validation") if options.split is not None else ("all",)
            names = {s: out.name if s == "all" else f"{out.stem}.{s}{out.suffix}" for s in sides}
            files = {s: open_out(out.parent / names[s]) for s in sides}
            hashes = {s: hashlib.sha256() for s in sides}
            examples = exporter.pairs() if options.format in PAIR_FORMATS else exporter.sft()
            try:
                pending: dict[str, list[bytes]] = {s: [] for s in sides}

                def drain(side: str) -> None:
                    chunk = b"".join(pending[side])
                    files[side].write(chunk)
                    hashes[side].update(chunk)
                    rows[names[side]] = rows.get(names[side], 0) + len(pending[side])
                    pending[side].clear()

                # A bar of examples written (their total is not known ahead).
                with click.progressbar(length=0, label="Exporting", file=sys.stderr) as bar:
                    for side, line in examples:
                        pending[side].append(line)
                        if len(pending[side]) >= 4096:
                            drain(side)
                            bar.update(4096)
                    for side in sides:
                        drain(side)
            finally:
                for f in files.values():
                    f.close()
            for side in sides:
                digests[names[side]] = hashes[side].hexdigest()
                rows.setdefault(names[side], 0)
    by_side = {  # what --manifest compares: the content of each side, whatever its name
        ("all" if name == out.name else name.removeprefix(f"{out.stem}.").split(".")[0]): d
        for name, d in digests.items()
    }
    versions_text = f"versions {orjson.dumps(exporter.versions).decode()}"
    if to_stdout:  # the data is on standard output: the rest goes to standard error
        for n in rows.values():
            click.echo(f"standard output: {n} rows, sha256 {digests[out.name]}", err=True)
        click.echo(versions_text, err=True)
    else:
        result = manifest(options, exporter.versions, digests, rows)
        result["sides"] = by_side
        target = out.parent / f"{out.name}.manifest.json"
        target.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        for name, n in rows.items():
            click.echo(f"{name}: {n} rows, sha256 {digests[name]}")
        click.echo(f"{versions_text}; manifest {target.name}")
    if manifest_in is not None:
        if expected != by_side:
            click.echo("the files differ from the manifest's", err=True)
            sys.exit(1)
        click.echo("identical to the manifest", err=to_stdout)


# -- maintenance -------------------------------------------------------------------------
def _filter_options(filters: tuple[str, ...]) -> dict[str, list[str]]:
    """``--filter NAME=VALUE`` options (repeatable) → {name: [values]}."""
    parsed: dict[str, list[str]] = {}
    for item in filters:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--filter")
        parsed.setdefault(name, []).append(value)
    return parsed


@contextlib.contextmanager
def _writer(data: str, why: str) -> Iterator[Any]:
    """The data root's writer (``Store``), or None when a server holds it (then the
    server's maintenance job does ``why``)."""
    from store.engine import Store

    later = ("on its maintenance schedule (ISTORE_MAINTENANCE_INTERVAL_S), or now with "
             "POST /api/v1/maintenance")  # fmt: skip
    if Location.parse(data).remote:
        click.echo(f"{data} is object storage: {why} was NOT done here; the servers writing "
                   f"to it do it {later} (one at a time).", err=True)  # fmt: skip
        yield None
        return
    try:
        store = Store(data)
    except StoreLocked:
        click.echo(f"A server is running on {data}: {why} was NOT done here; the server does "
                   f"it {later}.", err=True)  # fmt: skip
        yield None
        return
    try:
        yield store
    finally:
        store.close()


def _purge(data: str) -> None:
    from store.lifecycle import purge

    with _writer(data, "the physical removal of deleted interactions") as store:
        if store is None:
            click.echo("deleted rows removed from the files: none (not done here, see above)")
        else:
            click.echo("deleted rows removed from the files: " + _counts(purge(store)))


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n = n / 1000  # type: ignore[assignment]
    raise AssertionError("unreachable")


@main.command()
@data_option
def compact(data: str | None) -> None:
    """Remove deleted interactions from the files (rewrite), then rewrite small
    Parquet files into large ones, per partition; says what it did for each table."""
    from store.maintenance import compact as do_compact

    settings = _settings(data=data)
    _purge(settings.data)
    for name, m in do_compact(settings.data).items():
        kept = m["files_kept"]
        files = f"{kept} file{'s' if kept != 1 else ''}"
        if not m["files_removed"]:
            click.echo(f"{name}: nothing to compact ({files})")
            continue
        parts = m["partitions_optimized"]
        click.echo(
            f"{name}: {m['files_removed']} files → {m['files_added']} in {parts} "
            f"partition{'s' if parts != 1 else ''} ({_size(m['bytes_removed'])} → "
            f"{_size(m['bytes_added'])})" + (f"; {files} left as they were" if kept else "")
        )


@main.command()
@data_option
@click.option(
    "--retention-hours",
    type=float,
    default=168.0,
    show_default=True,
    help="Keep files removed from the table for this long (readers of older snapshots).",
)
@click.option("--dry-run", is_flag=True, help="List what would be deleted.")
@click.option(
    "--force",
    is_flag=True,
    help="Allow a window under 1 hour (a query or export still reading an older "
    "version may then fail).",
)
def vacuum(data: str | None, retention_hours: float, dry_run: bool, force: bool) -> None:
    """Remove deleted interactions from the files, then delete files no longer in the
    table and older than the retention window."""
    from store.maintenance import check_retention
    from store.maintenance import vacuum as do_vacuum

    settings = _settings(data=data)
    check_retention(retention_hours, force)
    if not dry_run:
        _purge(settings.data)
    files = do_vacuum(settings.data, retention_hours, dry_run=dry_run, force=force)
    for name, removed in files.items():
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"{name}: {verb} {len(removed)} files")


@main.command()
@data_option
@click.option("--id", "ids", multiple=True, help="An interaction id (repeatable).")
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="NAME=VALUE",
    help="A filter of the API (user=…, session_id=…, label=k:v, to=…); all must hold.",
)
@click.option("--all", "everything", is_flag=True, help="Delete every interaction.")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def delete(
    data: str | None, ids: tuple[str, ...], filters: tuple[str, ...], everything: bool,
    dry_run: bool, yes: bool,
) -> None:  # fmt: skip
    """Delete interactions (and their feedback and comparisons): hidden at once,
    physically removed by the next `istore compact` or `vacuum`."""
    from store.filters import filter_from_kwargs
    from store.lifecycle import chunks, matching, tombstones
    from store.schema import AMENDMENTS_TABLE

    kw = _filter_options(filters)
    if ids:
        kw["id"] = list(ids)
    if not kw and not everything:
        raise click.UsageError("give --id, --filter or --all")
    expr = filter_from_kwargs({k: v[0] if len(v) == 1 else v for k, v in kw.items()})
    settings = _settings(data=data)
    from store.engine import Store

    try:
        store = Store(settings.data)
    except StoreLocked:
        raise StoreError(
            f"a server is running on {settings.data}: nothing was deleted; delete through "
            "it (DELETE /api/v1/interactions/ID, or POST /api/v1/interactions/delete with "
            '{"filter": {…}}; ?dry_run=true counts first)'
        ) from None
    try:
        pairs = matching(store, expr, None)
        if dry_run:
            click.echo(f"would delete {len(pairs)} interactions")
            return
        if pairs and not yes:
            click.confirm(f"Delete {len(pairs)} interactions?", abort=True)
        for chunk in chunks(pairs):
            store.write(AMENDMENTS_TABLE, tombstones(chunk)).result(60)
    finally:
        store.close()
    click.echo(f"deleted {len(pairs)} interactions (physically removed by istore compact/vacuum)")


@main.command()
@data_option
def doctor(data: str | None) -> None:
    """Check the tables, the write-ahead log, key file permissions, free disk and the
    configuration, and say what to do (exit 1 on a failure)."""
    from istore.doctor import check

    settings = _settings(data=data)
    failed = False
    for f in check(settings.data, settings.gateway_config, settings.wal_dir):
        failed |= f.level == "FAIL"
        color = {"ok": "green", "warn": "yellow", "FAIL": "red"}[f.level]
        line = click.style(f"{f.level:<5}", fg=color) + f"{f.check}: {f.detail}"
        click.echo(line + (f"\n      → {f.advice}" if f.advice else ""))
    if failed:
        sys.exit(1)


@main.group()
def retention() -> None:
    """How long each use case keeps its data (retention.json in the data root)."""


@retention.command("set")
@data_option
@click.argument("args", nargs=-1, metavar="USE_CASE DAYS | --default DAYS")
@click.option("--default", "is_default", is_flag=True, help="Set the default for other use cases.")
def retention_set(data: str | None, args: tuple[str, ...], is_default: bool) -> None:
    """Keep USE_CASE's data DAYS days (or, with --default, every other use case's)."""
    if len(args) != (1 if is_default else 2):
        raise click.UsageError("give USE_CASE DAYS, or --default DAYS")
    use_case = None if is_default else args[0]
    try:
        days = float(args[-1])
    except ValueError:
        raise click.BadParameter(f"{args[-1]!r} is not a number of days") from None
    _set_retention(data, use_case, days)


@retention.command("unset")
@data_option
@click.argument("use_case", required=False)
@click.option("--default", "is_default", is_flag=True, help="Remove the default.")
def retention_unset(data: str | None, use_case: str | None, is_default: bool) -> None:
    """Keep USE_CASE's data forever (or remove the default)."""
    if (use_case is None) != is_default:
        raise click.UsageError("give USE_CASE, or --default")
    _set_retention(data, use_case, None)


def _set_retention(data: str | None, use_case: str | None, days: float | None) -> None:
    from store.lifecycle import Retention

    settings = _settings(data=data)
    policy = Retention.load(settings.state_folder())
    policy.set(use_case, days)
    policy.save(settings.state_folder())
    kept = "forever" if days is None else f"{days:g} days"
    click.echo(f"retention of {use_case or 'every other use case'}: {kept}")


@retention.command("show")
@data_option
def retention_show(data: str | None) -> None:
    """The retention rules."""
    from store.lifecycle import Retention, retention_summary

    settings = _settings(data=data)
    click.echo(orjson.dumps(retention_summary(Retention.load(settings.state_folder())),
                            option=orjson.OPT_INDENT_2).decode())  # fmt: skip


@retention.command("apply")
@data_option
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def retention_apply(data: str | None, dry_run: bool, yes: bool) -> None:
    """Delete what is older than the rules now, after showing how much (a running
    server applies them on its own schedule, or now: POST /api/v1/maintenance)."""
    from store.lifecycle import Retention, apply_retention

    settings = _settings(data=data)
    policy = Retention.load(settings.state_folder())
    if not policy.conditions(datetime.now(UTC)):
        click.echo("no retention rules: nothing to delete (istore retention set …)")
        return
    store = _sole_writer(settings, "apply retention", "retention")
    try:
        plan = apply_retention(store, policy, dry_run=True)
        click.echo(("would delete: " if dry_run else "past the window: ") + _counts(plan))
        if dry_run or not any(plan.values()):
            return
        if not yes:
            click.confirm("Delete these rows?", abort=True)
        removed = apply_retention(store, policy)
    finally:
        store.close()
    click.echo("deleted rows: " + _counts(removed))


def _counts(per_table: dict[str, int]) -> str:
    shown = [f"{k} {v}" for k, v in per_table.items() if v]
    return ", ".join(shown) or "none"


def _sole_writer(settings: Settings, what: str, steps: str) -> Any:
    """The data root's writer (``Store``), or an error saying plainly that nothing was
    done and how a running server does it now."""
    from store.engine import Store

    url = f"http://{settings.host}:{settings.port}/api/v1/maintenance?steps={steps}"
    if Location.parse(settings.data).remote:
        raise StoreError(
            f"{settings.data} is object storage: nothing was done here; the servers "
            f"writing to it {what} on their maintenance schedule, or now with "
            f"`curl -X POST '{url}'` (an admin key)"
        )
    try:
        return Store(settings.data)
    except StoreLocked:
        raise StoreError(
            f"a server is running on {settings.data}: nothing was done. It does this on "
            f"its maintenance schedule (ISTORE_MAINTENANCE_INTERVAL_S), or now: "
            f"curl -X POST '{url}' (with an admin key when keys are configured; add "
            "&dry_run=true to count first)"
        ) from None


@main.command()
@data_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def stats(data: str | None, as_json: bool) -> None:
    """Rows per table and use case (what queries see: deleted rows are counted apart,
    until the purge removes them from the files), files, bytes and table version."""
    from store.maintenance import table_stats

    settings = _settings(data=data)
    rows = table_stats(settings.data)
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
        return
    header = (f"{'table':<13}{'use_case':<24}{'rows':>10}{'deleted':>9}{'unflushed':>11}"
              f"{'files':>8}{'bytes':>14}{'version':>9}")  # fmt: skip
    click.echo(header)
    for r in rows:
        click.echo(
            f"{r['table']:<13}{r['use_case']:<24}{r['rows']:>10}{r['deleted']:>9}"
            f"{r['unflushed']:>11}{r['files']:>8}{r['bytes']:>14}{r['version']:>9}"
        )
    if any(r["deleted"] for r in rows):
        click.echo("deleted: hidden from every read, still in the files until `istore compact` "
                   "or the server's maintenance removes them")  # fmt: skip


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
    settings = _settings(data=data)
    record, secret = KeyRing(settings.state_folder()).create(list(scopes), list(use_cases), name)
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

    rows = KeyRing(_settings(data=data).state_folder()).describe()
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
    """Revoke the key with this id (or name). A running server stops accepting it at once."""
    from service.keys import KeyRing

    record = KeyRing(_settings(data=data).state_folder()).revoke(key)
    click.echo(f"Revoked key {record['id']} at {record['revoked_at']}")


if __name__ == "__main__":
    main()
