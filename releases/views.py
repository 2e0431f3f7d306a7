from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from portal import roles
from portal.access import require_role

from . import services
from .forms import ContentsHashForm, UploadForm
from .models import Build
from .reasons import BuildRejected
from .receive import install_handler, receive_build


@require_GET
def build_list(request):
    builds = Build.objects.with_people().defer("status_params")
    page = Paginator(builds, 50).get_page(request.GET.get("page"))
    return render(request, "releases/build_list.html", {"page": page})


@csrf_exempt
def build_upload(request):
    """The upload page. CSRF is checked by the inner view, after our streaming upload
    handler is installed (the middleware would otherwise parse the body first)."""
    require_role(request, roles.UPLOADERS)
    if request.method == "POST":
        install_handler(request)
    return _build_upload(request)


@csrf_protect
def _build_upload(request):
    if request.method != "POST":
        return render(request, "releases/build_upload.html", {"form": UploadForm()})
    build, errors = receive_build(request, via="web")
    if build is None:
        form = UploadForm()
        context = {"form": form, "errors": errors}
        template = "releases/_upload_form.html" if request.htmx else "releases/build_upload.html"
        return render(request, template, context, status=400)
    messages.success(
        request, _("Build %(name)s received; validation has started.") % {"name": build.name}
    )
    url = reverse("releases:build_detail", args=[build.name])
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


def _build_context(request, name):
    build = get_object_or_404(Build.objects.with_people(), name=name)
    return {
        "build": build,
        "events": build.events.select_related("actor"),
        "hash_form": ContentsHashForm(),
        "can_edit": _can_edit(request.user),
    }


@require_GET
def build_detail(request, name):
    return render(request, "releases/build_detail.html", _build_context(request, name))


@require_GET
def build_status(request, name):
    """The live part of the build page, polled while the build is being worked on."""
    return render(request, "releases/_build_status.html", _build_context(request, name))


@require_POST
def build_contents_hash(request, name):
    build = get_object_or_404(Build, name=name)
    if not _can_edit(request.user):
        raise PermissionDenied
    form = ContentsHashForm(request.POST)
    if form.is_valid():
        try:
            services.build_set_contents_hash(
                build=build, acting_user=request.user, value=form.cleaned_data["contents_hash"]
            )
            messages.success(request, _("Contents hash saved."))
        except BuildRejected as rejection:
            messages.error(request, rejection.message)
        except services.TransitionRefused:
            messages.error(request, _("The hash of an offered or retired build cannot change."))
    else:
        messages.error(request, _("Enter a contents hash."))
    return redirect("releases:build_detail", name=build.name)


@require_POST
def build_retry(request, name):
    build = get_object_or_404(Build, name=name)
    if not _can_edit(request.user):
        raise PermissionDenied
    if services.build_retry_publication(build=build, acting_user=request.user):
        messages.success(request, _("Publication queued again."))
    else:
        messages.error(request, _("Only a build whose publication failed can be retried."))
    return redirect("releases:build_detail", name=build.name)


def _can_edit(user) -> bool:
    return roles.has_role(user, roles.UPLOADERS) or roles.has_role(user, roles.APPROVERS)
