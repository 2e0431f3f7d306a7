"""School servers in the Django admin. Every write goes through schools.services, so an edit
(above all of `active`, which the promotion gate counts), an addition or a new report token
is audited with who did it."""

from django.contrib import admin, messages
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from . import services
from .models import SchoolServer


@admin.register(SchoolServer)
class SchoolServerAdmin(admin.ModelAdmin):
    list_display = ["hostname", "school", "department", "active", "last_report_at", "token_prefix"]
    list_filter = ["active", "department"]
    search_fields = ["hostname", "school", "name"]
    readonly_fields = [
        "token_prefix",
        "token_created_at",
        "last_report_at",
        "last_report_source",
        "last_refresh_status",
        "disk_free_bytes",
        "client_version",
        "clock_skew_seconds",
        "last_error",
        "inventario_place_id",
    ]
    actions = ["new_token"]

    def save_model(self, request, obj, form, change):
        if not change:
            services.server_add(server=obj, acting_user=request.user)
            return
        services.server_update(
            server=obj,
            acting_user=request.user,
            changes={name: form.cleaned_data[name] for name in form.changed_data},
        )

    @admin.action(description=gettext_lazy("Generate a new report token (revokes the old one)"))
    def new_token(self, request, queryset):
        if queryset.count() != 1:
            messages.error(request, _("Choose exactly one server: each token is shown once."))
            return
        server = queryset.get()
        key = services.server_token_rotate(server=server, acting_user=request.user)
        messages.warning(
            request,
            _("New token for %(host)s: %(key)s — copy it now, it will not be shown again.")
            % {"host": server.hostname, "key": key},
        )
