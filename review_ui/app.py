"""The review web app: server-rendered pages over the workspace store.

    GET  /login, POST /login, POST /logout     signed-cookie sessions, CSRF, rate-limited login
    GET  /queue                                 the reviewer's claims and decisions, counts
    POST /queue/next                            claim the next clip (ReviewStore.next_clip)
    GET  /clips/{id}                            media, transcript, timeline, key frames, context
    POST /clips/{id}/review                     a decision (accept / correct / reject / skip)
    GET  /media/{id}                            the clip's source file, with HTTP Range
    GET  /keyframes/{id}/{index}                a key frame of the clip
    GET  /api/clips/{id}/timeline               the clip's timeline Parquet as JSON columns
    GET  /admin, POST /admin/reassign           everyone's progress; move a claim (admins)

Files are only ever found through the store by clip id; no path comes from a request.
Every page escapes what it shows (Jinja autoescape); scripts use textContent only, and
the Content-Security-Policy allows scripts from /static alone.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from jinja2 import Environment, FileSystemLoader, select_autoescape

from merforge.agents.labels import get_space
from merforge.review_ui import media as media_files
from merforge.review_ui.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    LoginRateLimiter,
    Session,
    SessionCodec,
    csrf_matches,
    load_secret,
)
from merforge.storage import tables
from merforge.storage.records import Review, ReviewDecision, Reviewer
from merforge.storage.reviews import ReviewError, ReviewStore
from merforge.storage.workspace import Workspace

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
CLIP_ID = re.compile(r"^[0-9a-f]{8,64}$")
QUEUE_PAGE_ROWS = 50
MAX_SECONDS_SPENT = 24 * 3600.0
MAX_COMMENT_CHARS = 5000
TOTALS_TTL_S = 3.0  # queue-wide counts shown on the queue page may lag this much
AU_SHOWN = 3  # AU curves on the timeline: the strongest few keep the plot readable
# Fixed messages for redirects (a code in the URL, never text from the request).
NOTICES = {
    "empty": "The queue has nothing left for you right now.",
    "saved": "Decision saved.",
    "reassigned": "Claim moved.",
    "loggedout": "You are logged out.",
}
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                 b"media-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                                 b"frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class LoginRequired(Exception):
    """No valid session: pages redirect to /login, everything else answers 401."""


class SecurityHeaders:
    """Pure ASGI middleware adding CSP and friends to every response."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass
class ReviewContext:
    """What every request needs, built once per process."""

    workspace: Workspace
    reviews: ReviewStore
    labels: tuple[str, ...]
    codec: SessionCodec
    limiter: LoginRateLimiter
    templates: Environment
    secure_cookies: bool
    static_version: str
    _totals: tuple[float, dict[str, int]] | None = None

    @property
    def store(self):
        return self.workspace.store

    def queue_counts(self, reviewer: str) -> dict[str, int]:
        """ReviewStore.counts for the queue page. The queue-wide totals scan every review
        clip (~5 ms at 100,000 clips), so they are shared between requests for TOTALS_TTL_S;
        the reviewer's own numbers are two indexed counts, always current."""
        now = time.monotonic()
        cached = self._totals
        if cached is None or now - cached[0] > TOTALS_TTL_S:
            cached = self._totals = (now, self.reviews.counts())
        claims, reviews = tables.claims, tables.reviews
        with self.store.engine.connect() as connection:
            mine = connection.execute(sa.select(sa.func.count()).select_from(claims).where(
                claims.c.reviewer == reviewer, claims.c.expires_at >= datetime.now(timezone.utc))).scalar_one()
            mine_done = connection.execute(sa.select(sa.func.count()).select_from(reviews).where(
                reviews.c.reviewer == reviewer, reviews.c.decision != ReviewDecision.SKIP.value)).scalar_one()
        return {**cached[1], "mine": mine, "mine_done": mine_done}

    def render(self, request: Request, template: str, status_code: int = 200, session: Session | None = None,
               **values: Any) -> HTMLResponse:
        state_session = getattr(request.state, "session", None)
        if session is None:
            # Pages answered before the session dependency ran (unknown routes) read the cookie here.
            session = state_session or self.codec.loads(request.cookies.get(SESSION_COOKIE)) or self.codec.new()
        values.setdefault("user", getattr(request.state, "user", None))
        notice = NOTICES.get(request.query_params.get("notice", ""))
        values.setdefault("flash", notice)
        html = self.templates.get_template(template).render(csrf=session.csrf, **values)
        response = HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})
        if session is state_session and getattr(request.state, "session_is_new", False):
            self.set_session(response, session)
        return response

    def set_session(self, response: Response, session: Session) -> None:
        response.set_cookie(SESSION_COOKIE, self.codec.dumps(session), max_age=self.codec.max_age_s, path="/",
                            httponly=True, samesite="lax", secure=self.secure_cookies)


def _static_version() -> str:
    digest = hashlib.sha256()
    for path in sorted(STATIC.glob("*")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def create_app(workspace_dir: Path | str, *, secure_cookies: bool = False,
               review_store: ReviewStore | None = None) -> FastAPI:
    """The review app on the workspace at `workspace_dir` (its store: SQLite or PostgreSQL).

    `secure_cookies`: mark the session cookie Secure (serve over HTTPS). `review_store`
    lets tests pass a ReviewStore with cheap password hashing.
    """
    workspace = Workspace.open(workspace_dir)
    config = workspace.config.review
    reviews = review_store or ReviewStore(workspace.store, config)
    templates = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True),
                            trim_blocks=True, lstrip_blocks=True, auto_reload=False)
    version = _static_version()
    templates.globals["static"] = lambda name: f"/static/{name}?v={version}"
    context = ReviewContext(
        workspace=workspace,
        reviews=reviews,
        labels=get_space(workspace.config.annotate.label_space).labels,
        codec=SessionCodec(load_secret(workspace.root, config.secret_env), config.session_hours * 3600),
        limiter=LoginRateLimiter(config.login_attempts_per_minute),
        templates=templates,
        secure_cookies=secure_cookies,
        static_version=version,
    )
    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        workspace.close()

    app = FastAPI(title="merforge review", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan,
                  dependencies=[Depends(_load_session), Depends(_check_csrf)])
    app.state.review = context
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(SecurityHeaders)
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    _routes(app, context)
    return app


# -- sessions, authentication, CSRF -------------------------------------------------------


def _ctx(request: Request) -> ReviewContext:
    return request.app.state.review


async def _load_session(request: Request) -> None:
    context = _ctx(request)
    session = context.codec.loads(request.cookies.get(SESSION_COOKIE))
    request.state.session_is_new = session is None
    request.state.session = session or context.codec.new()
    request.state.user = None


async def _check_csrf(request: Request) -> None:
    """Every state-changing request: a logged-in session (except the login form itself)
    and the session's CSRF token in the form field or the X-CSRF-Token header."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    session: Session = request.state.session
    if request.url.path != "/login" and (request.state.session_is_new or not session.authenticated):
        raise LoginRequired()
    submitted = request.headers.get(CSRF_HEADER)
    if not submitted:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            submitted = value if isinstance(value, str) else None
    if request.state.session_is_new or not csrf_matches(session, submitted):
        raise HTTPException(403, "The form's security token is missing or out of date. Reload the page and try again.")


def current_user(request: Request) -> Reviewer:
    """The logged-in reviewer (the account must still exist), else LoginRequired."""
    session: Session = request.state.session
    if not session.authenticated:
        raise LoginRequired()
    reviewer = _ctx(request).reviews.get_reviewer(session.user)
    if reviewer is None:
        raise LoginRequired()
    request.state.user = reviewer
    return reviewer


def _wants_page(request: Request) -> bool:
    path = request.url.path
    return request.method == "GET" and not path.startswith(("/api/", "/media/", "/keyframes/", "/static/"))


async def _login_required(request: Request, _error: Exception) -> Response:
    if _wants_page(request):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    return JSONResponse({"detail": "log in first"}, status_code=401)


async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
    if _wants_page(request) or request.method == "POST":
        context = _ctx(request)
        response = context.render(request, "error.html", status_code=error.status_code,
                                  status=error.status_code, message=str(error.detail))
    else:
        response = JSONResponse({"detail": error.detail}, status_code=error.status_code)
    for key, value in (error.headers or {}).items():
        response.headers[key] = value
    return response


def _safe_next(target: str) -> str:
    # Only paths on this site: "//host" and "/\host" would leave it.
    if not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/queue"
    return target


# -- clip data ------------------------------------------------------------------------


def _clip_row(context: ReviewContext, clip_id: str) -> Any:
    """The clip's row, or 404 for a malformed or unknown id."""
    if not CLIP_ID.match(clip_id):
        raise HTTPException(404, "No such clip.")
    table = tables.clips
    with context.store.engine.connect() as connection:
        row = connection.execute(sa.select(table.c.id, table.c.source_id, table.c.start_s, table.c.end_s,
                                           table.c.keyframes).where(table.c.id == clip_id)).first()
    if row is None:
        raise HTTPException(404, "No such clip.")
    return row


def _authorise(context: ReviewContext, user: Reviewer, clip_id: str) -> Any:
    row = _clip_row(context, clip_id)
    if not context.reviews.can_view(user.name, clip_id, is_admin=user.is_admin):
        raise HTTPException(403, "This clip is not in your queue. Take clips with “Next clip”; "
                                 "an admin can reassign one to you.")
    return row


def _inside_workspace(context: ReviewContext, relative: str) -> Path:
    root = context.workspace.root
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise HTTPException(404, "File not found.")
    return path


def _finite(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def timeline_json(path: Path) -> dict[str, Any]:
    """The columns the timeline plot needs: time (s), f0 (Hz), intensity (dB), speaker, and
    the AU estimates with the highest mean (at most AU_SHOWN)."""
    import pyarrow.parquet as pq

    from merforge.preprocess.timeline import AU_NAMES

    table = pq.read_table(path)
    names = set(table.column_names)
    column = lambda name: [_finite(v) for v in table.column(name).to_pylist()] if name in names else []  # noqa: E731
    aus: dict[str, list] = {}
    means = []
    for name in AU_NAMES:
        if name in names:
            values = column(name)
            present = [v for v in values if v is not None]
            if present:
                means.append((sum(present) / len(present), name, values))
    for _mean, name, values in sorted(means, reverse=True)[:AU_SHOWN]:
        aus[name] = values
    return {"time": column("time"), "f0": column("f0"), "intensity": column("intensity"),
            "speaker": column("speaker"), "aus": aus}


# -- routes ---------------------------------------------------------------------------


def _routes(app: FastAPI, context: ReviewContext) -> None:
    @app.get("/", include_in_schema=False)
    def home(request: Request, user: Reviewer = Depends(current_user)) -> Response:
        return RedirectResponse("/queue", status_code=303)

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/queue") -> Response:
        return context.render(request, "login.html", next_url=_safe_next(next), name="")

    @app.post("/login")
    def login(request: Request, name: str = Form(""), password: str = Form(""), next: str = Form("/queue")) -> Response:
        address = request.client.host if request.client else "unknown"
        allowed, wait_s = context.limiter.allow(name, address)
        if not allowed:
            wait = max(1, math.ceil(wait_s))
            return context.render(request, "login.html", status_code=429, next_url=_safe_next(next), name=name,
                                  flash=f"Too many login attempts for this name from your address. "
                                        f"Wait {wait} s and try again.", flash_kind="error")
        reviewer = context.reviews.verify(name.strip(), password)
        if reviewer is None:
            return context.render(request, "login.html", status_code=401, next_url=_safe_next(next), name=name,
                                  flash="Wrong name or password.", flash_kind="error")
        session = context.codec.new(user=reviewer.name)  # a fresh token: no session fixation
        response = RedirectResponse(_safe_next(next), status_code=303)
        context.set_session(response, session)
        return response

    @app.post("/logout")
    def logout(request: Request) -> Response:
        response = RedirectResponse("/login?notice=loggedout", status_code=303)
        context.set_session(response, context.codec.new())
        return response

    @app.get("/queue", response_class=HTMLResponse)
    def queue_page(request: Request, user: Reviewer = Depends(current_user)) -> Response:
        counts = context.queue_counts(user.name)
        rows = context.reviews.queue(user.name, limit=QUEUE_PAGE_ROWS)
        items = _queue_items(context, rows, user.name)
        shown = [("waiting", counts["open"]), ("your claims", counts["mine"]),
                 ("you decided", counts["mine_done"]), ("done (all)", counts["done"])]
        return context.render(request, "queue.html", counts=shown, items=items)

    @app.post("/queue/next")
    def next_clip(request: Request, user: Reviewer = Depends(current_user)) -> Response:
        item = context.reviews.next_clip(user.name)
        if item is None:
            return RedirectResponse("/queue?notice=empty", status_code=303)
        return RedirectResponse(f"/clips/{item.clip_id}", status_code=303)

    @app.get("/clips/{clip_id}", response_class=HTMLResponse)
    def clip_page(request: Request, clip_id: str, user: Reviewer = Depends(current_user)) -> Response:
        row = _authorise(context, user, clip_id)
        return context.render(request, "clip.html", **_clip_view(context, row, user))

    @app.post("/clips/{clip_id}/review")
    def submit(request: Request, clip_id: str, user: Reviewer = Depends(current_user),
               decision: str = Form(...), label: str = Form(""), labels: list[str] = Form([]),
               intensity: float | None = Form(None), valence: float | None = Form(None),
               arousal: float | None = Form(None), comment: str = Form(""), seconds_spent: float = Form(0.0),
               then: str = Form("next")) -> Response:
        _authorise(context, user, clip_id)
        try:
            chosen = ReviewDecision(decision)
        except ValueError:
            raise HTTPException(400, f"Unknown decision {decision!r}; use accept, correct, reject or skip.") from None
        visible = context.reviews.visible_context(clip_id, user.name, is_admin=user.is_admin)
        if chosen == ReviewDecision.ACCEPT and not visible["show_pipeline"]:
            raise HTTPException(400, "This clip is reviewed blind: pick the label yourself (Correct).")
        allowed = set(context.labels)
        label = label.strip() or None
        chosen_labels = tuple(dict.fromkeys(([label] if label else []) + [l for l in labels if l]))
        bad = [l for l in chosen_labels if l not in allowed]
        if bad:
            raise HTTPException(400, f"Label {bad[0]!r} is not in the label space ({', '.join(context.labels)}).")
        if label is None and chosen_labels:
            label = chosen_labels[0]
        if chosen != ReviewDecision.CORRECT:
            # Accept keeps the pipeline's label; reject and skip carry none.
            label, chosen_labels = None, ()
        review = Review(
            id="", clip_id=clip_id, reviewer=user.name, decision=chosen, label=label, labels=chosen_labels,
            intensity=_bounded(intensity, 0.0, 1.0), valence=_bounded(valence, -1.0, 1.0),
            arousal=_bounded(arousal, -1.0, 1.0), comment=comment[:MAX_COMMENT_CHARS],
            seconds_spent=min(MAX_SECONDS_SPENT, max(0.0, seconds_spent if math.isfinite(seconds_spent) else 0.0)),
            origin="ui")
        try:
            context.reviews.submit(review)
        except ReviewError as error:
            raise HTTPException(409, str(error)) from None
        if then == "queue":
            return RedirectResponse("/queue?notice=saved", status_code=303)
        item = context.reviews.next_clip(user.name)
        if item is None:
            return RedirectResponse("/queue?notice=empty", status_code=303)
        return RedirectResponse(f"/clips/{item.clip_id}", status_code=303)

    @app.get("/media/{clip_id}")
    def clip_media(request: Request, clip_id: str, user: Reviewer = Depends(current_user)) -> Response:
        row = _authorise(context, user, clip_id)
        source = context.store.get_source(row.source_id)
        if source is None:
            raise HTTPException(404, "The clip's source is not in the store.")
        path = Path(source.path)
        if not path.is_file():
            raise HTTPException(404, "The clip's source file is not available on the server.")
        audio_only = source.media is not None and source.media.video is None
        return media_files.range_response(path, request.headers.get("range"),
                                          media_files.media_type(path, audio_only))

    @app.get("/keyframes/{clip_id}/{index}")
    def keyframe(clip_id: str, index: int, user: Reviewer = Depends(current_user)) -> Response:
        row = _authorise(context, user, clip_id)
        frames = row.keyframes or []
        if not 0 <= index < len(frames):
            raise HTTPException(404, "No such key frame.")
        path = _inside_workspace(context, frames[index]["path"])
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/clips/{clip_id}/timeline")
    def timeline(clip_id: str, user: Reviewer = Depends(current_user)) -> Response:
        _authorise(context, user, clip_id)
        features = context.store.get_features(clip_id)
        if features is None or not features.timeline_path:
            raise HTTPException(404, "This clip has no measured timeline.")
        return JSONResponse(timeline_json(_inside_workspace(context, features.timeline_path)),
                            headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/admin", response_class=HTMLResponse)
    def admin_page(request: Request, user: Reviewer = Depends(current_user)) -> Response:
        _require_admin(user)
        counts = context.reviews.counts()
        shown = [("in queue", counts["total"]), ("waiting", counts["open"]), ("claimed", counts["claimed"]),
                 ("needs second review", counts["needs_second"]), ("done", counts["done"])]
        columns = ["reviewer", "admin", "decided today", "decided", "skipped", "claims", "mean s per clip"]
        progress_rows = [[p["name"], "yes" if p["is_admin"] else "", p["done_today"], p["done_total"], p["skipped"],
                          p["claimed"], f"{p['mean_seconds']:.0f}" if p["mean_seconds"] is not None else "–"]
                         for p in context.reviews.progress()]
        names = [r.name for r in context.reviews.reviewers()]
        return context.render(request, "admin.html", counts=shown, progress_columns=columns,
                              progress_rows=progress_rows, reviewer_names=names)

    @app.post("/admin/reassign")
    def reassign(request: Request, clip_id: str = Form(...), reviewer: str = Form(...),
                 user: Reviewer = Depends(current_user)) -> Response:
        _require_admin(user)
        _clip_row(context, clip_id.strip())
        try:
            context.reviews.reassign(clip_id.strip(), reviewer, by_admin=user.name)
        except ReviewError as error:
            raise HTTPException(409, str(error)) from None
        return RedirectResponse("/admin?notice=reassigned", status_code=303)


def _require_admin(user: Reviewer) -> None:
    if not user.is_admin:
        raise HTTPException(403, "Only admins can see everyone's progress and reassign clips.")


def _bounded(value: float | None, low: float, high: float) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return min(high, max(low, value))


def _queue_items(context: ReviewContext, rows: list[Any], viewer: str) -> list[dict[str, Any]]:
    """Queue rows with each clip's span and source file name (one query for the page)."""
    spans: dict[str, Any] = {}
    if rows:
        clips, sources = tables.clips, tables.sources
        with context.store.engine.connect() as connection:
            spans = {r.id: r for r in connection.execute(
                sa.select(clips.c.id, clips.c.start_s, clips.c.end_s, sources.c.path)
                .join(sources, sources.c.id == clips.c.source_id)
                .where(clips.c.id.in_([row.clip_id for row in rows])))}
    items = []
    for row in rows:
        if viewer in row.claimed_by:
            state = "claimed by you"
        elif viewer in row.reviewed_by:
            state = "decided"
        else:
            state = "skipped"  # the reviewer's own list holds only claims, decisions and skips
        span = spans.get(row.clip_id)
        items.append({"clip_id": row.clip_id, "route": row.route, "priority": row.priority, "blind": row.blind,
                      "state": state, "source_name": Path(span.path).name if span else "",
                      "start": span.start_s if span else None, "end": span.end_s if span else None})
    return items


def _clip_view(context: ReviewContext, row: Any, user: Reviewer) -> dict[str, Any]:
    store = context.store
    reviews = context.reviews
    clip_id = row.id
    source = store.get_source(row.source_id)
    features = store.get_features(clip_id)
    visible = reviews.visible_context(clip_id, user.name, is_admin=user.is_admin)
    consensus = store.consensus(clip_id)
    blind = not visible["show_pipeline"]
    start, end = float(row.start_s), float(row.end_s)
    words = [w for w in features.transcript.words] if features else []
    turns = [{"start": t.start, "end": t.end, "speaker": t.speaker} for t in features.speaker_turns] if features else []
    annotations = judge = None
    if not blind:
        annotations = store.annotations(clip_id)
        judge = {}
        if annotations:
            for score in store.judge_scores(clip_id):
                judge.setdefault(score.annotation_id, []).append(score)
    others = []
    if visible["show_other_reviews"]:
        others = [r for r in reviews.reviews(clip_id) if r.reviewer != user.name and r.decision != ReviewDecision.SKIP]
    # The form starts from the pipeline's choice, unless the item is blind.
    form = {"label": None, "labels": ()}
    dims_from = None
    if not blind and consensus is not None:
        form = {"label": consensus.label, "labels": consensus.labels}
        dims_from = consensus
    dims = [{"name": "intensity", "min": 0, "max": 1, "default": 0.5},
            {"name": "valence", "min": -1, "max": 1, "default": 0.0},
            {"name": "arousal", "min": -1, "max": 1, "default": 0.0}]
    for dim in dims:
        dim["value"] = getattr(dims_from, dim["name"]) if dims_from is not None else None
    neighbours = [r.clip_id for r in reviews.queue(user.name, limit=QUEUE_PAGE_ROWS)]
    prev_id = next_id = None
    if clip_id in neighbours:
        at = neighbours.index(clip_id)
        prev_id = neighbours[at - 1] if at > 0 else None
        next_id = neighbours[at + 1] if at + 1 < len(neighbours) else None
    has_media = source is not None and Path(source.path).is_file()
    has_timeline = bool(features and features.timeline_path)
    return {
        "clip": {"id": clip_id, "start": start, "end": end, "duration": end - start,
                 "source_name": Path(source.path).name if source else "",
                 "audio_only": bool(source and source.media and source.media.video is None),
                 "has_media": has_media},
        "route": consensus.route.value if consensus else "",
        "blind": blind,
        "words": words,
        "keyframes": [{"index": i, "time": kf["time"]} for i, kf in enumerate(row.keyframes or [])],
        "annotations": annotations or [],
        "judge": judge or {},
        "consensus": None if blind else consensus,
        "other_reviews": others,
        "labels": context.labels,
        "form": form,
        "dims": dims,
        "prev_id": prev_id,
        "next_id": next_id,
        "has_timeline": has_timeline,
        "clip_data": {"id": clip_id, "start": start, "end": end, "turns": turns, "has_timeline": has_timeline,
                      "timeline_url": f"/api/clips/{clip_id}/timeline"},
    }
