"""The storefront in a real browser: Debian's Chromium driven by Playwright, on the real platform.

Each step leaves a screenshot in test-artifacts/screenshots/<test>/ (CI keeps the folder).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import aiohttp
import pytest
from playwright.async_api import BrowserContext, Page, Route, async_playwright, expect

from tests.e2e.client import bearer, call
from tests.e2e.platform import SHOPSTREAM, Platform
from tests.fake_oauth import FakeProvider
from tests.helpers import eventually
from tests.infra import shared_tmpdir

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium calls home, which this network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
WAIT_MS = 20_000

pytestmark = [
    pytest.mark.e2e,
    # The storefront does not depend on the broker: once, on the platform's Tansu.
    pytest.mark.parametrize("broker", ["tansu"], indirect=True),
    # In CI (which installs it) a missing browser fails the tests instead.
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"),
        reason="needs Debian's chromium (make browser)",
    ),
]


class Steps:
    """Screenshots of a journey, numbered in order."""

    def __init__(self, page: Page, name: str) -> None:
        self.page = page
        self.folder = SCREENSHOTS / name
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("*.png"):
            old.unlink()
        self.count = 0

    async def shot(self, step: str) -> None:
        self.count += 1
        await self.page.screenshot(
            path=str(self.folder / f"{self.count:02d}-{step}.png"), full_page=True
        )


@pytest.fixture
async def browser() -> AsyncIterator[BrowserContext]:
    """A fresh Chromium profile, phone-sized, for one test."""
    with shared_tmpdir("shopstream-chromium-") as profile:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                str(profile),
                executable_path=str(CHROMIUM),
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": 412, "height": 915},
            )
            context.set_default_timeout(WAIT_MS)
            expect.set_options(timeout=WAIT_MS)
            try:
                yield context
            finally:
                await context.close()


async def new_page(context: BrowserContext) -> tuple[Page, list[str]]:
    """The profile's page, and the script errors it will have thrown."""
    page = context.pages[0] if context.pages else await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page, errors


async def product(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str], stock: int
) -> dict[str, object]:
    body = {"name": f"Lamp {uuid.uuid4().hex[:6]}", "price": 19.5, "stock": stock}
    return await call(
        http, "POST", f"{platform.url}/api/v1/products", 201, headers=admin, json=body
    )


async def test_the_shopper_journey(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str], browser: BrowserContext
) -> None:
    for _ in range(9):
        lamp = await product(platform, http, admin, 10)
    page, errors = await new_page(browser)
    steps = Steps(page, "shopper")
    await page.goto(platform.url + "/")
    await expect(page.get_by_role("heading", level=1, name="Products")).to_be_visible()
    await steps.shot("home")

    email, password = f"shopper-{uuid.uuid4().hex[:8]}@example.com", uuid.uuid4().hex
    await page.get_by_role("link", name="Register").click()
    await page.get_by_label("Full name").fill("Sam Shopper")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await steps.shot("register")
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_role("status").first).to_contain_text("Welcome, Sam Shopper")
    await expect(page.get_by_role("link", name="My orders", exact=True)).to_be_visible()
    await steps.shot("registered")

    pages = page.get_by_role("navigation", name="Pages")
    await expect(pages).to_contain_text("Page 1 of")
    first_page = await page.locator(".card h2").all_inner_texts()
    await pages.get_by_role("link", name="Next page").click()
    await expect(pages).to_contain_text("Page 2 of")
    second_page = await page.locator(".card h2").all_inner_texts()
    assert second_page
    assert not set(first_page) & set(second_page)
    await steps.shot("page-2")
    await pages.get_by_role("link", name="Previous page").click()
    await expect(pages).to_contain_text("Page 1 of")

    name = str(lamp["name"])
    await page.get_by_label(f"Quantity of {name}").fill("2")
    await page.get_by_role("button", name=f"Add {name} to cart").click()
    await expect(page.get_by_role("status").first).to_contain_text(
        f"Added 2 \N{MULTIPLICATION SIGN} {name}"
    )
    await expect(page.locator("#cart-count")).to_have_text("2")
    await steps.shot("added-to-cart")

    await page.get_by_role("link", name=re.compile(r"^Cart")).click()
    await expect(page.get_by_role("row", name=re.compile(name))).to_contain_text("39.00")
    await steps.shot("cart")
    await page.get_by_role("link", name="Go to checkout").click()
    await expect(page.get_by_role("heading", level=1, name="Checkout")).to_be_visible()
    await steps.shot("checkout")
    await page.get_by_role("button", name="Place order and pay").click()

    await page.wait_for_url(re.compile(r"/sandbox/pay/"))
    await expect(page.locator("#amount")).to_have_text("39.00")
    await steps.shot("hosted-payment-page")
    await page.get_by_role("button", name="Approve payment").click()

    await page.wait_for_url(re.compile(r"/#/orders/\d+$"))
    status = page.locator("#order-status")
    await expect(status).to_have_attribute("aria-live", "polite")
    await steps.shot("back-from-payment")
    await page.evaluate("window.sameDocument = true")
    await expect(status).to_have_text("Status: Paid")
    await expect(page.get_by_role("main")).to_contain_text(
        f"2 \N{MULTIPLICATION SIGN} {name} at 19.50"
    )
    assert await page.evaluate("window.sameDocument === true"), "the page was reloaded"
    await steps.shot("paid")

    order_id = page.url.rsplit("/", 1)[-1]
    await page.get_by_role("link", name="My orders", exact=True).click()
    newest = page.get_by_role("row").nth(1)
    await expect(newest).to_contain_text(f"Order {order_id}")
    await expect(newest).to_contain_text("Paid")
    await steps.shot("order-history")
    assert errors == []


async def test_the_admin_journey(
    platform: Platform, http: aiohttp.ClientSession, browser: BrowserContext
) -> None:
    email, password = f"admin-{uuid.uuid4().hex[:8]}@example.com", uuid.uuid4().hex
    made = await asyncio.to_thread(
        subprocess.run,
        [SHOPSTREAM, "users", "create-admin", "--email", email, "--password-stdin"],
        input=password + "\n",
        env=platform.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    page, errors = await new_page(browser)
    steps = Steps(page, "admin")
    await page.goto(platform.url + "/#/login")
    # The platform runs with all three OAuth providers configured (a local fake of them).
    for provider in ("Google", "Facebook", "GitHub"):
        await expect(page.get_by_role("button", name=f"Log in with {provider}")).to_be_visible()
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill("not-" + password)
    await page.get_by_role("button", name="Log in", exact=True).click()
    await expect(page.get_by_role("alert")).to_have_text(
        "That email and password don't match an account."
    )
    await steps.shot("problem-in-words")
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in", exact=True).click()
    await expect(page.get_by_role("link", name="Admin")).to_be_visible()
    await steps.shot("logged-in")

    await page.get_by_role("link", name="Admin").click()
    await page.get_by_role("link", name="New product").click()
    name = f"Chair {uuid.uuid4().hex[:6]}"
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Description").fill("Oak, sturdy")
    await page.get_by_label("Price").fill("120")
    await page.get_by_label("Stock").fill("4")
    await steps.shot("new-product")
    await page.get_by_role("button", name="Create product").click()
    await expect(page.get_by_role("status").first).to_contain_text(f"{name} was created")
    row = page.get_by_role("row", name=re.compile(name))
    await expect(row).to_contain_text("120.00")
    await steps.shot("created")

    await row.get_by_role("link", name=f"Edit {name}").click()
    await page.get_by_label("Name").fill(f"{name} deluxe")
    await page.get_by_label("Price").fill("150")
    await page.get_by_role("button", name="Save product").click()
    name = f"{name} deluxe"
    row = page.get_by_role("row", name=re.compile(name))
    await expect(row).to_contain_text("150.00")
    await steps.shot("edited")

    await row.get_by_label(f"Stock of {name}").fill("9")
    await row.get_by_role("button", name=f"Set stock of {name}").click()
    await expect(page.get_by_role("status").first).to_contain_text(f"Stock of {name} is now 9")
    await steps.shot("stock-changed")
    found = await call(http, "GET", f"{platform.url}/api/v1/products?limit=100", 200)
    (created,) = [p for p in found["products"] if p["name"] == name]
    assert (created["stock"], created["price"], created["description"]) == (9, 150.0, "Oak, sturdy")

    await row.get_by_role("button", name=f"Delete {name}").click()
    await steps.shot("confirm-delete")
    await row.get_by_role("button", name=f"Yes, delete {name}").click()
    await expect(page.get_by_role("status").first).to_contain_text(f"{name} was deleted")
    await expect(page.get_by_role("row", name=re.compile(name))).to_have_count(0)
    await steps.shot("deleted")
    await call(http, "GET", f"{platform.url}/api/v1/products/{created['id']}", 404)
    assert errors == []


async def test_an_oauth_login_ends_on_the_storefront(
    platform: Platform,
    http: aiohttp.ClientSession,
    oauth_provider: FakeProvider,
    browser: BrowserContext,
) -> None:
    """Log in with GitHub (the fake provider, which checks the client, the redirect URI, PKCE
    and single-use codes): the provider sends the browser to the storefront's
    /oauth/github/callback, which finishes the login through the API and keeps the tokens."""
    email = f"octo-{uuid.uuid4().hex[:8]}@example.com"
    oauth_provider.profiles["github"] = {
        "id": uuid.uuid4().int % 10**9,
        "login": "octo",
        "name": "Octo Shopper",
        "emails": [{"email": email, "primary": True, "verified": True}],
    }
    page, errors = await new_page(browser)
    steps = Steps(page, "oauth")
    # The session's platform registers the API's callback with the provider (tests/e2e/
    # test_identity.py calls it directly); a storefront registers /oauth/<provider>/callback
    # (README). So the provider's answer is taken as it is and only its redirect is moved there,
    # with the provider's code and state. (A route sees a navigation's first request only, not
    # where it is redirected to: hence at the provider.)
    api_callback = f"{platform.url}/api/v1/oauth/github/callback?"
    arrived: list[str] = []

    async def to_the_storefront(route: Route) -> None:
        response = await route.fetch(max_redirects=0)
        location = response.headers["location"]
        assert response.status == 302, await response.text()
        assert location.startswith(api_callback), location
        query = location.removeprefix(api_callback)
        arrived.append(query)
        storefront = f"{platform.url}/oauth/github/callback?{query}"
        await route.fulfill(response=response, headers={**response.headers, "location": storefront})

    await page.route(f"{oauth_provider.base}/github/authorize?*", to_the_storefront)
    await page.goto(platform.url + "/#/login")
    login = page.get_by_role("button", name="Log in with GitHub")
    await expect(login).to_be_visible()
    await steps.shot("login")
    await login.click()

    await expect(page.get_by_role("status").first).to_contain_text("You are logged in.")
    assert len(arrived) == 1, "the provider sent the browser back once"
    assert {"code", "state"} <= parse_qs(arrived[0]).keys()
    assert urlparse(page.url).path == "/", "the code and state are gone from the address bar"
    await expect(page.get_by_role("link", name="My orders", exact=True)).to_be_visible()
    await expect(page.get_by_role("link", name="Log in")).to_be_hidden()
    await steps.shot("logged-in")
    stored = await page.evaluate("JSON.parse(localStorage.getItem('shopstream.session'))")
    assert stored["role"] == "user"
    me = await call(
        http, "GET", f"{platform.url}/api/v1/users/me", 200, headers=bearer(stored["token"])
    )
    assert (me["email"], me["provider"]) == (email, "github")

    await page.get_by_role("link", name="My orders", exact=True).click()
    await expect(page.get_by_role("heading", level=1, name="My orders")).to_be_visible()
    await steps.shot("orders")
    assert errors == []


async def test_the_link_of_a_verification_mail_verifies_the_email(
    platform: Platform, http: aiohttp.ClientSession, browser: BrowserContext
) -> None:
    """The users process logs the mail (MAILER=log); its link opens the storefront, which uses
    the token up and takes it out of the address bar."""
    email, password = f"verify-{uuid.uuid4().hex[:8]}@example.com", uuid.uuid4().hex
    account = {"full_name": "Veri Fier", "email": email, "password": password}
    await call(http, "POST", f"{platform.url}/api/v1/auth/register", 201, json=account)
    link = await mailed_link(platform, email)
    assert link.startswith(f"{platform.url}/#/verify-email?token=")
    page, errors = await new_page(browser)
    steps = Steps(page, "verify-email")
    await page.goto(link)
    await expect(page.get_by_role("heading", level=1, name="Email verified")).to_be_visible()
    await steps.shot("verified")
    assert "token" not in page.url
    tokens = await call(
        http,
        "POST",
        f"{platform.url}/api/v1/auth/login",
        200,
        json={"email": email, "password": password},
    )
    me = await call(
        http, "GET", f"{platform.url}/api/v1/users/me", 200, headers=bearer(tokens["token"])
    )
    assert me["email_verified"] is True

    await page.goto(link)  # a second time: used up
    await expect(page.get_by_role("heading", level=1, name="Sorry")).to_be_visible()
    assert errors == []


async def mailed_link(platform: Platform, email: str) -> str:
    pattern = re.compile(rf"mail to {re.escape(email)}: .* (\S+verify-email\S+)")

    async def probe() -> str | None:
        found = [m.group(1) for line in platform.lines if (m := pattern.search(line))]
        return found[-1] if found else None

    return await eventually(probe, timeout=30, what=f"a verification mail to {email}")
