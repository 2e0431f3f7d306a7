from django.urls import path

from . import views

app_name = "schools"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("client/", views.client_install, name="client_install"),
    path("client/xs-sync-report", views.client_script, name="client_script"),
    path("builds/<str:name>/", views.build_coverage, name="build_coverage"),
    path("servers/add/", views.server_add, name="server_add"),
    path("servers/import/", views.servers_import, name="servers_import"),
    path("servers/import/confirm/", views.servers_import_confirm, name="servers_import_confirm"),
    path("<str:hostname>/edit/", views.server_edit, name="server_edit"),
    path("<str:hostname>/token/", views.server_token, name="server_token"),
    path("<str:hostname>/", views.server_detail, name="server_detail"),
]
