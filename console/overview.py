"""The overview's numbers: totals, series over time split by one dimension, and A/B
campaigns arm by arm, all from ``store.stats.stats`` (what ``GET
/api/v1/interactions/stats`` answers): two queries for the page, one for the campaigns
(fetched by the page once it is shown).

A relative range (24 h, 7 d, 30 d) ends now; when nothing falls in it but older data
exists (a store that stopped receiving, the sample data), it ends at the newest
interaction instead, and the page says so. Ranges up to 2 days are bucketed by hour,
longer ones by day (``bucket`` chooses). A split shows its ``TOP`` largest values; the
page says how many there were."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from store import stats as agg
from store.errors import ValidationFailed
from store.filters import Filter

RANGES = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
SPLITS = ("use_case", "model", "ab_campaign", "source", "status")
TOP = 8
BASE_METRICS = ["count", "error_rate", "p50_latency_ms", "p95_latency_ms", "sum_tokens"]


@dataclass
class Span:
    since: datetime
    until: datetime
    bucket: str  # hour | day
    shifted: bool = False  # anchored at the newest interaction, not now


def span_of(flt: Filter, range_: str, now: datetime, bucket: str | None = None) -> Span:
    if flt.since is not None or flt.until is not None:
        until = flt.until or now
        since = flt.since or until - RANGES["30d"]
        if since >= until:
            raise ValidationFailed("from: must be before to", param="from")
    else:
        if range_ not in RANGES:
            raise ValidationFailed(f"range: one of {', '.join(RANGES)}", param="range")
        until = now
        since = until - RANGES[range_]
    if bucket is None:
        bucket = "hour" if until - since <= timedelta(days=2) else "day"
    elif bucket not in ("hour", "day"):
        raise ValidationFailed("bucket: hour or day", param="bucket")
    elif bucket == "hour" and until - since > timedelta(days=31):
        raise ValidationFailed("bucket: hours only for ranges up to 31 days", param="bucket")
    return Span(since, until, bucket)


def _trunc(ts: datetime, bucket: str) -> datetime:
    ts = ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return ts.replace(hour=0) if bucket == "day" else ts


def buckets(span: Span) -> list[datetime]:
    step = timedelta(hours=1) if span.bucket == "hour" else timedelta(days=1)
    out: list[datetime] = []
    t = _trunc(span.since, span.bucket)
    while t < span.until and len(out) < 2000:
        out.append(t)
        t += step
    return out


def newest(store: Any, flt: Filter, use_cases: tuple[str, ...] | None) -> datetime | None:
    """The newest interaction the filter (without its times) matches."""
    rows = agg.use_cases(store, replace(flt, since=None, until=None), use_cases=use_cases)
    if not rows:
        return None
    return max(datetime.fromisoformat(r["last_at"].replace("Z", "+00:00")) for r in rows)


def _key(split: str, row: dict[str, Any]) -> str:
    value = row.get(split)
    return "(none)" if value is None else str(value)


def ci95(mean: float | None, sd: float | None, n: int | None) -> tuple[float, float] | None:
    if mean is None or sd is None or not n or n < 2:
        return None
    half = 1.96 * sd / math.sqrt(n)
    return mean - half, mean + half


def build(
    store: Any,
    flt: Filter,
    range_: str,
    split: str,
    metric: str | None,
    use_cases: tuple[str, ...] | None,
    now: datetime,
    bucket: str | None = None,
) -> dict[str, Any]:
    span = span_of(flt, range_, now, bucket)
    custom = flt.since is not None or flt.until is not None
    feedback = [f"avg_feedback:{metric}", f"count_feedback:{metric}"] if metric else []

    def run(group_by: list[str], metrics: list[str], s: Span) -> list[dict[str, Any]]:
        f = replace(flt, since=s.since, until=s.until)
        return list(agg.stats(store, f, group_by, metrics, use_cases=use_cases)["data"])

    # The totals' feedback mean comes from the series (each group's mean weighted by its
    # count is exact): one join with the feedback view per page, not two.
    totals = run([], BASE_METRICS, span)[0]
    if not totals["count"] and not custom:
        last = newest(store, flt, use_cases)
        if last is not None:
            until = _trunc(last, "hour") + timedelta(hours=1)
            span = Span(until - RANGES[range_], until, span.bucket, shifted=True)
            totals = run([], BASE_METRICS, span)[0]
    rows = run([span.bucket, split], BASE_METRICS + feedback, span)
    if metric:
        avg, cnt = f"avg_feedback:{metric}", f"count_feedback:{metric}"
        n = sum(int(r[cnt] or 0) for r in rows)
        total = sum(float(r[avg] or 0) * int(r[cnt] or 0) for r in rows)
        totals[f"count_feedback:{metric}"] = n
        totals[f"avg_feedback:{metric}"] = total / n if n else None
    xs = buckets(span)
    index = {t.strftime("%Y-%m-%dT%H:%M:%SZ"): i for i, t in enumerate(xs)}
    sizes: dict[str, int] = {}
    for r in rows:
        sizes[_key(split, r)] = sizes.get(_key(split, r), 0) + int(r["count"] or 0)
    names = sorted(sizes, key=lambda k: (-sizes[k], k))
    shown = names[:TOP]

    def chart(cid: str, title: str, unit: str, metric_name: str, scale: float = 1.0) -> Any:
        values: dict[str, list[float | None]] = {n: [None] * len(xs) for n in shown}
        for r in rows:
            name = _key(split, r)
            i = index.get(r[span.bucket])
            if name in values and i is not None and r[metric_name] is not None:
                values[name][i] = round(float(r[metric_name]) * scale, 3)
        return {
            "id": cid, "title": title, "unit": unit,
            "x": [int(t.timestamp()) for t in xs],
            "series": [{"label": n, "values": values[n]} for n in shown],
        }  # fmt: skip

    charts = [
        chart("volume", "Interactions", "interactions", "count"),
        chart("errors", "Error rate", "%", "error_rate", 100.0),
        chart("p50", "Latency p50", "ms", "p50_latency_ms"),
        chart("p95", "Latency p95", "ms", "p95_latency_ms"),
        chart("tokens", "Tokens", "tokens", "sum_tokens"),
    ]
    if metric:
        charts.append(chart("feedback", f"Feedback: mean {metric}", metric,
                            f"avg_feedback:{metric}"))  # fmt: skip
    return {
        "span": span,
        "totals": totals,
        "charts": charts,
        "split_values": len(names),
    }


def campaigns(
    store: Any, flt: Filter, metric: str | None, use_cases: tuple[str, ...] | None
) -> list[dict[str, Any]]:
    """A/B campaigns of the filter's interactions; each arm is a model of the campaign.
    (Loaded by the page after it is shown: a fourth query over the range.)"""

    def run(group_by: list[str], metrics: list[str], _: Any) -> list[dict[str, Any]]:
        return list(agg.stats(store, flt, group_by, metrics, use_cases=use_cases)["data"])

    span = None
    fb = ([f"avg_feedback:{metric}", f"std_feedback:{metric}", f"count_feedback:{metric}"]
          if metric else [])  # fmt: skip
    rows = run(["ab_campaign", "use_case", "model"],
               ["count", "p50_latency_ms", "p95_latency_ms", "error_rate", *fb], span)  # fmt: skip
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        if r["ab_campaign"] is None:
            continue
        c = out.setdefault(
            (r["ab_campaign"], r["use_case"]),
            {"name": r["ab_campaign"], "use_case": r["use_case"], "arms": []},
        )
        arm = {"model": r["model"], "count": r["count"], "p50": r["p50_latency_ms"],
               "p95": r["p95_latency_ms"], "error_rate": r["error_rate"],
               "mean": None, "n": 0, "ci": None}  # fmt: skip
        if metric:
            arm["mean"] = r[f"avg_feedback:{metric}"]
            arm["n"] = r[f"count_feedback:{metric}"]
            arm["ci"] = ci95(arm["mean"], r[f"std_feedback:{metric}"], arm["n"])
        c["arms"].append(arm)
    for c in out.values():
        c["arms"].sort(key=lambda a: -a["count"])
        c["count"] = sum(a["count"] for a in c["arms"])
    return sorted(out.values(), key=lambda c: -c["count"])
