"""Every record of a workspace as plain data, without what legitimately differs between two runs
(timestamps, latencies, wall-time measurements, the workspace's own path), for equality checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa

VOLATILE = {"created_at", "updated_at", "ingested_at", "claimed_at", "expires_at", "latency_s", "timings", "seconds",
            "elapsed_s", "wall_s", "trace", "mtime"}
TABLES = ("sources", "clips", "clip_features", "stage_status", "annotations", "judge_scores", "consensus", "reviews")


def _clean(value: Any, root: str) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v, root) for k, v in sorted(value.items()) if k not in VOLATILE}
    if isinstance(value, (list, tuple)):
        return [_clean(v, root) for v in value]
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, str):
        if value[:1] in "{[":
            try:
                return _clean(json.loads(value), root)
            except ValueError:
                pass
        return value.replace(root, "<workspace>")
    return value


def dump_records(database_url: str, root: Path) -> dict[str, dict]:
    """{table: {primary key: cleaned row}} for the pipeline's tables."""
    engine = sa.create_engine(database_url)
    inspector = sa.inspect(engine)
    out: dict[str, dict] = {}
    try:
        with engine.connect() as connection:
            for table in TABLES:
                if not inspector.has_table(table):
                    continue
                keys = inspector.get_pk_constraint(table)["constrained_columns"]
                rows = connection.execute(sa.text(f"SELECT * FROM {table}")).mappings().all()
                out[table] = {tuple(row[k] for k in keys): _clean(dict(row), str(Path(root).resolve()))
                              for row in rows}
    finally:
        engine.dispose()
    return out


def differences(a: dict[str, dict], b: dict[str, dict], limit: int = 10) -> list[str]:
    """Human-readable differences between two dumps (empty when equal)."""
    found = []
    for table in sorted(set(a) | set(b)):
        rows_a, rows_b = a.get(table, {}), b.get(table, {})
        for key in sorted(set(rows_a) ^ set(rows_b), key=str):
            found.append(f"{table} {key}: only in {'first' if key in rows_a else 'second'}")
        for key in sorted(set(rows_a) & set(rows_b), key=str):
            if rows_a[key] != rows_b[key]:
                diff = [k for k in rows_a[key] if rows_a[key].get(k) != rows_b[key].get(k)]
                found.append(f"{table} {key}: {diff}")
    return found[:limit] + ([f"... {len(found) - limit} more"] if len(found) > limit else [])
