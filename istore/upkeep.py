"""The maintenance commands: ``compact``, ``vacuum``, ``delete``, ``retention``,
``stats``, ``doctor``. They write only to a data root no server holds; beside a running
server they say plainly what they did not do, and how to ask the server
(``POST /api/v1/maintenance``)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import click
import orjson

from istore.common import data_option, filter_options, settings_for
from service.settings import Settings
from store.errors import InvalidRequest, StoreError, StoreLocked
from store.location import Location


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


@click.command()
@data_option
def compact(data: str | None) -> None:
    """Remove deleted interactions from the files (rewrite), then rewrite small
    Parquet files into large ones, per partition; says what it did for each table."""
    from store.maintenance import compact as do_compact

    settings = settings_for(data=data)
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


@click.command()
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
    from store.maintenance import MIN_RETENTION_HOURS, check_retention
    from store.maintenance import vacuum as do_vacuum

    settings = settings_for(data=data)
    if 0 <= retention_hours < MIN_RETENTION_HOURS and not force:
        raise InvalidRequest(
            f"--retention-hours {retention_hours:g} is under the {MIN_RETENTION_HOURS:g}-hour "
            "minimum, which keeps replaced files that a query or export reading an older "
            "snapshot may still need. To delete them anyway (say, so that no byte of a "
            "deleted interaction is left), add --force: "
            f"istore vacuum --retention-hours {retention_hours:g} --force",
            param="retention_hours",
        )
    check_retention(retention_hours, force)
    if not dry_run:
        _purge(settings.data)
    files = do_vacuum(settings.data, retention_hours, dry_run=dry_run, force=force)
    for name, removed in files.items():
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"{name}: {verb} {len(removed)} files")


@click.command()
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

    kw = filter_options(filters)
    if ids:
        kw["id"] = list(ids)
    if not kw and not everything:
        raise click.UsageError("give --id, --filter or --all")
    expr = filter_from_kwargs({k: v[0] if len(v) == 1 else v for k, v in kw.items()})
    settings = settings_for(data=data)
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


@click.command()
@data_option
def doctor(data: str | None) -> None:
    """Check the tables, the write-ahead log, key file permissions, free disk and the
    configuration, and say what to do (exit 1 on a failure)."""
    from istore.doctor import check

    settings = settings_for(data=data)
    failed = False
    for f in check(settings.data, settings.gateway_config, settings.wal_dir):
        failed |= f.level == "FAIL"
        color = {"ok": "green", "warn": "yellow", "FAIL": "red"}[f.level]
        line = click.style(f"{f.level:<5}", fg=color) + f"{f.check}: {f.detail}"
        click.echo(line + (f"\n      → {f.advice}" if f.advice else ""))
    if failed:
        sys.exit(1)


@click.group()
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

    settings = settings_for(data=data)
    rules = settings.shared_state().document("retention.json")
    policy = Retention.load(rules)
    policy.set(use_case, days)
    policy.save(rules)
    kept = "forever" if days is None else f"{days:g} days"
    click.echo(f"retention of {use_case or 'every other use case'}: {kept}")


@retention.command("show")
@data_option
def retention_show(data: str | None) -> None:
    """The retention rules."""
    from store.lifecycle import Retention, retention_summary

    settings = settings_for(data=data)
    policy = Retention.load(settings.shared_state().document("retention.json"))
    click.echo(orjson.dumps(retention_summary(policy), option=orjson.OPT_INDENT_2).decode())


@retention.command("apply")
@data_option
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def retention_apply(data: str | None, dry_run: bool, yes: bool) -> None:
    """Delete what is older than the rules now, after showing how much (a running
    server applies them on its own schedule, or now: POST /api/v1/maintenance)."""
    from store.lifecycle import Retention, apply_retention

    settings = settings_for(data=data)
    policy = Retention.load(settings.shared_state().document("retention.json"))
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


@click.command()
@data_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def stats(data: str | None, as_json: bool) -> None:
    """Rows per table and use case (what queries see: deleted rows are counted apart,
    until the purge removes them from the files), files, bytes and table version."""
    from store.maintenance import table_stats

    settings = settings_for(data=data)
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
