from django.contrib import admin

from .models import AuditEvent, Build


@admin.register(Build)
class BuildAdmin(admin.ModelAdmin):
    """Read-only: builds change state only through the portal's services."""

    list_display = ["name", "status", "size", "uploaded_by", "created_at", "published_at"]
    list_filter = ["status", "compression"]
    search_fields = ["name", "md5", "sha256", "contents_hash"]
    list_select_related = ["uploaded_by"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["at", "action", "build", "actor", "from_status", "to_status", "code"]
    list_filter = ["action"]
    list_select_related = ["build", "actor"]
    search_fields = ["build__name", "actor__username", "code"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
