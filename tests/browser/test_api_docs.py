"""/api/docs renders from SeedCore's own static files: with every other origin blocked, and
under the Content-Security-Policy."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_api_docs_render_with_the_network_blocked(live_url, page):
    own = urlsplit(live_url).netloc
    elsewhere = []

    def only_our_origin(route):
        if urlsplit(route.request.url).netloc == own:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_our_origin)
    violations = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.goto(f"{live_url}/api/docs")
    # Swagger UI drew the operations it read from /api/openapi.json.
    page.wait_for_selector(".opblock-summary-path >> text=/tasks", timeout=15_000)
    assert page.locator(".opblock").count() >= 10
    assert "SeedCore" in page.inner_text(".info .title")
    assert elsewhere == []
    assert violations == []
