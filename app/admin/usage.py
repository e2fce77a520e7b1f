"""Usage per key per day, read from the daily roll-ups (kept longer than the raw rows)."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select

from app.db.clock import utcnow
from app.db.database import Database
from app.db.models import UsageDaily
from app.db.usage_writer import ANONYMOUS_KEY_REF, REJECTED_KEY_REF, STATIC_KEY_REF

CSV_COLUMNS = ("day", "key_id", "key_name", "requests", "errors", "prompt_tokens", "completion_tokens",
               "cached_tokens", "avg_latency_ms")


def key_label(key_ref: int, names: dict[int, str]) -> str:
    if key_ref == ANONYMOUS_KEY_REF:
        return "(no key)"
    if key_ref == STATIC_KEY_REF:
        return "(static --api-key)"
    if key_ref == REJECTED_KEY_REF:
        return "(rejected: no valid key)"
    return names.get(key_ref, f"key #{key_ref}")


def usage_report(db: Database, names: dict[int, str], *, days: int = 30, key_id: int | None = None) -> dict[str, Any]:
    days = max(1, min(days, 3650))
    today = utcnow().date()
    start = today - timedelta(days=days - 1)
    stmt = (
        select(
            UsageDaily.day, UsageDaily.key_ref,
            func.sum(UsageDaily.requests), func.sum(UsageDaily.errors), func.sum(UsageDaily.prompt_tokens),
            func.sum(UsageDaily.completion_tokens), func.sum(UsageDaily.cached_tokens),
            func.sum(UsageDaily.latency_ms_sum),
        )
        .where(UsageDaily.day >= start)
        .group_by(UsageDaily.day, UsageDaily.key_ref)
        .order_by(UsageDaily.day.desc(), UsageDaily.key_ref)
    )
    if key_id is not None:
        stmt = stmt.where(UsageDaily.key_ref == key_id)
    with db.session() as s:
        result = s.execute(stmt).all()
    rows = []
    totals = dict(requests=0, errors=0, prompt_tokens=0, completion_tokens=0, cached_tokens=0)
    for day, key_ref, req, err, prompt, completion, cached, latency in result:
        row = {
            "day": day.isoformat() if isinstance(day, date) else str(day),
            "key_id": key_ref if key_ref > 0 else None,
            "key_name": key_label(key_ref, names),
            "requests": int(req or 0), "errors": int(err or 0), "prompt_tokens": int(prompt or 0),
            "completion_tokens": int(completion or 0), "cached_tokens": int(cached or 0),
            "avg_latency_ms": round(float(latency or 0) / req, 1) if req else 0.0,
        }
        rows.append(row)
        for k in totals:
            totals[k] += row[k]
    return {"start": start.isoformat(), "end": today.isoformat(), "days": days, "rows": rows, "totals": totals,
            "chart": _chart(rows, start, today)}


def _chart(rows: list[dict[str, Any]], start: date, end: date) -> dict[str, Any]:
    """Total tokens (prompt + completion) per day, one series per key, for a stacked bar chart."""
    labels = [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
    index = {d: i for i, d in enumerate(labels)}
    series: dict[str, list[int]] = {}
    requests: dict[str, list[int]] = {}
    for r in rows:
        name = r["key_name"]
        series.setdefault(name, [0] * len(labels))[index[r["day"]]] += r["prompt_tokens"] + r["completion_tokens"]
        requests.setdefault(name, [0] * len(labels))[index[r["day"]]] += r["requests"]
    return {"labels": labels, "tokens": series, "requests": requests}


def usage_csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in report["rows"]:
        # A key name starting with = + - @ would run as a formula in a spreadsheet; quote it as text.
        name = row["key_name"]
        writer.writerow({**row, "key_name": "'" + name if name[:1] in "=+-@" else name})
    return buf.getvalue()
