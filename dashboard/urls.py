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
    path("tasks/", views.task_list, name="tasks"),
    path("tasks/bulk/", views.task_bulk, name="task_bulk"),
    path("tasks/retry-failed/", views.task_retry_failed, name="task_retry_failed"),
    path("tasks/<str:task_id>/", views.task_detail, name="task"),
    path("tasks/<str:task_id>/action/", views.task_action, name="task_action"),
    path("schedules/", views.schedule_list, name="schedules"),
    path("schedules/<int:schedule_id>/", views.schedule_detail, name="schedule"),
    path("schedules/<int:schedule_id>/action/", views.schedule_action, name="schedule_action"),
    path("organism/", views.organism, name="organism"),
    path("organism/action/", views.organism_action, name="organism_action"),
    path("audit/", audit_views.audit_list, name="audit"),
]
