from django.contrib import admin

from .models import SchoolServer


@admin.register(SchoolServer)
class SchoolServerAdmin(admin.ModelAdmin):
    list_display = ["hostname", "school", "department", "active"]
    list_filter = ["active", "department"]
    search_fields = ["hostname", "school", "name"]
