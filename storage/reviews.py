"""Human review: reviewer accounts, a concurrency-safe claim queue, blind double annotation.

The queue is the `consensus` rows routed to review or audit, highest priority first. A
reviewer *claims* a clip by inserting a row into `claims`, whose primary key is
(clip_id, slot): the database, not this process, guarantees that one slot is held by one
reviewer, across threads, processes and machines. Single-review clips have slot 1 only;
double-annotated clips (a share `ReviewConfig.double_annotation_share` of clips, chosen
deterministically from sha256(clip_id)) have slots 1 and 2, and are reviewed *blind*:
neither the pipeline's label nor the other reviewer's decision is shown before submitting.

Claim transactions are serialised per clip: on SQLite by `BEGIN IMMEDIATE` (one writer
at a time, waits up to busy_timeout), on PostgreSQL by `SELECT ... FOR UPDATE` on the
clip's consensus row before its state is re-read, so the check "is there room on this
clip?" and the insert of the claim see the same state.

Skipping (`release`) records a SKIP review: it frees the slot for others, counts toward
nothing, and keeps the clip out of the skipping reviewer's own queue (without it, the
same highest-priority clip would come straight back on the next page load).
"""

from __future__ import annotations

import hashlib
import heapq
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, OperationalError

from merforge.errors import MerforgeError
from merforge.storage import tables
from merforge.storage.config import ReviewConfig
from merforge.storage.records import Review, ReviewDecision, Reviewer
from merforge.storage.store import Store

REVIEW_ROUTES = ("review", "audit")
MIN_PASSWORD_LENGTH = 8
MAX_NAME_LENGTH = 128
_CANDIDATE_BATCH = 32  # open clips fetched per route and round trip while looking for a free slot
_SKIP = ReviewDecision.SKIP.value
_TOTAL_TTL_S = 5.0  # how long counts() reuses the number of queued clips


class ReviewError(MerforgeError):
    """A review action is not allowed (no claim, bad password, unknown reviewer, ...)."""


@dataclass(frozen=True)
class QueueItem:
    """A live claim: the clip this reviewer works on now. `expires_at` is UTC."""

    clip_id: str
    route: str
    priority: float
    blind: bool  # double-annotated: show neither the pipeline's nor the other reviewer's choice
    slot: int
    expires_at: datetime


@dataclass(frozen=True)
class QueueRow:
    """One line of the queue page.

    state: "open", "claimed", "needs second review" (double-annotated, one decision in,
    no live claim on the other slot) or "done". `label`/`confidence` are the consensus's;
    in a reviewer's own view they are None for blind clips the reviewer has not decided yet.
    """

    clip_id: str
    route: str
    priority: float
    state: str
    label: str | None
    confidence: float | None
    reviews: int  # decisions in (SKIP not counted)
    needed: int  # 1, or 2 when double-annotated
    blind: bool
    claimed_by: tuple[str, ...] = ()
    reviewed_by: tuple[str, ...] = ()  # reviewers with a decision (SKIP not counted)


def review_id(clip_id: str, reviewer: str, slot: int) -> str:
    """Stable id of a reviewer's decision on a clip: a repeated submit lands on the same row."""
    return hashlib.sha256(f"{clip_id}:{reviewer}:{slot}".encode()).hexdigest()[:24]


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything written here is UTC.
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class ReviewStore:
    """Accounts, queue, claims and decisions on top of a `Store`.

    `hasher` defaults to argon2-cffi's PasswordHasher (argon2id, RFC 9106 low-memory
    profile); tests may pass cheaper parameters. `clock` returns the current UTC time
    (tests move it to expire claims).
    """

    def __init__(self, store: Store, config: ReviewConfig | None = None, *,
                 hasher: PasswordHasher | None = None, clock: Callable[[], datetime] | None = None):
        self.store = store
        self.config = config or ReviewConfig()
        self.hasher = hasher or PasswordHasher()
        self._clock = clock or _utc_now
        self._sqlite = store.engine.dialect.name == "sqlite"
        self._dummy_hash: str | None = None
        self._total_cache: tuple[float, int] | None = None

    @property
    def engine(self) -> sa.Engine:
        return self.store.engine

    def _now(self) -> datetime:
        return _aware(self._clock())

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction, committed on exit (durable on return: SQLite runs with
        synchronous=FULL). On SQLite it takes the write lock up front (BEGIN IMMEDIATE), so
        what it reads cannot change before it writes and it waits instead of failing."""
        with self.engine.connect() as connection:
            if self._sqlite:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                connection.exec_driver_sql("SET LOCAL jit = off")
            try:
                yield connection
            except BaseException:
                connection.rollback()
                raise
            connection.commit()

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A read-only connection. On PostgreSQL, JIT compilation is switched off for it: these
        are short indexed queries, and JIT would add tens of milliseconds to each."""
        with self.engine.connect() as connection:
            if not self._sqlite:
                connection.exec_driver_sql("SET LOCAL jit = off")
            yield connection

    def _retrying(self, action: Callable[[], Any], attempts: int = 3) -> Any:
        # PostgreSQL may abort one of two crossing transactions (deadlock detected); retry it.
        for attempt in range(attempts):
            try:
                return action()
            except OperationalError:
                if self._sqlite or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    # -- accounts ---------------------------------------------------------------------

    def add_reviewer(self, name: str, password: str, is_admin: bool = False) -> Reviewer:
        """Create an account. Raises ReviewError for a taken or invalid name or a password
        shorter than 8 characters."""
        name = _check_name(name)
        _check_password(password)
        reviewer = Reviewer(name=name, is_admin=is_admin, created_at=self._now())
        table = tables.reviewers
        try:
            with self._write() as connection:
                if connection.execute(sa.select(table.c.name).where(table.c.name == name)).first():
                    raise ReviewError(f"reviewer {name!r} already exists; choose another name or "
                                      "reset that reviewer's password")
                connection.execute(table.insert().values(
                    name=name, password_hash=self.hasher.hash(password), is_admin=is_admin,
                    created_at=reviewer.created_at))
        except IntegrityError:
            raise ReviewError(f"reviewer {name!r} already exists; choose another name") from None
        return reviewer

    def verify(self, name: str, password: str) -> Reviewer | None:
        """The reviewer if `password` is theirs, else None. Unknown names cost one argon2
        verification too, so timing does not tell which names exist. Re-hashes the stored
        hash when the hasher's parameters changed."""
        table = tables.reviewers
        with self._read() as connection:
            row = connection.execute(sa.select(table).where(table.c.name == name)).first()
        if row is None:
            if self._dummy_hash is None:
                self._dummy_hash = self.hasher.hash("merforge-no-such-reviewer")
            try:
                self.hasher.verify(self._dummy_hash, password or "")
            except VerificationError:
                pass
            return None
        try:
            self.hasher.verify(row.password_hash, password or "")
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if self.hasher.check_needs_rehash(row.password_hash):
            with self._write() as connection:
                connection.execute(table.update().where(table.c.name == name).values(
                    password_hash=self.hasher.hash(password)))
        return _reviewer_from_row(row)

    def set_password(self, name: str, password: str) -> None:
        """Replace a reviewer's password (ReviewError: unknown reviewer, password too short)."""
        _check_password(password)
        table = tables.reviewers
        with self._write() as connection:
            updated = connection.execute(table.update().where(table.c.name == name).values(
                password_hash=self.hasher.hash(password))).rowcount
        if not updated:
            raise ReviewError(f"no reviewer named {name!r}; create it with add_reviewer")

    def reviewers(self) -> list[Reviewer]:
        table = tables.reviewers
        with self._read() as connection:
            return [_reviewer_from_row(row) for row in connection.execute(sa.select(table).order_by(table.c.name))]

    def get_reviewer(self, name: str) -> Reviewer | None:
        table = tables.reviewers
        with self._read() as connection:
            row = connection.execute(sa.select(table).where(table.c.name == name)).first()
        return _reviewer_from_row(row) if row else None

    # -- double annotation ------------------------------------------------------------

    def is_double(self, clip_id: str) -> bool:
        """True for the clips annotated blind by two reviewers: the first 32 bits of
        sha256(clip_id), read as a fraction of 2**32, fall below the configured share."""
        share = self.config.double_annotation_share
        if share <= 0:
            return False
        fraction = int(hashlib.sha256(clip_id.encode()).hexdigest()[:8], 16) / 2**32
        return fraction < share

    def _needed(self, clip_id: str) -> int:
        return 2 if self.is_double(clip_id) else 1

    # -- claiming ---------------------------------------------------------------------

    def next_clip(self, reviewer: str) -> QueueItem | None:
        """The clip `reviewer` should review now, claimed for them; None when the queue holds
        nothing they may take. A reviewer who already holds a live claim gets that one back
        (a page reload does not claim a second clip). Claims last ReviewConfig.claim_minutes."""
        now = self._now()
        with self._read() as connection:
            held = self._held_claim(connection, reviewer, now)
        if held is not None:
            return held
        return self._retrying(lambda: self._claim_next(reviewer))

    def _claim_next(self, reviewer: str) -> QueueItem | None:
        now = self._now()
        claims = tables.claims
        with self._write() as connection:
            connection.execute(claims.delete().where(claims.c.expires_at < now))
            if not self._sqlite:  # one claim transaction per reviewer at a time
                connection.execute(sa.select(tables.reviewers.c.name)
                                   .where(tables.reviewers.c.name == reviewer).with_for_update())
            held = self._held_claim(connection, reviewer, now)
            if held is not None:
                return held
            for clip_id, route, priority in self._candidates(connection, reviewer):
                item = self._try_claim(connection, clip_id, route, priority, reviewer, now)
                if item is not None:
                    return item
        return None

    def _held_claim(self, connection: Connection, reviewer: str, now: datetime) -> QueueItem | None:
        claims, consensus = tables.claims, tables.consensus
        row = connection.execute(
            sa.select(claims.c.clip_id, claims.c.slot, claims.c.expires_at, consensus.c.route, consensus.c.priority)
            .join(consensus, consensus.c.clip_id == claims.c.clip_id)
            .where(claims.c.reviewer == reviewer, claims.c.expires_at >= now)
            .order_by(consensus.c.priority.desc(), claims.c.clip_id).limit(1)
        ).first()
        if row is None:
            return None
        return QueueItem(clip_id=row.clip_id, route=row.route, priority=row.priority,
                         blind=self.is_double(row.clip_id), slot=row.slot, expires_at=_aware(row.expires_at))

    def _candidates(self, connection: Connection, reviewer: str) -> Iterator[tuple[str, str, float]]:
        """Open clips in priority order, both routes merged; each route is walked down its
        (route, priority) index a small batch at a time."""
        streams = [self._route_candidates(connection, route, reviewer) for route in REVIEW_ROUTES]
        for priority, clip_id, route in heapq.merge(*streams):
            yield clip_id, route, -priority

    def _route_candidates(self, connection: Connection, route: str, reviewer: str) -> Iterator[tuple[float, str, str]]:
        consensus, claims, reviews = tables.consensus, tables.claims, tables.reviews
        r = reviews.alias("r")
        k = claims.alias("k")
        decided = (sa.select(sa.case((sa.func.count() >= sa.func.max(r.c.needed), 1), else_=0))
                   .where(r.c.clip_id == consensus.c.clip_id, r.c.decision != _SKIP).scalar_subquery())
        mine_reviewed = sa.exists().where(r.c.clip_id == consensus.c.clip_id, r.c.reviewer == reviewer)
        holders = sa.select(sa.func.count()).where(k.c.clip_id == consensus.c.clip_id).scalar_subquery()
        query = (sa.select(consensus.c.clip_id, consensus.c.priority)
                 .where(consensus.c.route == route, decided == 0, ~mine_reviewed, holders < 2)
                 .order_by(consensus.c.priority.desc()))
        if not self._sqlite:
            # Walk the (route, priority) index backwards and stop after a batch; without fresh
            # statistics (right after a bulk load) the planner would rather sort the whole route.
            connection.exec_driver_sql("SET LOCAL enable_sort = off")
            connection.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
        offset = 0
        while True:
            rows = connection.execute(query.limit(_CANDIDATE_BATCH).offset(offset)).all()
            for row in rows:
                yield -row.priority, row.clip_id, route
            if len(rows) < _CANDIDATE_BATCH:
                return
            offset += _CANDIDATE_BATCH

    def _lock_clip(self, connection: Connection, clip_id: str) -> bool:
        """Serialise claim and decision transactions on one clip (PostgreSQL row lock; SQLite
        already holds the database write lock). False when the clip has no consensus row."""
        consensus = tables.consensus
        return connection.execute(sa.select(consensus.c.clip_id).where(consensus.c.clip_id == clip_id)
                                  .with_for_update()).first() is not None

    def _clip_state(self, connection: Connection, clip_id: str) -> tuple[list[Any], list[Any]]:
        """(decisions, claims) on a clip: rows with reviewer and slot. SKIP is not a decision."""
        reviews, claims = tables.reviews, tables.claims
        decided = connection.execute(sa.select(reviews.c.reviewer, reviews.c.slot).where(
            reviews.c.clip_id == clip_id, reviews.c.decision != _SKIP)).all()
        held = connection.execute(sa.select(claims.c.reviewer, claims.c.slot, claims.c.expires_at)
                                  .where(claims.c.clip_id == clip_id)).all()
        return decided, held

    def _try_claim(self, connection: Connection, clip_id: str, route: str, priority: float,
                   reviewer: str, now: datetime) -> QueueItem | None:
        if not self._lock_clip(connection, clip_id):
            return None
        needed = self._needed(clip_id)
        decided, held = self._clip_state(connection, clip_id)
        if reviewer in {row.reviewer for row in decided} | {row.reviewer for row in held}:
            return None
        live_held = [row for row in held if _aware(row.expires_at) >= now]
        if len(decided) + len(live_held) >= needed:
            return None
        taken = {row.slot for row in decided} | {row.slot for row in held}
        free = [slot for slot in range(1, needed + 1) if slot not in taken]
        if not free:
            return None
        expires_at = now + timedelta(minutes=self.config.claim_minutes)
        values = dict(clip_id=clip_id, slot=free[0], reviewer=reviewer, claimed_at=now, expires_at=expires_at)
        if not self._insert_claim(connection, values):
            return None
        return QueueItem(clip_id=clip_id, route=route, priority=priority, blind=needed == 2, slot=free[0],
                         expires_at=expires_at)

    def _insert_claim(self, connection: Connection, values: dict[str, Any]) -> bool:
        # The primary key (clip_id, slot) is the last word: a lost race is an IntegrityError.
        if self._sqlite:
            try:
                connection.execute(tables.claims.insert().values(**values))
            except IntegrityError:
                return False
            return True
        savepoint = connection.begin_nested()
        try:
            connection.execute(tables.claims.insert().values(**values))
        except IntegrityError:
            savepoint.rollback()
            return False
        savepoint.commit()
        return True

    def claim_for(self, clip_id: str, reviewer: str) -> QueueItem | None:
        """The live claim `reviewer` holds on `clip_id`, or None."""
        claims, consensus = tables.claims, tables.consensus
        with self._read() as connection:
            row = connection.execute(
                sa.select(claims.c.slot, claims.c.expires_at, consensus.c.route, consensus.c.priority)
                .join(consensus, consensus.c.clip_id == claims.c.clip_id)
                .where(claims.c.clip_id == clip_id, claims.c.reviewer == reviewer,
                       claims.c.expires_at >= self._now())).first()
        if row is None:
            return None
        return QueueItem(clip_id=clip_id, route=row.route, priority=row.priority, blind=self.is_double(clip_id),
                         slot=row.slot, expires_at=_aware(row.expires_at))

    def release(self, clip_id: str, reviewer: str, record_skip: bool = True) -> Review | None:
        """Give a claimed clip back (the reviewer skips it). With `record_skip` (default) a SKIP
        review is stored so the clip does not come back to this reviewer; it counts toward
        nothing and others may take the slot at once. Returns that review, or None when the
        reviewer held no claim on the clip (nothing happens)."""
        def action() -> Review | None:
            claims = tables.claims
            with self._write() as connection:
                self._lock_clip(connection, clip_id)
                claim = connection.execute(sa.select(claims.c.slot).where(
                    claims.c.clip_id == clip_id, claims.c.reviewer == reviewer)).first()
                if claim is None:
                    return None
                connection.execute(claims.delete().where(claims.c.clip_id == clip_id, claims.c.reviewer == reviewer))
                if not record_skip:
                    return None
                skip = Review(id=review_id(clip_id, reviewer, claim.slot), clip_id=clip_id, reviewer=reviewer,
                              decision=ReviewDecision.SKIP, blind=self.is_double(clip_id),
                              pipeline_label=self._pipeline_label(connection, clip_id), created_at=self._now())
                self._put_review(connection, skip, slot=claim.slot)
                return skip
        return self._retrying(action)

    def reassign(self, clip_id: str, to_reviewer: str, by_admin: str, from_reviewer: str | None = None) -> QueueItem:
        """Move a claim on `clip_id` to `to_reviewer` (admins only), with a fresh expiry.

        The claim moved is `from_reviewer`'s, or the only one on the clip; with no claim on
        the clip, a free slot is claimed for `to_reviewer`. Raises ReviewError when `by_admin`
        is not an admin, `to_reviewer` does not exist or already decided/holds this clip, or
        the clip has no free slot."""
        admin = self.get_reviewer(by_admin)
        if admin is None or not admin.is_admin:
            raise ReviewError(f"{by_admin!r} is not an admin; only admins can reassign clips")
        if self.get_reviewer(to_reviewer) is None:
            raise ReviewError(f"no reviewer named {to_reviewer!r}; create the account first")

        def action() -> QueueItem:
            now = self._now()
            claims, consensus = tables.claims, tables.consensus
            with self._write() as connection:
                if not self._lock_clip(connection, clip_id):
                    raise ReviewError(f"clip {clip_id} has no consensus; run the judge stage before reviewing it")
                route, priority = connection.execute(sa.select(consensus.c.route, consensus.c.priority)
                                                     .where(consensus.c.clip_id == clip_id)).one()
                decided, held = self._clip_state(connection, clip_id)
                if to_reviewer in {row.reviewer for row in decided}:
                    raise ReviewError(f"{to_reviewer} already decided clip {clip_id}; choose another reviewer")
                expires_at = now + timedelta(minutes=self.config.claim_minutes)
                mine = [row for row in held if row.reviewer == to_reviewer]
                if mine:
                    slot = mine[0].slot
                    connection.execute(claims.update().where(claims.c.clip_id == clip_id, claims.c.slot == slot)
                                       .values(claimed_at=now, expires_at=expires_at))
                elif held:
                    source = [row for row in held if from_reviewer is None or row.reviewer == from_reviewer]
                    if len(source) != 1:
                        holders = ", ".join(row.reviewer for row in held)
                        raise ReviewError(f"clip {clip_id} is claimed by {holders}; say which claim to move "
                                          "(from_reviewer)")
                    slot = source[0].slot
                    connection.execute(claims.update().where(claims.c.clip_id == clip_id, claims.c.slot == slot)
                                       .values(reviewer=to_reviewer, claimed_at=now, expires_at=expires_at))
                else:
                    needed = self._needed(clip_id)
                    taken = {row.slot for row in decided}
                    free = [slot for slot in range(1, needed + 1) if slot not in taken]
                    if len(decided) >= needed or not free:
                        raise ReviewError(f"clip {clip_id} already has all its decisions; nothing to reassign")
                    slot = free[0]
                    connection.execute(claims.insert().values(clip_id=clip_id, slot=slot, reviewer=to_reviewer,
                                                              claimed_at=now, expires_at=expires_at))
            return QueueItem(clip_id=clip_id, route=route, priority=priority, blind=self.is_double(clip_id),
                             slot=slot, expires_at=expires_at)
        return self._retrying(action)

    # -- decisions --------------------------------------------------------------------

    def can_view(self, reviewer: str, clip_id: str, is_admin: bool = False) -> bool:
        """May `reviewer` open this clip? Admins: always. Others: when they hold a claim on it
        (an expired one not yet taken by someone else included) or have reviewed it."""
        if is_admin:
            return True
        claims, reviews = tables.claims, tables.reviews
        with self._read() as connection:
            if connection.execute(sa.select(claims.c.slot).where(
                    claims.c.clip_id == clip_id, claims.c.reviewer == reviewer)).first():
                return True
            return connection.execute(sa.select(reviews.c.id).where(
                reviews.c.clip_id == clip_id, reviews.c.reviewer == reviewer)).first() is not None

    def visible_context(self, clip_id: str, reviewer: str, is_admin: bool = False) -> dict[str, bool]:
        """What the review page may show: {"blind", "submitted", "show_pipeline",
        "show_other_reviews"}. On a blind (double-annotated) clip the pipeline's label and the
        other reviewer's decision stay hidden until this reviewer has submitted a decision; an
        admin who does not hold a claim on the clip sees everything."""
        blind = self.is_double(clip_id)
        reviews, claims = tables.reviews, tables.claims
        with self._read() as connection:
            submitted = connection.execute(sa.select(reviews.c.id).where(
                reviews.c.clip_id == clip_id, reviews.c.reviewer == reviewer, reviews.c.decision != _SKIP)).first()
            holding = connection.execute(sa.select(claims.c.slot).where(
                claims.c.clip_id == clip_id, claims.c.reviewer == reviewer)).first()
        show = not blind or submitted is not None or (is_admin and holding is None)
        return {"blind": blind, "submitted": submitted is not None, "show_pipeline": show,
                "show_other_reviews": show}

    def submit(self, review: Review) -> Review:
        """Store a decision and give up the claim, committed before returning.

        Only the holder of the claim may decide (an expired claim still counts while nobody
        else has taken the clip). The stored review gets its id from clip, reviewer and slot
        (`review.id` is ignored: pass ""), `blind` from is_double, `pipeline_label` from the
        consensus, and on ACCEPT without a label the consensus label. Submitting the same
        decision again returns the stored review; a different one raises ReviewError, as do a
        missing claim and CORRECT without a label. SKIP is `release`."""
        if review.decision == ReviewDecision.SKIP:
            skipped = self.release(review.clip_id, review.reviewer)
            if skipped is None:
                raise ReviewError(f"{review.reviewer} holds no claim on clip {review.clip_id}; nothing to skip")
            return skipped
        if review.decision == ReviewDecision.CORRECT and not (review.label or review.labels):
            raise ReviewError("a correction needs the right label; choose one or accept the pipeline's label")
        return self._retrying(lambda: self._submit(review))

    def _submit(self, review: Review) -> Review:
        claims, reviews = tables.claims, tables.reviews
        with self._write() as connection:
            if not self._lock_clip(connection, review.clip_id):
                raise ReviewError(f"clip {review.clip_id} is not in the review queue (no consensus)")
            existing = connection.execute(sa.select(reviews.c.record).where(
                reviews.c.clip_id == review.clip_id, reviews.c.reviewer == review.reviewer,
                reviews.c.decision != _SKIP)).first()
            pipeline_label = self._pipeline_label(connection, review.clip_id)
            label = review.label
            if review.decision == ReviewDecision.ACCEPT and label is None:
                label = pipeline_label
            if existing is not None:
                stored = Review.model_validate(existing.record)
                if stored.decision == review.decision and stored.label == label:
                    return stored
                raise ReviewError(f"{review.reviewer} already decided clip {review.clip_id} "
                                  f"({stored.decision.value} {stored.label or ''}); ask an admin to change it")
            claim = connection.execute(sa.select(claims.c.slot).where(
                claims.c.clip_id == review.clip_id, claims.c.reviewer == review.reviewer)).first()
            if claim is None:
                raise ReviewError(f"{review.reviewer} holds no claim on clip {review.clip_id} (it expired and "
                                  "went to another reviewer, or was never claimed); take the next clip from the queue")
            labels = review.labels or ((label,) if label else ())
            stored = review.model_copy(update={
                "id": review_id(review.clip_id, review.reviewer, claim.slot), "label": label, "labels": labels,
                "blind": self.is_double(review.clip_id), "pipeline_label": pipeline_label,
                "created_at": self._now()})
            self._put_review(connection, stored, slot=claim.slot)
            connection.execute(claims.delete().where(claims.c.clip_id == review.clip_id,
                                                     claims.c.reviewer == review.reviewer))
        return stored

    def record_import(self, review: Review) -> Review:
        """Store a decision made outside the queue (Label Studio, another tool): no claim needed,
        slot 0, committed on return. Re-importing the same reviewer's decision replaces it.
        Raises ReviewError when the clip has no consensus row."""
        def action() -> Review:
            with self._write() as connection:
                if not self._lock_clip(connection, review.clip_id):
                    raise ReviewError(f"clip {review.clip_id} has no consensus in this workspace; "
                                      "import into the workspace the tasks were exported from")
                pipeline_label = self._pipeline_label(connection, review.clip_id)
                stored = review.model_copy(update={
                    "id": review_id(review.clip_id, review.reviewer, 0), "pipeline_label": pipeline_label,
                    "labels": review.labels or ((review.label,) if review.label else ())})
                self._put_review(connection, stored, slot=0)
            return stored
        return self._retrying(action)

    def _put_review(self, connection: Connection, review: Review, slot: int) -> None:
        reviews = tables.reviews
        # A reviewer has one review per clip: a decision replaces their earlier SKIP.
        connection.execute(reviews.delete().where(reviews.c.clip_id == review.clip_id,
                                                  reviews.c.reviewer == review.reviewer))
        connection.execute(reviews.insert().values(
            id=review.id, clip_id=review.clip_id, reviewer=review.reviewer, slot=slot,
            needed=self._needed(review.clip_id), decision=review.decision.value, label=review.label,
            blind=review.blind, seconds_spent=float(review.seconds_spent or 0.0),
            record=review.model_dump(mode="json"), created_at=review.created_at))

    def _pipeline_label(self, connection: Connection, clip_id: str) -> str | None:
        consensus = tables.consensus
        return connection.execute(sa.select(consensus.c.label).where(consensus.c.clip_id == clip_id)).scalar()

    def reviews(self, clip_id: str | None = None, reviewer: str | None = None) -> list[Review]:
        """Stored reviews (SKIPs included), oldest first."""
        table = tables.reviews
        query = sa.select(table.c.record).order_by(table.c.created_at, table.c.id)
        if clip_id is not None:
            query = query.where(table.c.clip_id == clip_id)
        if reviewer is not None:
            query = query.where(table.c.reviewer == reviewer)
        with self._read() as connection:
            return [Review.model_validate(row.record) for row in connection.execute(query)]

    # -- queue page and progress --------------------------------------------------------

    def queue(self, reviewer: str | None = None, limit: int = 50, offset: int = 0) -> list[QueueRow]:
        """A page of the queue. reviewer=None: the admin view, every review/audit clip by
        priority. A reviewer: their live claims (priority order), then the clips they
        reviewed (newest first, SKIPs included)."""
        limit, offset = max(0, int(limit)), max(0, int(offset))
        now = self._now()
        with self._read() as connection:
            if reviewer is None:
                rows = self._admin_page(connection, limit, offset)
            else:
                rows = self._reviewer_page(connection, reviewer, limit, offset, now)
            return self._queue_rows(connection, rows, reviewer, now)

    def _admin_page(self, connection: Connection, limit: int, offset: int) -> list[Any]:
        consensus = tables.consensus
        wanted = limit + offset
        if wanted == 0:
            return []
        per_route = [connection.execute(
            sa.select(consensus.c.clip_id, consensus.c.route, consensus.c.priority, consensus.c.label,
                      consensus.c.confidence)
            .where(consensus.c.route == route)
            .order_by(consensus.c.priority.desc()).limit(wanted)).all()
            for route in REVIEW_ROUTES]
        merged = heapq.merge(*per_route, key=lambda row: (-row.priority, row.clip_id))
        return list(merged)[offset:wanted]

    def _reviewer_page(self, connection: Connection, reviewer: str, limit: int, offset: int,
                       now: datetime) -> list[Any]:
        consensus, claims, reviews = tables.consensus, tables.claims, tables.reviews
        columns = (consensus.c.clip_id, consensus.c.route, consensus.c.priority, consensus.c.label,
                   consensus.c.confidence)
        held = connection.execute(
            sa.select(*columns).join(claims, claims.c.clip_id == consensus.c.clip_id)
            .where(claims.c.reviewer == reviewer, claims.c.expires_at >= now)
            .order_by(consensus.c.priority.desc())).all()
        page = held[offset:offset + limit]
        remaining = limit - len(page)
        if remaining > 0:
            done = connection.execute(
                sa.select(*columns).join(reviews, reviews.c.clip_id == consensus.c.clip_id)
                .where(reviews.c.reviewer == reviewer)
                .order_by(reviews.c.created_at.desc(), reviews.c.id)
                .limit(remaining).offset(max(0, offset - len(held)))).all()
            page.extend(done)
        return page

    def _queue_rows(self, connection: Connection, rows: list[Any], viewer: str | None,
                    now: datetime) -> list[QueueRow]:
        if not rows:
            return []
        ids = [row.clip_id for row in rows]
        claims, reviews = tables.claims, tables.reviews
        holders: dict[str, list[str]] = {}
        for clip_id, name in connection.execute(sa.select(claims.c.clip_id, claims.c.reviewer).where(
                claims.c.clip_id.in_(ids), claims.c.expires_at >= now).order_by(claims.c.slot)):
            holders.setdefault(clip_id, []).append(name)
        deciders: dict[str, list[str]] = {}
        for clip_id, name in connection.execute(sa.select(reviews.c.clip_id, reviews.c.reviewer).where(
                reviews.c.clip_id.in_(ids), reviews.c.decision != _SKIP).order_by(reviews.c.created_at)):
            deciders.setdefault(clip_id, []).append(name)
        result = []
        for row in rows:
            needed = self._needed(row.clip_id)
            decided = deciders.get(row.clip_id, [])
            held = holders.get(row.clip_id, [])
            if len(decided) >= needed:
                state = "done"
            elif held:
                state = "claimed"
            elif decided:
                state = "needs second review"
            else:
                state = "open"
            hide = viewer is not None and needed == 2 and viewer not in decided
            result.append(QueueRow(
                clip_id=row.clip_id, route=row.route, priority=row.priority, state=state,
                label=None if hide else row.label, confidence=None if hide else row.confidence,
                reviews=len(decided), needed=needed, blind=needed == 2, claimed_by=tuple(held),
                reviewed_by=tuple(decided)))
        return result

    def counts(self, reviewer: str | None = None) -> dict[str, int]:
        """Queue totals: total (review+audit clips), open (claimable: no live claim, decisions
        missing; includes "needs second review"), needs_second, claimed (clips with a live
        claim, not done), done; mine (live claims of `reviewer`) and mine_done (their decisions)."""
        now = self._now()
        consensus, claims, reviews = tables.consensus, tables.claims, tables.reviews
        in_queue = consensus.c.route.in_(REVIEW_ROUTES)

        def queued(clip_id: Any) -> Any:
            # EXISTS rather than a join: the planner then walks the (small) reviews/claims
            # tables and probes consensus by key, instead of scanning the queue.
            return sa.exists().where(consensus.c.clip_id == clip_id, in_queue)
        with self._read() as connection:
            total = self._queue_total(connection)
            per_clip = (sa.select(reviews.c.clip_id, sa.func.count().label("n"), sa.func.max(reviews.c.needed)
                                  .label("needed"))
                        .where(reviews.c.decision != _SKIP).group_by(reviews.c.clip_id).subquery())
            done, needs_second = connection.execute(sa.select(
                sa.func.coalesce(sa.func.sum(sa.case((per_clip.c.n >= per_clip.c.needed, 1), else_=0)), 0),
                sa.func.coalesce(sa.func.sum(sa.case((per_clip.c.n < per_clip.c.needed, 1), else_=0)), 0),
            )).one()
            claimed_ids = set(connection.execute(sa.select(claims.c.clip_id).distinct().where(
                claims.c.expires_at >= now, queued(claims.c.clip_id))).scalars())
            second_claimed = 0
            if claimed_ids and needs_second:
                second_claimed = connection.execute(sa.select(sa.func.count(reviews.c.clip_id.distinct())).where(
                    reviews.c.clip_id.in_(claimed_ids), reviews.c.decision != _SKIP)).scalar_one()
            mine = mine_done = 0
            if reviewer is not None:
                mine = connection.execute(sa.select(sa.func.count()).select_from(claims).where(
                    claims.c.reviewer == reviewer, claims.c.expires_at >= now)).scalar_one()
                mine_done = connection.execute(sa.select(sa.func.count()).select_from(reviews).where(
                    reviews.c.reviewer == reviewer, reviews.c.decision != _SKIP)).scalar_one()
        claimed = len(claimed_ids)
        return {"total": total, "open": max(0, total - int(done) - claimed), "claimed": claimed,
                "needs_second": max(0, int(needs_second) - second_claimed), "done": int(done),
                "mine": mine, "mine_done": mine_done}

    def _queue_total(self, connection: Connection) -> int:
        # Counting ~100k index entries costs ~10 ms on PostgreSQL; the total only changes when the
        # pipeline routes clips, so a few seconds' staleness is fine for a progress display.
        cached = self._total_cache
        if cached is not None and time.monotonic() - cached[0] < _TOTAL_TTL_S:
            return cached[1]
        consensus = tables.consensus
        total = connection.execute(sa.select(sa.func.count()).select_from(consensus)
                                   .where(consensus.c.route.in_(REVIEW_ROUTES))).scalar_one()
        self._total_cache = (time.monotonic(), total)
        return total

    def progress(self) -> list[dict[str, Any]]:
        """Per reviewer (accounts, and imported reviewers such as "ls:3"): name, is_admin,
        done_today (UTC day), done_total, skipped, claimed (live claims) and mean_seconds
        (mean time per decision, seconds; None before the first)."""
        now = self._now()
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        reviews, claims = tables.reviews, tables.claims
        decision = reviews.c.decision != _SKIP
        with self._read() as connection:
            stats = {row.reviewer: row for row in connection.execute(sa.select(
                reviews.c.reviewer,
                sa.func.sum(sa.case((decision, 1), else_=0)).label("done_total"),
                sa.func.sum(sa.case((decision & (reviews.c.created_at >= today), 1), else_=0)).label("done_today"),
                sa.func.sum(sa.case((decision, 0), else_=1)).label("skipped"),
                sa.func.avg(sa.case((decision, reviews.c.seconds_spent), else_=None)).label("mean_seconds"),
            ).group_by(reviews.c.reviewer))}
            held = dict(connection.execute(sa.select(claims.c.reviewer, sa.func.count())
                                           .where(claims.c.expires_at >= now).group_by(claims.c.reviewer)).all())
        accounts = {reviewer.name: reviewer for reviewer in self.reviewers()}
        result = []
        for name in sorted(set(accounts) | set(stats) | set(held)):
            row = stats.get(name)
            result.append({
                "name": name,
                "is_admin": accounts[name].is_admin if name in accounts else False,
                "done_today": int(row.done_today or 0) if row else 0,
                "done_total": int(row.done_total or 0) if row else 0,
                "skipped": int(row.skipped or 0) if row else 0,
                "claimed": int(held.get(name, 0)),
                "mean_seconds": float(row.mean_seconds) if row and row.mean_seconds is not None else None,
            })
        return result


def _check_name(name: str) -> str:
    cleaned = (name or "").strip()
    if not cleaned or len(cleaned) > MAX_NAME_LENGTH or any(ch.isspace() for ch in cleaned):
        raise ReviewError(f"reviewer name {name!r} is not usable; use 1 to {MAX_NAME_LENGTH} characters "
                          "without spaces")
    return cleaned


def _check_password(password: str) -> None:
    if not password or len(password) < MIN_PASSWORD_LENGTH:
        raise ReviewError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")


def _reviewer_from_row(row: Any) -> Reviewer:
    return Reviewer(name=row.name, is_admin=bool(row.is_admin), created_at=_aware(row.created_at))
