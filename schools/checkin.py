"""The check-in body school servers send, validated strictly. Pure: bytes in, dict out."""

import json
import re
from datetime import datetime

MAX_BODY_BYTES = 256 * 1024
MAX_BUILDS = 2000
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,253}[A-Za-z0-9])?$")
MD5_RE = re.compile(r"^[0-9a-fA-F]{32}$")
TOP_KEYS = {
    "hostname",
    "builds",
    "clock",
    "last_refresh_status",
    "disk_free_bytes",
    "client_version",
}
BUILD_KEYS = {"name", "md5", "verified"}


class CheckinInvalid(ValueError):
    """What is wrong with the body, in a sentence the school server's admin can act on."""


def _int(value, field, minimum, maximum):
    # bool is an int in Python; a JSON true is not a number here.
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckinInvalid(f"{field} must be a whole number")
    # Bounded so that it fits the database column, whatever a client sends.
    if not minimum <= value <= maximum:
        raise CheckinInvalid(f"{field} must be between {minimum} and {maximum}")
    return value


class _GivenTwice(ValueError):
    pass


def _object_once(pairs: list) -> dict:
    """A JSON object whose keys are each given once: json.loads would keep the last of two,
    silently, where Inventario's form refuses a field given twice."""
    data = dict(pairs)
    if len(data) != len(pairs):
        seen = set()
        for key, _value in pairs:
            if key in seen:
                raise _GivenTwice(key)
            seen.add(key)
    return data


def json_body(body: bytes, *, limit: int, invalid: type[ValueError]):
    """The JSON value of a machine's request body, or `invalid` saying what is wrong with
    it (school servers' check-ins, laptop report batches)."""
    if len(body) > limit:
        raise invalid(f"the body is larger than {limit} bytes")
    try:
        return json.loads(body.decode("utf-8"), object_pairs_hook=_object_once)
    except UnicodeDecodeError:
        raise invalid("the body is not UTF-8") from None
    except _GivenTwice as twice:
        raise invalid(f"the field {str(twice)[:60]!r} is given twice in one object") from None
    except ValueError as exc:
        # JSONDecodeError, and a number too long to convert (over 4300 digits).
        raise invalid(f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise invalid("the body is not JSON: it is nested too deeply") from None


def parse_checkin(body: bytes) -> dict:
    data = json_body(body, limit=MAX_BODY_BYTES, invalid=CheckinInvalid)
    if not isinstance(data, dict):
        raise CheckinInvalid("the body must be a JSON object")
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise CheckinInvalid(f"unknown fields: {', '.join(sorted(unknown))}")
    hostname = data.get("hostname")
    if not isinstance(hostname, str) or not HOSTNAME_RE.match(hostname):
        raise CheckinInvalid("hostname is required and must be a host name")
    builds = data.get("builds")
    if not isinstance(builds, list):
        raise CheckinInvalid("builds is required and must be a list (it may be empty)")
    if len(builds) > MAX_BUILDS:
        raise CheckinInvalid(f"builds lists more than {MAX_BUILDS} entries")
    clean = {"hostname": hostname.lower(), "builds": []}
    seen = set()
    for index, item in enumerate(builds):
        where = f"builds[{index}]"
        if not isinstance(item, dict):
            raise CheckinInvalid(f"{where} must be an object")
        unknown = set(item) - BUILD_KEYS
        if unknown:
            raise CheckinInvalid(f"{where} has unknown fields: {', '.join(sorted(unknown))}")
        name = item.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise CheckinInvalid(f"{where}.name is required and must be a build name")
        if name in seen:
            raise CheckinInvalid(f"{where}.name {name} is listed twice")
        seen.add(name)
        entry = {"name": name}
        if "md5" in item:
            if not isinstance(item["md5"], str) or not MD5_RE.match(item["md5"]):
                raise CheckinInvalid(f"{where}.md5 must be 32 hexadecimal digits")
            entry["md5"] = item["md5"].lower()
        if "verified" in item:
            if not isinstance(item["verified"], bool):
                raise CheckinInvalid(f"{where}.verified must be true or false")
            entry["verified"] = item["verified"]
        clean["builds"].append(entry)
    if "clock" in data:
        clock = data["clock"]
        try:
            parsed = datetime.fromisoformat(clock.replace("Z", "+00:00"))
        except (AttributeError, ValueError):
            raise CheckinInvalid(
                "clock must be an ISO 8601 time, e.g. 2026-11-26T03:00:00Z"
            ) from None
        if parsed.tzinfo is None:
            raise CheckinInvalid("clock must include its time zone (e.g. a final Z)")
        if not 2000 <= parsed.year <= 2200:
            raise CheckinInvalid("clock is not a plausible date")
        clean["clock"] = parsed
    if "last_refresh_status" in data:
        clean["last_refresh_status"] = _int(
            data["last_refresh_status"], "last_refresh_status", -(2**31), 2**31 - 1
        )
    if "disk_free_bytes" in data:
        clean["disk_free_bytes"] = _int(data["disk_free_bytes"], "disk_free_bytes", 0, 2**62)
    if "client_version" in data:
        version = data["client_version"]
        if not isinstance(version, str) or len(version) > 50:
            raise CheckinInvalid("client_version must be a string of at most 50 characters")
        clean["client_version"] = version
    return clean


def refresh_problem(status: int | None) -> tuple[str, dict] | None:
    """What a refresh's exit status means, as a reason code and its parameters (None: it
    succeeded, or the server does not say). xs-refresh-xobuilds is a Python program that
    stops at the first failing step (an md5 check, an unpack), so an error is status 1; the
    shell says 126/127 for a command it cannot run, and 128 + N for one killed by signal N."""
    if status in (None, 0):
        return None
    if status == 1:
        return "refresh_failed", {"status": status}
    if status in (126, 127):
        return "refresh_not_run", {"status": status}
    if 128 < status < 160:
        return "refresh_killed", {"status": status, "signal": status - 128}
    return "refresh_failed_other", {"status": status}
