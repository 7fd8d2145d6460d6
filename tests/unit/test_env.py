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
