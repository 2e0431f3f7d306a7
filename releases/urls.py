from django.urls import path

from . import views

app_name = "releases"

urlpatterns = [
    path("", views.build_list, name="build_list"),
    path("upload/", views.build_upload, name="build_upload"),
    path("<str:name>/", views.build_detail, name="build_detail"),
    path("<str:name>/status/", views.build_status, name="build_status"),
    path("<str:name>/contents-hash/", views.build_contents_hash, name="build_contents_hash"),
    path("<str:name>/retry/", views.build_retry, name="build_retry"),
]
