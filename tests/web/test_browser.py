"""The panel in a real browser: Debian's Chromium driven by Playwright.

Each test saves screenshots of the pages it visits to test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from support import Live
from support.fake_openai import API_KEY

from twilio_chat.jobs.worker import Worker

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
PHONE = "+15551230001"
LIVE_TIMEOUT = 2000  # ms: live updates must arrive within 2 seconds


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module."""
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def panel(live_factory: Callable[..., Live]) -> Iterator[Live]:
    """A live app with its reply worker running, as `make run` has it."""
    live = live_factory()
    stop = threading.Event()
    thread = threading.Thread(target=Worker(live.app).run, args=(stop,), daemon=True)
    thread.start()
    yield live
    stop.set()
    thread.join(5)


def new_page(
    browser: Browser, locale: str = "en-US", **options: Any
) -> tuple[BrowserContext, Page]:
    """Open a fresh context (no cookies) and page; fail the test on any console error."""
    context = browser.new_context(locale=locale, **options)
    page = context.new_page()
    errors: list[str] = []
    # Script errors and CSP violations; an HTTP error answer (e.g. a 401 page) is not one.
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.console_errors = errors  # type: ignore[attr-defined]
    return context, page


def shot(page: Page, name: str) -> None:
    """Save a full-page screenshot."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def login(page: Page, live: Live) -> None:
    """Log in as the admin."""
    page.goto(live.url + "/login")
    page.get_by_label(re.compile("Username|Nazwa użytkownika")).fill("admin")
    page.get_by_label(re.compile("Password|Hasło")).fill("admin-password")
    page.locator("form button[type=submit]").click()
    page.wait_for_url(live.url + "/")


def no_console_errors(page: Page) -> None:
    """Assert the page logged no errors (a CSP violation would show here)."""
    assert page.console_errors == []  # type: ignore[attr-defined]


def text_app(live: Live, body: str, sender: str = PHONE) -> None:
    """Text the app from the sandbox's phone simulator (outside the browser)."""
    answer = live.api("POST", "/api/sandbox/simulate", json={"from": sender, "body": body})
    assert answer.status_code == 201, answer.text


def test_login_with_the_keyboard_and_a_wrong_password_first(browser: Browser, panel: Live) -> None:
    context, page = new_page(browser)
    page.goto(panel.url + "/")
    expect(page).to_have_url(re.compile("/login"))
    shot(page, "login")
    page.keyboard.press("Tab")  # skip link is first; then the username field
    page.get_by_label("Username").focus()
    page.keyboard.type("admin")
    page.keyboard.press("Tab")
    page.keyboard.type("wrong-password")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    expect(page.get_by_label("Username")).to_have_value("admin")
    page.get_by_label("Password").fill("admin-password")
    page.keyboard.press("Enter")
    page.wait_for_url(panel.url + "/")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    shot(page, "dashboard")
    no_console_errors(page)
    context.close()


def test_send_from_the_dashboard_with_the_segment_counter(browser: Browser, panel: Live) -> None:
    context, page = new_page(browser)
    login(page, panel)
    body = page.get_by_label("Message", exact=True)
    body.fill("Hello from the dashboard")
    expect(page.locator("#send-counter")).to_contain_text("24 characters · 1 SMS (GSM-7")
    body.fill("Zażółć gęślą jaźń")
    expect(page.locator("#send-counter")).to_contain_text("UCS-2, 70 per SMS")
    expect(page.locator("#send-counter")).to_contain_text("“ż” is not in GSM-7")
    body.fill("Hello from the dashboard")
    page.get_by_label("To (E.164").fill("+15557654321")
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("Sent.")
    row = page.locator("#latest-messages tr", has_text="Hello from the dashboard")
    expect(row).to_be_visible()
    expect(row).to_contain_text("delivered", timeout=5000)
    shot(page, "dashboard-sent")
    no_console_errors(page)
    context.close()


def test_bad_input_is_shown_next_to_the_field_and_kept(browser: Browser, panel: Live) -> None:
    context, page = new_page(browser)
    login(page, panel)
    page.get_by_label("To (E.164").fill("555-1234")
    page.get_by_label("Message", exact=True).fill("keep me")
    page.get_by_role("button", name="Send", exact=True).click()
    feedback = page.locator('[data-error-for="to"]')
    expect(feedback).to_contain_text("is not a possible phone number")
    expect(page.get_by_label("To (E.164")).to_have_class(re.compile("is-invalid"))
    expect(page.get_by_label("Message", exact=True)).to_have_value("keep me")
    shot(page, "dashboard-bad-input")
    context.close()


def test_a_simulated_text_appears_live_and_is_answered(browser: Browser, panel: Live) -> None:
    text_app(panel, "first text")
    context, page = new_page(browser)
    login(page, panel)
    page.goto(f"{panel.url}/chat/{PHONE}")
    expect(page.locator(".bubble", has_text="Echo: first text")).to_be_visible()
    page.wait_for_timeout(300)  # the page is now waiting on its long poll
    text_app(panel, "are you live?")
    expect(page.locator(".bubble-row.them", has_text="are you live?")).to_be_visible(
        timeout=LIVE_TIMEOUT
    )
    expect(page.locator(".bubble-row.us", has_text="Echo: are you live?")).to_be_visible(
        timeout=LIVE_TIMEOUT + 1000
    )
    shot(page, "chat")
    no_console_errors(page)
    context.close()


def test_conversations_list_updates_live(browser: Browser, panel: Live) -> None:
    text_app(panel, "hello")
    context, page = new_page(browser)
    login(page, panel)
    page.goto(panel.url + "/conversations")
    expect(page.locator("#conversation-list")).to_contain_text(PHONE)
    expect(page).to_have_title(re.compile(r"^\(1\) Conversations"))
    page.wait_for_timeout(300)
    text_app(panel, "new person here", sender="+15557770001")
    expect(page.locator("#conversation-list")).to_contain_text("+15557770001", timeout=LIVE_TIMEOUT)
    expect(page).to_have_title(re.compile(r"^\(2\) Conversations"))  # the unread, live
    shot(page, "conversations")
    context.close()


def test_reply_by_hand_pause_and_rename(browser: Browser, panel: Live) -> None:
    text_app(panel, "question")
    context, page = new_page(browser)
    login(page, panel)
    page.goto(f"{panel.url}/chat/{PHONE}")
    page.get_by_label("Reply").fill("A human answer")
    page.get_by_role("button", name="Send", exact=True).click()
    bubble = page.locator(".bubble-row.us", has_text="A human answer")
    expect(bubble).to_be_visible(timeout=LIVE_TIMEOUT)
    expect(bubble.locator(".tick")).to_have_text("✓✓", timeout=5000)
    # A person took over: the switch and "Paused until" say so at once, with no reload.
    expect(page.get_by_label("Pause automatic replies")).to_be_checked(timeout=LIVE_TIMEOUT)
    expect(page.locator("[data-paused]")).to_contain_text("Paused until")
    page.get_by_label("Pause automatic replies").uncheck()
    expect(page.get_by_role("status")).to_have_text("Automatic replies resumed.")
    expect(page.locator("[data-paused]")).to_have_text("")
    page.reload()
    expect(page.get_by_label("Pause automatic replies")).not_to_be_checked()
    page.get_by_label("Contact name").fill("Alice")
    page.get_by_role("button", name="Save name").click()
    expect(page.get_by_role("status")).to_have_text("Saved.")
    conversation = panel.api("GET", f"/api/conversations/{PHONE}").json()["conversation"]
    assert conversation["name"] == "Alice"
    assert conversation["replies_paused"] is False
    context.close()


def test_times_are_shown_in_the_readers_time_zone(browser: Browser, panel: Live) -> None:
    text_app(panel, "what time is it?")
    context, page = new_page(browser, timezone_id="Asia/Tokyo")
    login(page, panel)
    page.goto(f"{panel.url}/chat/{PHONE}")
    first = page.locator(".bubble-meta time").first
    expect(first).to_have_text(re.compile(r"now|min"))  # relative while recent
    assert "Japan" in (first.get_attribute("title") or "")  # the full time names the zone
    page.goto(f"{panel.url}/conversations")
    expect(page.locator("#conversation-list time").first).not_to_contain_text("UTC")
    context.close()


def test_a_failed_delivery_shows_its_error_text(browser: Browser, panel: Live) -> None:
    number = "+15551230007"  # the sandbox makes numbers ending 0007 fail with 30007
    panel.api("POST", "/api/send-message", json={"to": number, "body": "will be filtered"})
    context, page = new_page(browser)
    login(page, panel)
    page.goto(f"{panel.url}/chat/{number}")
    error = page.locator(".bubble-error")
    expect(error).to_have_text("filtered by the carrier (30007)", timeout=5000)
    expect(page.locator(".bubble .tick")).to_have_text("✗")
    expect(page.locator(".bubble-hint")).to_contain_text("carriers filter link shorteners")
    page.get_by_role("button", name="Retry").click()
    expect(page.get_by_role("status")).to_have_text("Sent again.")
    expect(page.locator(".bubble-row.us")).to_have_count(2, timeout=LIVE_TIMEOUT)
    shot(page, "chat-failed")
    context.close()


def test_choose_the_auto_reply_on_the_automation_page_and_see_it_answer(
    browser: Browser, panel: Live
) -> None:
    context, page = new_page(browser)
    login(page, panel)
    page.goto(panel.url + "/automation")
    badge = page.locator('[data-role="mode-badge"]')
    expect(badge).to_have_text("Answering: Echo")
    message = page.get_by_label("Message", exact=True)
    message.fill("")
    page.get_by_role("button", name="Save the auto-reply").click()
    expect(page.locator('[data-error-for="message"]')).to_contain_text("1 to 640 characters")
    message.fill("We are closed; back at 9 ☺")
    expect(page.locator("#auto-segments")).to_contain_text("UCS-2")  # the smiley is not GSM-7
    message.fill("We are closed; back at 9.")
    expect(page.locator("#auto-segments")).to_have_text(
        "25 characters · 1 SMS (GSM-7, 160 per SMS)"
    )
    page.get_by_role("button", name="Save the auto-reply").click()
    expect(page.get_by_role("status")).to_have_text("Saved.")
    page.locator("#mode-auto_reply").check()
    page.get_by_role("button", name="Save", exact=True).click()
    page.wait_for_load_state("load")
    expect(badge).to_have_text("Answering: Auto-reply", timeout=3000)
    shot(page, "automation")
    text_app(panel, "open?")
    page.goto(f"{panel.url}/chat/{PHONE}")
    expect(page.locator(".bubble-row.us", has_text="We are closed; back at 9.")).to_be_visible(
        timeout=LIVE_TIMEOUT + 1000
    )
    context.close()


def test_ai_settings_save_and_test_connection_uses_the_forms_values(
    browser: Browser, panel: Live, fake_openai: Any
) -> None:
    context, page = new_page(browser)
    login(page, panel)
    page.goto(panel.url + "/automation#ai")
    page.get_by_label("Model", exact=True).fill("my-model")
    page.get_by_label("Temperature (0–2)").fill("3")
    page.get_by_role("button", name="Save the AI settings").click()
    expect(page.locator('[data-error-for="temperature"]')).to_contain_text("from 0 to 2")
    page.get_by_label("Temperature (0–2)").fill("0.5")
    page.get_by_role("button", name="Save the AI settings").click()
    expect(page.get_by_role("status")).to_have_text("Saved.")
    result = page.locator('[data-role="ai-test-result"]')
    page.get_by_role("button", name="Test connection").click()
    expect(result).to_contain_text("no OpenAI API key is set")
    # Not saved: the test tries the values as they stand in the form.
    page.get_by_label("API key").fill(API_KEY)
    page.get_by_label("Base URL (OpenAI-compatible server; empty: OpenAI)").fill(
        fake_openai.base_url
    )
    page.get_by_role("button", name="Test connection").click()
    expect(result).to_contain_text("Connected. The model answered:")
    shot(page, "ai")
    config = panel.api("GET", "/api/ai/config").json()
    assert (config["model"], config["temperature"], config["api_key_set"]) == (
        "my-model",
        0.5,
        False,
    )
    no_console_errors(page)
    context.close()


def test_the_phone_simulator(browser: Browser, panel: Live) -> None:
    context, page = new_page(browser)
    login(page, panel)
    page.goto(panel.url + "/simulator")
    page.get_by_label("Text from this phone").fill("hi from the simulator")
    page.get_by_role("button", name="Text the app").click()
    screen = page.locator(".phone-screen")
    expect(screen).to_contain_text("hi from the simulator", timeout=LIVE_TIMEOUT)
    expect(screen).to_contain_text("Echo: hi from the simulator", timeout=LIVE_TIMEOUT + 1000)
    shot(page, "simulator")
    context.close()


def test_an_mms_picture_is_shown_through_the_media_proxy(browser: Browser, panel: Live) -> None:
    sample = f"{panel.settings.api_base_url}/media/sample.png"
    answer = panel.api(
        "POST",
        "/api/sandbox/simulate",
        json={"from": PHONE, "body": "look", "media_urls": [sample]},
    )
    assert answer.status_code == 201
    context, page = new_page(browser)
    login(page, panel)
    page.goto(f"{panel.url}/chat/{PHONE}")
    image = page.locator("img.bubble-media")
    expect(image).to_be_visible()
    assert image.evaluate("img => img.naturalWidth") == 64
    context.close()


def test_polish(browser: Browser, panel: Live) -> None:
    context, page = new_page(browser, locale="pl-PL")
    login(page, panel)
    expect(page.get_by_role("link", name="Automatyzacja", exact=True)).to_be_visible()
    page.goto(panel.url + "/automation")
    expect(page.get_by_role("button", name="Przetestuj połączenie")).to_be_visible()
    page.get_by_label("Temperatura (0–2)").fill("9")
    page.get_by_role("button", name="Zapisz ustawienia AI").click()
    expect(page.locator('[data-error-for="temperature"]')).to_have_text(
        "Temperatura musi być liczbą od 0 do 2."
    )
    shot(page, "ai-pl")
    # The navbar switch wins over the browser's language.
    page.get_by_role("link", name="English").click()
    expect(page.get_by_role("button", name="Test connection")).to_be_visible()
    context.close()


def test_usable_on_a_375_pixel_phone(browser: Browser, panel: Live) -> None:
    text_app(panel, "small screen")
    context, page = new_page(browser, viewport={"width": 375, "height": 740})
    login(page, panel)
    page.goto(f"{panel.url}/chat/{PHONE}")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375
    expect(page.get_by_label("Reply")).to_be_visible()
    shot(page, "chat-375px")
    page.goto(panel.url + "/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    shot(page, "dashboard-375px")
    context.close()


def test_the_api_docs_work_offline_under_the_csp_and_try_it_out_uses_the_login(
    browser: Browser, panel: Live
) -> None:
    context, page = new_page(browser)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(panel.url + "/api/docs")  # public, as /api/openapi.json is
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Twilio Chat API")
    expect(page.locator("#operations-messages-sendMessage")).to_be_visible()
    shot(page, "api-docs")
    assert requested and all(url.startswith(panel.url) for url in requested), requested

    # Logged in to the panel, "Try it out" rides on the session, with its CSRF token.
    login(page, panel)
    page.goto(panel.url + "/api/docs#/conversations/resumeConversation")
    operation = page.locator("#operations-conversations-resumeConversation")
    operation.get_by_role("button", name="Try it out").click()
    operation.locator('input[placeholder="participant"]').fill(PHONE)
    operation.get_by_role("button", name="Execute").click()
    expect(
        operation.locator(".live-responses-table td.response-col_status:not(.col_header)")
    ).to_have_text("200")
    no_console_errors(page)
    context.close()


# Live updates: the banner, reconnection, and typing left alone ----------------------------

BANNER_TIMEOUT = 8000  # ms: the back-off between attempts is at most 5 s


def test_the_panel_polls_its_live_part_about_twice_a_second_and_is_answered_at_once(
    browser: Browser, panel: Live
) -> None:
    context, page = new_page(browser)
    login(page, panel)
    polls: list[tuple[str, int]] = []
    page.on(
        "response",
        lambda r: polls.append((r.url, r.status)) if "/partials/" in r.url else None,
    )
    page.wait_for_timeout(3000)
    assert 4 <= len(polls) <= 8, polls  # every 0.5 s, plus the time each answer takes
    assert all("cursor=" in url for url, _ in polls)
    assert {status for _, status in polls} == {204}  # nothing new: nothing to render
    text_app(panel, "news")
    expect(page.locator("#latest-messages")).to_contain_text("news", timeout=LIVE_TIMEOUT)
    assert 200 in {status for _, status in polls}
    context.close()


def _set_hidden(page: Page, hidden: bool) -> None:
    """Make the page hidden or shown, as switching tabs does (headless Chromium never hides)."""
    page.evaluate(
        """hidden => {
            Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        hidden,
    )


def test_a_hidden_tab_asks_less_often_and_catches_up_when_shown(
    browser: Browser, panel: Live
) -> None:
    context, page = new_page(browser)
    login(page, panel)
    polls: list[float] = []
    page.on("request", lambda r: polls.append(time.monotonic()) if "/partials/" in r.url else None)
    _set_hidden(page, True)
    page.wait_for_timeout(1000)  # the poll already scheduled
    hidden_since = time.monotonic()
    text_app(panel, "while hidden")
    page.wait_for_timeout(6000)
    assert 1 <= len([t for t in polls if t > hidden_since]) <= 2  # every 5 s
    shown = time.monotonic()
    _set_hidden(page, False)
    expect(page.locator("#latest-messages")).to_contain_text("while hidden", timeout=LIVE_TIMEOUT)
    page.wait_for_timeout(1500)
    assert min(t for t in polls if t > shown) - shown < 0.3  # at once when shown
    assert len([t for t in polls if t > shown]) >= 3  # then twice a second again
    context.close()


@pytest.mark.parametrize("failure", ["refused", "no answer", "502"])
def test_a_banner_shows_while_the_server_is_lost_and_goes_when_it_answers_again(
    browser: Browser, panel: Live, failure: str
) -> None:
    context, page = new_page(browser)
    login(page, panel)
    page.goto(f"{panel.url}/conversations")
    banner = page.locator('[data-banner="offline"]')
    expect(banner).to_be_hidden()

    def lost(route: Any) -> None:
        if failure == "refused":
            route.abort("connectionrefused")  # the server is down
        elif failure == "502":
            route.fulfill(status=502, body="Bad Gateway")  # a proxy in front of a stopped app
        # "no answer": the request is left hanging, as with a server that stopped answering

    page.route("**/*", lost)
    expect(banner).to_be_visible(timeout=BANNER_TIMEOUT)
    expect(banner).to_have_text("Connection to the server lost. Reconnecting…")
    expect(page.locator('[data-banner="session"]')).to_be_hidden()
    shot(page, f"banner-offline-{failure.replace(' ', '-')}")
    page.unroute("**/*")
    text_app(panel, "while you were away", sender="+15557770002")
    expect(banner).to_be_hidden(timeout=BANNER_TIMEOUT)
    # Back: the news from while it was lost shows too.
    expect(page.locator("#conversation-list")).to_contain_text("+15557770002", timeout=LIVE_TIMEOUT)
    context.close()


def test_a_banner_shows_when_the_session_ends_and_logging_in_again_keeps_the_typing(
    browser: Browser, panel: Live
) -> None:
    text_app(panel, "hello")
    context, page = new_page(browser)
    login(page, panel)
    page.goto(f"{panel.url}/chat/{PHONE}")
    reply = page.get_by_label("Reply")
    reply.fill("half a repl")
    context.clear_cookies()  # the session is gone (expired, or logged out elsewhere)
    banner = page.locator('[data-banner="session"]')
    expect(banner).to_be_visible(timeout=BANNER_TIMEOUT)
    expect(banner).to_contain_text("Your login session has ended.")
    expect(page.locator('[data-banner="offline"]')).to_be_hidden()
    shot(page, "banner-session")

    with context.expect_page() as opened:
        banner.get_by_role("link", name="Log in again").click()
    login_tab = opened.value
    login_tab.get_by_label("Username").fill("admin")
    login_tab.get_by_label("Password").fill("admin-password")
    login_tab.locator("form button[type=submit]").click()
    login_tab.wait_for_url(f"{panel.url}/chat/{PHONE}")  # back to the page it was opened from
    login_tab.close()

    expect(banner).to_be_hidden(timeout=BANNER_TIMEOUT)
    expect(reply).to_have_value("half a repl")
    reply.press("End")
    reply.type("y")
    page.get_by_role("button", name="Send", exact=True).click()  # the new session's CSRF token
    expect(page.get_by_role("status")).to_have_text("Sent.")
    expect(page.locator(".bubble-row.us", has_text="half a reply")).to_be_visible(
        timeout=LIVE_TIMEOUT
    )
    no_console_errors(page)
    context.close()


@pytest.mark.parametrize(
    ("path", "field", "seen"),
    [
        ("/", "#send-body", "#latest-messages"),  # the dashboard's composer
        ("/", "#f-text", "#latest-messages"),  # the dashboard's filter, beside its live table
        (f"/chat/{PHONE}", "#reply-body", "#thread"),
    ],
)
def test_a_live_update_leaves_a_field_being_typed_in_alone(
    browser: Browser, panel: Live, path: str, field: str, seen: str
) -> None:
    text_app(panel, "first")
    context, page = new_page(browser)
    login(page, panel)
    page.goto(panel.url + path)
    box = page.locator(field)
    box.click()
    page.keyboard.type("Hello wor")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")  # the caret between "Hello w" and "or"
    text_app(panel, "news while typing")
    expect(page.locator(seen)).to_contain_text("news while typing", timeout=LIVE_TIMEOUT)
    expect(box).to_have_value("Hello wor")
    expect(box).to_be_focused()
    assert box.evaluate("el => [el.selectionStart, el.selectionEnd]") == [7, 7]
    page.keyboard.type("orld, w")  # typing goes on where the caret was
    expect(box).to_have_value("Hello world, wor")
    no_console_errors(page)
    context.close()
