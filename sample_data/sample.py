"""The sample that `make serve` loads into an empty store (``istore serve
--load-sample-if-empty``), made when it is loaded so that the README's examples return
what they show on any day.

It is the generator's 3,000 interactions (``generate.py``, seed 7) with:

- **dates relative to today**: the 14 days before today's midnight (UTC), shifted by
  whole days so the content is the same whatever the day; only the dates move;
- **the README's vocabulary**: ``support``'s project label is ``RAG Bot``, its
  ``invoice`` and ``refund`` topics are ``billing`` and ``spare-parts`` is
  ``Industrial Tools``; one user who has 12 interactions is ``alice@example.com``;
- **preference data**: for 40 rated answers of ``support`` and ``rag-bot``, a second
  answer to the very same prompt by another model, rated at least 2 apart (so
  ``export?format=dpo&metric=rating&min_margin=1`` has pairs), and for the first 20 of
  them a comparison (``helpful``) preferring the better-rated one;
- **outcomes**: ``resolved`` on 30 sessions of ``support``.

Deterministic: the same day gives the same bytes. Standard library only, except
``load`` (which writes to a store); ``python3 -m sample_data.sample`` prints today's
interactions as NDJSON (what ``load`` stores, feedback inline)."""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sample_data.generate import DEFAULT_START, USE_CASES, dumps, generate

SEED = 7
N = 3000
DAYS = 14
PAIRS = 40  # rated answers that get a second answer to the same prompt
COMPARED = 20  # of those, with an explicit comparison
OUTCOMES = 30
PROJECT = {"support": "RAG Bot"}
TOPICS = {"invoice": "billing", "refund": "billing", "spare-parts": "Industrial Tools"}
PERSON = "alice@example.com"


@dataclass
class Sample:
    interactions: list[dict[str, Any]]  # the ingest shape (feedbacks inline)
    comparisons: list[dict[str, Any]] = field(default_factory=list)  # POST /comparison bodies
    outcomes: list[dict[str, Any]] = field(default_factory=list)  # POST /outcome bodies


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{t.microsecond // 1000:03d}Z"


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def build(today: date | None = None) -> Sample:
    """The sample for ``today`` (default: today, UTC)."""
    today = today or datetime.now(UTC).date()
    end = datetime(today.year, today.month, today.day, tzinfo=UTC)
    shift = end - DEFAULT_START  # whole days: the hours and weekdays' shape is kept
    items = list(generate(N, seed=SEED, start=DEFAULT_START, days=DAYS))
    for item in items:
        item["created_at"] = _iso(_time(item["created_at"]) + shift)
        labels = item.get("labels")
        if labels:
            uc = item["use_case"]
            if uc in PROJECT and labels.get("project") == USE_CASES[uc]["project"]:
                labels["project"] = PROJECT[uc]
            if uc == "support" and labels.get("topic") in TOPICS:
                labels["topic"] = TOPICS[labels["topic"]]
    _rename_person(items)
    rng = random.Random(f"sample-{SEED}")
    extra, comparisons = _second_answers(items, rng, end)
    outcomes = _outcomes(items, rng, end)
    interactions = sorted(items + extra, key=lambda x: (x["created_at"], x["id"]))
    return Sample(interactions, comparisons, outcomes)


def _rename_person(items: list[dict[str, Any]]) -> None:
    """The first user (in time order) with exactly 12 interactions becomes ``PERSON``,
    whose data the README deletes."""
    counts = Counter(x.get("user") for x in items if x.get("user"))
    who = next((x["user"] for x in items if x.get("user") and counts[x["user"]] == 12), None)
    for x in items:
        if who is not None and x.get("user") == who:
            x["user"] = PERSON


def _before(t: datetime, end: datetime) -> str:
    """``t``, or just before ``end`` (nothing in the sample is dated today)."""
    return _iso(min(t, end - timedelta(seconds=1)))


def _second_answers(
    items: list[dict[str, Any]], rng: random.Random, end: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Another model's answer to the same prompt for ``PAIRS`` rated answers, rated
    at least 2 apart, and comparisons for the first ``COMPARED``."""
    by_use_case: dict[str, list[str]] = {}
    for x in items:
        if isinstance(x.get("completion"), str) and x["completion"]:
            by_use_case.setdefault(x["use_case"], []).append(x["completion"])
    rated = [
        x for x in items
        if x["use_case"] in ("support", "rag-bot") and isinstance(x.get("completion"), str)
        and any(f["metric"] == "rating" for f in x.get("feedbacks") or ())
    ][:PAIRS]  # fmt: skip
    extra, comparisons = [], []
    for k, x in enumerate(rated):
        rating = next(f["value"] for f in x["feedbacks"] if f["metric"] == "rating")
        other_rating = rng.choice([1, 2]) if rating >= 4 else 5
        models = [m for m in USE_CASES[x["use_case"]]["models"] if m != x["model"]]
        twin = json.loads(json.dumps(x))  # the same prompt, labels, session …
        twin.update({
            "id": f"smp-{SEED}-alt{k:03d}",
            "model": rng.choice(models),
            "completion": rng.choice(by_use_case[x["use_case"]]),
            "created_at": _before(_time(x["created_at"]) + timedelta(minutes=rng.randint(2, 90)),
                                  end),
            "feedbacks": [{"metric": "rating", "value": other_rating}],
        })  # fmt: skip
        extra.append(twin)
        if k < COMPARED:
            better, worse = (x, twin) if rating > other_rating else (twin, x)
            comparisons.append({"metric": "helpful", "use_case": x["use_case"],
                                "preferred_completion": better["id"],
                                "other_completion": worse["id"],
                                "created_at": _before(_time(twin["created_at"])
                                                      + timedelta(hours=1), end)})  # fmt: skip
    return extra, comparisons


def _outcomes(
    items: list[dict[str, Any]], rng: random.Random, end: datetime
) -> list[dict[str, Any]]:
    sessions: list[str] = []
    last: dict[str, str] = {}
    for x in items:
        sid = x.get("session_id")
        if x["use_case"] == "support" and sid:
            if sid not in last:
                sessions.append(sid)
            last[sid] = x["created_at"]
    out = []
    for sid in sessions[:OUTCOMES]:
        at = _before(_time(last[sid]) + timedelta(minutes=30), end)
        out.append({"session_id": sid, "use_case": "support", "metric": "resolved",
                    "value": rng.random() < 0.7, "created_at": at})  # fmt: skip
    return out


def load(store: Any, today: date | None = None) -> dict[str, int]:
    """Store the sample (``build``) in ``store``, flushed into the tables; what was
    stored, per table."""
    from ingest import pipeline
    from ingest.feedback import ComparisonIn, OutcomeIn, comparison_rows, outcome_rows
    from ingest.parse import expand
    from store.schema import COMPARISONS_TABLE, OUTCOMES_TABLE

    sample = build(today)
    canon = [c for x in sample.interactions for c in expand(x)]
    acks = [
        pipeline.submit(store, canon[i : i + 2000], source="import").ack
        for i in range(0, len(canon), 2000)
    ]
    stored = sum(a.result(60).stored for a in acks)
    for body in sample.comparisons:
        cols, _ = comparison_rows(ComparisonIn.model_validate(body), body["use_case"])
        store.write(COMPARISONS_TABLE, cols).result(60)
    for body in sample.outcomes:
        cols, _ = outcome_rows(OutcomeIn.model_validate(body))
        store.write(OUTCOMES_TABLE, cols).result(60)
    store.flush()
    feedback = sum(len(x.get("feedbacks") or ()) for x in sample.interactions)
    return {"interactions": stored, "feedback": feedback if stored else 0,
            "comparisons": len(sample.comparisons), "outcomes": len(sample.outcomes)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Today's sample interactions as NDJSON on standard output."""
    for item in build().interactions:
        sys.stdout.write(dumps(item) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
