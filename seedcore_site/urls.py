from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from organism.views import prometheus_metrics
from seedcore_site.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("dashboard/", include("dashboard.urls")),
    path("metrics", prometheus_metrics, name="metrics"),
    path("", RedirectView.as_view(pattern_name="dashboard:overview"), name="home"),
    # The API at the root, so the design's paths (/tasks, /readyz, …) work as written.
    path("", api.urls),
]
