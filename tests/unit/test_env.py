"""Settings parsing: malformed values stop start-up with a message naming the variable."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from seedcore_site.env import (
    DEFAULT_RAY_NAMESPACE,
    env_bool,
    env_float,
    env_int,
    env_list,
    ray_namespace,
)


@pytest.mark.parametrize(
    ("raw", "value"), [("1", True), ("TRUE", True), (" yes ", True), ("0", False), ("off", False)]
)
def test_env_bool_reads_the_usual_spellings(raw, value):
    assert env_bool("DEBUG", not value, environ={"DEBUG": raw}) is value


def test_env_bool_default_when_unset():
    assert env_bool("DEBUG", True, environ={}) is True


def test_env_bool_refuses_other_words_naming_the_variable():
    with pytest.raises(ImproperlyConfigured, match="DEBUG='maybe'"):
        env_bool("DEBUG", False, environ={"DEBUG": "maybe"})


def test_env_int_parses_and_defaults():
    assert env_int("SEEDCORE_MAX_ATTEMPTS", 5, environ={"SEEDCORE_MAX_ATTEMPTS": " 7 "}) == 7
    assert env_int("SEEDCORE_MAX_ATTEMPTS", 5, environ={"SEEDCORE_MAX_ATTEMPTS": ""}) == 5
    assert env_int("SEEDCORE_MAX_ATTEMPTS", 5, environ={}) == 5


@pytest.mark.parametrize(
    ("raw", "says"),
    [("five", "not a whole number"), ("2.5", "not a whole number"), ("0", "at least 1")],
)
def test_env_int_refuses_malformed_values_naming_the_variable(raw, says):
    with pytest.raises(ImproperlyConfigured, match=f"SEEDCORE_MAX_ATTEMPTS=.*{says}"):
        env_int("SEEDCORE_MAX_ATTEMPTS", 5, minimum=1, environ={"SEEDCORE_MAX_ATTEMPTS": raw})


def test_env_float_parses_and_defaults():
    environ = {"SEEDCORE_LEASE_SECONDS": "12.5"}
    assert env_float("SEEDCORE_LEASE_SECONDS", 90.0, environ=environ) == 12.5
    assert env_float("SEEDCORE_LEASE_SECONDS", 90.0, environ={}) == 90.0


@pytest.mark.parametrize(
    ("raw", "says"),
    [("soon", "not a number"), ("nan", "between"), ("inf", "between"), ("0.5", "between")],
)
def test_env_float_refuses_malformed_values_naming_the_variable(raw, says):
    with pytest.raises(ImproperlyConfigured, match=f"SEEDCORE_LEASE_SECONDS=.*{says}"):
        env_float(
            "SEEDCORE_LEASE_SECONDS", 90.0, minimum=1.0, environ={"SEEDCORE_LEASE_SECONDS": raw}
        )


def test_env_list_splits_on_commas_and_drops_blanks():
    assert env_list("ALLOWED_HOSTS", [], environ={"ALLOWED_HOSTS": "a.example, b.example,,"}) == [
        "a.example",
        "b.example",
    ]
    assert env_list("ALLOWED_HOSTS", ["x"], environ={}) == ["x"]


def test_ray_namespace_prefers_ray_namespace_then_seedcore_ns():
    assert ray_namespace({"RAY_NAMESPACE": "a", "SEEDCORE_NS": "b"}) == "a"
    assert ray_namespace({"RAY_NAMESPACE": " ", "SEEDCORE_NS": "b"}) == "b"
    assert ray_namespace({}) == DEFAULT_RAY_NAMESPACE


def _settings_in_subprocess(**environ):
    """Import the real settings module in a fresh interpreter with ``environ``."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEEDCORE_", "DEBUG"))}
    env.update(environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "-c", "import seedcore_site.settings"],
        env=env,
        capture_output=True,
        text=True,
        cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]),
    )


@pytest.mark.parametrize(
    "variable",
    [
        "SEEDCORE_MAX_ATTEMPTS",
        "SEEDCORE_BACKOFF_SECONDS",
        "SEEDCORE_BACKOFF_MAX_STEPS",
        "SEEDCORE_LEASE_SECONDS",
        "SEEDCORE_CLAIM_BATCH",
        "SEEDCORE_RETENTION_DAYS",
    ],
)
def test_settings_refuse_a_malformed_queue_tunable_naming_it(variable, tmp_path):
    done = _settings_in_subprocess(DEBUG="1", SEEDCORE_VAR_DIR=str(tmp_path), **{variable: "lots"})
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert variable in done.stderr


def test_settings_refuse_to_start_without_secret_key_when_debug_is_off(tmp_path):
    done = _settings_in_subprocess(DEBUG="0", SECRET_KEY="", SEEDCORE_VAR_DIR=str(tmp_path))
    assert done.returncode != 0
    assert "SECRET_KEY is not set" in done.stderr


def _manage(*args: str, **environ: str):
    """``manage.py ARGS`` in a fresh process with ``environ`` over a clean environment."""
    import os
    import subprocess
    import sys

    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEEDCORE_", "DEBUG"))}
    for name in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "SECRET_KEY"):
        env.pop(name, None)
    env.update(environ)
    return subprocess.run(
        [sys.executable, str(root / "manage.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=str(root),
        timeout=120,
    )


@pytest.mark.parametrize("url", ["sqlite:///var/seedcore.sqlite3", "mysql://root@localhost/x"])
def test_a_database_url_that_is_not_postgresql_is_refused_saying_what_to_do(url, tmp_path):
    done = _manage("check", DATABASE_URL=url, DEBUG="1", SEEDCORE_VAR_DIR=str(tmp_path))
    assert done.returncode != 0
    assert "SeedCore needs PostgreSQL" in done.stderr
    assert "DATABASE_URL unset" in done.stderr or "leave it unset" in done.stderr
    assert "Traceback" not in done.stderr


def test_debug_defaults_on_only_for_the_embedded_database(tmp_path):
    code = "from django.conf import settings; print(settings.DEBUG)"
    embedded = _manage("shell", "-c", code, SEEDCORE_VAR_DIR=str(tmp_path))
    assert embedded.stdout.strip().splitlines()[-1] == "True", embedded.stderr
    served = _manage(
        "shell",
        "-c",
        code,
        SEEDCORE_VAR_DIR=str(tmp_path),
        DATABASE_URL="postgres://postgres@127.0.0.1:1/x",
        SECRET_KEY="k" * 60,
    )
    assert served.stdout.strip().splitlines()[-1] == "False", served.stderr


def test_the_development_key_is_made_once_and_kept_private(tmp_path):
    from seedcore_site.env import development_secret_key

    key = development_secret_key(True, tmp_path)
    assert len(key) >= 50
    assert development_secret_key(True, tmp_path) == key
    assert (tmp_path / "development-secret-key").stat().st_mode & 0o777 == 0o600


def test_the_development_key_is_never_used_with_debug_off(tmp_path):
    from seedcore_site.env import development_secret_key

    development_secret_key(True, tmp_path)
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY is not set"):
        development_secret_key(False, tmp_path)


GOOD_KEY = "k" * 50


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"SECRET_KEY": "change-me-to-a-long-random-string" + "x" * 40}, "SECRET_KEY is still"),
        ({"SECRET_KEY": "k" * 49}, "SECRET_KEY is 49 characters"),
        ({"SECRET_KEY": GOOD_KEY, "RAY_AUTH_TOKEN": "change-me-to-a-random-token"}, "RAY_AUTH"),
        ({"SECRET_KEY": GOOD_KEY, "RAY_AUTH_TOKEN": "t" * 31}, "RAY_AUTH_TOKEN is 31"),
    ],
)
def test_settings_refuse_a_placeholder_or_short_secret_when_debug_is_off(environ, says, tmp_path):
    done = _settings_in_subprocess(DEBUG="0", SEEDCORE_VAR_DIR=str(tmp_path), **environ)
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr and says in done.stderr
    assert "change-me-to" not in done.stderr.split("ImproperlyConfigured")[-1]  # value not echoed


def test_settings_take_long_random_secrets_with_debug_off_and_anything_with_debug_on(tmp_path):
    strong = _settings_in_subprocess(
        DEBUG="0", SEEDCORE_VAR_DIR=str(tmp_path), SECRET_KEY=GOOD_KEY, RAY_AUTH_TOKEN="t" * 64
    )
    assert strong.returncode == 0, strong.stderr
    weak = _settings_in_subprocess(
        DEBUG="1", SEEDCORE_VAR_DIR=str(tmp_path), SECRET_KEY="change-me", RAY_AUTH_TOKEN="x"
    )
    assert weak.returncode == 0, weak.stderr


def test_check_deploy_is_clean_for_the_kubernetes_configuration(tmp_path):
    """The production configuration docs/deployment.md applies: k8s/configmap.yaml plus the
    Secrets its `kubectl create secret` commands make. `check --deploy` warns about nothing."""
    import yaml

    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    config = yaml.safe_load((root / "k8s" / "configmap.yaml").read_text())["data"]
    done = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        **config,
        SEEDCORE_VAR_DIR=str(tmp_path),
        DATABASE_URL="postgres://seedcore@127.0.0.1:1/seedcore",
        SECRET_KEY=__import__("secrets").token_hex(32),
        RAY_AUTH_TOKEN=__import__("secrets").token_hex(32),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr and "no issues" in done.stdout


def test_seedcore_https_turns_on_the_https_settings_and_django_names_override(tmp_path):
    code = (
        "from django.conf import settings as s; print(s.SESSION_COOKIE_SECURE, "
        "s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, s.SECURE_PROXY_SSL_HEADER, "
        "s.SECURE_HSTS_SECONDS)"
    )
    on = _manage(
        "shell",
        "-c",
        code,
        DEBUG="1",
        SEEDCORE_VAR_DIR=str(tmp_path),
        SEEDCORE_HTTPS="1",
        SECURE_HSTS_SECONDS="600",
    )
    assert on.stdout.split("\n")[-2] == "True True True ('HTTP_X_FORWARDED_PROTO', 'https') 600"
    off = _manage("shell", "-c", code, DEBUG="1", SEEDCORE_VAR_DIR=str(tmp_path))
    assert off.stdout.split("\n")[-2] == "False False False None 0", off.stderr
