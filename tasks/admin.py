from django.contrib import admin, messages

from tasks.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are created with `manage.py createapitoken`; here they are listed and revoked."""

    list_display = ("prefix", "name", "user", "created_at", "last_used_at", "revoked")
    list_filter = ("revoked",)
    search_fields = ("prefix", "name", "user__username")
    readonly_fields = ("prefix", "token_hash", "user", "created_at", "last_used_at")
    fields = ("user", "name", "prefix", "token_hash", "created_at", "last_used_at", "revoked")
    actions = ("revoke_tokens",)

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Revoke the selected tokens")
    def revoke_tokens(self, request, queryset) -> None:
        from tasks.auth import revoke_tokens

        count = revoke_tokens(queryset)
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)
