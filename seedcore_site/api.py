"""The root NinjaAPI: mounts each app's router and turns every error into JSON.

Docs at /api/docs, the schema at /api/openapi.json. Every endpoint needs a bearer token or a
signed-in user's session (``tasks.auth``) except the probes, which say so themselves
(``auth=None``).
Every error answer is ``{"detail": "<what went wrong and what to do>", …}``, never a
traceback: the handlers below map each domain exception to its status code.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from organism.api import probes
from organism.api import router as organism_router
from organism.control import ControlFailed, ControlTimeout, ControlUnavailable
from tasks.api import router as tasks_router
from tasks.auth import CsrfRequired, InvalidToken, ScopeTooNarrow, api_auth
from tasks.bulk import BulkActionNotFound
from tasks.idempotency import KeyConflict
from tasks.ids import AmbiguousTaskId, InvalidTaskId, TaskNotFound
from tasks.queue import TransitionNotAllowed, UniqueKeyHeld
from tasks.schedule_api import router as schedules_router
from tasks.schedules import ScheduleNotFound
from tasks.selectors import InvalidCursor, InvalidFilter
from tasks.validation import InvalidTask

logger = logging.getLogger("seedcore.api")

AUTH_HINT = (
    "authentication required: send `Authorization: Bearer <token>` (make one with "
    "`python manage.py createapitoken USERNAME`) or sign in at /dashboard/login/"
)

api = NinjaAPI(
    title="SeedCore",
    version="1.0.0",
    description=(
        "A durable task queue on Ray. Authenticate with `Authorization: Bearer <token>` "
        "(`python manage.py createapitoken USERNAME`) or a signed-in session with CSRF. "
        "What a caller may do is its user's permission (groups viewer, operator, "
        "organism admin), and a token's never more than its own scope. "
        "Task IDs in paths are full UUIDs or prefixes of at least 4 hex digits."
    ),
    docs_url="/api/docs",
    openapi_url="/api/openapi.json",
    auth=api_auth,
    urls_namespace="api",
)
api.add_router("", tasks_router)
api.add_router("", schedules_router)
api.add_router("", organism_router)
api.add_router("", probes)


def _error(request: HttpRequest, code: int, detail: str, **extra: Any) -> HttpResponse:
    return api.create_response(request, {"detail": detail, **extra}, status=code)


def _location(loc: Any) -> str:
    # ninja prefixes each location with where it came from ("body", "query", "path") and, for
    # a body, the parameter's name; a person wants the field's own dotted path.
    parts = [str(part) for part in loc]
    if parts and parts[0] in {"body", "query", "path", "header", "cookie"}:
        source, parts = parts[0], parts[1:]
        if source in {"body", "query"} and len(parts) > 1:
            parts = parts[1:]
    return ".".join(parts) or "body"


@api.exception_handler(ValidationError)
def invalid_input(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = []
    for error in exc.errors:
        field = _location(error.get("loc", ()))
        message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
        if error.get("type") == "extra_forbidden":
            message = "is not a known field"
        errors.append({"field": field, "message": message})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
    return _error(request, 422, f"invalid request: {detail}", errors=errors)


@api.exception_handler(InvalidTask)
def invalid_task(request: HttpRequest, exc: InvalidTask) -> HttpResponse:
    # The library's own check (a rule the schema cannot say, e.g. a blank type).
    errors = [{"field": field, "message": message} for field, message in exc.errors.items()]
    return _error(request, 422, f"invalid request: {exc}", errors=errors)


@api.exception_handler(AuthenticationError)
def unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = _error(request, 401, AUTH_HINT)
    response["WWW-Authenticate"] = "Bearer"
    return response


@api.exception_handler(InvalidToken)
def invalid_token(request: HttpRequest, exc: InvalidToken) -> HttpResponse:
    response = _error(request, 401, str(exc))
    response["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


@api.exception_handler(ScopeTooNarrow)
def scope_too_narrow(request: HttpRequest, exc: ScopeTooNarrow) -> HttpResponse:
    return _error(request, 403, str(exc))


@api.exception_handler(CsrfRequired)
def csrf_required(request: HttpRequest, exc: CsrfRequired) -> HttpResponse:
    return _error(request, 403, str(exc))


@api.exception_handler(InvalidTaskId)
def invalid_task_id(request: HttpRequest, exc: InvalidTaskId) -> HttpResponse:
    return _error(request, 400, str(exc))


@api.exception_handler(InvalidCursor)
def invalid_cursor(request: HttpRequest, exc: InvalidCursor) -> HttpResponse:
    return _error(request, 400, str(exc))


@api.exception_handler(InvalidFilter)
def invalid_filter(request: HttpRequest, exc: InvalidFilter) -> HttpResponse:
    return _error(request, 400, str(exc), field=exc.field)


@api.exception_handler(BulkActionNotFound)
def bulk_action_not_found(request: HttpRequest, exc: BulkActionNotFound) -> HttpResponse:
    return _error(request, 404, str(exc))


@api.exception_handler(TaskNotFound)
def task_not_found(request: HttpRequest, exc: TaskNotFound) -> HttpResponse:
    return _error(request, 404, str(exc))


@api.exception_handler(ScheduleNotFound)
def schedule_not_found(request: HttpRequest, exc: ScheduleNotFound) -> HttpResponse:
    return _error(request, 404, str(exc))


@api.exception_handler(AmbiguousTaskId)
def ambiguous_task_id(request: HttpRequest, exc: AmbiguousTaskId) -> HttpResponse:
    return _error(
        request,
        409,
        f"{exc}; give more of the ID",
        candidates=exc.candidates,
    )


@api.exception_handler(TransitionNotAllowed)
def transition_not_allowed(request: HttpRequest, exc: TransitionNotAllowed) -> HttpResponse:
    return _error(request, 409, str(exc), status=exc.status)


@api.exception_handler(UniqueKeyHeld)
def unique_key_held(request: HttpRequest, exc: UniqueKeyHeld) -> HttpResponse:
    return _error(request, 409, str(exc))


@api.exception_handler(KeyConflict)
def idempotency_key_conflict(request: HttpRequest, exc: KeyConflict) -> HttpResponse:
    # A conflict with an earlier request (409, as Stripe answers), not an invalid one: the
    # same request with a fresh key is fine.
    return _error(request, 409, str(exc))


@api.exception_handler(ControlTimeout)
def control_timeout(request: HttpRequest, exc: ControlTimeout) -> HttpResponse:
    return _error(request, 504, str(exc))


@api.exception_handler(ControlUnavailable)
def control_unavailable(request: HttpRequest, exc: ControlUnavailable) -> HttpResponse:
    return _error(request, 503, str(exc))


@api.exception_handler(ControlFailed)
def control_failed(request: HttpRequest, exc: ControlFailed) -> HttpResponse:
    return _error(request, 502, f"the Coordinator reported: {exc}")


@api.exception_handler(HttpError)
def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    detail = str(exc)
    if detail.startswith("Cannot parse request body"):  # ninja's words for unparseable JSON
        detail = "the request body is not valid JSON; send a JSON object"
    return _error(request, exc.status_code, detail)


@api.exception_handler(SuspiciousOperation)
def refused_request(request: HttpRequest, exc: SuspiciousOperation) -> HttpResponse:
    # Django answers these itself with a 400, but the catch-all below would see them first: a
    # body over DATA_UPLOAD_MAX_MEMORY_SIZE, a query of more than DATA_UPLOAD_MAX_NUMBER_FIELDS.
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return _error(request, 413, f"the request body is larger than {limit} bytes")
    return _error(request, 400, f"the request was refused: {exc}")


@api.exception_handler(Exception)
def unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    logger.exception("unhandled error in %s %s", request.method, request.path)
    return _error(request, 500, "internal error; the server log has the details")
