from django.urls import path

from . import views

app_name = "releases"

urlpatterns = [
    path("builds/", views.build_list, name="build_list"),
    path("upload/", views.build_upload, name="build_upload"),
    path("upload/chunked/", views.upload_start, name="upload_start"),
    path("upload/chunked/<str:upload_id>/", views.upload_chunk, name="upload_chunk"),
    path("builds/<str:name>/", views.build_detail, name="build_detail"),
    path("builds/<str:name>/status/", views.build_status, name="build_status"),
    path("builds/<str:name>/contents-hash/", views.build_contents_hash, name="build_contents_hash"),
    path("builds/<str:name>/contents/", views.build_contents_file, name="build_contents_file"),
    path("builds/<str:name>/xo-helper/", views.build_xo_helper, name="build_xo_helper"),
    path("builds/<str:name>/retry/", views.build_retry, name="build_retry"),
    path("builds/<str:name>/promote/", views.build_promote, name="build_promote"),
    path("builds/<str:name>/withdraw/", views.build_withdraw, name="build_withdraw"),
    path("builds/<str:name>/recall/", views.build_recall, name="build_recall"),
    path("builds/<str:name>/usb-kit/", views.build_usb_kit, name="build_usb_kit"),
    # The XO helper's one-time link: the token is the only authority (releases.xohelper).
    path("xo/<str:token>", views.xo_helper_script, name="xo_helper_script"),
    path("xo/<str:token>/contents", views.xo_helper_contents, name="xo_helper_contents"),
    path("xo/<str:token>/hash", views.xo_helper_hash, name="xo_helper_hash"),
    path("deployments/", views.deployment_list, name="deployment_list"),
    path("deployments/stop-all/", views.offers_stop_all, name="offers_stop_all"),
    path("deployments/drift/", views.drift_resolve, name="drift_resolve"),
    path("deployments/<int:pk>/", views.deployment_detail, name="deployment_detail"),
    path("deployments/<int:pk>/status/", views.deployment_status, name="deployment_status"),
    path("deployments/<int:pk>/rollback/", views.deployment_rollback, name="deployment_rollback"),
]
