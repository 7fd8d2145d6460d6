from django.urls import path

from dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("queue/", views.queue_action, name="queue_action"),
    path("tasks/", views.task_list, name="tasks"),
    path("tasks/bulk/", views.task_bulk, name="task_bulk"),
    path("tasks/retry-failed/", views.task_retry_failed, name="task_retry_failed"),
    path("tasks/<str:task_id>/", views.task_detail, name="task"),
    path("tasks/<str:task_id>/action/", views.task_action, name="task_action"),
    path("organism/", views.organism, name="organism"),
    path("organism/action/", views.organism_action, name="organism_action"),
]
