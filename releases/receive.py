"""The upload form and the API share this: parse the streamed request, check the form, hand
the staged files to `services.build_create`, and always clean up what was not taken."""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.utils.translation import gettext as _

from . import services
from .forms import UploadForm
from .reasons import BuildRejected, render
from .uploads import HashingUploadHandler, discard_staged, error_field, field_limits


def install_handler(request) -> None:
    """Must run before anything reads request.POST or request.FILES."""
    request.upload_handlers = [HashingUploadHandler(request)]


def receive_build(request, *, via: str):
    """Returns (build, None) or (None, {field: [messages]})."""
    try:
        form = UploadForm(request.POST, request.FILES)
        problem = request.upload_problem
        if problem and problem[0] == "io_error":
            return None, {problem[1]: [render("upload_io_error", {"error": problem[2]})]}
        if problem:
            field = problem[1]
            limit = field_limits().get(field, settings.MAX_BUILD_BYTES)
            if field == "tarball":
                return None, {field: [render("too_large", {"limit": limit})]}
            return None, {
                field: [_("This file is larger than %(limit)s bytes.") % {"limit": limit}]
            }
        if not form.is_valid():
            return None, {field: list(errors) for field, errors in form.errors.items()}
        data = form.cleaned_data
        build = services.build_create(
            acting_user=request.user,
            tarball=data["tarball"].staged,
            md5_file=data["md5"].staged,
            contents=data["contents"].staged,
            name=data["name"],
            contents_hash=data["contents_hash"],
            via=via,
        )
        return build, None
    except BuildRejected as rejection:
        return None, {error_field(rejection.code, rejection.params): [rejection.message]}
    except RequestDataTooBig:
        return None, {"__all__": [_("The request is too large.")]}
    finally:
        discard_staged(request)
