from django.contrib.auth import views as auth_views
from django.urls import path

from dashboard import audit_views, views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path(
        "login/", auth_views.LoginView.as_view(template_name="dashboard/login.html"), name="login"
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("queue/", views.queue_action, name="queue_action"),
    path("tasks/", views.task_list, name="tasks"),
    path("tasks/bulk/", views.task_bulk, name="task_bulk"),
    # Before tasks/<task_id>/, which would take "matching" for a task ID.
    path("tasks/matching/", views.task_matching_start, name="task_matching_start"),
    path("tasks/matching/confirm/", views.task_matching_confirm, name="task_matching_confirm"),
    path("tasks/matching/<int:bulk_id>/", views.task_matching, name="task_matching"),
    path(
        "tasks/matching/<int:bulk_id>/continue/",
        views.task_matching_continue,
        name="task_matching_continue",
    ),
    path("tasks/<str:task_id>/", views.task_detail, name="task"),
    path("tasks/<str:task_id>/action/", views.task_action, name="task_action"),
    path("schedules/", views.schedule_list, name="schedules"),
    path("schedules/<int:schedule_id>/", views.schedule_detail, name="schedule"),
    path("schedules/<int:schedule_id>/action/", views.schedule_action, name="schedule_action"),
    path("organism/", views.organism, name="organism"),
    path("organism/action/", views.organism_action, name="organism_action"),
    path("audit/", audit_views.audit_list, name="audit"),
]
