"""Property-based tests from /api/openapi.json: whatever schemathesis sends, the API answers
with no 5xx and with a response that matches its own schema.

The endpoints that call Ray (/organism/*, /readyz, /coordinator/health) are left out here:
without a Coordinator they answer 503 by design, and test_organism_api.py covers them.
"""

from __future__ import annotations

import json
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

RAY_PATHS = r"^/(organism|readyz|coordinator)"


@pytest.fixture
def api_schema(db):
    from django.core.signals import request_finished, request_started
    from django.core.wsgi import get_wsgi_application
    from django.db import close_old_connections

    # As Django's test client does: a request must not close the test's open transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        schema = schemathesis.openapi.from_wsgi("/api/openapi.json", get_wsgi_application())
        yield schema
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


schema = schemathesis.pytest.from_fixture("api_schema").exclude(path_regex=RAY_PATHS)


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    # The same examples every run: CI must not pass or fail by luck.
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_server_errors_and_responses_match_the_schema(case, api_token):
    assert not re.match(RAY_PATHS, case.path), "this test must not reach Ray"
    # Every request carries a valid token, so a "negative" case that schemathesis made invalid
    # only through its Authorization header is in fact valid: rejection is checked in
    # test_tasks_api.py and test_auth.py instead.
    excluded = [negative_data_rejection]
    if case.query and "cursor" in case.query:
        # A cursor is opaque: only one the server handed out is valid, so a made-up one is
        # rightly refused (400) even though any string fits the schema.
        excluded.append(positive_data_acceptance)
    if case.query and "params" in case.query:
        # A params filter is a JSON object in a string: JSON Schema cannot say "a string that
        # parses as a JSON object", so a made-up string is rightly refused (400 naming params).
        excluded.append(positive_data_acceptance)
    body = case.body if isinstance(case.body, dict) else {}
    bulk_filter = body.get("filter") if isinstance(body.get("filter"), dict) else {}
    if case.path == "/tasks/bulk" and not any(bulk_filter.values()):
        # An action on all matching needs at least one filter field set (a 400 naming
        # filter), so that an empty, null or blank filter never means "every task".
        excluded.append(positive_data_acceptance)
    if "\\u0000" in json.dumps(case.body, default=str):
        # PostgreSQL cannot store NUL in text or jsonb, so the API refuses it (422) anywhere in
        # a body; JSON Schema cannot say "no NUL in any nested string".
        excluded.append(positive_data_acceptance)
    case.call_and_validate(
        headers={"Authorization": f"Bearer {api_token}"}, excluded_checks=excluded
    )
