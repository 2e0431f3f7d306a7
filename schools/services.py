"""Every write about school servers: their rows (admin edits, CSV import, report tokens),
and what they hold, from check-ins and from the mothership's rsyncd log; and their laptops'
reports.

Callers authorise (the admin and the commands for people's writes, `checkin`'s token for a
server's reports); these functions assume they did. The writes people make (a token, an
import, an edit) are audited in the same transaction. Sync states have one writer,
`_states_save`, and one rule for `held_since`."""

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, DateTimeField, OuterRef, Q, Subquery, Value, When
from django.utils import timezone

from releases.audit import AuditAction, audit
from releases.models import Build
from releases.reasons import Refused

from . import inventario, servers_csv
from .checkin import refresh_problem
from .laptop_reports import Report
from .models import (
    HELD_STATUSES,
    CheckIn,
    Laptop,
    LaptopDay,
    LaptopVersionChange,
    RsyncLogPosition,
    SchoolServer,
    SyncState,
    SyncStatus,
    hash_token,
)
from .rsynclog import Position, parse_line, read_new_lines
from .servers_csv import normal_ip

# A server reporting hundreds of damaged builds keeps the first ones (the count is in the
# English summary's length bound too).
PROBLEMS_KEPT = 20

CHECKIN_HISTORY = 100
# What a check-in reads of a server's states to tell which ones changed.
STATE_FIELDS = ("pk", "build_name", "build_id", "status", "md5", "source", "held_since")


def server_token_rotate(*, server: SchoolServer, acting_user=None) -> str:
    """A new report token for `server`; the old one stops working at once. Audited with the
    token's first characters (the admin shows them too), never the token."""
    key = SchoolServer.new_token()
    with transaction.atomic():
        SchoolServer.objects.filter(pk=server.pk).update(
            token_hash=hash_token(key), token_prefix=key[:8], token_created_at=timezone.now()
        )
        audit(
            action=AuditAction.TOKEN_ROTATION,
            actor=acting_user,
            code="server_token_rotated",
            params={"server": server.hostname, "prefix": key[:8]},
        )
    server.refresh_from_db()
    return key


# --- Servers' own rows ------------------------------------------------------------------------

# What people may change on a server through `server_update` (the admin's form); the other
# fields are written by its reports, the rsyncd log and `server_token_rotate`.
EDITABLE_FIELDS = ["name", "hostname", "school", "department", "contact", "address", "notes"]
EDITABLE_FIELDS += ["active"]  # the one the promotion gate counts


def server_add(*, server: SchoolServer, acting_user) -> SchoolServer:
    """Save `server`, a new one (the admin's add form), and audit it with its `active`."""
    with transaction.atomic():
        server.save()
        if server.address:
            laptop_servers_link(addresses=[server.address])
        audit(
            action=AuditAction.SERVER_EDIT,
            actor=acting_user,
            code="server_added" if server.active else "server_added_inactive",
            params={"server": server.hostname, "active": server.active},
        )
    return server


def server_update(*, server: SchoolServer, acting_user, changes: dict) -> dict:
    """Apply `changes` ({field: new value}) to `server` and audit what really changed, old
    and new; returns those {field: (old, new)}. Nothing changed: no write, no audit.

    1. lock the row and read it as it is now (not as the form saw it);
    2. keep the changes that differ from it (compared as the row stores them);
    3. save only those fields, and audit them in the same transaction."""
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    changes = {name: _as_stored(name, value) for name, value in changes.items()}
    with transaction.atomic():
        stored = SchoolServer.objects.select_for_update().get(pk=server.pk)
        changed = {
            name: (getattr(stored, name), value)
            for name, value in changes.items()
            if getattr(stored, name) != value
        }
        for name, value in changes.items():
            setattr(server, name, value)
        if not changed:
            return {}
        server.save(update_fields=list(changed))
        if "address" in changed:
            laptop_servers_link(addresses=[a for a in changed["address"] if a])
        audit(
            action=AuditAction.SERVER_EDIT,
            actor=acting_user,
            code="server_edited",
            params={
                "server": server.hostname,
                # Rendered in the reader's language by releases.reasons.
                "changes": {name: [old, new] for name, (old, new) in changed.items()},
            },
        )
    return changed


def _as_stored(name: str, value):
    """`value` of field `name` as the row will hold it, so it compares with what it holds."""
    if name == "hostname":
        return SchoolServer.normal_hostname(value)
    if name == "address" and not value:
        return None  # a blank address is stored as NULL
    return value


# --- Sync states ------------------------------------------------------------------------------

# What `_states_save` rewrites of a state that exists; its first_seen_at is kept.
STATE_UPDATE_FIELDS = ["build", "status", "md5", "source", "last_seen_at", "held_since"]
# Rows per INSERT, so a statement stays under PostgreSQL's 65,535 parameters (SQLite's
# limit is lower, and Django batches for it on its own).
STATES_BATCH = 1000


def _held_since(previous, status, at):
    """When a server first held a build: kept once known, else `at` if `status` holds it."""
    return previous or (at if status in HELD_STATUSES else None)


def _states_save(states: list) -> None:
    """Write whole sync states, new or existing, as one upsert (per batch): a check-in and a
    log line writing the same state at once cannot fail on the unique constraint."""
    if states:
        SyncState.objects.bulk_create(
            states,
            batch_size=STATES_BATCH,
            update_conflicts=True,
            unique_fields=["server", "build_name"],
            update_fields=STATE_UPDATE_FIELDS,
        )


def checkin_record(*, server: SchoolServer, report: dict, body: dict) -> CheckIn:
    """Store a validated check-in: the server's latest facts, one state per build it lists
    (unknown names kept as such), builds it no longer lists back to unknown, and the raw
    report in a bounded history. Repeating the same report changes nothing but times.

    Almost every report repeats the previous one, so the common case is kept small:
    1. read the server's states, with their builds' md5, in one query;
    2. upsert the states that are new or changed, and those of builds it no longer lists
       (back to unknown), in one statement (usually nothing, then no query);
    3. move last_seen_at of the unchanged ones in one UPDATE;
    4. update the server row, store the report, prune its history in one DELETE."""
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
        fields = {
            "build_id": build_id,
            "status": status,
            "md5": md5,
            "source": "checkin",
            "held_since": _held_since(previous.get("held_since"), status, now),
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
    # What it no longer lists (removed, or a failed copy cleaned up) is unknown again; when
    # it was first held is kept, for the day it comes back.
    changed += [
        SyncState(
            server=server,
            build_name=name,
            build_id=row["build_id"],
            status=SyncStatus.UNKNOWN,
            md5=row["md5"],
            source="checkin",
            first_seen_at=now,
            last_seen_at=now,
            held_since=row["held_since"],
        )
        for name, row in current.items()
        if name not in listed and row["status"] in (*HELD_STATUSES, SyncStatus.FAILED)
    ]
    refresh = refresh_problem(report.get("last_refresh_status"))
    if refresh is not None:  # first: it stops every build, and PROBLEMS_KEPT cuts the tail
        errors.insert(
            0, (f"last refresh exited with status {report['last_refresh_status']}", *refresh)
        )
    clock = report.get("clock")
    with transaction.atomic():
        _states_save(changed)
        if unchanged:
            SyncState.objects.filter(pk__in=unchanged).update(last_seen_at=now)
        SchoolServer.objects.filter(pk=server.pk).update(
            last_report_at=now,
            last_report_source="checkin",
            last_refresh_status=report.get("last_refresh_status"),
            disk_free_bytes=report.get("disk_free_bytes"),
            client_version=report.get("client_version", ""),
            clock_skew_seconds=int((clock - now).total_seconds()) if clock else None,
            last_error="; ".join(text for text, _code, _params in errors)[:500],
            problems=[[code, params] for _text, code, params in errors[:PROBLEMS_KEPT]],
        )
        checkin = CheckIn.objects.create(server=server, received_at=now, body=body)
        _prune_history(server)
    return checkin


def _reported_status(item, build, errors) -> tuple:
    """(build_id, status, md5) of one listed build; `build` is its (pk, md5), None when the
    portal does not know it. A wrong md5 is a failure, with its reason added to `errors` as
    (English summary, code, params)."""
    build_id, published_md5 = build or (None, "")
    md5 = item.get("md5", "")
    if build_id is not None and md5 and md5 != published_md5:
        errors.append(
            (
                f"{item['name']}: md5 {md5} differs from the published {published_md5}",
                "checkin_md5_differs",
                {"build": item["name"], "md5": md5, "published": published_md5},
            )
        )
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

# Lines read, parsed and recorded together: memory, and the statements per chunk, stay
# bounded however long the log is.
LOG_CHUNK_LINES = 5000
# Servers per UPDATE of their last report (each costs five parameters).
SERVERS_BATCH = 1000


@dataclass
class LogCounts:
    transfers: int = 0
    recorded: int = 0
    unknown_hosts: set = field(default_factory=set)
    unrelated: int = 0

    def add(self, other: "LogCounts") -> None:
        self.transfers += other.transfers
        self.recorded += other.recorded
        self.unknown_hosts |= other.unknown_hosts
        self.unrelated += other.unrelated


def rsync_log_record(*, lines, tz, year, chunk_lines: int = LOG_CHUNK_LINES) -> LogCounts:
    """Parse rsyncd log `lines` (any iterable, e.g. an open file) and record their transfers,
    `chunk_lines` lines at a time. `tz` and `year` are as for `rsynclog.parse_line`."""
    counts = LogCounts()
    lines = iter(lines)
    while chunk := list(itertools.islice(lines, chunk_lines)):
        transfers = [t for t in (parse_line(line, tz=tz, year=year) for line in chunk) if t]
        counts.add(rsync_transfers_record(transfers))
    return counts


def rsync_transfers_record(transfers) -> LogCounts:
    """Record, from rsyncd `send` lines, that school servers fetched builds' files.

    The tarball means a server is downloading the build, its `.name` that it has it (school
    servers fetch `.name` last). Hosts are matched by hostname, then by address. The lines
    are applied in order, as if one by one, yet cost the same few statements however many
    there are:
    1. find the servers and builds they name, in two queries;
    2. read the states of the (server, build) pairs they touch, in one query;
    3. apply the lines to those states in Python (`_transfer_status`, `_held_since`);
    4. write the states that changed in one upsert, and move each server's last report
       forward (never back) in one UPDATE; both in batches for the database's limits."""
    counts = LogCounts()
    relevant = [t for t in transfers if t.operation == "send"]
    counts.transfers = len(relevant)
    if not relevant:
        return counts
    hosts = {t.host for t in relevant} | {t.address for t in relevant}
    servers = list(
        SchoolServer.objects.filter(
            Q(hostname__in=hosts) | Q(address__in=[h for h in hosts if normal_ip(h)])
        ).values_list("pk", "hostname", "address", "last_report_at")
    )
    by_host = {hostname: pk for pk, hostname, _address, _at in servers}
    # Several servers behind one NAT share an address: the last in the usual order wins.
    by_address = {address: pk for pk, _hostname, address, _at in servers if address}
    last_reports = {pk: at for pk, _hostname, _address, at in servers}
    lines = []
    for transfer in relevant:
        server = by_host.get(transfer.host) or by_address.get(transfer.address)
        if server is None:
            counts.unknown_hosts.add(
                transfer.host if transfer.host != "unknown" else transfer.address
            )
        elif not transfer.build_name or transfer.kind not in ("tarball", "name"):
            counts.unrelated += 1
        else:
            lines.append((server, transfer))
    counts.recorded = len(lines)
    if lines:
        with transaction.atomic():
            _log_lines_apply(lines, last_reports)
    return counts


# A state as the rsyncd log reads and writes it: plain values, not model instances.
LOG_STATE_FIELDS = (
    "build_id",
    "status",
    "md5",
    "source",
    "first_seen_at",
    "last_seen_at",
    "held_since",
)


def _log_lines_apply(lines, last_reports) -> None:
    """Steps 2-4 of `rsync_transfers_record` for its (server pk, transfer) `lines`;
    `last_reports` is {server pk: its last report} as step 1 read it."""
    names = {transfer.build_name for _server, transfer in lines}
    builds = dict(Build.objects.filter(name__in=names).values_list("name", "pk"))
    pairs = {(server, transfer.build_name) for server, transfer in lines}
    # One query with two IN lists, not one per pair; the other pairs of these servers and
    # names that it also returns are dropped here.
    rows = SyncState.objects.filter(
        server_id__in={server for server, _name in pairs}, build_name__in=names
    ).values_list("server_id", "build_name", *LOG_STATE_FIELDS)
    stored = {
        (server, name): dict(zip(LOG_STATE_FIELDS, values, strict=True))
        for server, name, *values in rows
        if (server, name) in pairs
    }
    states, newest = {}, {}
    for server, transfer in lines:
        key = (server, transfer.build_name)
        if key not in states:
            states[key] = dict(stored.get(key) or {"first_seen_at": transfer.at, "md5": ""})
        state = states[key]
        state["status"] = _transfer_status(state.get("status"), transfer.kind)
        state["last_seen_at"] = transfer.at
        state["held_since"] = _held_since(state.get("held_since"), state["status"], transfer.at)
        last = newest.get(server, last_reports[server])
        if last is None or last < transfer.at:
            newest[server] = transfer.at
    changed = []
    for (server, name), state in states.items():
        state.update(build_id=builds.get(name), source="rsync")
        if state != stored.get((server, name)):
            changed.append(SyncState(server_id=server, build_name=name, **state))
    _states_save(changed)
    _servers_heard_from(newest)


def _transfer_status(previous, kind: str) -> str:
    """A state's status after one log line about its build's `kind` of file."""
    # A check-in knows better than a log line: never downgrade verified or failed.
    if previous in (SyncStatus.VERIFIED, SyncStatus.FAILED):
        return previous
    # School servers fetch `.name` last: the tarball alone means still downloading, unless
    # the build was already there (a re-sent tarball is no news).
    if kind == "tarball" and previous != SyncStatus.PRESENT:
        return SyncStatus.DOWNLOADING
    return SyncStatus.PRESENT


def _servers_heard_from(newest: dict) -> None:
    """A log line is a sign of life, but never newer news than a later report: move each
    server's last report to its newest line's time ({server pk: time}, the servers whose
    lines are newer than their last report as it was read) only where that is still later,
    in the UPDATE itself, so a check-in in between is never overwritten."""
    items = sorted(newest.items())
    for start in range(0, len(items), SERVERS_BATCH):
        batch = items[start : start + SERVERS_BATCH]
        at = Case(
            *(When(pk=pk, then=Value(when)) for pk, when in batch), output_field=DateTimeField()
        )
        SchoolServer.objects.filter(pk__in=[pk for pk, _when in batch]).filter(
            Q(last_report_at__isnull=True) | Q(last_report_at__lt=at)
        ).update(last_report_at=at, last_report_source="rsync")


# --- CSV import ------------------------------------------------------------------------------


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0  # lines of servers the portal had, changed or not
    errors: list = field(default_factory=list)  # (line number, message as the code writes it)
    changed: int = 0  # of those, the ones the file really changed
    skipped: list = field(default_factory=list)  # (line number, note), skipped on purpose


def _stored_values(hostnames, *, places=(), lock: bool = False) -> dict:
    """{hostname: {field: value}} of the servers among `hostnames` or linked to one of the
    Inventario `places`, as `compare` reads them."""
    servers = SchoolServer.objects.filter(
        Q(hostname__in=hostnames) | Q(inventario_place_id__in=places)
    )
    if lock:
        servers = servers.select_for_update()
    fields = ("pk", "hostname", servers_csv.PLACE, *servers_csv.FIELDS)
    return {row["hostname"]: row for row in servers.values(*fields)}


def _read(text: str, from_inventario: bool) -> servers_csv.Reading:
    return inventario.read(text) if from_inventario else servers_csv.read(text)


def servers_import_plan(*, text: str, from_inventario: bool = False) -> servers_csv.Plan:
    """What importing `text` would do now, line by line; writes nothing (the preview).
    `from_inventario`: the file is the query of docs/inventario.md (`schools.inventario`)."""
    reading = _read(text, from_inventario)
    return servers_csv.compare(reading, _stored_values(reading.rows, places=reading.places))


def servers_import_csv(
    *, text: str, acting_user=None, expected: str = "", from_inventario: bool = False
) -> ImportResult:
    """Create or update servers by hostname (a file from Inventario: by its place there,
    then by hostname). Each bad line is reported with its number and skipped; the good
    lines are imported together, in one transaction, audited as one event with the counts
    and every server whose `active` flag the file changed (or, from Inventario, whose host
    name it changed). A file that changes nothing (every line as the portal has it
    already) is not audited.

    1. read the file (`servers_csv.read` or `inventario.read`, the reading the preview
       shows);
    2. lock the rows it names and compare (`servers_csv.compare`); with `expected`, the
       fingerprint of the plan a person confirmed, refuse (`Refused`) if this one differs;
    3. write the new and changed servers and the audit event. The lock holds only rows
       that exist: if another import (the same preview confirmed twice) added one of the
       new servers or took one of the new host names meanwhile, nothing is written and
       the plan is refused as stale."""
    reading = _read(text, from_inventario)
    result = ImportResult(
        errors=[(error.line, error.english) for error in reading.errors],
        skipped=[(note.line, note.english) for note in reading.notes],
    )
    if reading.fatal or not reading.rows:
        if expected and expected != servers_csv.compare(reading, {}).fingerprint:
            raise Refused("servers_import_stale")
        return result
    with transaction.atomic():
        stored = _stored_values(reading.rows, places=reading.places, lock=True)
        plan = servers_csv.compare(reading, stored)
        if expected and expected != plan.fingerprint:
            raise Refused("servers_import_stale")
        # compare refuses lines too (a host name another Inventario place holds).
        result.errors = [(error.line, error.english) for error in plan.errors]
        result.created = len(plan.new)
        result.updated = len(plan.lines) - result.created
        result.changed = len(plan.changed)
        try:
            with transaction.atomic():
                SchoolServer.objects.bulk_create(
                    [SchoolServer(hostname=line.hostname, **line.values) for line in plan.new]
                )
                for line in plan.changed:
                    changes = {key: new for key, (_old, new) in line.changes.items()}
                    SchoolServer.objects.filter(pk=line.stored["pk"]).update(**changes)
        except IntegrityError:
            raise Refused("servers_import_stale") from None
        if not plan.writes:
            return result
        # Laptops reporting from an address a server now has (or no longer has) move with it.
        addresses = {line.values.get("address") for line in plan.new} | {
            address for line in plan.changed for address in line.changes.get("address", ())
        }
        if addresses - {None, ""}:
            laptop_servers_link(addresses=[a for a in addresses if a])
        active_changes = {
            line.hostname: list(line.changes["active"])
            for line in plan.changed
            if "active" in line.changes
        }
        params = {
            "created": result.created,
            "updated": result.updated,
            "refused": len(result.errors),
            "activated": sum(new for _old, new in active_changes.values()),
            "deactivated": sum(not new for _old, new in active_changes.values()),
            "active_changes": active_changes,
        }
        if from_inventario:
            hostname_changes = {
                line.changes["hostname"][0]: line.hostname
                for line in plan.changed
                if "hostname" in line.changes
            }
            params |= {
                "renamed": len(hostname_changes),
                "hostname_changes": hostname_changes,
                "skipped": len(result.skipped),
            }
        audit(
            action=AuditAction.SERVERS_IMPORT,
            actor=acting_user,
            code="servers_imported_inventario" if from_inventario else "servers_imported",
            params=params,
        )
    return result


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
        # The lines and the position that follows them are recorded together.
        with transaction.atomic():
            recorded += rsync_log_record(lines=lines, tz=tz, year=year).recorded
            RsyncLogPosition.objects.filter(pk=row.pk).update(
                inode=new_position.inode, offset=new_position.offset, updated_at=timezone.now()
            )
        # A round may return no line yet move on (an over-long line is skipped): stop only
        # when the position stops moving.
        if new_position == position or new_position is None:
            break
        position = new_position
    return recorded


# --- Laptop reports --------------------------------------------------------------------------

# Version changes kept per laptop.
LAPTOP_HISTORY = 10


@dataclass
class LaptopReportsResult:
    received: int = 0
    stored: int = 0  # newer than the laptop's last report: applied
    repeats: int = 0  # the same as, or older than, the laptop's last report: ignored


# What the ingestion reads and writes of a laptop.
LAPTOP_FIELDS = (
    "serial",
    "vhash",
    "address",
    "server",
    "free_space_kib",
    "stolen",
    "first_seen_at",
    "last_seen_at",
    "version_since",
    "received_at",
)


def laptop_reports_record(*, reports: list[Report], received_at=None) -> LaptopReportsResult:
    """Apply validated laptop reports (one, or a batch) and tell how many were news.

    The rule for repeats, which keeps no row per report: a report is news only when it is
    newer than its laptop's last report (`connected_at` > `last_seen_at`). The same
    (serial, connected_at) again, or anything older, is a repeat: ignored, answered as a
    success. Reports are applied in time order within a call, so a batch or a CSV file may
    hold a laptop's reports in any order; an older report arriving in a later call is
    dropped, which costs at most a version change or a day's count, never the latest state.
    A missing `vhash`, `ip_address` or `free_space` keeps what the laptop said before.

    Whatever the number of reports, a fixed number of statements (chunked only past the
    database's parameter limit, thousands of rows):
    0. claim the laptops never seen before (`_laptops_claim`), so that two requests with a
       new laptop's first reports apply them one after the other;
    1. read the laptops they name, locked, and the servers at their addresses (2 queries);
    2. apply the reports in Python: the latest state, the version changes, the day counts;
    3. upsert the laptops (only where the report is still newer, so a concurrent request
       never moves a laptop back), returning their ids;
    4. insert the version changes and keep the newest LAPTOP_HISTORY per laptop (2);
    5. add to the day counts (an upsert that adds, so concurrent batches both count)."""
    now = received_at or timezone.now()
    result = LaptopReportsResult(received=len(reports))
    ordered, seen = [], set()
    for report in sorted(reports, key=lambda r: (r.serial, r.connected_at)):
        if (report.serial, report.connected_at) in seen:
            result.repeats += 1
        else:
            seen.add((report.serial, report.connected_at))
            ordered.append(report)
    if not ordered:
        return result
    with transaction.atomic():
        new = _laptops_claim(ordered, now)
        stored = {
            row["serial"]: row
            for row in Laptop.objects.select_for_update()
            .filter(serial__in={r.serial for r in ordered})
            .exclude(serial__in=new)
            .order_by("serial")
            .values("pk", *LAPTOP_FIELDS)
        }
        servers = _servers_at({r.address for r in ordered if r.address})
        states, changes, days = {}, [], {}
        for report in ordered:
            state = states.get(report.serial) or stored.get(report.serial)
            if state is not None and report.connected_at <= state["last_seen_at"]:
                result.repeats += 1
                continue
            result.stored += 1
            state = _laptop_apply(state, report, servers, now, changes, days)
            states[report.serial] = state
        if not states:
            return result
        ids = _laptops_save(list(states.values()))
        if changes:
            _upsert(
                LaptopVersionChange,
                [{**change, "laptop": ids[serial]} for serial, change in changes if serial in ids],
            )
            _history_prune({ids[serial] for serial, _change in changes if serial in ids})
        _upsert(
            LaptopDay,
            [
                {"day": day, "vhash": vhash, "server_key": server, "laptops": n, "reports": r}
                for (day, vhash, server), (n, r) in sorted(days.items())
            ],
            conflict=["day", "vhash", "server_key"],
            update={
                "laptops": "{t}.laptops + excluded.laptops",
                "reports": "{t}.reports + excluded.reports",
            },
        )
    return result


def _laptop_apply(state, report: Report, servers, now, changes, days) -> dict:
    """The laptop's state after `report` (newer than `state`, None for a new laptop); adds
    its version change to `changes` and its counts to `days`."""
    at = report.connected_at
    if state is None:
        state = {"serial": report.serial, "first_seen_at": at, "version_since": at, "vhash": ""}
        state |= {"address": None, "server": None, "free_space_kib": None, "last_seen_at": None}
    vhash = report.vhash or state["vhash"]
    address = report.address or state["address"]
    server = servers.get(address) if report.address else state["server"]
    if state["last_seen_at"] is not None and vhash != state["vhash"]:
        changes.append(
            (
                report.serial,
                {"at": at, "received_at": now, "vhash": vhash, "previous_vhash": state["vhash"]},
            )
        )
        state["version_since"] = at
    # The deployment's day (TIME_ZONE), whoever's request this is.
    zone = timezone.get_default_timezone()
    day = timezone.localdate(at, zone)
    # A laptop counts once per day, version and server (unless it flips back and forth).
    new_there = (
        state["last_seen_at"] is None
        or timezone.localdate(state["last_seen_at"], zone) != day
        or (vhash, server) != (state["vhash"], state["server"])
    )
    laptops, reports = days.get((day, vhash, server or 0), (0, 0))
    days[day, vhash, server or 0] = (laptops + new_there, reports + 1)
    free_space = state["free_space_kib"] if report.free_space_kib is None else report.free_space_kib
    return state | {
        "vhash": vhash,
        "address": address,
        "server": server,
        "free_space_kib": free_space,
        "stolen": report.stolen,
        "last_seen_at": at,
        "received_at": now,
    }


def _servers_at(addresses) -> dict:
    """{address: server pk} of the school servers at `addresses`. Several servers at one
    address (one NAT): an active one first, then by hostname."""
    if not addresses:
        return {}
    rows = (
        SchoolServer.objects.filter(address__in=addresses)
        .order_by("-active", "hostname")
        .values_list("address", "pk")
    )
    found = {}
    for address, pk in rows:
        found.setdefault(address, pk)
    return found


def laptop_servers_link(*, addresses=None) -> int:
    """Match laptops to school servers again from the address they last reported from (all
    laptops, or those at `addresses`), after a server's address changed; one UPDATE. The
    day counts already written keep the server they were counted under."""
    match = (
        SchoolServer.objects.filter(address=OuterRef("address"))
        .order_by("-active", "hostname")
        .values("pk")[:1]
    )
    laptops = Laptop.objects.exclude(address=None)
    if addresses is not None:
        laptops = laptops.filter(address__in=addresses)
    return laptops.update(server=Subquery(match))


# What a claimed laptop holds until its reports are applied, in the same transaction: older
# than any report, so the upsert of `_laptops_save` always replaces it.
UNSEEN = datetime(1970, 1, 1, tzinfo=UTC)


def _laptops_claim(ordered: list[Report], now) -> set[str]:
    """Insert a row for each serial of `ordered` that has none, in serial order; the
    serials inserted (the laptops new to the portal).

    Without it, two requests with a new laptop's first reports both read "no such laptop"
    (there is no row to lock yet) and both count it, twice on one day. With it, the second
    request's insert waits for the first's transaction, then finds the row, and its
    SELECT ... FOR UPDATE reads what the first stored. Serial order: two batches claim
    their shared serials in the same order, so neither waits for the other in a circle.
    (SQLite takes its write lock at BEGIN and never interleaves; the same code serves.)"""
    first_seen = {}
    for report in ordered:  # in (serial, connected_at) order
        first_seen.setdefault(report.serial, report.connected_at)
    rows = [
        {
            "serial": serial,
            "vhash": "",
            "address": None,
            "server": None,
            "free_space_kib": None,
            "stolen": False,
            "first_seen_at": first_seen[serial],
            "last_seen_at": UNSEEN,
            "version_since": UNSEEN,
            "received_at": now,
        }
        for serial in sorted(first_seen)
    ]
    inserted = _upsert(Laptop, rows, conflict=["serial"], returning=["serial"])
    return {serial for (serial,) in inserted}


def _laptops_save(states: list) -> dict:
    """Upsert whole laptop states; {serial: pk} of the rows written."""
    rows = [{name: state[name] for name in LAPTOP_FIELDS} for state in states]
    kept = [name for name in LAPTOP_FIELDS if name not in ("serial", "first_seen_at")]
    column = {name: Laptop._meta.get_field(name).column for name in kept}
    returned = _upsert(
        Laptop,
        rows,
        conflict=["serial"],
        update={column[name]: f"excluded.{column[name]}" for name in kept},
        where="excluded.last_seen_at > {t}.last_seen_at",
        returning=["serial", "id"],
    )
    return dict(returned)


def _history_prune(laptop_ids) -> None:
    """Keep the newest LAPTOP_HISTORY version changes of each of `laptop_ids`, in one DELETE."""
    table = connection.ops.quote_name(LaptopVersionChange._meta.db_table)
    ids = sorted(laptop_ids)
    marks = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE id IN (SELECT id FROM ("  # noqa: S608 - our names
            "SELECT id, ROW_NUMBER() OVER (PARTITION BY laptop_id ORDER BY at DESC, id DESC) AS n"
            f" FROM {table} WHERE laptop_id IN ({marks})) ranked WHERE n > %s)",
            [*ids, LAPTOP_HISTORY],
        )


def _max_params() -> int:
    """Parameters one statement may carry: PostgreSQL's protocol limit, or the limit this
    SQLite library was built with (32,766 since 3.32; Django assumes 999)."""
    if connection.vendor == "sqlite":
        import sqlite3

        connection.ensure_connection()
        return connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return 65535


def _upsert(model, rows: list[dict], *, conflict=(), update=None, where="", returning=()):
    """INSERT rows ({field name: value}, the same names in each) in as few statements as the
    parameter limit allows, with `ON CONFLICT (conflict) DO UPDATE SET column = sql [WHERE
    where]` when `conflict` is given (DO NOTHING without `update`: then only the rows
    inserted are returned): the same SQL on SQLite (3.35+) and PostgreSQL, which
    Django's bulk_create cannot write (it neither adds to a stored value nor updates on a
    condition, and splits every 999 parameters on SQLite). In `update` and `where`, `{t}`
    is the stored row and `excluded` the new one. Returns the `returning` columns' rows."""
    if not rows:
        return []
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    fields = [model._meta.get_field(name) for name in rows[0]]
    columns = ", ".join(quote(field.column) for field in fields)
    sql_tail = ""
    if conflict:
        target = ", ".join(quote(model._meta.get_field(name).column) for name in conflict)
        if update:
            sets = ", ".join(f"{quote(col)} = {sql.format(t=table)}" for col, sql in update.items())
            sql_tail = f" ON CONFLICT ({target}) DO UPDATE SET {sets}"
            if where:
                sql_tail += f" WHERE {where.format(t=table)}"
        else:
            sql_tail = f" ON CONFLICT ({target}) DO NOTHING"
    if returning:
        sql_tail += " RETURNING " + ", ".join(quote(name) for name in returning)
    per_statement = max(1, _max_params() // len(fields))
    one_row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    found = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            params = [
                field.get_db_prep_save(row[field.name], connection)
                for row in chunk
                for field in fields
            ]
            values = ", ".join([one_row] * len(chunk))
            # Names come from our models, values are parameters.
            statement = f"INSERT INTO {table} ({columns}) VALUES {values}{sql_tail}"  # noqa: S608
            cursor.execute(statement, params)
            if returning:
                found += cursor.fetchall()
    return found
