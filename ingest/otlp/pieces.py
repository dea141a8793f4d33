"""Decoded records → the pieces the receiver keeps: LLM-call spans and their GenAI log
records, each checked on its own (ids, limits, the caller's use cases) so that a bad
one is refused in the response's ``partial_success`` and never becomes part of an
interaction."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ingest.otlp import mapping
from ingest.otlp.decode import Decoded
from ingest.otlp.genai import from_events
from ingest.parse import Limits, check_limits
from store.errors import ValidationFailed


@dataclass(slots=True)
class Piece:
    """A span or log record of one LLM call. ``allowed``: the use cases its sender may
    write (None: all), so a joined interaction takes only what its use case's writers
    sent. ``item``: a span's interaction on its own (validated), when it is a span."""

    rec: dict[str, Any]
    allowed: list[str] | None
    at: float
    item: dict[str, Any] | None = None
    ref: tuple[int, int] | None = None  # (lsn, index) in the receiver's log, once there

    @property
    def key(self) -> tuple[str, str]:
        return self.rec["trace_id"], self.rec["span_id"]

    def wire(self) -> dict[str, Any]:
        return {"rec": self.rec, "allowed": self.allowed, "at": self.at}

    @classmethod
    def from_wire(cls, w: dict[str, Any]) -> Piece:
        return cls(w["rec"], w["allowed"], w["at"])


@dataclass
class Extracted:
    pieces: list[Piece] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    forbidden: int = 0  # refused for the use case alone
    calls: int = 0  # LLM-call records seen (kept, rejected or forbidden)
    refused: list[tuple[str, str]] = field(default_factory=list)  # calls whose span was refused


def _forbidden(uc: str, allowed: list[str] | None) -> bool:
    return allowed is not None and uc not in allowed


def from_spans(decoded: Decoded, limits: Limits, allowed: list[str] | None) -> Extracted:
    out = Extracted(rejected=list(decoded.rejected))
    now = time.time()
    for rec in decoded.records:
        if mapping.convention(rec) is None:
            continue  # not an LLM call: accepted, not kept
        out.calls += 1
        where = f"span {rec['name']!r} ({rec['trace_id']}/{rec['span_id']})"
        try:
            item = mapping.interaction(rec, [], limits)
        except mapping.Rejected as exc:
            out.rejected.append(f"{where}: {exc}")
            out.refused.append((rec["trace_id"], rec["span_id"]))
            continue
        if _forbidden(item["use_case"], allowed):
            out.forbidden += 1
            out.rejected.append(f"{where}: this API key may not write use case "
                                f"{item['use_case']!r}")  # fmt: skip
            continue
        out.pieces.append(Piece(rec, allowed, now, item))
    return out


def from_logs(decoded: Decoded, limits: Limits, allowed: list[str] | None) -> Extracted:
    out = Extracted(rejected=list(decoded.rejected))
    now = time.time()
    for rec in decoded.records:
        out.calls += 1
        where = f"log record {rec['event_name']!r} ({rec['trace_id']}/{rec['span_id']})"
        uc = mapping.log_use_case(rec)
        if _forbidden(uc, allowed):
            out.forbidden += 1
            out.rejected.append(f"{where}: this API key may not write use case {uc!r}")
            continue
        f = from_events([rec])
        probe = {"messages": f.get("messages") or [], "completion": f.get("completion")}
        try:
            check_limits(probe, limits, "")
        except ValidationFailed as exc:
            out.rejected.append(f"{where}: {exc.message}")
            continue
        out.pieces.append(Piece(rec, allowed, now))
    return out
