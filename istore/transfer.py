"""``istore import`` and ``istore export``: files in and out of the store (the same code
as the HTTP ingest and export routes: ``ingest.importer``, ``store.export``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson

from istore.common import data_option, filter_options, settings_for


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


@click.command("import")
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

    settings = settings_for(data=data)
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


# -- export ------------------------------------------------------------------------------
@click.command()
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
        parsed = filter_options(filters)
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
    settings = settings_for(data=data)
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
