"""Review UI latency under load: 100,000 clips, 20 reviewers at once, over real HTTP.

The store is seeded directly (executemany: sources, clips, consensus rows; no media, no
features: the clip page must render without them). 95% of the clips are routed to review
or audit. The server is uvicorn in a child process (workers as given; the machine has 2
cores); 20 simulated reviewers (asyncio + httpx in this process) each log in, then run a
bounded number of cycles:

    GET /queue  ->  POST /queue/next  ->  GET /clips/{id}  ->  POST /clips/{id}/review

Timed: the queue page and the clip page (time to the full response). Run on SQLite and
on PostgreSQL (a fresh database on the local server, dropped afterwards). Prints p50/p95
per page and database; the LAST line is `p95_ms=<float>`: the worse of the two pages'
p95 on SQLite. Target: 150 ms or lower.

Usage: .venv/bin/python benchmarks/review_bench.py [--clips 100000] [--reviewers 20] [--cycles 10]
       [--workers 1] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx
import sqlalchemy as sa

from merforge.storage import tables
from merforge.storage.reviews import ReviewStore
from merforge.storage.workspace import Workspace

POSTGRES_ADMIN_URL = os.environ.get("MERFORGE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
PASSWORD = "bench-password"
LABELS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
CLIPS_PER_SOURCE = 100


def seed(ws: Workspace, clips: int, reviewers: int) -> None:
    """Sources, clips and consensus rows in bulk; reviewer accounts bench0..benchN-1."""
    rng = random.Random(0)
    now = datetime.now(timezone.utc)
    provenance = {"backend": "bench", "model": "", "version": "", "config_hash": "", "created_at": now.isoformat()}
    sources = max(1, clips // CLIPS_PER_SOURCE)
    source_rows = [{"id": f"{i:064x}", "path": f"/nonexistent/bench/{i}.mp4", "size_bytes": 1, "mtime": 0.0,
                    "status": "ok", "reason": "", "media": None, "license": "", "consent": "", "speaker": "",
                    "group_name": "", "extra": {}, "ingested_at": now} for i in range(sources)]
    clip_rows, consensus_rows = [], []
    for i in range(clips):
        source = i // CLIPS_PER_SOURCE
        start = (i % CLIPS_PER_SOURCE) * 5.0
        clip_id = f"{i:024x}"
        clip_rows.append({"id": clip_id, "source_id": f"{source:064x}", "start_s": start, "end_s": start + 4.0,
                          "origin": "speech", "keyframes": [], "provenance": provenance})
        draw = rng.random()
        route = "review" if draw < 0.9 else "audit" if draw < 0.95 else "auto-accept"
        label = rng.choice(LABELS)
        priority = rng.random()
        confidence = rng.random()
        consensus_rows.append({"clip_id": clip_id, "label": label, "confidence": confidence, "route": route,
                               "priority": priority, "updated_at": now,
                               "record": {"clip_id": clip_id, "label": label, "labels": [label],
                                          "confidence": confidence, "route": route, "priority": priority}})
    with ws.store.engine.begin() as connection:
        connection.execute(tables.sources.insert(), source_rows)
        for chunk in range(0, clips, 10_000):
            connection.execute(tables.clips.insert(), clip_rows[chunk:chunk + 10_000])
            connection.execute(tables.consensus.insert(), consensus_rows[chunk:chunk + 10_000])
    if ws.store.engine.dialect.name == "postgresql":
        with ws.store.engine.begin() as connection:
            connection.execute(sa.text("ANALYZE"))
    store = ReviewStore(ws.store, ws.config.review)
    for n in range(reviewers):
        store.add_reviewer(f"bench{n}", PASSWORD)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(root: Path, port: int, workers: int) -> subprocess.Popen:
    env = {**os.environ, "MERFORGE_WORKSPACE": str(root)}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "merforge.flows.review_cli:app_factory", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the review server exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/login", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the review server did not start within 90 s")


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def reviewer(base: str, name: str, cycles: int, timings: dict[str, list[float]], start_gate: asyncio.Event) -> int:
    """Log in, then `cycles` rounds of queue -> next -> clip -> submit. Returns decisions made."""
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        token = CSRF.search((await client.get("/login")).text).group(1)
        response = await client.post("/login", data={"name": name, "password": PASSWORD, "csrf_token": token})
        assert response.status_code == 303, response.text[:300]
        await start_gate.wait()
        decided = 0
        rng = random.Random(name)
        for _ in range(cycles):
            started = time.perf_counter()
            page = await client.get("/queue")
            timings["queue"].append(time.perf_counter() - started)
            assert page.status_code == 200, page.status_code
            token = CSRF.search(page.text).group(1)
            response = await client.post("/queue/next", data={"csrf_token": token})
            if response.status_code != 303 or not response.headers["location"].startswith("/clips/"):
                break
            clip_url = response.headers["location"]
            started = time.perf_counter()
            page = await client.get(clip_url)
            timings["clip"].append(time.perf_counter() - started)
            assert page.status_code == 200, page.status_code
            decision = rng.choice(["accept", "accept", "correct", "reject"])
            if decision == "accept" and 'id="blind-tag"' in page.text:
                decision = "correct"  # blind items: the reviewer gives the label
            form = {"csrf_token": token, "decision": decision, "seconds_spent": "7.5", "then": "queue"}
            if decision == "correct":
                form["label"] = rng.choice(LABELS)
            response = await client.post(f"{clip_url}/review", data=form)
            assert response.status_code == 303, (response.status_code, response.text[:300])
            decided += 1
        return decided


async def load(base: str, reviewers: int, cycles: int) -> tuple[dict[str, list[float]], int, float]:
    timings: dict[str, list[float]] = {"queue": [], "clip": []}
    gate = asyncio.Event()
    tasks = [asyncio.create_task(reviewer(base, f"bench{n}", cycles, timings, gate)) for n in range(reviewers)]
    await asyncio.sleep(0.5)  # every login done (argon2 is slow on purpose) before the clock starts
    started = time.perf_counter()
    gate.set()
    decided = sum(await asyncio.gather(*tasks))
    return timings, decided, time.perf_counter() - started


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))] * 1000


def run(database: str, url: str, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="review-bench-") as folder:
        ws = Workspace.init(Path(folder) / "ws")
        if url:
            config = ws.root / "merforge.toml"
            config.write_text(config.read_text().replace('database_url = ""', f'database_url = "{url}"'))
            ws.close()
            ws = Workspace.open(ws.root)
        started = time.perf_counter()
        seed(ws, args.clips, args.reviewers)
        print(f"[{database}] seeded {args.clips} clips in {time.perf_counter() - started:.1f} s", flush=True)
        root = ws.root
        ws.close()
        server = start_server(root, free_port() if not args.port else args.port, args.workers)
        try:
            port = int(server.args[server.args.index("--port") + 1])
            timings, decided, wall = asyncio.run(load(f"http://127.0.0.1:{port}", args.reviewers, args.cycles))
        finally:
            server.terminate()
            server.wait(timeout=20)
        result = {}
        for page in ("queue", "clip"):
            values = timings[page]
            result[f"{page}_p50"] = percentile(values, 0.5)
            result[f"{page}_p95"] = percentile(values, 0.95)
            print(f"[{database}] {page} page: n={len(values)} p50={result[f'{page}_p50']:.1f} ms "
                  f"p95={result[f'{page}_p95']:.1f} ms mean={statistics.mean(values) * 1000:.1f} ms", flush=True)
        print(f"[{database}] {decided} decisions by {args.reviewers} reviewers in {wall:.1f} s "
              f"({decided / wall:.1f} decisions/s)", flush=True)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--reviewers", type=int, default=20)
    parser.add_argument("--cycles", type=int, default=10, help="queue->next->clip->submit rounds per reviewer")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()

    sqlite = run("sqlite", "", args)
    if not args.skip_postgres:
        admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        name = f"merforge_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            url = sa.engine.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
            run("postgresql", url, args)
        finally:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    print(f"p95_ms={max(sqlite['queue_p95'], sqlite['clip_p95']):.1f}")


if __name__ == "__main__":
    main()
