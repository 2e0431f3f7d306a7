"""The upload form and the API share this: parse the streamed request, check the form, hand
the staged files (or the archive of a finished resumable upload) to `services.build_create`,
and always clean up what was not taken (`streamed_upload`; a resumable upload outlives a
refusal, so the archive is not sent again)."""

import contextlib

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.files.uploadhandler import StopUpload
from django.db import transaction
from django.http import UnreadablePostError
from django.http.multipartparser import MultiPartParserError
from django.utils.translation import gettext as _

from . import checks, resumable, services
from .forms import UploadForm
from .reasons import Refused, render
from .uploads import HashingUploadHandler, discard_staged, error_field, field_limits

# What Django raises while taking a request body apart (or the handler, to stop one), and
# while reading it from a client that went away.
BODY_ERRORS = (
    StopUpload,
    MultiPartParserError,
    TooManyFieldsSent,
    TooManyFilesSent,
    UnreadablePostError,
)
# The .contents is parsed in the request only up to this size (a real one is a few MiB, and
# parsing costs several times its size in memory).
CONTENTS_CHECK_AT_UPLOAD = 8 * 1024 * 1024


@contextlib.contextmanager
def streamed_upload(request):
    """Installs the streaming upload handler (before anything reads request.POST), and on the
    way out removes whatever it staged that no build took: after a refusal, a CSRF failure
    once the files were read, or a client that hung up in the middle of a file (its writer
    is stopped too, so no thread or descriptor outlives the request)."""
    request.upload_handlers = [HashingUploadHandler(request)]
    try:
        yield
    finally:
        for handler in request.upload_handlers:
            handler.upload_interrupted()
        discard_staged(request)


def receive_build(request, *, via: str):
    """Returns (build, None) or (None, {field: [messages]}). Runs inside streamed_upload(),
    which removes whatever the build did not take."""
    try:
        try:
            form = UploadForm(request.POST, request.FILES)
        except BODY_ERRORS as exc:
            return None, body_refused(request, exc)
        problem = request.upload_problem
        if problem and problem.kind == "io_error":
            return None, {problem.field: [render("upload_io_error", {"error": problem.error})]}
        if problem:
            field = problem.field
            limit = field_limits().get(field, settings.MAX_BUILD_BYTES)
            if field == "tarball":
                return None, {field: [render("too_large", {"limit": limit})]}
            return None, {
                field: [_("This file is larger than %(limit)s bytes.") % {"limit": limit}]
            }
        if not form.is_valid():
            return None, {field: list(errors) for field, errors in form.errors.items()}
        data = form.cleaned_data
        # Cheap next to the archive, and caught here it does not cost the build its name.
        # A very large file is left to the validation task, so the web worker stays small.
        if data["contents"].staged.size <= CONTENTS_CHECK_AT_UPLOAD:
            checks.check_contents(
                data["contents"].staged.path, max_bytes=settings.MAX_CONTENTS_BYTES
            )
        fields = {
            "acting_user": request.user,
            "md5_file": data["md5"].staged,
            "contents": data["contents"].staged,
            "name": data["name"],
            "contents_hash": data["contents_hash"],
            "via": via,
        }
        if not data["tarball_upload"]:
            return services.build_create(tarball=data["tarball"].staged, **fields), None
        # One build per upload: the row stays locked until the build is made and the upload
        # gone; a refusal leaves it (and its archive, put back) for the next try.
        with transaction.atomic():
            upload = resumable.upload_claim(
                acting_user=request.user, upload_id=data["tarball_upload"]
            )
            build = services.build_create(tarball=resumable.upload_finish(upload=upload), **fields)
            resumable.upload_discard(upload=upload)  # its file is the build's now
        return build, None
    except Refused as rejection:
        return None, {error_field(rejection.code, rejection.params): [rejection.message]}
    except RequestDataTooBig:
        return None, {"__all__": [_("The request is too large.")]}


def body_refused(request, exc) -> dict:
    """The errors for a request body Django could not take apart, or that the upload handler
    stopped before reading (too large). Later reads of request.POST then see it empty
    instead of parsing the body again."""
    # A parse error in the middle of a file leaves its writer open: streamed_upload() stops
    # it and drops what was staged on the way out.
    request._mark_post_parse_error()
    if isinstance(exc, StopUpload):
        return {"tarball": [render("too_large", {"limit": settings.MAX_BUILD_BYTES})]}
    if isinstance(exc, UnreadablePostError):
        message = _("The upload was interrupted before it finished (%(error)s).") % {"error": exc}
        return {"__all__": [message]}
    if isinstance(exc, TooManyFieldsSent):
        message = _("The request has too many fields (at most %(limit)s).") % {
            "limit": settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        }
    elif isinstance(exc, TooManyFilesSent):
        message = _("The request has too many files (at most %(limit)s).") % {
            "limit": settings.DATA_UPLOAD_MAX_NUMBER_FILES
        }
    else:
        message = _(
            "The request is not valid multipart/form-data (%(error)s); send the fields "
            "tarball, md5 and contents as files."
        ) % {"error": exc}
    return {"__all__": [message]}
