"""A Django app of ordinary ``@task`` functions, as a SeedCore user would write them
(installed by ``seedcore_site.test_settings``)."""
