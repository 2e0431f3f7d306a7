"""The HTTP side of resumable uploads (`releases.resumable`), for the upload page (a session,
with CSRF) and for build machines (`/api/uploads/`, an API token): the same JSON in and out.

    POST   <start>          {"filename", "size", "first_chunk_sha256"?} → 201/200 the upload
    GET    <upload>         → the upload: {"id", "url", "filename", "size", "received", ...}
    PUT    <upload>         one chunk: Content-Range: bytes START-END/TOTAL and
                            Content-Digest: sha-256=:<base64 of the chunk's sha256>:
                            → 200 the upload; 409 {"offset"} when it does not start there
    DELETE <upload>         → 204, the upload and its bytes removed

The caller has authorised the request (a role, or a token): these only speak the protocol.
"""

import base64
import binascii
import json
import re

from django.conf import settings
from django.http import HttpResponse, JsonResponse, UnreadablePostError
from django.utils.translation import gettext as _

from . import resumable
from .hashstate import HashStateUnavailable
from .models import ResumableUpload
from .reasons import Refused

RANGE_RE = re.compile(r"^bytes (\d{1,19})-(\d{1,19})/(\d{1,19})$")
DIGEST_RE = re.compile(r"(?:^|,)\s*sha-256=:([A-Za-z0-9+/]{43}=):\s*(?:,|$)")
START_BODY_LIMIT = 4096
STATUS = {
    "upload_unknown": 404,
    "upload_lost": 410,
    "upload_offset": 409,
    "upload_busy": 409,
    "upload_chunk_too_large": 413,
    "too_large": 413,
    "upload_too_many": 429,
    "upload_no_space": 507,
    "upload_io_error": 507,
}


def as_json(upload: ResumableUpload, url: str) -> dict:
    return {
        "id": upload.pk,
        "url": url,
        "filename": upload.filename,
        "size": upload.size,
        "received": upload.received,
        "complete": upload.complete,
        "chunk_size": settings.UPLOAD_CHUNK_BYTES,
        "expires_in": settings.UPLOAD_RESUME_TTL,
    }


def _refused(refusal: Refused) -> JsonResponse:
    body = {"error": refusal.message, "code": refusal.code}
    if refusal.code == "upload_offset":
        body["offset"] = refusal.params["offset"]
    return JsonResponse(body, status=STATUS.get(refusal.code, 400))


def _content_length(request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return -1


def _not_stored(exc: Exception) -> JsonResponse:
    """The portal's own disk (or its hashing library) failed: a JSON answer with the reason,
    as every other refusal, never an HTML error page the uploader's script cannot read."""
    error = getattr(exc, "strerror", None) or str(exc)
    return _refused(Refused("upload_io_error", error=error))


def _bad(message: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def start(request, url_for) -> JsonResponse:
    """`url_for(upload_id)` is the upload's own URL in this flavour (page or API)."""
    if request.method != "POST":
        return _bad(_("Method not allowed."), 405)
    if request.content_type != "application/json":
        return _bad(_("Send the start of an upload as application/json."), 415)
    if _content_length(request) > START_BODY_LIMIT:
        return _bad(_("The request is too large."), 413)
    try:
        data = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return _bad(_('Send a JSON object: {"filename": …, "size": …}.'))
    if not isinstance(data, dict):
        return _bad(_('Send a JSON object: {"filename": …, "size": …}.'))
    filename, size = data.get("filename"), data.get("size")
    fingerprint = data.get("first_chunk_sha256") or ""
    if not isinstance(filename, str) or not filename:
        return _bad(_("“filename” must be the archive's file name."))
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return _bad(_("“size” must be the archive's size in bytes, a whole number."))
    if not isinstance(fingerprint, str):
        return _bad(_("“first_chunk_sha256” must be a string of 64 hexadecimal digits."))
    try:
        upload = resumable.upload_start(
            acting_user=request.user,
            filename=filename[:1000],
            size=size,
            first_chunk_sha256=fingerprint[:1000],
        )
    except Refused as refusal:
        return _refused(refusal)
    except (OSError, HashStateUnavailable) as exc:
        return _not_stored(exc)
    status = 200 if upload.received else 201
    return JsonResponse(as_json(upload, url_for(upload.pk)), status=status)


def upload(request, upload_id: str, url: str) -> HttpResponse:
    try:
        if request.method == "GET":
            found = resumable.upload_get(acting_user=request.user, upload_id=upload_id)
            return JsonResponse(as_json(found, url))
        if request.method == "DELETE":
            found = resumable.upload_get(acting_user=request.user, upload_id=upload_id)
            resumable.upload_discard(upload=found)
            return HttpResponse(status=204)
        if request.method == "PUT":
            return _chunk(request, upload_id, url)
    except Refused as refusal:
        return _refused(refusal)
    except (OSError, HashStateUnavailable) as exc:
        return _not_stored(exc)
    return _bad(_("Method not allowed."), 405)


def _chunk(request, upload_id, url) -> JsonResponse:
    match = RANGE_RE.match(request.headers.get("Content-Range", ""))
    if not match:
        return _bad(_("Send the chunk's place as Content-Range: bytes START-END/TOTAL."))
    first, last, total = (int(group) for group in match.groups())
    length = last - first + 1
    if length <= 0:
        return _bad(_("Content-Range ends before it starts."))
    if _content_length(request) != length:
        return _bad(
            _("Content-Length must be the chunk's length, %(length)s.") % {"length": length}
        )
    digest = DIGEST_RE.search(request.headers.get("Content-Digest", ""))
    if not digest:
        return _bad(
            _("Send the chunk's sha256 as Content-Digest: sha-256=:<base64 of the digest>:.")
        )
    try:
        chunk_sha256 = base64.b64decode(digest.group(1), validate=True).hex()
    except binascii.Error:
        return _bad(_("The Content-Digest is not valid base64."))
    try:
        found = resumable.upload_append(
            acting_user=request.user,
            upload_id=upload_id,
            start=first,
            total=total,
            length=length,
            chunk_sha256=chunk_sha256,
            stream=request,
        )
    except UnreadablePostError as exc:
        # The client went away in the middle: nothing of the chunk was kept. (Any other
        # OSError is the portal's own disk: `upload` answers it.)
        return _bad(
            _("The chunk was not received whole (%(error)s); send it again.") % {"error": exc}
        )
    return JsonResponse(as_json(found, url))
