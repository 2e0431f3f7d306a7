from django.contrib import admin, messages
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .models import ApiToken, LoginAttempt, LoginLockout
from .services import api_token_create


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["user", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_select_related = ["user"]
    fields = ["user", "name"]
    actions = ["revoke"]

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        token, key = api_token_create(user=obj.user, name=obj.name)
        # The admin's own history and messages describe `obj`: make it the saved token.
        obj.__dict__.update(token.__dict__)
        messages.warning(
            request,
            _("New token for %(user)s: %(key)s — copy it now, it will not be shown again.")
            % {"user": obj.user, "key": key},
        )

    @admin.action(description=gettext_lazy("Revoke the selected tokens"))
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        messages.success(request, _("%(count)s token(s) revoked.") % {"count": count})


@admin.register(LoginAttempt)
class LoginAttemptAdmin(admin.ModelAdmin):
    """Failed logins in the throttle's window: deleting a user's rows unlocks them at once."""

    list_display = ["at", "username", "ip"]
    list_filter = ["at"]
    search_fields = ["username", "ip"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(LoginLockout)
class LoginLockoutAdmin(admin.ModelAdmin):
    """Every time a user name or an address reached its failed-login limit."""

    list_display = ["at", "username", "ip", "keys"]
    list_filter = ["at"]
    search_fields = ["username", "ip"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
