"""Review accounts, the claim queue, blind double annotation and the Label Studio round trip,
on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import statistics
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from merforge.storage import tables
from merforge.storage.config import ReviewConfig
from merforge.storage.records import (
    Annotation,
    Clip,
    ClipFeatures,
    ClipOrigin,
    Consensus,
    MediaInfo,
    Provenance,
    Review,
    ReviewDecision,
    Route,
    Source,
    SourceStatus,
    StageState,
    StageStatus,
    Transcript,
    VideoInfo,
    clip_id,
)
from merforge.storage.reviews import ReviewError, ReviewStore
from merforge.storage.store import Store

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # argon2id, cheap for tests
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def seed(store: Store, priorities: list[float], routes: list[str] | None = None) -> list[str]:
    """One source, a clip per priority and its consensus row (executemany). Returns clip ids."""
    ids = [f"clip{i:06d}" for i in range(len(priorities))]
    routes = routes or ["review"] * len(priorities)
    with store.engine.begin() as connection:
        connection.execute(tables.sources.insert().values(
            id="src", path="/media/src.mp4", size_bytes=1, mtime=0.0, status="ok", reason="", media=None,
            license="", consent="", speaker="", group_name="", extra={}, ingested_at=NOW))
        connection.execute(tables.clips.insert(), [
            {"id": cid, "source_id": "src", "start_s": float(i), "end_s": i + 1.0, "origin": "shot",
             "keyframes": [], "provenance": {}} for i, cid in enumerate(ids)])
        connection.execute(tables.consensus.insert(), [
            {"clip_id": cid, "label": "happiness", "confidence": 0.6, "route": route, "priority": priority,
             "record": {}, "updated_at": NOW} for cid, priority, route in zip(ids, priorities, routes)])
    return ids


def review_store(store: Store, share: float = 0.0, clock=None, claim_minutes: float = 30.0) -> ReviewStore:
    config = ReviewConfig(double_annotation_share=share, claim_minutes=claim_minutes)
    return ReviewStore(store, config, hasher=FAST_HASHER, clock=clock)


def decide(reviews: ReviewStore, clip: str, reviewer: str, decision: str = "accept", label: str | None = None):
    return reviews.submit(Review(id="", clip_id=clip, reviewer=reviewer, decision=ReviewDecision(decision),
                                 label=label, seconds_spent=12.0))


@pytest.fixture
def store(database_url):
    store = Store.open(database_url)
    yield store
    store.close()


# -- accounts ---------------------------------------------------------------------------


def test_accounts_hash_verify_and_reject_duplicates(store):
    reviews = ReviewStore(store, ReviewConfig())  # the default argon2id hasher
    alice = reviews.add_reviewer("alice", "correct horse", is_admin=True)
    assert alice.is_admin and alice.name == "alice"
    with store.engine.connect() as connection:
        stored = connection.execute(sa.select(tables.reviewers.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$") and "correct horse" not in stored

    assert reviews.verify("alice", "correct horse").name == "alice"
    assert reviews.verify("alice", "wrong horse") is None
    assert reviews.verify("nobody", "correct horse") is None

    with pytest.raises(ReviewError, match="already exists"):
        reviews.add_reviewer("alice", "another password")
    with pytest.raises(ReviewError, match="at least 8"):
        reviews.add_reviewer("bob", "short")
    with pytest.raises(ReviewError, match="not usable"):
        reviews.add_reviewer("  ", "long enough")

    reviews.set_password("alice", "battery staple")
    assert reviews.verify("alice", "correct horse") is None
    assert reviews.verify("alice", "battery staple") is not None
    assert [r.name for r in reviews.reviewers()] == ["alice"]
    assert reviews.get_reviewer("bob") is None


def test_verify_rehashes_when_parameters_change(store):
    old = ReviewStore(store, ReviewConfig(), hasher=FAST_HASHER)
    old.add_reviewer("alice", "correct horse")
    stronger = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    assert ReviewStore(store, ReviewConfig(), hasher=stronger).verify("alice", "correct horse") is not None
    with store.engine.connect() as connection:
        stored = connection.execute(sa.select(tables.reviewers.c.password_hash)).scalar_one()
    assert not stronger.check_needs_rehash(stored)


# -- claiming -----------------------------------------------------------------------------


def test_clips_are_claimed_by_priority_across_both_routes(store):
    ids = seed(store, [0.1, 0.9, 0.5, 0.7, 0.3], routes=["review", "audit", "review", "auto-accept", "audit"])
    reviews = review_store(store)
    order = []
    while (item := reviews.next_clip("alice")) is not None:
        assert reviews.next_clip("alice") == item  # a reload returns the claim it holds
        order.append(item.clip_id)
        decide(reviews, item.clip_id, "alice")
    assert order == [ids[1], ids[2], ids[4], ids[0]]  # priority 0.9, 0.5, 0.3, 0.1; auto-accept is not queued


def test_two_reviewers_get_different_clips_and_skips_go_to_others(store):
    ids = seed(store, [0.9, 0.8])
    reviews = review_store(store)
    first, second = reviews.next_clip("alice"), reviews.next_clip("bob")
    assert (first.clip_id, second.clip_id) == (ids[0], ids[1])
    assert reviews.next_clip("carol") is None

    skip = reviews.release(ids[0], "alice")
    assert skip.decision == ReviewDecision.SKIP
    assert reviews.next_clip("carol").clip_id == ids[0]  # free for others at once
    assert reviews.next_clip("alice") is None  # but not back to the reviewer who skipped it


@pytest.mark.parametrize("threads, claims_each", [(8, 30)])
def test_concurrent_reviewers_never_share_a_single_review_clip(database_url, threads, claims_each):
    """Each thread is its own Store (engine and connection pool), as separate processes would be."""
    setup = Store.open(database_url)
    seed(setup, [float(i % 97) for i in range(threads * claims_each + 20)])
    setup.close()
    claimed: list[tuple[str, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    stores = [Store.open(database_url) for _ in range(threads)]  # opened (and migrated) one at a time

    def reviewer(name: str, store: Store) -> None:
        reviews = review_store(store)
        try:
            start.wait(timeout=60)
            for n in range(claims_each):
                item = reviews.next_clip(name)
                assert item is not None
                with lock:
                    claimed.append((item.clip_id, name))
                if n % 5 == 4:
                    reviews.release(item.clip_id, name, record_skip=False)  # given back: another may take it
                    with lock:
                        claimed.remove((item.clip_id, name))
                else:
                    decide(reviews, item.clip_id, name)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)
            start.abort()
        finally:
            store.close()

    workers = [threading.Thread(target=reviewer, args=(f"r{i}", stores[i])) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors, errors
    clip_ids = [clip for clip, _ in claimed]
    assert len(clip_ids) == threads * claims_each * 4 // 5
    assert len(set(clip_ids)) == len(clip_ids), "a single-review clip was decided by two reviewers"
    check = Store.open(database_url)
    with check.engine.connect() as connection:
        per_clip = connection.execute(sa.select(tables.reviews.c.clip_id, sa.func.count())
                                      .group_by(tables.reviews.c.clip_id).having(sa.func.count() > 1)).all()
    check.close()
    assert per_clip == []


def test_double_annotated_clips_go_to_two_reviewers_blind(store):
    ids = seed(store, [0.9])
    reviews = review_store(store, share=1.0)
    assert reviews.is_double(ids[0])
    first, second = reviews.next_clip("alice"), reviews.next_clip("bob")
    assert first.clip_id == second.clip_id == ids[0]
    assert {first.slot, second.slot} == {1, 2} and first.blind and second.blind
    assert reviews.next_clip("carol") is None

    assert reviews.visible_context(ids[0], "alice") == {
        "blind": True, "submitted": False, "show_pipeline": False, "show_other_reviews": False}
    [row] = reviews.queue("bob")
    assert row.label is None and row.confidence is None and row.blind  # the pipeline's label stays hidden

    stored = decide(reviews, ids[0], "alice", "correct", "anger")
    assert stored.blind and stored.pipeline_label == "happiness"
    assert reviews.visible_context(ids[0], "alice")["show_pipeline"] is True
    assert reviews.visible_context(ids[0], "bob")["show_other_reviews"] is False  # bob has not decided yet
    assert reviews.queue(None)[0].state == "claimed"
    decide(reviews, ids[0], "bob")
    [row] = reviews.queue(None)
    assert row.state == "done" and row.reviews == 2 and set(row.reviewed_by) == {"alice", "bob"}


def test_the_double_share_is_deterministic_and_near_the_configured_share(store):
    reviews = review_store(store, share=0.1)
    picks = [reviews.is_double(f"clip{i}") for i in range(20000)]
    assert picks == [reviews.is_double(f"clip{i}") for i in range(20000)]
    assert 0.09 < sum(picks) / len(picks) < 0.11
    assert not any(review_store(store, share=0.0).is_double(f"clip{i}") for i in range(1000))


def test_expired_claims_return_to_the_queue(store):
    ids = seed(store, [0.9])
    now = [NOW]
    reviews = review_store(store, clock=lambda: now[0], claim_minutes=10)
    item = reviews.next_clip("alice")
    assert item.expires_at == NOW + timedelta(minutes=10)
    assert reviews.next_clip("bob") is None
    now[0] = NOW + timedelta(minutes=11)
    assert reviews.next_clip("bob").clip_id == ids[0]
    with pytest.raises(ReviewError, match="holds no claim"):
        decide(reviews, ids[0], "alice")  # too late: bob has it now
    assert decide(reviews, ids[0], "bob").reviewer == "bob"


def test_submit_needs_a_claim_and_is_idempotent(store):
    ids = seed(store, [0.9, 0.8])
    reviews = review_store(store)
    with pytest.raises(ReviewError, match="holds no claim"):
        decide(reviews, ids[0], "alice")
    assert not reviews.can_view("alice", ids[0])
    reviews.next_clip("alice")
    assert reviews.can_view("alice", ids[0]) and not reviews.can_view("bob", ids[0])
    assert reviews.can_view("bob", ids[0], is_admin=True)
    with pytest.raises(ReviewError, match="needs the right label"):
        decide(reviews, ids[0], "alice", "correct")

    first = decide(reviews, ids[0], "alice", "correct", "anger")
    again = decide(reviews, ids[0], "alice", "correct", "anger")  # a retried request
    assert again.id == first.id and len(reviews.reviews(clip_id=ids[0])) == 1
    with pytest.raises(ReviewError, match="already decided"):
        decide(reviews, ids[0], "alice", "reject")
    assert reviews.claim_for(ids[0], "alice") is None and reviews.can_view("alice", ids[0])
    accepted = decide(reviews, reviews.next_clip("alice").clip_id, "alice")
    assert accepted.label == "happiness" and accepted.pipeline_label == "happiness"


def test_a_decision_is_durable_when_submit_returns(database_url):
    store = Store.open(database_url)
    ids = seed(store, [0.9])
    reviews = review_store(store)
    reviews.next_clip("alice")
    stored = decide(reviews, ids[0], "alice", "correct", "sadness")
    other = Store.open(database_url)  # a new engine: sees only what was committed
    try:
        [seen] = review_store(other).reviews(reviewer="alice")
        assert seen == stored and seen.label == "sadness"
    finally:
        other.close()
        store.close()


def test_admins_reassign_claims_and_see_progress(store):
    ids = seed(store, [0.9, 0.8])
    reviews = review_store(store)
    reviews.add_reviewer("admin", "admin password", is_admin=True)
    reviews.add_reviewer("alice", "alice password")
    reviews.add_reviewer("bob", "bob password")
    reviews.next_clip("alice")
    with pytest.raises(ReviewError, match="not an admin"):
        reviews.reassign(ids[0], "bob", by_admin="alice")
    moved = reviews.reassign(ids[0], "bob", by_admin="admin")
    assert moved.clip_id == ids[0] and reviews.claim_for(ids[0], "bob") is not None
    assert reviews.claim_for(ids[0], "alice") is None
    decide(reviews, ids[0], "bob")
    counts = reviews.counts("bob")
    assert counts["total"] == 2 and counts["done"] == 1 and counts["open"] == 1 and counts["mine_done"] == 1
    progress = {row["name"]: row for row in reviews.progress()}
    assert progress["bob"]["done_total"] == 1 and progress["bob"]["mean_seconds"] == 12.0
    assert progress["alice"]["done_total"] == 0 and progress["admin"]["is_admin"]


# -- Label Studio ---------------------------------------------------------------------------


def _pipeline_clips(workspace, labels: list[tuple[float, str]]) -> list[str]:
    """A source with one clip per (start, consensus label), stored stage by stage as the pipeline does."""
    store = workspace.store
    media = MediaInfo(container="mp4", duration=10.0, video=VideoInfo(codec="h264", width=64, height=64, fps=25.0))
    source = Source(id="s" * 64, path=str(workspace.root / "media" / "talk.mp4"), size_bytes=1, mtime=0.0,
                    status=SourceStatus.OK, media=media)
    store.upsert_source(source)
    clips = [Clip(id=clip_id(source.id, start, start + 2), source_id=source.id, start=start, end=start + 2,
                  origin=ClipOrigin.SPEECH, provenance=Provenance(backend="test")) for start, _ in labels]
    store.replace_clips(source.id, clips, StageStatus(item_id=source.id, stage="clips", state=StageState.DONE))
    for clip, (start, label) in zip(clips, labels):
        done = StageStatus(item_id=clip.id, stage="test", state=StageState.DONE)
        transcript = Transcript(language="en", language_probability=1.0, text="I can't believe it")
        store.save_features(ClipFeatures(clip_id=clip.id, source_id=source.id, transcript=transcript), done)
        store.save_annotations(clip.id, [
            Annotation(id=f"{clip.id}-{name}", clip_id=clip.id, annotator_id=name, label=label,
                       label_probabilities={label: p, "neutral": 1 - p}, intensity=0.5)
            for name, p in [("llm:a", 0.8), ("specialist:b", 0.6)]], done)
        store.save_judgement(clip.id, [], Consensus(clip_id=clip.id, label=label, confidence=0.7,
                                                    route=Route.REVIEW, priority=start), done)
    return [clip.id for clip in clips]


def test_label_studio_export_and_import_round_trip(workspace, tmp_path):
    from merforge.storage.label_studio import export_tasks, import_annotations, label_config

    first, second = _pipeline_clips(workspace, [(0.0, "happiness"), (4.0, "sadness")])
    tasks_path = tmp_path / "tasks.json"
    assert export_tasks(workspace, tasks_path, local_files_root=workspace.root) == 2
    tasks = json.loads(tasks_path.read_text())
    assert [t["data"]["clip_id"] for t in tasks] == [second, first]  # priority order
    task = tasks[1]
    assert task["data"]["video"] == "/data/local-files/?d=media/talk.mp4"
    assert task["data"]["transcript"] == "I can't believe it" and task["data"]["end"] == 2.0
    assert {p["model_version"]: p["score"] for p in task["predictions"]} == {"llm:a": 0.8, "specialist:b": 0.6}
    assert task["predictions"][0]["result"][0] == {"from_name": "emotion", "to_name": "video", "type": "choices",
                                                   "value": {"choices": ["happiness"]}}
    config = label_config("ekman7")
    assert '<Choices name="emotion" toName="video"' in config and '<Choice value="surprise"/>' in config
    assert '<Rating name="intensity"' in config and '<TextArea name="transcript"' in config

    # What Label Studio's JSON export gives back once curators finished the tasks.
    def answer(choice, user, cancelled=False, rating=None):
        result = [{"from_name": "emotion", "to_name": "video", "type": "choices", "value": {"choices": [choice]}}]
        if rating:
            result.append({"from_name": "intensity", "to_name": "video", "type": "rating",
                           "value": {"rating": rating}})
        return {"id": len(str(user)), "completed_by": user, "result": result, "was_cancelled": cancelled,
                "lead_time": 9.5, "created_at": "2025-03-01T10:00:00.000000Z"}

    tasks[1]["annotations"] = [answer("Happiness", 3, rating=5), answer("sadness", {"id": 4, "email": "e@x.org"}),
                               answer("happiness", 5, cancelled=True)]
    tasks[0]["annotations"] = [answer("boredom", 3)]
    tasks.append({"data": {"clip_id": "not-a-clip"}, "annotations": [answer("anger", 3)]})
    export_path = tmp_path / "export.json"
    export_path.write_text(json.dumps(tasks))

    report = import_annotations(workspace, export_path)
    assert report.imported == 2
    assert len(report.cancelled) == 1 and report.unknown_labels == [f"{second}: 'boredom' (not in ekman7)"]
    assert report.unknown_clips == ["not-a-clip"]
    reviews = ReviewStore(workspace.store, workspace.config.review)
    imported = {r.reviewer: r for r in reviews.reviews(clip_id=first)}
    assert imported["ls:3"].decision == ReviewDecision.ACCEPT and imported["ls:3"].intensity == 1.0
    assert imported["ls:e@x.org"].decision == ReviewDecision.CORRECT and imported["ls:e@x.org"].label == "sadness"
    assert imported["ls:3"].origin == "label-studio" and imported["ls:3"].pipeline_label == "happiness"
    assert import_annotations(workspace, export_path).imported == 2  # re-import replaces, not duplicates
    assert len(reviews.reviews(clip_id=first)) == 2


# -- performance ----------------------------------------------------------------------------


def test_queue_stays_fast_with_100000_clips(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'big.db'}")
    count = 100_000
    seed(store, [(i * 7919 % 10_007) / 10_007 for i in range(count)],
         routes=[("review", "audit", "auto-accept")[i % 3] for i in range(count)])
    reviews = review_store(store, share=0.1)
    claim_ms, queue_ms, counts_ms = [], [], []
    for n in range(300):
        name = f"r{n % 20}"
        started = time.perf_counter()
        item = reviews.next_clip(name)
        claim_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        reviews.queue(None if n % 2 else name, limit=50, offset=(n % 4) * 50)
        queue_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        reviews.counts(name)
        counts_ms.append((time.perf_counter() - started) * 1000)
        decide(reviews, item.clip_id, name)

    def p95(values):
        return statistics.quantiles(values, n=20)[-1]

    print(f"\n100k clips, SQLite: next_clip p95 {p95(claim_ms):.1f} ms, queue p95 {p95(queue_ms):.1f} ms, "
          f"counts p95 {p95(counts_ms):.1f} ms")
    store.close()
    assert p95(claim_ms) < 20 and p95(queue_ms) < 20
