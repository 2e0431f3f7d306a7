"""`check_contents` reads the .contents file in chunks, and still answers as json.loads would.

The reference is what `check_contents` did before (`reference` below): read the whole file,
decode it as UTF-8 and `json.loads` it. Hypothesis compares the two on valid documents
written with every kind of whitespace, on those documents garbled, and on token soup, each
read in chunks of a few bytes so that chunk boundaries fall inside every token. The two
differences are the documented ones: nesting deeper than 512 levels, and the wording for an
integer too long to convert. Memory is measured in a child process on 100 MiB files.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from releases import jsonscan
from releases.checks import check_contents
from releases.reasons import Refused

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "300"))
HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # The autouse fixtures (data folder, settings) do not matter to a file check.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TOO_LONG = f"Integer with more than {sys.int_info.default_max_str_digits} digits"
MiB = 1024 * 1024


def outcome(call) -> tuple[str, dict]:
    try:
        return "ok", {"sha256": call()}
    except Refused as rejection:
        return rejection.code, rejection.params


def reference(data: bytes, max_bytes: int) -> tuple[str, dict]:
    """The check as it was: the whole file in memory, then json.loads."""
    if not data:
        return "contents_empty", {}
    if len(data) > max_bytes:
        return "contents_too_big", {"limit": max_bytes}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return "contents_not_utf8", {"position": exc.start}
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return "contents_not_json", {"error": str(exc)}
    except ValueError:  # an integer over the conversion limit
        return "contents_not_json", {"error": TOO_LONG}
    except RecursionError:
        return "contents_not_json", {"error": "nested too deeply"}
    return "ok", {"sha256": hashlib.sha256(data).hexdigest()}


def checked(path: Path, max_bytes: int, chunk_bytes: int) -> tuple[str, dict]:
    code, params = outcome(
        lambda: check_contents(path, max_bytes=max_bytes, chunk_bytes=chunk_bytes)
    )
    if params.get("error", "").startswith(TOO_LONG):
        params = {"error": TOO_LONG}  # json words it differently, without a position
    return code, params


def assert_agrees(folder: Path, data: bytes, *, chunk_bytes: int, max_bytes: int = 10**9):
    path = folder / "build.contents"
    path.write_bytes(data)
    expected = reference(data, max_bytes)
    for size in (chunk_bytes, 1024 * 1024):
        assert checked(path, max_bytes, size) == expected, (data, size)


# --- Generated documents --------------------------------------------------------------------

WHITESPACE = st.sampled_from(["", "", " ", "\n", "\t", "\r\n", "  \n\t "])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    # Lone surrogates too: json.loads takes "\ud800", and written raw they are not UTF-8.
    | st.text(st.characters(blacklist_categories=()), max_size=12)
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=30,
)


@st.composite
def rendered(draw, value=None) -> bytes:
    """A document written with random whitespace, escapes and number spellings."""
    value = draw(DOCUMENTS) if value is None else value
    ascii_only = draw(st.booleans())

    def write(node) -> str:
        space = draw(WHITESPACE)
        if isinstance(node, list):
            items = [write(item) + draw(WHITESPACE) for item in node]
            return "[" + space + ",".join(draw(WHITESPACE) + item for item in items) + "]"
        if isinstance(node, dict):
            members = [
                f"{draw(WHITESPACE)}{write(key)}{draw(WHITESPACE)}:{draw(WHITESPACE)}{write(v)}"
                f"{draw(WHITESPACE)}"
                for key, v in node.items()
            ]
            return "{" + space + ",".join(members) + "}"
        if isinstance(node, float) and node == node and draw(st.booleans()):
            return repr(node).replace("e+", draw(st.sampled_from(["e+", "E", "e"])))
        return json.dumps(node, ensure_ascii=ascii_only)

    text = draw(WHITESPACE) + write(value) + draw(WHITESPACE)
    return text.encode("utf-8", "surrogatepass")


GARBAGE = st.sampled_from(
    [b"[", b"]", b"{", b"}", b",", b":", b'"', b"\\", b"\\u", b"\\ud800", b"0", b"-", b".",
     b"e", b"1e+", b"tru", b"null", b"NaN", b"-Infinity", b" ", b"\n", b"\x00", b"\x1f",
     b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf0\x9f\x98\x80", b"\xef\xbb\xbf"]
) | st.binary(min_size=1, max_size=3)  # fmt: skip


@st.composite
def garbled(draw) -> bytes:
    """A rendered document with a few bytes deleted, inserted, repeated or cut off."""
    data = draw(rendered())
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        end = draw(st.integers(at, min(len(data), at + 4)))
        edit = draw(st.sampled_from(["delete", "insert", "repeat", "truncate"]))
        if edit == "delete":
            data = data[:at] + data[end:]
        elif edit == "insert":
            data = data[:at] + draw(GARBAGE) + data[at:]
        elif edit == "repeat":
            data = data[:end] + data[at:end] + data[end:]
        else:
            data = data[:at]
    return data


SOUP = st.lists(GARBAGE | st.sampled_from([b'"a"', b"12", b"[1]", b'{"k":1}']), max_size=20)
CHUNK_BYTES = st.integers(1, 8)


@HYPOTHESIS
@given(data=rendered(), chunk_bytes=CHUNK_BYTES)
def test_it_accepts_what_json_accepts(tmp_path_factory, data, chunk_bytes):
    assert_agrees(tmp_path_factory.mktemp("valid"), data, chunk_bytes=chunk_bytes)


@HYPOTHESIS
@given(data=garbled(), chunk_bytes=CHUNK_BYTES, over=st.integers(-2, 2))
def test_it_refuses_garbled_documents_as_json_and_utf8_do(
    tmp_path_factory, data, chunk_bytes, over
):
    folder = tmp_path_factory.mktemp("garbled")
    max_bytes = max(1, len(data) + over)  # sometimes just too big: that refusal comes first
    assert_agrees(folder, data, chunk_bytes=chunk_bytes, max_bytes=max_bytes)


@HYPOTHESIS
@given(pieces=SOUP, chunk_bytes=CHUNK_BYTES)
def test_it_agrees_with_json_on_token_soup(tmp_path_factory, pieces, chunk_bytes):
    assert_agrees(tmp_path_factory.mktemp("soup"), b"".join(pieces), chunk_bytes=chunk_bytes)


# --- Hand cases -----------------------------------------------------------------------------


def check(tmp_path, data: bytes, *, max_bytes: int = 10**9, chunk_bytes: int = 3):
    path = tmp_path / "build.contents"
    path.write_bytes(data)
    return outcome(lambda: check_contents(path, max_bytes=max_bytes, chunk_bytes=chunk_bytes))


def not_json(error: str) -> tuple[str, dict]:
    return "contents_not_json", {"error": error}


def test_it_hashes_a_file_read_in_many_chunks(tmp_path):
    data = json.dumps({"files": {f"usr/lib/f{n}": [420, n, "é"] for n in range(2000)}}).encode()

    assert check(tmp_path, data, chunk_bytes=1000) == (
        "ok",
        {"sha256": hashlib.sha256(data).hexdigest()},
    )


@pytest.mark.parametrize(
    "text",
    [
        "NaN",
        "[Infinity, -Infinity]",
        '{"a": 1, "a": 2}',
        '"\\ud800"',
        '"\\ud800\\udc00"',
        "-0.0e-0",
        " \t\r\n{}\n",
        "1" * 5000 + ".5",
        "1." + "0" * 5000,
        "-" + "9" * 4300,
        "[" * 512 + "]" * 512,
        '{"a":' * 512 + "1" + "}" * 512,
        '"\x7f"',
    ],
)
def test_it_accepts_what_json_loads_accepts(tmp_path, text):
    assert check(tmp_path, text.encode())[0] == "ok"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "contents_empty"),  # not JSON either, but said first
        (" ", "Expecting value: line 1 column 2 (char 1)"),
        ("[1,]", "Expecting value: line 1 column 4 (char 3)"),
        ('{"a":1,}', "Expecting property name enclosed in double quotes: line 1 column 8 (char 7)"),
        ('{"a" 1}', "Expecting ':' delimiter: line 1 column 6 (char 5)"),
        ("[1 2]", "Expecting ',' delimiter: line 1 column 4 (char 3)"),
        ("[[1]}", "Expecting ',' delimiter: line 1 column 5 (char 4)"),
        ("[1]]", "Extra data: line 1 column 4 (char 3)"),
        ("[1.]", "Expecting ',' delimiter: line 1 column 3 (char 2)"),
        ("1e+", "Extra data: line 1 column 2 (char 1)"),
        ("01", "Extra data: line 1 column 2 (char 1)"),
        ('[\n  "ab\n"]', "Invalid control character at: line 2 column 6 (char 7)"),
        ('[\n  "' + "x" * 50, "Unterminated string starting at: line 2 column 3 (char 4)"),
        ('"ab\\x"', "Invalid \\escape: line 1 column 4 (char 3)"),
        ('"ab\\u12"', "Invalid \\uXXXX escape: line 1 column 5 (char 4)"),
        ('"\\u1234', "Invalid \\uXXXX escape: line 1 column 3 (char 2)"),
        ("\ufeff[]", "Unexpected UTF-8 BOM (decode using utf-8-sig): line 1 column 1 (char 0)"),
        ("[\n " + "9" * 4301 + "]", f"{TOO_LONG}: line 2 column 2 (char 3)"),
        ("[\n " + "9" * 4301 + ".]", f"{TOO_LONG}: line 2 column 2 (char 3)"),
        ("[" * 513 + "]" * 513, "nested too deeply"),
        ('{"a":' * 513 + "1" + "}" * 513, "nested too deeply"),
    ],
)
def test_it_says_what_is_wrong_and_where(tmp_path, text, error):
    expected = not_json(error) if error != "contents_empty" else (error, {})

    assert check(tmp_path, text.encode()) == expected


def test_it_counts_lines_and_characters_not_bytes_across_chunks(tmp_path):
    text = '{\n"é": "ü",\n"😀": 1 2}'

    assert check(tmp_path, text.encode(), chunk_bytes=1) == not_json(
        "Expecting ',' delimiter: line 3 column 8 (char 19)"
    )


def test_it_gives_the_byte_offset_of_bad_utf8_cut_by_a_chunk_boundary(tmp_path):
    data = '["aé'.encode() + b'\xe2\x82"]'  # a three-byte sequence with its last byte missing

    for chunk_bytes in (1, 2, 3, 4, 5, 1000):
        assert check(tmp_path, data, chunk_bytes=chunk_bytes) == (
            "contents_not_utf8",
            {"position": 5},
        )


def test_it_gives_the_offset_of_a_sequence_cut_off_by_the_end_of_the_file(tmp_path):
    assert check(tmp_path, b'"abc\xf0\x9f\x98', chunk_bytes=2) == (
        "contents_not_utf8",
        {"position": 4},
    )


def test_it_refuses_surrogates_written_as_utf8(tmp_path):
    assert check(tmp_path, b'["\xed\xa0\x80"]') == ("contents_not_utf8", {"position": 2})


def test_bad_utf8_anywhere_wins_over_a_json_error_before_it(tmp_path):
    data = b"[1 2]" + b" " * 10_000 + b"\xff"

    assert check(tmp_path, data, chunk_bytes=100) == ("contents_not_utf8", {"position": 10_005})


def test_a_file_too_big_wins_over_a_json_error_before_the_limit(tmp_path):
    assert check(tmp_path, b"[1 2]" + b" " * 100, max_bytes=100) == (
        "contents_too_big",
        {"limit": 100},
    )


def test_it_stops_reading_a_file_once_it_is_too_big(tmp_path):
    """The writer never closes the pipe: reading to the end would wait forever."""
    fifo = tmp_path / "endless.contents"
    os.mkfifo(fifo)
    done = threading.Event()

    def write():
        with open(fifo, "wb") as fh:
            fh.write(b"[" + b"1," * 600)
            fh.flush()
            done.wait(10)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        result = outcome(lambda: check_contents(fifo, max_bytes=1000, chunk_bytes=64))
    finally:
        done.set()
        writer.join()

    assert result == ("contents_too_big", {"limit": 1000})


def test_the_scanner_takes_any_pieces_of_text():
    jsonscan.validate(["", '{"a', '": [1', "", ", 2.5e", "3]}"])

    with pytest.raises(jsonscan.NotJSON, match=r"^Expecting value: line 1 column 1 \(char 0\)$"):
        jsonscan.validate([])


# --- Memory ---------------------------------------------------------------------------------

CHILD = """
import sys
from releases.checks import check_contents
from releases.reasons import Refused
try:
    print(check_contents(sys.argv[1], max_bytes=256 * 1024 * 1024))
except Refused as rejection:
    print(rejection.code)
status = open("/proc/self/status").read()
print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
"""
PEAK_KB = 100 * 1024


def write_streamed(path: Path, head: bytes, unit: bytes, count: int, tail: bytes) -> str:
    """Write head + unit * count + tail a MiB at a time; return its sha256."""
    digest = hashlib.sha256()
    block = unit * (MiB // len(unit))
    blocks, rest = divmod(count, MiB // len(unit))
    with open(path, "wb") as fh:
        for part in (head, *[block] * blocks, unit * rest, tail):
            fh.write(part)
            digest.update(part)
    return digest.hexdigest()


def peak_of_check(path: Path) -> tuple[str, int]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    answer, peak_kb = result.stdout.split()
    return answer, int(peak_kb)


@pytest.mark.parametrize(
    ("head", "unit", "count", "tail"),
    [
        (b"[", b"[],", 100 * MiB // 3, b"[]]"),  # took a worker to 5 GB
        (b'"', b"a", 100 * MiB, b'"'),
    ],
    ids=["empty-arrays", "one-string"],
)
def test_it_checks_a_100_mib_file_in_under_100_mb(tmp_path, head, unit, count, tail):
    path = tmp_path / "big.contents"
    sha256 = write_streamed(path, head, unit, count, tail)

    answer, peak_kb = peak_of_check(path)

    assert (answer, peak_kb < PEAK_KB) == (sha256, True), f"peak {peak_kb} kB"
