"""JSON API for build machines: `Authorization: Token <key>` (see `api_token`)."""

from django.contrib.auth.decorators import login_not_required
from django.http import JsonResponse
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt

from portal import roles
from portal.access import api_view

from . import chunks
from .impact import compare_builds
from .models import Build
from .reasons import Refused
from .receive import receive_build, streamed_upload

LIST_LIMIT = 200


def build_as_json(build: Build) -> dict:
    return {
        "name": build.name,
        "status": build.status,
        "status_label": str(build.get_status_display()),
        "status_detail": build.status_detail,
        "progress": {
            "phase": build.progress_phase,
            "done": build.progress_done,
            "total": build.progress_total,
        },
        "md5": build.md5,
        "sha256": build.sha256,
        "size": build.size,
        "contents_sha256": build.contents_sha256,
        "contents_hash": build.contents_hash,
        "contents_hash_source": build.contents_hash_source,
        "pristine_id": build.pristine_id,
        # Counts and the first paths of what matters for security (README, "Build JSON").
        "archive": build.archive_summary or None,
        "recheck": {
            "ok": not build.recheck_code,
            "code": build.recheck_code,
            "reason": build.recheck_detail,
            "at": build.rechecked_at.isoformat(),
        }
        if build.rechecked_at
        else None,
        "uploaded_by": build.uploaded_by.get_username(),
        "created_at": build.created_at.isoformat(),
        "validated_at": build.validated_at.isoformat() if build.validated_at else None,
        "published_at": build.published_at.isoformat() if build.published_at else None,
    }


@login_not_required
@csrf_exempt
def builds(request):
    """GET: the newest builds. POST (token only): a new build, multipart like the form."""
    if request.method == "POST":
        return _create(request)
    if request.method != "GET":
        return JsonResponse({"error": _("Method not allowed.")}, status=405)
    return _list(request)


@api_view(role=roles.COORDINATORS, any_role=True)
def _list(request):
    rows = Build.objects.with_people()[:LIST_LIMIT]
    return JsonResponse({"builds": [build_as_json(build) for build in rows]})


@api_view(role=roles.UPLOADERS, token_only=True)
def _create(request):
    if not request.content_type.startswith("multipart/form-data"):
        return JsonResponse(
            {"error": _("Send the files as multipart/form-data (fields tarball, md5, contents).")},
            status=415,
        )
    with streamed_upload(request):
        build, errors = receive_build(request, via="api")
    if build is None:
        problem = request.upload_problem
        status = problem.http_status if problem else 400
        return JsonResponse(
            {"error": _("The build was not accepted."), "errors": errors}, status=status
        )
    return JsonResponse(build_as_json(build), status=201)


@api_view(role=roles.COORDINATORS, any_role=True)
def build_detail(request, name):
    if request.method != "GET":
        return JsonResponse({"error": _("Method not allowed.")}, status=405)
    build = Build.objects.with_people().filter(name=name).first()
    if build is None:
        return JsonResponse(
            {"error": _("No build is named %(name)s.") % {"name": name}}, status=404
        )
    return JsonResponse(build_as_json(build))


@api_view(role=roles.COORDINATORS, any_role=True)
def build_diff(request, name, old):
    """What `name` changes compared with `old` (README.md, "Build diff JSON"); the same
    data as `manage.py build_diff OLD NEW --json`."""
    if request.method != "GET":
        return JsonResponse({"error": _("Method not allowed.")}, status=405)
    builds = {build.name: build for build in Build.objects.filter(name__in=[name, old])}
    for wanted in (name, old):
        if wanted not in builds:
            return JsonResponse(
                {"error": _("No build is named %(name)s.") % {"name": wanted}}, status=404
            )
    try:
        return JsonResponse(compare_builds(old=builds[old], new=builds[name]))
    except Refused as refusal:
        return JsonResponse({"error": refusal.message}, status=409)


# Resumable uploads for build machines (`releases/client/xo-upload`): the protocol is in
# releases.chunks; a token is the only way in, so no CSRF.


@csrf_exempt
@api_view(role=roles.UPLOADERS, token_only=True)
def uploads(request):
    return chunks.start(request, lambda pk: reverse("api_upload", args=[pk]))


@csrf_exempt
@api_view(role=roles.UPLOADERS, token_only=True)
def upload(request, upload_id):
    return chunks.upload(request, upload_id, reverse("api_upload", args=[upload_id]))
