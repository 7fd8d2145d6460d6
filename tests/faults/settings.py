"""Settings for the fault suite's processes: the test settings plus this test-only app, so
every actor's ``autodiscover()`` registers the ``record`` handler (tests/faults/handlers.py)."""

from seedcore_site.test_settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.faults"]  # noqa: F405
