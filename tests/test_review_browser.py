"""The review UI in a real browser (Debian's chromium, driven by Playwright) against a real
server: log in and review with the keyboard only, untrusted text stays inert, and blind
double annotation hides the pipeline's and the other reviewer's choice. Screenshots of
the queue and clip pages go to test-artifacts/ (or $MERFORGE_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_review_ui import PASSWORD, free_port, make_site, prepared, start_server  # noqa: E402,F401

from merforge.agents.labels import get_space  # noqa: E402
from merforge.storage.records import ReviewDecision  # noqa: E402
from merforge.storage.reviews import ReviewStore  # noqa: E402
from merforge.storage.workspace import Workspace  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("MERFORGE_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium "
                                                               "(make test installs it via scripts/browser.sh)")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()


def serve(prepared, folder: Path, double_share: float):
    site = make_site(prepared, folder, "", double_share=double_share, hasher=None)
    site.ws.close()
    port = free_port()
    return site, start_server(site.ws.root, port), f"http://127.0.0.1:{port}"


def stop(server) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except Exception:
        server.kill()
        server.wait(timeout=10)


def keyboard_login(page, base: str, name: str) -> None:
    page.goto(f"{base}/queue")
    assert "/login" in page.url
    # the name field has autofocus; wait until it really has the focus before typing
    page.wait_for_function("document.activeElement && document.activeElement.tagName === 'INPUT'")
    page.keyboard.type(name)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    try:
        page.wait_for_url(f"{base}/queue", timeout=20_000)
    except Exception:
        raise AssertionError(f"login did not reach the queue; the page says: {page.inner_text('body')[:500]!r}") from None


def test_review_with_the_keyboard_only_and_untrusted_text_stays_inert(prepared, tmp_path, browser):
    site, server, base = serve(prepared, tmp_path / "site", double_share=0.0)
    try:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        keyboard_login(page, base, "bob")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "review-queue.png"), full_page=True)

        page.keyboard.press("n")
        page.wait_for_url(f"{base}/clips/{site.xss_clip}")
        page.wait_for_load_state("networkidle")
        # The planted payloads show as text and never ran.
        steps = page.locator("#annotations").inner_text()
        assert "<script>alert(1)</script>" in steps and "<img src=x onerror=alert(1)>" in steps
        assert "<script>alert(2)</script>" in page.locator("#transcript").inner_text()
        assert page.locator("#annotations img, #transcript script, #annotations script").count() == 0
        assert dialogs == []
        page.screenshot(path=str(ARTIFACTS / "review-clip.png"), full_page=True)

        page.keyboard.press("?")
        assert page.locator("#help").is_visible()
        page.keyboard.press("Escape")
        assert not page.locator("#help").is_visible()

        labels = get_space(site.ws.config.annotate.label_space).labels
        page.keyboard.press("2")
        assert page.locator(f'input[name=label][value="{labels[1]}"]').is_checked()
        page.keyboard.press("c")
        page.wait_for_url(lambda url: "/clips/" in url and site.xss_clip not in url)
        next_clip = page.url.rsplit("/", 1)[1]
        page.keyboard.press("r")
        page.wait_for_url(lambda url: next_clip not in url)
        assert dialogs == []
        context.close()
    finally:
        stop(server)
    ws = Workspace.open(site.ws.root)
    try:
        reviews = ReviewStore(ws.store, ws.config.review)
        [corrected] = reviews.reviews(site.xss_clip)
        assert (corrected.reviewer, corrected.decision, corrected.label) == ("bob", ReviewDecision.CORRECT, labels[1])
        assert corrected.seconds_spent > 0
        [rejected] = reviews.reviews(next_clip)
        assert rejected.decision == ReviewDecision.REJECT
    finally:
        ws.close()
    assert (ARTIFACTS / "review-queue.png").stat().st_size > 5000
    assert (ARTIFACTS / "review-clip.png").stat().st_size > 5000


def test_double_annotation_is_blind_for_both_reviewers(prepared, tmp_path, browser):
    site, server, base = serve(prepared, tmp_path / "blind", double_share=1.0)
    try:
        bob_context = browser.new_context()
        carol_context = browser.new_context()
        bob, carol = bob_context.new_page(), carol_context.new_page()
        keyboard_login(bob, base, "bob")
        bob.keyboard.press("n")
        bob.wait_for_url(f"{base}/clips/{site.xss_clip}")
        assert bob.locator("#blind-tag").is_visible()
        assert bob.locator("#annotations, #consensus, #other-reviews, button[data-key=a]").count() == 0
        assert "evil-llm" not in bob.content() and bob.locator("input[name=label]:checked").count() == 0
        bob.keyboard.press("3")
        bob.keyboard.press("c")
        bob.wait_for_url(lambda url: site.xss_clip not in url)

        keyboard_login(carol, base, "carol")
        carol.keyboard.press("n")
        carol.wait_for_url(f"{base}/clips/{site.xss_clip}")
        assert carol.locator("#annotations, #consensus, #other-reviews, button[data-key=a]").count() == 0
        assert carol.locator("input[name=label]:checked").count() == 0
        carol.screenshot(path=str(ARTIFACTS / "review-clip-blind.png"), full_page=True)
        carol.keyboard.press("4")
        carol.keyboard.press("c")
        carol.wait_for_url(lambda url: site.xss_clip not in url)
        # Once decided, carol may look back and see bob's decision and the pipeline's.
        carol.goto(f"{base}/clips/{site.xss_clip}")
        assert carol.locator("#other-reviews").is_visible() and carol.locator("#consensus").is_visible()
        bob_context.close()
        carol_context.close()
    finally:
        stop(server)
    ws = Workspace.open(site.ws.root)
    try:
        labels = get_space(ws.config.annotate.label_space).labels
        decided = {(r.reviewer, r.label, r.blind) for r in ReviewStore(ws.store, ws.config.review).reviews(site.xss_clip)}
        assert decided == {("bob", labels[2], True), ("carol", labels[3], True)}
    finally:
        ws.close()
