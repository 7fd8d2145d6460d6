# One image for every SeedCore process: the web app (daphne), `rundispatcher`, the migrations
# Job, and the Ray head and workers of the KubeRay RayCluster.
#
# Base: python:3.11-slim plus `pip install`, not rayproject/ray. Ray requires the driver (web app,
# rundispatcher) and every Ray node to run the same Ray and Python versions, and Ray's worker
# processes must import SeedCore's handlers and actors; building all of them from this one image
# guarantees both. rayproject/ray:2.60.0-py311 would bring a second, conda-based Python
# environment (and ~2 GB) for no gain, since `ray[default]` installs from PyPI as a wheel.
# RAY_VERSION pins the cluster's Ray exactly (pyproject.toml only gives a lower bound).
FROM python:3.11-slim

ARG RAY_VERSION=2.60.0

# bash: KubeRay runs `ray start` through `bash -lc`; wget: KubeRay's injected liveness and
# readiness probes for Ray pods call `wget` against the raylet's and dashboard agent's health URLs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends bash wget \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    DJANGO_SETTINGS_MODULE=seedcore_site.settings \
    SEEDCORE_VAR_DIR=/app/var

WORKDIR /app

# Dependencies first, so a code change does not reinstall Ray: install the project's metadata
# with an empty package tree, then copy the code over it.
COPY pyproject.toml README.md ./
RUN mkdir -p seedcore_site tasks organism dashboard \
    && pip install --no-cache-dir . "ray[default]==${RAY_VERSION}" \
    && pip uninstall -y seedcore \
    && rm -rf build seedcore.egg-info

COPY manage.py ./
COPY seedcore_site ./seedcore_site
COPY tasks ./tasks
COPY organism ./organism
COPY dashboard ./dashboard
COPY templates ./templates
COPY static ./static

# Run from the source tree (PYTHONPATH=/app): settings.BASE_DIR must be /app so templates/ and
# static/ resolve (the ASGI app serves static/ itself, so no collectstatic), and Ray workers
# import SeedCore from the same path the driver does. uid 1000 like rayproject/ray's user.
RUN useradd --uid 1000 --create-home ray \
    && mkdir -p /app/var \
    && chown -R ray:ray /app/var

USER 1000
EXPOSE 8000

# The web app. The Kubernetes manifests override the command for the other roles:
# `python manage.py migrate`, `python manage.py rundispatcher --detach`, and (KubeRay) `ray start`.
CMD ["daphne", "--bind", "0.0.0.0", "--port", "8000", "seedcore_site.asgi:application"]
