"""Fine-tuning datasets from the store: SFT and preference exports, reproducible.

An export reads the committed tables at fixed Delta versions (``as_of``; default:
the current ones, after a flush) and orders everything by ``(created_at, id)``, so the
same versions, filters and options give byte-identical files later, whatever arrived
since. Rows stream through in batches (bounded memory).

SFT formats (one line per interaction):
- ``openai``: ``{"messages": [...prompt, assistant]}`` (+ ``tools``,
  ``parallel_tool_calls`` when the interaction offered tools);
- ``adaptive``: ``{"messages", "completion"}`` (+ ``"feedbacks": {metric: value}``);
- ``parquet``: the rows with their feedback, one Parquet file.

Preference formats (one line per pair): ``dpo`` (TRL ``prompt``/``chosen``/
``rejected``), ``openai-dpo`` (``input``/``preferred_output``/``non_preferred_output``),
``adaptive-preference`` (``messages``/``preferred_completion``/``other_completion``/
``feedback_key``). Pairs come from explicit comparisons (not tied ones) and, with
``metric``, from feedback: among interactions with the same prompt (the same
messages), each scored by the mean of its ``metric`` feedback, the best (newest
on a tie for best) is paired with every one scoring at least ``min_margin`` lower and
strictly lower; ties and lone completions give no pair."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from store.duck import Duck, Snapshot, effective
from store.errors import ValidationFailed
from store.filters import Expr, Filter, files_by_day, restrict
from store.jsonutil import dumps_bytes as _dump
from store.jsonutil import loads
from store.schema import INTERACTIONS_TABLE
from store.version import VERSION

SFT_FORMATS = ("openai", "adaptive", "parquet")
PAIR_FORMATS = ("dpo", "openai-dpo", "adaptive-preference")
FORMATS = SFT_FORMATS + PAIR_FORMATS
ALIASES = {"preference": "adaptive-preference"}
TOOL_VERSION = f"interaction-store {VERSION}"

_COLUMNS = (
    "id, created_at, use_case, model, messages, completion, completion_message, params, status"
)


@dataclass(frozen=True)
class ExportOptions:
    format: str = "openai"
    include_errors: bool = False  # status=error interactions are left out by default
    include_feedback: bool = False  # adaptive: add "feedbacks": {metric: value}
    metric: str | None = None  # scores interactions: feedback pairs, and which dedupe keeps
    min_margin: float = 0.0
    comparisons: bool = True  # preference pairs from explicit comparisons
    dedupe: bool = False  # one example per prompt: the best-scored, else the newest
    max_examples: int | None = None
    split: float | None = None  # train share, by a hash of the prompt
    min_turns: int | None = None  # at least this many user messages
    max_chars: int | None = None  # at most this many characters in messages + completion
    filters: dict[str, Any] = field(default_factory=dict)  # as given, for the manifest

    def __post_init__(self) -> None:
        fmt = ALIASES.get(self.format, self.format)
        if fmt not in FORMATS:
            raise ValidationFailed(
                f"format: must be one of {', '.join(FORMATS)}, got {self.format!r}",
                param="format",
            )
        object.__setattr__(self, "format", fmt)
        if self.split is not None and not 0 < self.split < 1:
            raise ValidationFailed("split: must be between 0 and 1 (exclusive)", param="split")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValidationFailed("max_examples: must be at least 1", param="max_examples")
        if self.min_margin < 0:
            raise ValidationFailed("min_margin: must not be negative", param="min_margin")
        if fmt == "parquet":
            for name in ("dedupe", "split", "min_turns", "max_chars"):
                if getattr(self, name) not in (None, False):
                    raise ValidationFailed(
                        f"{name}: not available with format=parquet (filters, include_errors "
                        "and max_examples are)",
                        param=name,
                    )
        if fmt in PAIR_FORMATS and self.dedupe:
            raise ValidationFailed("dedupe: for SFT formats only", param="dedupe")
        if fmt in PAIR_FORMATS and not self.comparisons and self.metric is None:
            raise ValidationFailed(
                "metric: without comparisons, pairs can only come from feedback: give "
                "metric=<a feedback metric>",
                param="metric",
            )


def prompt_key(messages_json: str) -> str:
    """A stable hash of a prompt (its messages as stored)."""
    return hashlib.sha256(messages_json.encode()).hexdigest()


def in_train(messages_json: str, split: float) -> bool:
    """Which side of the split a prompt is on (all its examples on the same side)."""
    return int(prompt_key(messages_json)[:15], 16) / 16**15 < split


# Keys of an assistant message that fine-tuning formats accept (OpenAI's data checks).
_ASSISTANT_KEYS = ("content", "tool_calls", "name", "function_call")


def _assistant(row: dict[str, Any]) -> dict[str, Any]:
    """The completion as an assistant message with only the keys training data may
    have (not a response's ``annotations``, ``audio``, empty ``tool_calls`` …)."""
    if not row.get("completion_message"):
        return {"role": "assistant", "content": row.get("completion")}
    msg = loads(row["completion_message"])
    out: dict[str, Any] = {"role": "assistant", "content": msg.get("content")}
    for key in _ASSISTANT_KEYS[1:]:
        if msg.get(key):
            out[key] = msg[key]
    return out


def _has_answer(msg: dict[str, Any]) -> bool:
    return msg.get("content") is not None or bool(msg.get("tool_calls"))


def _tools(params: dict[str, Any]) -> dict[str, Any]:
    """The ``tools``/``parallel_tool_calls`` an interaction offered (not null ones)."""
    return {k: params[k] for k in ("tools", "parallel_tool_calls") if params.get(k) is not None}


def _text(row: dict[str, Any]) -> str:
    return row.get("completion") or ""


def _chars(messages: list[dict[str, Any]], completion: str) -> int:
    total = len(completion)
    for m in messages:
        c = m.get("content")
        if isinstance(c, str):
            total += len(c)
        elif isinstance(c, list):
            total += sum(len(p.get("text", "")) for p in c if isinstance(p, dict))
    return total


# Rows per batch read for an export: a bound on what one batch holds in memory, with
# interactions of up to ISTORE_MAX_BODY_BYTES each.
BATCH_ROWS = 256


class _Sink:
    """A write-only file for ParquetWriter whose bytes are taken as they come."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._pos = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        out, self._parts = b"".join(self._parts), []
        return out


class Exporter:
    def __init__(self, store: Any, snapshot: Snapshot, expr: Expr, options: ExportOptions,
                 use_cases: tuple[str, ...] | None = None) -> None:  # fmt: skip
        self.store = store
        self.snap = snapshot
        self.expr = restrict(expr, use_cases)
        self.o = options
        self.rows = 0

    @property
    def versions(self) -> dict[str, int]:
        return {n: t.version for n, t in self.snap.tables.items()}

    def warnings(
        self, use_cases: tuple[str, ...] | None = None, allowed: tuple[str, ...] | None = None
    ) -> list[str]:
        """Why the export may well come out empty, said before it starts (the API's
        ``X-Istore-Warning``, the CLI's standard error): use cases with no interaction,
        a scoring metric with no feedback, pairs asked for with nothing to pair.
        ``use_cases``: the ones asked for by name; ``allowed``: all the caller may see
        (None: every use case), the only ones looked at."""
        out = []
        known = self._use_cases_stored(allowed)
        missing = [u for u in use_cases or () if u not in known]
        if missing:
            listed = ", ".join(sorted(known)[:10]) or "none yet"
            out.append(f"no interaction in use case {', '.join(map(repr, missing))} "
                       f"(use cases with data: {listed})")  # fmt: skip
        has = self._has
        if self.o.metric is not None and not has(
            "feedback", "metric = ?", [self.o.metric], allowed
        ):
            out.append(f"metric {self.o.metric!r}: no feedback with this metric, so nothing "
                       "is scored by it")  # fmt: skip
        compared = self.o.format in PAIR_FORMATS and has("comparisons", "tied IS NULL", [], allowed)
        if compared and self.o.comparisons:  # (reads the compared prompts: only if any)
            mixed = self._mixed_comparisons(allowed)
            if mixed:
                out.append(f"{mixed} comparison{'s' if mixed != 1 else ''} left out: the two "
                           "sides answer different prompts")  # fmt: skip
        if self.o.format in PAIR_FORMATS and self.o.metric is None and not compared:
            out.append("no comparisons to pair: log some (POST /api/v1/comparison) or give "
                       "metric=<a feedback metric> to pair answers to the same prompt")  # fmt: skip
        return out

    def _mixed_comparisons(self, allowed: tuple[str, ...] | None) -> int:
        """Comparisons (logged before ``POST /comparison`` checked it) whose sides answer
        different prompts."""
        t = self.store.query(
            "SELECT c.messages AS c, p.messages AS p, o.messages AS o FROM comparisons c "
            "LEFT JOIN interactions p ON p.id = c.preferred_id "
            "LEFT JOIN interactions o ON o.id = c.other_id WHERE c.tied IS NULL AND "
            "(c.messages <> p.messages OR c.messages <> o.messages OR p.messages <> o.messages)",
            snapshot=self.snap,
            use_cases=allowed,
        )
        return sum(1 for r in t.to_pylist() if not one_prompt(r["c"], r["p"], r["o"]))

    def _use_cases_stored(self, allowed: tuple[str, ...] | None) -> set[str]:
        t = self.snap.tables["interactions"]
        found = {str(f.partition.get("use_case")) for f in t.files}
        if t.pending.num_rows:
            found.update(str(u) for u in t.pending.column("use_case").to_pylist())
        return found if allowed is None else found & set(allowed)

    def _has(
        self, table: str, where: str, params: list[Any], allowed: tuple[str, ...] | None
    ) -> bool:
        got = self.store.query(
            f"SELECT 1 AS x FROM {table} WHERE {where} LIMIT 1",
            params,
            snapshot=self.snap,
            use_cases=allowed,
        )
        return got.num_rows > 0

    # -- selection ----------------------------------------------------------------------
    def _selected(self, source: str = "interactions") -> tuple[str, list[Any]]:
        """SQL (and parameters) of the selected interactions of ``source`` (the view, or
        a scan of some of its files), in export order."""
        where, params = self.expr.where()
        conds = [f"({where})"]
        if not self.o.include_errors:
            conds.append("status = 'ok'")
        score = "NULL"
        if self.o.metric is not None:
            score = (
                "(SELECT avg(value) FROM feedback f WHERE f.completion_id = i.id AND f.metric = ?)"
            )
        sql = f"SELECT {_COLUMNS}, {score} AS score FROM {source} i WHERE {' AND '.join(conds)}"
        args: list[Any] = ([self.o.metric] if self.o.metric is not None else []) + params
        if self.o.dedupe:
            sql = (
                f"SELECT * FROM ({sql}) QUALIFY row_number() OVER (PARTITION BY messages "
                "ORDER BY score DESC NULLS LAST, created_at DESC, id DESC) = 1"
            )
        sql = f"SELECT * FROM ({sql}) ORDER BY created_at, id"
        return sql, args

    def _feedbacks(self, ids: list[str]) -> dict[str, dict[str, float]]:
        if not ids:
            return {}
        rows = self.store.query(
            "SELECT completion_id, metric, value FROM feedback "
            "WHERE list_contains(?, completion_id) ORDER BY created_at, id",
            [ids],
            snapshot=self.snap,
        ).to_pylist()
        out: dict[str, dict[str, float]] = {}
        for r in rows:  # the latest value of each metric wins
            out.setdefault(r["completion_id"], {})[r["metric"]] = r["value"]
        return out

    def _keep(self, row: dict[str, Any], messages: list[dict[str, Any]]) -> bool:
        if self.o.min_turns is not None:
            turns = sum(1 for m in messages if m.get("role") == "user")
            if turns < self.o.min_turns:
                return False
        if self.o.max_chars is not None and _chars(messages, _text(row)) > self.o.max_chars:
            return False
        return True

    # -- SFT ----------------------------------------------------------------------------
    def sft(self, part: str | None = None) -> Iterator[tuple[str, bytes]]:
        """(side, JSONL line) for each selected interaction; side is "train",
        "validation", or "all" without a split. The stored messages are JSON already:
        they are spliced into the line as they are, not parsed and written again."""
        n = 0
        guards = self.o.min_turns is not None or self.o.max_chars is not None
        names = ("id", "messages", "completion", "completion_message", "params")
        for batch in self._batches(", ".join(names)):
            # Column by column, no dict per row: at a million rows that is most of the cost.
            cols = [batch.column(c).to_pylist() for c in names]
            fbs = self._feedbacks(cols[0]) if self.o.include_feedback else {}
            for id_, messages_json, completion, message, params in zip(*cols, strict=True):
                if guards:
                    row = {"completion": completion}
                    if not self._keep(row, loads(messages_json)):
                        continue
                messages = messages_json.encode()
                if self.o.format == "openai":
                    if message is None:
                        answer = b'{"role":"assistant","content":' + _dump(completion) + b"}"
                    else:
                        answer = _dump(_assistant({"completion_message": message}))
                    line = b'{"messages":' + messages[:-1] + b"," + answer + b"]"
                    if params and ('"tools"' in params or '"parallel_tool_calls"' in params):
                        parsed = loads(params)
                        for key, value in (
                            _tools(parsed) if isinstance(parsed, dict) else {}
                        ).items():
                            line += b',"' + key.encode() + b'":' + _dump(value)
                    line += b"}\n"
                else:
                    line = b'{"messages":' + messages + b',"completion":' + _dump(completion or "")
                    if self.o.include_feedback:
                        line += b',"feedbacks":' + _dump(fbs.get(id_, {}))
                    line += b"}\n"
                side = self._side(messages_json)
                if part is not None and side != part:
                    continue
                yield side, line
                n += 1
                if self.o.max_examples is not None and n >= self.o.max_examples:
                    return

    def _batches(self, columns: str) -> Iterator[pa.RecordBatch]:
        """``columns`` of the selected interactions in export order, a UTC day of files
        at a time (days are partitions, so the order holds across them): the first
        rows come at once and memory stays that of one day. ``dedupe`` compares across
        days, so it reads everything in one query."""
        if self.o.dedupe:
            sql, args = self._selected()
            yield from self.store.stream(f"SELECT {columns} FROM ({sql})", args, self.snap,
                                         BATCH_ROWS)  # fmt: skip
            return
        for source in self._sources():
            sql, args = self._selected(source)
            yield from self.store.stream(f"SELECT {columns} FROM ({sql})", args, self.snap,
                                         BATCH_ROWS)  # fmt: skip

    def _sources(self) -> Iterator[str]:
        """The interactions the filter can touch, one UTC day of files at a time, in
        day order, as relations (amendments applied)."""
        t = self.snap.tables["interactions"]
        for paths in files_by_day(self.expr, t.files).values():
            yield effective(self.snap, "interactions", Duck.scan_sql(INTERACTIONS_TABLE, paths))

    def _side(self, messages_json: str) -> str:
        if self.o.split is None:
            return "all"
        return "train" if in_train(messages_json, self.o.split) else "validation"

    def parquet(self) -> Iterator[bytes]:
        """The selected interactions (all columns) with their feedback, one Parquet
        file, streamed a row group at a time (memory: one batch, never the file)."""
        where, params = self.expr.where()
        conds = [f"({where})"] + ([] if self.o.include_errors else ["status = 'ok'"])
        sink = _Sink()
        writer: pq.ParquetWriter | None = None
        for source in self._sources():
            sql = (
                "SELECT i.*, (SELECT list(struct_pack(metric := f.metric, value := f.value, "
                "created_at := f.created_at) ORDER BY f.created_at, f.id) FROM feedback f "
                f"WHERE f.completion_id = i.id) AS feedback FROM {source} i "
                f"WHERE {' AND '.join(conds)} ORDER BY created_at, id"
            )
            for batch in self.store.stream(sql, params, self.snap, BATCH_ROWS):
                if self.o.max_examples is not None:
                    batch = batch.slice(0, max(self.o.max_examples - self.rows, 0))
                if writer is None:
                    writer = pq.ParquetWriter(sink, batch.schema, compression="zstd")
                if batch.num_rows:
                    writer.write_table(pa.Table.from_batches([batch]))
                self.rows += batch.num_rows
                yield sink.take()
            if self.o.max_examples is not None and self.rows >= self.o.max_examples:
                break
        if writer is None:  # nothing selected: a valid file with no rows
            schema = pa.schema([*INTERACTIONS_TABLE.schema, pa.field("feedback", pa.null())])
            writer = pq.ParquetWriter(sink, schema, compression="zstd")
        writer.close()
        yield sink.take()

    # -- preference pairs ---------------------------------------------------------------
    def pairs(self, part: str | None = None) -> Iterator[tuple[str, bytes]]:
        """(side, JSONL line) for each preference pair (only ``part``'s when given)."""
        n = 0
        for source in (self._comparison_pairs(), self._feedback_pairs()):
            for messages_json, metric, better, worse, params in source:
                side = self._side(messages_json)
                if part is not None and side != part:
                    continue
                messages = loads(messages_json)
                if not _has_answer(better) or not _has_answer(worse):
                    continue
                if not self._keep({"completion": better.get("content") or ""}, messages):
                    continue
                pair = self._pair(messages, metric, better, worse, params)
                yield side, _dump(pair) + b"\n"
                n += 1
                if self.o.max_examples is not None and n >= self.o.max_examples:
                    return

    def _pair(self, messages: list[dict[str, Any]], metric: str, better: dict[str, Any],
              worse: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        if self.o.format == "dpo":
            return {"prompt": messages, "chosen": [better], "rejected": [worse]}
        if self.o.format == "openai-dpo":
            inp: dict[str, Any] = {"messages": messages, **_tools(params)}
            return {"input": inp, "preferred_output": [better], "non_preferred_output": [worse]}
        return {"messages": messages, "preferred_completion": better.get("content") or "",
                "other_completion": worse.get("content") or "", "feedback_key": metric}  # fmt: skip

    def _comparison_pairs(self) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any],
                                                  dict[str, Any]]]:  # fmt: skip
        if not self.o.comparisons:
            return
        sql, args = self._selected()
        selected = f"({sql})"
        use_cases = _use_cases(self.expr)
        only = "" if use_cases is None else "AND list_contains(?, c.use_case)"
        # A comparison given all inline has no interaction to filter: it is kept only
        # when the filter has no more than use case and time conditions (applied to
        # the comparison), so a model or label filter leaves inline comparisons out.
        inline = _inline_conditions(self.expr)
        if inline is None:
            only += " AND (c.preferred_id IS NOT NULL OR c.other_id IS NOT NULL)"
        else:
            since, until = inline
            if since is not None:
                only += " AND (c.preferred_id IS NOT NULL OR c.other_id IS NOT NULL OR "
                only += f"c.created_at >= '{since.isoformat()}'::TIMESTAMPTZ)"
            if until is not None:
                only += " AND (c.preferred_id IS NOT NULL OR c.other_id IS NOT NULL OR "
                only += f"c.created_at < '{until.isoformat()}'::TIMESTAMPTZ)"
        q = (
            "SELECT c.id, c.metric, c.messages AS c_messages, c.preferred_text, c.other_text, "
            "p.id AS p_id, p.messages AS p_messages, p.completion AS p_completion, "
            "p.completion_message AS p_message, p.params AS p_params, "
            "o.id AS o_id, o.completion AS o_completion, o.completion_message AS o_message, "
            "o.messages AS o_messages, c.preferred_id, c.other_id "
            f"FROM comparisons c LEFT JOIN {selected} p ON p.id = c.preferred_id "
            f"LEFT JOIN {selected} o ON o.id = c.other_id "
            f"WHERE c.tied IS NULL {only} ORDER BY c.created_at, c.id"
        )
        params = args + args + ([list(use_cases)] if use_cases is not None else [])
        for batch in self.store.stream(q, params, self.snap):
            for r in batch.to_pylist():
                # A side named by id must be a selected interaction.
                if r["preferred_id"] is not None and r["p_id"] is None:
                    continue
                if r["other_id"] is not None and r["o_id"] is None:
                    continue
                messages_json = r["c_messages"] or r["p_messages"] or r["o_messages"]
                if messages_json is None:
                    continue
                if not one_prompt(r["c_messages"], r["p_messages"], r["o_messages"]):
                    continue  # answers to different prompts: no pair (warnings() says so)
                better = (
                    _assistant({"completion": r["p_completion"],
                                "completion_message": r["p_message"]})
                    if r["preferred_id"] is not None
                    else {"role": "assistant", "content": r["preferred_text"]}
                )  # fmt: skip
                worse = (
                    _assistant({"completion": r["o_completion"],
                                "completion_message": r["o_message"]})
                    if r["other_id"] is not None
                    else {"role": "assistant", "content": r["other_text"]}
                )  # fmt: skip
                params = loads(r["p_params"]) if r.get("p_params") else {}
                yield messages_json, r["metric"], better, worse, params or {}

    def _feedback_pairs(self) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any],
                                                dict[str, Any]]]:  # fmt: skip
        metric = self.o.metric
        if metric is None:
            return
        sql, args = self._selected()
        q = (
            f"SELECT * FROM ({sql}) WHERE score IS NOT NULL "
            "ORDER BY messages, score DESC, created_at DESC, id DESC"
        )
        group: list[dict[str, Any]] = []
        out: list[tuple[str, str, dict[str, Any], dict[str, Any], dict[str, Any]]] = []

        def flush() -> None:
            if len(group) < 2:
                return
            best = group[0]
            for other in group[1:]:
                margin = best["score"] - other["score"]
                # (a tolerance, so 0.3 - 0.1 counts as a margin of 0.2)
                if margin > 1e-9 and margin >= self.o.min_margin - 1e-9:
                    params = loads(best["params"]) if best.get("params") else {}
                    out.append((best["messages"], metric, _assistant(best), _assistant(other),
                                params or {}))  # fmt: skip

        for batch in self.store.stream(q, args, self.snap):
            for r in batch.to_pylist():
                if group and group[0]["messages"] != r["messages"]:
                    flush()
                    group = []
                if self._keep(r, loads(r["messages"])):
                    group.append(r)
        flush()
        yield from out  # grouped by prompt, prompts in the order of their stored messages


def one_prompt(*messages_json: str | None) -> bool:
    """Whether the prompts given (stored messages JSON, None for absent) are one: the
    same messages, whatever the order of their keys."""
    present = [m for m in messages_json if m is not None]
    if len(set(present)) <= 1:
        return True
    first = loads(present[0])
    return all(loads(m) == first for m in present[1:])


def _inline_conditions(expr: Expr) -> tuple[Any, Any] | None:
    """(since, until) when ``expr`` holds only use case and time conditions (ANDed);
    None when it has others, which inline comparisons cannot meet."""
    from store.filters import And

    parts = list(expr.parts) if isinstance(expr, And) else [expr]
    since = until = None
    for p in parts:
        if isinstance(p, And):
            sub = _inline_conditions(p)
            if sub is None:
                return None
            since, until = since or sub[0], until or sub[1]
            continue
        if not isinstance(p, Filter):
            return None
        extra = Filter(use_case=p.use_case, since=p.since, until=p.until)
        if p != extra:
            return None
        since, until = p.since or since, p.until or until
    return since, until


def _use_cases(expr: Expr) -> tuple[str, ...] | None:
    from store.filters import And

    if isinstance(expr, Filter):
        return expr.use_case or None
    if isinstance(expr, And):
        for p in expr.parts:
            found = _use_cases(p)
            if found:
                return found
    return None


def jsonl(lines: Iterator[tuple[str, bytes]], side: str) -> Iterator[bytes]:
    """The lines of one side ("all", "train" or "validation"), in chunks."""
    chunk: list[bytes] = []
    for s, line in lines:
        if side != "all" and s != side:
            continue
        chunk.append(line)
        if len(chunk) >= 512:
            yield b"".join(chunk)
            chunk = []
    if chunk:
        yield b"".join(chunk)


def manifest(options: ExportOptions, versions: dict[str, int], files: dict[str, str],
             rows: dict[str, int]) -> dict[str, Any]:  # fmt: skip
    """What an export was cut from and what it holds (files: name → sha256 hex)."""
    opts = asdict(options)
    filters = opts.pop("filters")
    return {
        "tool": TOOL_VERSION,
        "format": options.format,
        "versions": versions,
        "filters": filters,
        "options": opts,
        "rows": rows,
        "files": files,
    }
