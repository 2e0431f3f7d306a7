"""Writes about school servers: tokens, check-ins, rsyncd log transfers, CSV imports."""

import csv
import io
import ipaddress
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import Q, Subquery
from django.utils import timezone

from releases.models import Build

from .checkin import HOSTNAME_RE
from .models import (
    HELD_STATUSES,
    CheckIn,
    RsyncLogPosition,
    SchoolServer,
    SyncState,
    SyncStatus,
    hash_token,
)
from .rsynclog import Position, parse_line, read_new_lines

CHECKIN_HISTORY = 100
# What a check-in reads of a server's states to tell which ones changed.
STATE_FIELDS = ("pk", "build_name", "build_id", "status", "md5", "source", "held_since")


def server_token_rotate(*, server: SchoolServer) -> str:
    """A new report token for `server`; the old one stops working at once."""
    key = SchoolServer.new_token()
    SchoolServer.objects.filter(pk=server.pk).update(
        token_hash=hash_token(key), token_prefix=key[:8], token_created_at=timezone.now()
    )
    server.refresh_from_db()
    return key


def _set_state(server, name, build, status, *, now, source, md5=""):
    """Upsert one (server, build) state; held_since is kept from the first time it was held."""
    state, created = SyncState.objects.get_or_create(
        server=server,
        build_name=name,
        defaults={
            "build": build,
            "status": status,
            "md5": md5,
            "source": source,
            "first_seen_at": now,
            "last_seen_at": now,
            "held_since": now if status in HELD_STATUSES else None,
        },
    )
    if created:
        return state
    state.build = build
    state.status = status
    state.md5 = md5 or state.md5
    state.source = source
    state.last_seen_at = now
    if status in HELD_STATUSES and state.held_since is None:
        state.held_since = now
    state.save(update_fields=["build", "status", "md5", "source", "last_seen_at", "held_since"])
    return state


def checkin_record(*, server: SchoolServer, report: dict, body: dict) -> CheckIn:
    """Store a validated check-in: the server's latest facts, one state per build it lists
    (unknown names kept as such), builds it no longer lists back to unknown, and the raw
    report in a bounded history. Repeating the same report changes nothing but times.

    Almost every report repeats the previous one, so the common case is kept small:
    1. read the server's states, with their builds' md5, in one query;
    2. upsert only the states that are new or changed (usually none);
    3. move last_seen_at of the unchanged ones in one UPDATE;
    4. put back to unknown what it no longer lists (usually nothing, then no query);
    5. update the server row, store the report, prune its history in one DELETE."""
    now = timezone.now()
    listed = {item["name"] for item in report["builds"]}
    # Plain rows, not model instances: a server lists dozens of builds on every report.
    current = {
        row["build_name"]: row
        for row in SyncState.objects.filter(server=server).values(*STATE_FIELDS, "build__md5")
    }
    builds = {
        name: (row["build_id"], row["build__md5"])
        for name, row in current.items()
        if row["build_id"] is not None
    }
    unlinked = listed - set(builds)
    if unlinked:
        found = Build.objects.filter(name__in=unlinked).values_list("name", "pk", "md5")
        builds.update((name, (pk, md5)) for name, pk, md5 in found)
    errors, changed, unchanged = [], [], []
    for item in report["builds"]:
        build_id, status, md5 = _reported_status(item, builds.get(item["name"]), errors)
        previous = current.get(item["name"]) or {}
        held_since = previous.get("held_since") or (now if status in HELD_STATUSES else None)
        fields = {
            "build_id": build_id,
            "status": status,
            "md5": md5,
            "source": "checkin",
            "held_since": held_since,
        }
        if previous and all(previous[name] == value for name, value in fields.items()):
            unchanged.append(previous["pk"])
        else:
            changed.append(
                SyncState(
                    server=server,
                    build_name=item["name"],
                    first_seen_at=now,
                    last_seen_at=now,
                    **fields,
                )
            )
    # What it no longer lists (removed, or a failed copy cleaned up) is unknown again.
    dropped = [
        row["pk"]
        for name, row in current.items()
        if name not in listed and row["status"] in (*HELD_STATUSES, SyncStatus.FAILED)
    ]
    if report.get("last_refresh_status") not in (None, 0):
        errors.append(f"last refresh exited with status {report['last_refresh_status']}")
    clock = report.get("clock")
    with transaction.atomic():
        if changed:
            # An upsert: a report repeated concurrently cannot fail on the unique
            # constraint; first_seen_at is kept.
            SyncState.objects.bulk_create(
                changed,
                update_conflicts=True,
                unique_fields=["server", "build_name"],
                update_fields=["build", "status", "md5", "source", "last_seen_at", "held_since"],
            )
        if unchanged:
            SyncState.objects.filter(pk__in=unchanged).update(last_seen_at=now)
        if dropped:
            SyncState.objects.filter(pk__in=dropped).update(
                status=SyncStatus.UNKNOWN, last_seen_at=now, source="checkin"
            )
        SchoolServer.objects.filter(pk=server.pk).update(
            last_report_at=now,
            last_report_source="checkin",
            last_refresh_status=report.get("last_refresh_status"),
            disk_free_bytes=report.get("disk_free_bytes"),
            client_version=report.get("client_version", ""),
            clock_skew_seconds=int((clock - now).total_seconds()) if clock else None,
            last_error="; ".join(errors)[:500],
        )
        checkin = CheckIn.objects.create(server=server, received_at=now, body=body)
        _prune_history(server)
    return checkin


def _reported_status(item, build, errors) -> tuple:
    """(build_id, status, md5) of one listed build; `build` is its (pk, md5), None when the
    portal does not know it. A wrong md5 is a failure, with its reason added to `errors`."""
    build_id, published_md5 = build or (None, "")
    md5 = item.get("md5", "")
    if build_id is not None and md5 and md5 != published_md5:
        errors.append(f"{item['name']}: md5 {md5} differs from the published {published_md5}")
        return build_id, SyncStatus.FAILED, md5
    if item.get("verified"):
        return build_id, SyncStatus.VERIFIED, md5
    return build_id, SyncStatus.PRESENT, md5


def _prune_history(server):
    """Keep the newest CHECKIN_HISTORY reports of `server`, in one statement."""
    boundary = (
        CheckIn.objects.filter(server=server)
        .order_by("-received_at", "-id")
        .values("pk")[CHECKIN_HISTORY : CHECKIN_HISTORY + 1]
    )
    CheckIn.objects.filter(server=server, pk__lte=Subquery(boundary)).delete()


# --- rsyncd log ------------------------------------------------------------------------------


@dataclass
class LogCounts:
    transfers: int = 0
    recorded: int = 0
    unknown_hosts: set = field(default_factory=set)
    unrelated: int = 0


def rsync_transfers_record(transfers) -> LogCounts:
    """Record, from rsyncd `send` lines, that a school server fetched a build's files.

    The tarball means it is downloading (then present, once its `.name` followed: school
    servers fetch `.name` last). Hosts are matched by hostname, then by address."""
    counts = LogCounts()
    relevant = [t for t in transfers if t.operation == "send"]
    counts.transfers = len(relevant)
    hosts = {t.host for t in relevant} | {t.address for t in relevant}
    servers = list(SchoolServer.objects.filter(hostname__in=hosts)) + list(
        SchoolServer.objects.filter(address__in=[h for h in hosts if _is_ip(h)])
    )
    by_host = {s.hostname: s for s in servers}
    by_address = {s.address: s for s in servers if s.address}
    names = {t.build_name for t in relevant if t.build_name}
    builds = {b.name: b for b in Build.objects.filter(name__in=names).only("pk", "name")}
    with transaction.atomic():
        for transfer in relevant:
            server = by_host.get(transfer.host) or by_address.get(transfer.address)
            if server is None:
                counts.unknown_hosts.add(
                    transfer.host if transfer.host != "unknown" else transfer.address
                )
                continue
            if not transfer.build_name or transfer.kind not in ("tarball", "name"):
                counts.unrelated += 1
                continue
            existing = SyncState.objects.filter(
                server=server, build_name=transfer.build_name
            ).first()
            # School servers fetch `.name` last: the tarball alone means still downloading.
            status = SyncStatus.DOWNLOADING if transfer.kind == "tarball" else SyncStatus.PRESENT
            # A check-in knows better than a log line: never downgrade verified or failed.
            if existing and existing.status in (SyncStatus.VERIFIED, SyncStatus.FAILED):
                status = existing.status
            if (
                existing
                and existing.status == SyncStatus.PRESENT
                and status == SyncStatus.DOWNLOADING
            ):
                status = SyncStatus.PRESENT
            _set_state(
                server,
                transfer.build_name,
                builds.get(transfer.build_name),
                status,
                now=transfer.at,
                source="rsync",
            )
            # A log line is a sign of life, but never newer news than a later report.
            SchoolServer.objects.filter(pk=server.pk).filter(
                Q(last_report_at__isnull=True) | Q(last_report_at__lt=transfer.at)
            ).update(last_report_at=transfer.at, last_report_source="rsync")
            counts.recorded += 1
    return counts


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


# --- CSV import ------------------------------------------------------------------------------

CSV_COLUMNS = ["hostname", "name", "school", "department", "contact", "address", "active", "notes"]
REQUIRED_COLUMNS = {"hostname", "school"}
TRUE_WORDS = {"1", "true", "yes", "si", "sí", "y", "x"}
FALSE_WORDS = {"0", "false", "no", "n", ""}


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    errors: list = field(default_factory=list)  # (line number, message)


# Text a spreadsheet would run as a formula; the CSV export prefixes it with an apostrophe
# (the OWASP advice against CSV injection), and the import takes that apostrophe off again.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def _from_spreadsheet(text: str) -> str:
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_STARTS) else text


def _row_values(row: dict, line: int):
    row = {
        key: _from_spreadsheet(value) if isinstance(value, str) else value
        for key, value in row.items()
    }
    hostname = (row.get("hostname") or "").strip().lower()
    if not hostname or not HOSTNAME_RE.match(hostname):
        raise ValueError(f"hostname {hostname!r} is not a host name")
    school = (row.get("school") or "").strip()
    if not school:
        raise ValueError("school is empty")
    active_word = (row.get("active") or "").strip().lower()
    if active_word and active_word not in TRUE_WORDS | FALSE_WORDS:
        raise ValueError(f"active must be yes or no, not {active_word!r}")
    address = (row.get("address") or "").strip() or None
    if address and not _is_ip(address):
        raise ValueError(f"address {address!r} is not an IP address")
    values = {
        "name": (row.get("name") or "").strip() or hostname.split(".")[0],
        "school": school,
        "department": (row.get("department") or "").strip(),
        "contact": (row.get("contact") or "").strip(),
        "notes": (row.get("notes") or "").strip(),
        "address": address,
        "active": active_word in TRUE_WORDS if active_word else True,
    }
    for key, limit in (("name", 100), ("school", 200), ("department", 100), ("contact", 200)):
        if len(values[key]) > limit:
            raise ValueError(f"{key} is longer than {limit} characters")
    return hostname, values


def servers_import_csv(*, text: str) -> ImportResult:
    """Create or update servers by hostname. Each bad line is reported with its number and
    skipped; the good lines are imported together, in one transaction."""
    result = ImportResult()
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = {(name or "").strip().lower() for name in reader.fieldnames or []}
        missing = REQUIRED_COLUMNS - header
        if missing:
            result.errors.append((1, f"missing columns: {', '.join(sorted(missing))}"))
            return result
        reader.fieldnames = [(name or "").strip().lower() for name in reader.fieldnames]
        rows = _valid_rows(reader, result)
    except csv.Error as exc:
        # The file itself is broken (e.g. a field over csv.field_size_limit()): what follows
        # cannot be trusted, so nothing is imported.
        # line_num counts the lines read before the one that failed.
        result.errors.append(
            (reader.line_num + 1, f"this line cannot be read as CSV ({exc}); nothing was imported")
        )
        return result
    with transaction.atomic():
        existing = {s.hostname: s for s in SchoolServer.objects.filter(hostname__in=rows)}
        for hostname, (_line, values) in rows.items():
            server = existing.get(hostname)
            if server is None:
                SchoolServer.objects.create(hostname=hostname, **values)
                result.created += 1
            else:
                for key, value in values.items():
                    setattr(server, key, value)
                server.save(update_fields=list(values))
                result.updated += 1
    return result


def _valid_rows(reader: csv.DictReader, result: ImportResult) -> dict:
    """{hostname: (line, values)} for the good lines; each bad one goes to result.errors."""
    rows = {}
    for row in reader:
        line = reader.line_num
        if None in row:
            result.errors.append((line, "more fields than columns"))
            continue
        try:
            hostname, values = _row_values(row, line)
        except ValueError as exc:
            result.errors.append((line, str(exc)))
            continue
        if hostname in rows:
            result.errors.append((line, f"{hostname} already appears on line {rows[hostname][0]}"))
            continue
        rows[hostname] = (line, values)
    return rows


def rsync_log_follow(*, path=None, max_rounds: int = 20) -> int:
    """Continue reading the rsyncd log from where the last run stopped (rotation and
    truncation restart at the top). Bounded: at most `max_rounds` chunks per run."""
    path = path or settings.RSYNCD_LOG
    if not path:
        return 0
    row, _created = RsyncLogPosition.objects.get_or_create(path=str(path))
    position = Position(inode=row.inode, offset=row.offset) if row.offset or row.inode else None
    tz = timezone.get_current_timezone()
    year = timezone.localtime().year
    recorded = 0
    for _round in range(max_rounds):
        lines, new_position = read_new_lines(path, position)
        transfers = [t for t in (parse_line(line, tz=tz, year=year) for line in lines) if t]
        with transaction.atomic():
            recorded += rsync_transfers_record(transfers).recorded
            RsyncLogPosition.objects.filter(pk=row.pk).update(
                inode=new_position.inode, offset=new_position.offset, updated_at=timezone.now()
            )
        # A round may return no line yet move on (an over-long line is skipped): stop only
        # when the position stops moving.
        if new_position == position or new_position is None:
            break
        position = new_position
    return recorded
