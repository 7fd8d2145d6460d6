"""SeedCore settings: one module, every integration switched by an environment variable.

See README.md ("Configuration") for the variables and their defaults.
"""

import os
from datetime import timedelta
from pathlib import Path

from seedcore_site.database import database_settings
from seedcore_site.env import (
    check_production_secrets,
    development_secret_key,
    env_bool,
    env_float,
    env_int,
    env_list,
    ray_namespace,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("SEEDCORE_VAR_DIR", BASE_DIR / "var"))

# DATABASE_URL unset is the embedded, single-machine mode: development defaults, so every
# `manage.py` command run from a checkout works as `python dev.py` does.
_database_url = os.environ.get("DATABASE_URL", "")
DEBUG = env_bool("DEBUG", not _database_url.strip())
SECRET_KEY = os.environ.get("SECRET_KEY", "") or development_secret_key(DEBUG, VAR_DIR)
check_production_secrets(DEBUG)  # no placeholder or short SECRET_KEY / RAY_AUTH_TOKEN in production
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# HTTPS behind a TLS-terminating proxy: SEEDCORE_HTTPS=1 turns on every setting below; each
# also reads its own Django name from the environment, which wins (README, Configuration).
SEEDCORE_HTTPS = env_bool("SEEDCORE_HTTPS", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", SEEDCORE_HTTPS)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", SEEDCORE_HTTPS)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", SEEDCORE_HTTPS)
# The kubelet's probes speak plain HTTP to the pod.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
# The proxy says which scheme the client used; only trust it behind a proxy that sets it.
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https")
    if env_bool("SECURE_PROXY_SSL_HEADER", SEEDCORE_HTTPS)
    else None
)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if SEEDCORE_HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", SEEDCORE_HTTPS)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", SEEDCORE_HTTPS)
# Sent on every response (seedcore_site/middleware.py): only same-origin scripts, styles and
# connections (websockets included), no framing, no plugins. Blank turns it off.
SEEDCORE_CSP = os.environ.get(
    "SEEDCORE_CSP",
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'",
).strip()

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "ninja",  # its templates and static files: /api/docs is served from here, not a CDN
    "channels",
    "django_tasks",
    "tasks",
    "organism",
    "dashboard",
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "seedcore_site.middleware.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into a 429.
    "axes.middleware.AxesMiddleware",
]

# Login throttling (django-axes): after SEEDCORE_LOGIN_FAILURE_LIMIT failed logins for one
# username from one address, that pair is refused (429) for SEEDCORE_LOGIN_COOLOFF_MINUTES.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("SEEDCORE_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(
    minutes=env_float("SEEDCORE_LOGIN_COOLOFF_MINUTES", 15.0, minimum=0.1)
)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True

ROOT_URLCONF = "seedcore_site.urls"
WSGI_APPLICATION = "seedcore_site.wsgi.application"
ASGI_APPLICATION = "seedcore_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                # can_operate, can_control: which buttons the signed-in user may see
                "dashboard.access.permission_flags",
            ],
        },
    },
]

# Database: DATABASE_URL's PostgreSQL, else an embedded one under var/ (started on first use).
DATABASES = {"default": database_settings(_database_url, VAR_DIR)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
# The dashboard's own login: it admits any user (a viewer need not be staff); the admin keeps
# its login, which admits staff only, as Django requires.
LOGIN_URL = "dashboard:login"
# Where a login goes when its `next` is missing or refused (Django's default is a 404).
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "dashboard:login"

# Channels: in-process, on purpose. Each web process LISTENs on PostgreSQL and feeds only its
# own websockets (dashboard/live.py), so every change reaches every socket once, however many
# replicas run, and no broker is needed.
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Django's Tasks framework (django.tasks; the django-tasks backport on Django 5.2): @task
# functions run on the Ray cluster as SeedCore tasks (tasks/backends.py, README.md).
TASKS = {"default": {"BACKEND": "tasks.backends.SeedCoreBackend"}}

# Ray: RAY_ADDRESS unset means "start a local Ray" (the embedded mode).
RAY_ADDRESS = os.environ.get("RAY_ADDRESS", "").strip()
RAY_NAMESPACE = ray_namespace()
# The Ray dashboard's address as an operator's browser reaches it (e.g. http://ray-head:8265):
# the task page links each attempt's node and actor there. Blank: no links.
RAY_DASHBOARD_URL = os.environ.get("RAY_DASHBOARD_URL", "").strip().rstrip("/")

# The queue's tunables. README.md documents each.
SEEDCORE_MAX_ATTEMPTS = env_int("SEEDCORE_MAX_ATTEMPTS", 5, minimum=1)
SEEDCORE_BACKOFF_SECONDS = env_float("SEEDCORE_BACKOFF_SECONDS", 30.0)
SEEDCORE_BACKOFF_MAX_STEPS = env_int("SEEDCORE_BACKOFF_MAX_STEPS", 10, minimum=1)
# Attempts Ray may lose (agent, node, worker or object lost) before the task is FAILED; each is
# retried at once and does not count against the attempts.
SEEDCORE_MAX_SYSTEM_RETRIES = env_int("SEEDCORE_MAX_SYSTEM_RETRIES", 3, minimum=0)
SEEDCORE_LEASE_SECONDS = env_float("SEEDCORE_LEASE_SECONDS", 90.0, minimum=1.0)
# Unset: each dispatcher sizes its claims to the backlog (organism.pacing); set: a fixed size.
SEEDCORE_CLAIM_BATCH = env_int("SEEDCORE_CLAIM_BATCH", 0, minimum=1) or None
SEEDCORE_DISPATCHERS = env_int("SEEDCORE_DISPATCHERS", 2, minimum=1)
SEEDCORE_MAX_IN_FLIGHT = env_int("SEEDCORE_MAX_IN_FLIGHT", 2000, minimum=1)
SEEDCORE_HEARTBEAT_SECONDS = env_float("SEEDCORE_HEARTBEAT_SECONDS", 2.0, minimum=0.1)
SEEDCORE_HEARTBEAT_TIMEOUT = env_float("SEEDCORE_HEARTBEAT_TIMEOUT", 15.0, minimum=1.0)
SEEDCORE_POLL_SECONDS = env_float("SEEDCORE_POLL_SECONDS", 1.0, minimum=0.01)
SEEDCORE_GRACE_SECONDS = env_float("SEEDCORE_GRACE_SECONDS", 10.0)
SEEDCORE_SUPERVISE_SECONDS = env_float("SEEDCORE_SUPERVISE_SECONDS", 3.0, minimum=0.1)
# How often an open dashboard websocket re-reads its session and user (and closes if refused).
SEEDCORE_SOCKET_RECHECK_SECONDS = env_float("SEEDCORE_SOCKET_RECHECK_SECONDS", 5.0, minimum=0.1)
SEEDCORE_RETENTION_DAYS = env_float("SEEDCORE_RETENTION_DAYS", 7.0)
SEEDCORE_FAILED_RETENTION_DAYS = env_float("SEEDCORE_FAILED_RETENTION_DAYS", 30.0)
# Operator actions (tasks.audit) are kept far longer than the tasks they name.
SEEDCORE_AUDIT_RETENTION_DAYS = env_float("SEEDCORE_AUDIT_RETENTION_DAYS", 365.0)
# The supervisor prunes at most this many batches of this size, at most this often.
SEEDCORE_PRUNE_INTERVAL_SECONDS = env_float("SEEDCORE_PRUNE_INTERVAL_SECONDS", 300.0, minimum=1.0)
SEEDCORE_PRUNE_BATCH = env_int("SEEDCORE_PRUNE_BATCH", 500, minimum=1)
SEEDCORE_PRUNE_MAX_BATCHES = env_int("SEEDCORE_PRUNE_MAX_BATCHES", 20, minimum=1)
# "Cancel/Retry all matching" (tasks.bulk): tasks per short transaction, and a pause between
# batches so a large action leaves the queue room to breathe.
SEEDCORE_BULK_BATCH = env_int("SEEDCORE_BULK_BATCH", 500, minimum=1)
SEEDCORE_BULK_PAUSE_SECONDS = env_float("SEEDCORE_BULK_PAUSE_SECONDS", 0.02)
# Consecutive Coordinator failures that open a dispatcher's circuit; seconds between probes.
SEEDCORE_BREAKER_THRESHOLD = env_int("SEEDCORE_BREAKER_THRESHOLD", 5, minimum=1)
SEEDCORE_BREAKER_PROBE_SECONDS = env_float("SEEDCORE_BREAKER_PROBE_SECONDS", 5.0, minimum=0.1)
# /metrics without credentials (e.g. for a Prometheus inside the cluster); off by default.
SEEDCORE_METRICS_PUBLIC = env_bool("SEEDCORE_METRICS_PUBLIC", False)

# The organism: routing threshold, per-task timeout and organs (organism/routing.py).
SEEDCORE_DRIFT_THRESHOLD = env_float("SEEDCORE_DRIFT_THRESHOLD", 0.5)
SEEDCORE_TASK_TIMEOUT = env_float("SEEDCORE_TASK_TIMEOUT", 300.0, minimum=0.001)
# The organs: a JSON list, or blank for the default three. organism.routing parses and checks it
# (configured_organs), where rundispatcher and `manage.py check` report a bad value.
SEEDCORE_ORGANS = os.environ.get("SEEDCORE_ORGANS", "")
SEEDCORE_AGENTS_PER_ORGAN = env_int("SEEDCORE_AGENTS_PER_ORGAN", 2, minimum=1)
# Organs that scale (min_agents < max_agents) drop an agent after this many seconds of having
# more than their backlog needs; a task claimed just as its organ lost its last agent waits
# this long for one to be placed (organism.manager).
SEEDCORE_SCALE_DOWN_SECONDS = env_float("SEEDCORE_SCALE_DOWN_SECONDS", 60.0, minimum=0.0)
SEEDCORE_PLACEMENT_TIMEOUT = env_float("SEEDCORE_PLACEMENT_TIMEOUT", 300.0, minimum=0.1)

# How long the web waits for an organism control task (organism/control.py).
SEEDCORE_COORDINATOR_TIMEOUT = env_float("SEEDCORE_COORDINATOR_TIMEOUT", 30.0, minimum=0.1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {"seedcore": {"level": "INFO"}},
}
