from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path
from django.views.generic import RedirectView
from django.views.i18n import set_language

from releases import api as releases_api
from releases import views as releases_views
from schools import api as schools_api

from . import auth, metrics, views

urlpatterns = [
    path("", releases_views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("profile/", views.profile, name="profile"),
    path("login/", auth.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("i18n/setlang/", login_not_required(set_language), name="set_language"),
    path("", include("releases.urls")),
    path("api/builds/", releases_api.builds, name="api_builds"),
    path("api/builds/<str:name>/", releases_api.build_detail, name="api_build_detail"),
    path("api/builds/<str:name>/diff/<str:old>/", releases_api.build_diff, name="api_build_diff"),
    path("api/uploads/", releases_api.uploads, name="api_uploads"),
    path("api/uploads/<str:upload_id>/", releases_api.upload, name="api_upload"),
    path("api/schools/checkin/", schools_api.checkin, name="api_schools_checkin"),
    path("api/laptops/report/", schools_api.laptop_report, name="api_laptops_report"),
    path("schools/", include("schools.urls")),
    # The admin's own login would bypass the throttle: send it to ours (`next` is kept).
    path(
        "admin/login/",
        login_not_required(RedirectView.as_view(pattern_name="login", query_string=True)),
    ),
    path("admin/", admin.site.urls),
]
