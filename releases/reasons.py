"""Every message a build's state or audit trail can carry, as a code plus parameters.

Rows store the code and its parameters, never the sentence, so the build page and the API
show it in the reader's language. Pure module: no ORM, no I/O.
"""

from django.utils import formats, timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext_lazy as _

MESSAGES = {
    # Actions the build's state does not allow.
    "hash_not_editable": _("The hash of an offered or retired build cannot change."),
    "retry_not_failed": _("Only a build whose publication failed can be retried."),
    # Rejections at upload time or while validating.
    "name_invalid": _(
        "The name “%(name)s” is not allowed: use 1 to 64 letters, digits, dots, dashes or "
        "underscores, starting with a letter or digit."
    ),
    "name_taken": _(
        "The name “%(name)s” was already used by another build. School servers never "
        "republish a name, so every build needs a new one."
    ),
    "tarball_name": _(
        "“%(file)s” is not a build archive: the name must end in -tree.tar.bz2, "
        "-tree.tar.xz or -tree.tar.lzma."
    ),
    "file_missing": _("The %(field)s file is missing."),
    "file_empty": _("The %(field)s file “%(file)s” is empty."),
    "too_large": _("The build archive is larger than the limit of %(limit)s bytes."),
    "upload_io_error": _(
        "The portal could not store the upload (%(error)s); nothing was kept. Tell the "
        "administrator (the disk may be full) and try again."
    ),
    # Resumable uploads (releases.resumable).
    "upload_unknown": _(
        "The portal holds no such upload (it was finished, or removed after "
        "UPLOAD_RESUME_TTL without news): start the upload again."
    ),
    "upload_lost": _("The bytes of this upload are no longer on the portal: start it again."),
    "upload_offset": _(
        "This chunk does not start where the upload stands: the portal holds %(offset)s "
        "bytes, send from there."
    ),
    "upload_range": _(
        "The chunk of bytes %(start)s to %(end)s of %(total)s does not fit this upload of "
        "%(size)s bytes."
    ),
    "upload_chunk_too_large": _("A chunk may hold at most %(limit)s bytes."),
    "upload_digest_format": _("“%(value)s” is not a sha256 digest (64 hexadecimal digits)."),
    "upload_chunk_digest": _(
        "The chunk arrived damaged (its sha256 is %(actual)s, not %(expected)s); nothing of "
        "it was kept. Send it again."
    ),
    "upload_interrupted": _(
        "The chunk was cut off after %(received)s of its %(length)s bytes; nothing of it was "
        "kept. Send it again."
    ),
    "upload_busy": _("Another request is sending to this upload right now; wait for it."),
    "upload_incomplete": _(
        "The upload is not finished: the portal holds %(received)s of its %(size)s bytes."
    ),
    "upload_too_many": _(
        "You have %(limit)s unfinished uploads already: finish one, or let them expire."
    ),
    "upload_no_space": _(
        "The portal's disk has room for %(free)s bytes, not the %(size)s of this archive. "
        "Tell the administrator."
    ),
    "md5_format": _(
        "The .md5 file is not in md5sum format (“<32 hex digits>  <file name>”): %(problem)s"
    ),
    "md5_bad_encoding": _("The .md5 file is not text."),
    "md5_several_lines": _(
        "The .md5 file lists %(count)s files; it must describe only the archive."
    ),
    "md5_wrong_file": _("The .md5 file is for “%(declared)s”, not for the archive “%(file)s”."),
    "md5_mismatch": _(
        "Checksum mismatch: the .md5 file says %(declared)s but the uploaded archive has "
        "%(actual)s. The archive was probably damaged in transfer."
    ),
    "md5_bare": _(
        "The .md5 file held only a hash without a file name; accepted, since the portal "
        "writes its own .md5 when publishing."
    ),
    "archive_truncated": _("The archive is truncated: %(compression)s data ends too early."),
    "archive_corrupt": _(
        "The archive is corrupt: the %(compression)s data cannot be read (%(error)s)."
    ),
    "archive_not_tar": _("The archive does not hold a tar file (%(error)s)."),
    "archive_empty": _("The archive holds no files."),
    "archive_absolute_path": _(
        "The archive holds an absolute path, which is not allowed: “%(path)s”."
    ),
    "archive_parent_path": _("The archive holds a path that climbs out with “..”: “%(path)s”."),
    "archive_too_big": _(
        "The archive unpacks to more than %(limit)s bytes; this is refused as a likely "
        "decompression bomb (setting MAX_UNPACKED_BYTES)."
    ),
    "archive_too_many": _(
        "The archive holds more than %(limit)s entries (setting MAX_ARCHIVE_MEMBERS)."
    ),
    "archive_several_pristine": _(
        "versions/pristine/ holds %(count)s entries (%(entries)s) but must hold exactly one: "
        "school servers would serve only the first."
    ),
    "archive_empty_pristine": _("versions/pristine/ is present but empty."),
    # What GNU tar, run as the school server runs it, says of the archive (`unpack`).
    "archive_tar_failed": _(
        "GNU tar, run as school servers run it, fails on this archive (exit status "
        "%(status)s): “%(line)s”. A school server that received it would stop refreshing "
        "every build it holds."
    ),
    "archive_decompress_failed": _(
        "%(tool)s cannot decompress the archive (exit status %(status)s): “%(line)s”."
    ),
    "archive_tar_warning": _(
        "GNU tar unpacks this archive but warns: “%(line)s”. Only archives that unpack "
        "without a warning are published (the README lists the few harmless ones)."
    ),
    "archive_unpack_stalled": _(
        "GNU tar made no progress on this archive for %(seconds)s seconds and was stopped "
        "(a device node unpacked over a FIFO blocks it for ever, for one). A school server "
        "would hang on it the same way."
    ),
    "unpack_abandoned": _("The validation stopped before it finished; it will be tried again."),
    "validation_error": _(
        "The portal failed while validating this build (%(error)s). This is a fault of the "
        "portal, not necessarily of the build: tell the administrator, who will find the "
        "details in the worker's log."
    ),
    # Refusals of builds validated before GNU tar decided, kept to render their history.
    "archive_lzma_is_xz": _(
        "The archive is named .tar.lzma but holds xz data. School servers unpack .tar.lzma "
        "with “lzma -cd”, which reads only the old lzma format and fails on this file: "
        "rename it to -tree.tar.xz (with a new .md5) or compress it with “lzma”."
    ),
    "archive_member_kind": _(
        "“%(path)s” is %(kind)s (tar type “%(type)s”); a build may hold only files, "
        "directories, symbolic links and hard links."
    ),
    "archive_sparse": _(
        "“%(path)s” is stored as a sparse file (%(size)s bytes unpacked); school servers "
        "would unpack it at its full size. Create the archive without --sparse."
    ),
    "archive_device_node": _(
        "“%(path)s” is %(kind)s. Device nodes are refused unless the administrator allows "
        "them (setting ARCHIVE_ALLOW_DEVICE_NODES)."
    ),
    "archive_header_too_big": _(
        "The archive has an extended header of %(size)s bytes at byte %(offset)s; the most "
        "allowed is %(limit)s. It was not read."
    ),
    "archive_header_chain": _(
        "The archive has more than %(limit)s extended headers in a row before “%(path)s”."
    ),
    "archive_header_data": _(
        "“%(path)s” is not a regular file but its header declares %(size)s bytes of data; "
        "tar programs disagree on how to read such an archive."
    ),
    "archive_header_slash": _(
        "“%(path)s” ends with “/” but is not a directory; GNU tar would fail to create it."
    ),
    "archive_name_invalid": _("The name “%(path)s” holds a NUL character."),
    "archive_name_too_long": _(
        "The path “%(path)s” is %(length)s bytes long; school servers cannot create paths "
        "longer than %(limit)s bytes."
    ),
    "archive_component_too_long": _(
        "The path “%(path)s” has a name longer than %(limit)s bytes, which no Linux file "
        "system can create."
    ),
    "archive_under_non_directory": _(
        "“%(path)s” would be unpacked inside “%(parent)s”, which is %(kind)s, not a "
        "directory: GNU tar on the school server would fail (or write through the link)."
    ),
    "archive_duplicate": _(
        "“%(path)s” appears twice in the archive (first as %(first)s, then as %(second)s): "
        "GNU tar would keep only the later copy, so what was checked is not what school "
        "servers would serve."
    ),
    "archive_hardlink_target": _(
        "The hard link “%(path)s” points to “%(target)s”, which is %(problem)s; GNU tar on "
        "the school server would fail. A hard link must point to a file listed before it."
    ),
    "archive_symlink_empty": _("The symbolic link “%(path)s” has an empty target."),
    "archive_root_not_directory": _("The archive's root entry “.” is %(kind)s."),
    "archive_versions_not_directory": _(
        "“%(path)s” is %(kind)s, not a directory; school servers look for the build's tree "
        "inside it."
    ),
    "archive_served_not_directory": _(
        "“%(path)s” is %(kind)s, not a directory. School servers would serve (and move into "
        "place) whatever it points to."
    ),
    "archive_pristine_name": _(
        "The entry “%(entry)s” under versions/pristine/ starts with a dot or holds spaces or "
        "control characters; school servers would not find it."
    ),
    "recheck_failed": _("Would break school servers: %(reason)s"),
    "recheck_passed": _("Today's archive checks pass."),
    "recall_reason_required": _("Write why the build is being taken away from school servers."),
    "recall_not_flagged": _(
        "Only a build that today's checks say would break school servers can be recalled; "
        "run recheck_builds first."
    ),
    "recall_not_published": _(
        "Only a build whose files are published can be recalled; this one is %(status)s."
    ),
    "recalled": _("Recalled from school servers: %(reason)s"),
    "retired_recalled": _("Its files left the puppet content folder (%(files)s)."),
    "contents_empty": _("The .contents file is empty."),
    "contents_too_big": _("The .contents file is larger than %(limit)s bytes."),
    "contents_not_utf8": _("The .contents file is not UTF-8 text (byte %(position)s)."),
    "contents_not_json": _("The .contents file is not JSON: %(error)s"),
    "hash_invalid": _(
        "“%(value)s” is not a contents hash: use 8 to 128 letters, digits or the "
        "characters + / = _ . : -"
    ),
    "hash_mismatch": _(
        "The contents hash entered (%(entered)s) differs from the one computed by the "
        "contents hash command (%(computed)s)."
    ),
    "hash_command_failed": _(
        "The contents hash command failed on this .contents file (exit status %(status)s): "
        "%(stderr)s"
    ),
    "hash_command_empty": _("The contents hash command printed nothing."),
    "hash_command_unavailable": _(
        "The contents hash command could not be run (%(error)s); enter the hash by hand or "
        "ask the administrator to fix CONTENTS_HASH_COMMAND."
    ),
    "validation_abandoned": _(
        "Validation did not finish after %(attempts)s attempts (a worker stopped each time)."
    ),
    # Publication.
    "publish_conflict": _(
        "%(file)s already exists in the puppet content folder with different content; "
        "nothing was overwritten."
    ),
    "publish_no_space": _(
        "Not enough free space in the puppet content folder: %(needed)s bytes needed, "
        "%(free)s free."
    ),
    "publish_io_error": _("Writing to the puppet content folder failed: %(error)s"),
    "publish_md5_mismatch": _(
        "The published copy of the archive has MD5 %(actual)s instead of %(expected)s; it "
        "was removed."
    ),
    "publish_source_missing": _("The stored file %(file)s is missing; upload the build again."),
    "publish_abandoned": _(
        "Publication did not finish after %(attempts)s attempts (a worker stopped each time)."
    ),
    # Promotion and deployments.
    "promote_not_approver": _("Only approvers may change what is offered to the laptops."),
    "offer_waiting_drift": _(
        "Waiting: updates.cfg was edited by hand, so nothing is written until an approver "
        "imports or overwrites the hand edits (updates.cfg deployments page)."
    ),
    "offer_waiting_deploy": _("Waiting for updates.cfg to be written and oatslite restarted."),
    "rollback_on_disk": _(
        "Deployment #%(deployment)s is the updates.cfg on disk now; there is nothing to go back to."
    ),
    "reason_required": _("Write why (it is kept in the history)."),
    "kept_over_import": _(
        "Kept over the imported file, since they never reached it: promoted %(promoted)s; "
        "withdrawn %(withdrawn)s."
    ),
    "promote_own_build": _(
        "You uploaded this build, so another approver must promote it (four-eyes rule)."
    ),
    "promote_not_published": _("Only a published build can be promoted; this one is %(status)s."),
    "promote_flagged": _(
        "This build would break school servers (%(reason)s); recall it instead of offering it."
    ),
    "promote_no_hash": _(
        "The build has no contents hash yet; enter the hash computed on an XO first."
    ),
    "promote_priority": _("“%(priority)s” is not an allowed priority (%(allowed)s)."),
    "promote_reason_required": _(
        "Only %(coverage)s of the school servers are known to have this build (the minimum is "
        "%(minimum)s); write why it should be offered anyway."
    ),
    "promote_duplicate_hash": _(
        "An offered entry already uses the contents hash %(section)s (%(name)s)."
    ),
    # The update impact gate (releases.impact).
    "promote_privileged_reason_required": _(
        "Compared with %(against)s, this build has privileged changes (%(count)s): setuid or "
        "setgid files, world-writable entries, device nodes, accounts, sudo, cron or root's "
        "SSH keys; write why it should be offered anyway."
    ),
    "promote_large_reason_required": _(
        "Compared with %(against)s, this is a large update: %(share)s of the served tree "
        "changes (the limit is %(limit)s). Every XO stores the changed files a second time "
        "and large updates do not scale on this update system; write why it should be "
        "offered anyway."
    ),
    "diff_no_manifest": _(
        "The build %(name)s has no recorded manifest (it never passed validation), so it "
        "cannot be compared."
    ),
    "impact_override": _(
        "Promoted despite its impact compared with %(against)s (%(privileged)s privileged "
        "changes, %(share)s of the served tree changed): %(reason)s"
    ),
    "withdraw_not_offered": _("This build is not offered."),
    "config_invalid": _("The resulting updates.cfg would not be valid: %(error)s"),
    "rollback_not_deployed": _("Only a deployment that succeeded can be restored."),
    "deploy_drift": _(
        "updates.cfg was changed by hand since the portal last wrote it; import the hand "
        "edits or overwrite them."
    ),
    "deploy_write_failed": _("Writing updates.cfg failed: %(error)s"),
    "deploy_restart_failed": _(
        "Restarting oatslite failed (%(problem)s); the previous updates.cfg was restored."
    ),
    "deploy_health_failed": _(
        "oatslite's health check failed after the restart (%(problem)s); the previous "
        "updates.cfg was restored."
    ),
    "deploy_undone": _("Undone because deployment #%(deployment)s failed."),
    "promoted": _("Promoted with priority %(priority)s."),
    "promoted_self": _("Promoted by its own uploader (ALLOW_SELF_APPROVAL is on)."),
    "coverage_override": _("Promoted below the coverage minimum: %(reason)s"),
    "withdrawn": _("Withdrawn from updates.cfg."),
    "withdrawn_because": _("Withdrawn from updates.cfg: %(reason)s"),
    "stopped_all": _("Everything stopped being offered (emergency stop)."),
    "rolled_back": _("Restored to the updates.cfg of deployment #%(deployment)s."),
    "imported": _("Imported from the hand-written updates.cfg."),
    # Audit trail.
    "uploaded": _("Uploaded %(file)s (%(size)s bytes) through %(via)s."),
    "requeued": _("Nobody was working on it after %(seconds)s seconds; queued again."),
    "interrupted": _("Interrupted by a disk or database error (%(error)s); it will be retried."),
    "valid": _("All checks passed."),
    "published": _("Published into %(folder)s."),
    "hash_set": _("Contents hash set to %(value)s."),
    "hash_set_xo_helper": _("Contents hash set to %(value)s, computed on an XO by the XO helper."),
    "xo_helper_created": _("XO helper link made; it works once, until %(expires)s."),
    "xo_helper_invalid_build": _(
        "This build failed validation: upload a corrected build before computing its hash."
    ),
    "xo_helper_gone": _(
        "This XO helper link has expired or was already used. Make a new one on the build's page."
    ),
    "retry": _("Publication retried."),
    # School servers (schools.services).
    "server_added": _("School server %(server)s added; it counts for coverage."),
    "server_added_inactive": _(
        "School server %(server)s added as inactive; it does not count for coverage."
    ),
    "server_edited": _("School server %(server)s changed: %(fields)s."),
    "server_token_rotated": _(
        "New report token for %(server)s (it starts with %(prefix)s); the old one stopped working."
    ),
    "servers_imported": _(
        "School servers imported from a CSV file. Added: %(created)s; updated: %(updated)s; "
        "lines refused: %(refused)s; switched on: %(activated)s; switched off: "
        "%(deactivated)s."
    ),
    "servers_imported_inventario": _(
        "School servers imported from Inventario. Added: %(created)s; updated: %(updated)s; "
        "host names changed: %(renamed)s; lines refused: %(refused)s; schools without a "
        "server skipped: %(skipped)s."
    ),
    # What a school server's report says is wrong (schools.checkin.report_problems).
    "checkin_md5_differs": _(
        "%(build)s: the school server holds a file with md5 %(md5)s, not the published "
        "%(published)s. Its copy is damaged or is another file of that name; it fetches the "
        "build again on its next puppet run. If this stays, remove the build's files on the "
        "school server."
    ),
    "refresh_failed": _(
        "The last refresh of the school server's builds stopped with an error (exit status "
        "%(status)s). Most often a build failed its md5 check or could not be unpacked, and "
        "then no build on that server was updated, not even the good ones. Run "
        "xs-refresh-xobuilds by hand on the server to see which build; if it is one of the "
        "portal's, recall it from its page."
    ),
    "refresh_not_run": _(
        "The refresh could not be run on the school server (exit status %(status)s: the "
        "command was not found or may not be run). Check that the xs-rsync package is "
        "installed there."
    ),
    "refresh_killed": _(
        "The refresh was stopped by signal %(signal)s (exit status %(status)s): the server "
        "ran out of memory, was shut down, or someone stopped it. It runs again at the next "
        "cron run; if this repeats, check the server's memory and disk."
    ),
    "refresh_failed_other": _(
        "The last refresh ended with exit status %(status)s. Run xs-refresh-xobuilds by hand "
        "on the school server to see its message."
    ),
    # A school servers' CSV file, line by line (schools.servers_csv). The command prints
    # these as they are; the import page adds what to do (servers_csv.HINTS).
    "servers_csv_missing_columns": _("missing columns: %(columns)s"),
    "servers_csv_unreadable": _(
        "this line cannot be read as CSV (%(error)s); nothing was imported"
    ),
    "servers_csv_extra_fields": _("more fields than columns"),
    "servers_csv_hostname": _("hostname %(value)s is not a host name"),
    "servers_csv_school_empty": _("school is empty"),
    "servers_csv_active": _("active must be yes or no, not %(value)s"),
    "servers_csv_address": _("address %(value)s is not an IP address"),
    "servers_csv_too_long": _("%(column)s is longer than %(limit)s characters"),
    "servers_csv_duplicate": _("%(hostname)s already appears on line %(first)s"),
    "servers_csv_control_char": _("%(column)s holds a control character (%(char)s)"),
    "servers_csv_other_place": _(
        "%(hostname)s is the server of Inventario place %(place)s on the portal"
    ),
    "servers_csv_hostname_taken": _(
        "cannot rename %(old)s to %(hostname)s: another server has that host name"
    ),
    # A file of Inventario's school servers, line by line (schools.inventario).
    "inventario_place_id": _("place_id %(value)s is not a whole number from 0 to 2147483647"),
    "inventario_hostname": _("server_hostname %(value)s is not a host name"),
    "inventario_address": _("wan_ip_address %(value)s is not an IP address"),
    "inventario_duplicate_place": _("place %(place)s already appears on line %(first)s"),
    "inventario_no_server": _(
        "skipped: place %(place)s (%(school)s) has no server_hostname in Inventario; a "
        "server the portal has for it is left as it is"
    ),
    "servers_import_stale": _(
        "The school servers changed since this preview was made (someone edited one or "
        "imported a file), so nothing was imported. Check the preview again and confirm."
    ),
    # USB kits (releases.usb, releases.usbkit).
    "usbkit_not_published": _(
        "Only a published or offered build can be put on a USB stick; this one is %(status)s."
    ),
    "usbkit_flagged": _(
        "This build would break school servers (%(reason)s); it cannot be put on a USB stick."
    ),
    "usbkit_file_missing": _(
        "The published file %(file)s is missing or differs from what was published; "
        "nothing can be carried to schools until it is fixed."
    ),
    "usbkit_archive_md5": _(
        "The published archive has MD5 %(actual)s instead of %(expected)s; it was not put in a kit."
    ),
    "usbkit_sign_failed": _("Signing manifest.sha1 failed (%(problem)s); no kit was made."),
    "usbkit_dest_missing": _("%(folder)s is not a folder (is the USB stick mounted?)."),
    "usbkit_dest_unwritable": _("Cannot write to %(folder)s: %(error)s"),
    "usbkit_no_space": _(
        "Not enough free space on %(folder)s: %(needed)s bytes needed, %(free)s free."
    ),
    "usbkit_conflict": _(
        "%(folder)s already holds files that are not this kit (%(files)s); nothing was "
        "overwritten. Empty it or use another stick."
    ),
    "usbkit_source_changed": _(
        "The published file %(file)s has SHA-1 %(actual)s instead of %(expected)s; the "
        "kit was removed."
    ),
    "usbkit_verify_failed": _(
        "%(file)s read back from the stick has SHA-1 %(actual)s instead of %(expected)s; "
        "the kit was removed (the stick may be failing)."
    ),
    "usbkit_io_error": _("Writing the USB kit failed: %(error)s"),
    "usbkit_downloaded": _("USB kit downloaded (%(size)s bytes)."),
    "usbkit_written": _("USB kit written to %(folder)s."),
}


# Kinds of archive member, stored as a code in the parameters named in KIND_PARAMS and
# rendered in the reader's language.
KINDS = {
    "f": _("a file"),
    "d": _("a directory"),
    "l": _("a symbolic link"),
    "h": _("a hard link"),
    "c": _("a character device"),
    "b": _("a block device"),
    "p": _("a FIFO"),
    "missing": _("not an earlier member of the archive"),
    "contiguous": _("a contiguous file"),
    "sparse": _("a sparse file"),
    "volume": _("a volume header"),
    "multivolume": _("a multi-volume continuation"),
    "dumpdir": _("an incremental dump directory"),
    "unknown": _("an unknown kind of member"),
}
KIND_PARAMS = ("kind", "first", "second", "problem")

# A school server's fields, as an edit's `changes` ({field: [old, new]}) names them.
SERVER_FIELDS = {
    "name": _("name"),
    "hostname": _("hostname"),
    "school": _("school"),
    "department": _("department or region"),
    "contact": _("contact"),
    "address": _("IP address"),
    "notes": _("notes"),
    "active": _("active"),
}
SHOWN_LENGTH = 60


# Moments, stored as ISO 8601 text, rendered in the reader's time zone and format.
TIME_PARAMS = ("expires",)


def _local_time(text: str) -> str:
    moment = parse_datetime(text)
    if moment is None:
        return text
    return formats.date_format(timezone.localtime(moment), "SHORT_DATETIME_FORMAT")


def _shown(value) -> str:
    if isinstance(value, bool):
        return str(_("yes") if value else _("no"))
    if value in (None, ""):
        return str(_("(empty)"))
    text = str(value)
    if len(text) > SHOWN_LENGTH:
        text = text[: SHOWN_LENGTH - 1] + "…"
    return f"“{text}”"


def _changes_text(changes: dict) -> str:
    """`active: yes → no; school: “A” → “B”`, in the reader's language."""
    return "; ".join(
        f"{SERVER_FIELDS.get(name, name)}: {_shown(old)} → {_shown(new)}"
        for name, (old, new) in changes.items()
    )


def render(code: str, params: dict | None = None) -> str:
    if not code:
        return ""
    message = MESSAGES.get(code)
    if message is None:
        return code
    params = dict(params or {})
    # A verdict that carries another reason (recheck_failed) renders it too.
    if "reason_code" in params:
        params["reason"] = render(params["reason_code"], params.get("reason_params"))
    for key in TIME_PARAMS:
        if isinstance(params.get(key), str):
            params[key] = _local_time(params[key])
    if isinstance(params.get("changes"), dict):
        params["fields"] = _changes_text(params["changes"])
    for key in KIND_PARAMS:
        if params.get(key) in KINDS:
            params[key] = KINDS[params[key]]
    try:
        return str(message) % params
    except (KeyError, TypeError, ValueError):
        return str(message)


class Refused(Exception):
    """Every expected "no": a problem with the input (it becomes a build's state or a form
    error) or an action the rules or the build's state do not allow. Never a 500: the
    caller shows `message`, in the reader's language."""

    def __init__(self, code: str, **params):
        assert code in MESSAGES, code
        self.code = code
        self.params = params
        super().__init__(code)

    @property
    def message(self) -> str:
        return render(self.code, self.params)

    def __str__(self):
        return self.message
