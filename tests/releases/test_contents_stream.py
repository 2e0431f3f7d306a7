"""`check_contents` reads the .contents file in chunks and gives json.loads's verdict on it.

The reference (`reference` below) is the check as it was before it streamed: read the whole
file, decode it as UTF-8, `json.loads` it. Size and encoding refusals must match it exactly,
parameters included. For JSON only the verdict is compared (accepted, or `contents_not_json`):
yajl words its errors its own way and says no line or column. The error must still be the
first line of yajl's message, also when ijson hands that message over as bytes (it does when
the excerpt of the file it quotes cuts a character in two).

Where yajl's verdict is not json.loads's (`as_yajl_reads` states each, numbered as here):

1. NaN, Infinity and -Infinity: json.loads takes them, yajl refuses them. They are not JSON,
   and bitfrost's writer never writes them.
2. Nesting deeper than `MAX_JSON_DEPTH` (512) levels is refused; json.loads goes on to about
   a thousand levels, then raises RecursionError.
3. Vertical tab and form feed: yajl takes them as whitespace between tokens, json.loads
   refuses them, so the check refuses any raw one itself before yajl reads the file (they are
   never valid JSON, inside a string or out).
4. A lone low surrogate escape ("\\udc00" with no "\\ud800".."\\udbff" escape just before
   it): json.loads takes it; ijson's yajl writes it as UTF-8 it then cannot decode and raises
   UnicodeDecodeError. The check must refuse it as not JSON. yajl reads escapes in pairs:
   the escape after a high surrogate is taken as its low half whatever it is, so in
   "\\ud800\\ud800\\udc00" the last one is lone. Lone high surrogates, and high surrogates
   paired with something else, are accepted by both (yajl decodes them to other text).
5. An integer of more than `sys.int_info.default_max_str_digits` (4300) digits: json.loads
   raises ValueError; ijson's yajl fails to convert it and leaves the error set, which ends
   in ValueError, SystemError or a segfault of the whole process. The check refuses any run
   of more digits than that before yajl reads the file, inside a string too (stricter than
   json.loads there, and no manifest has one). Tested in a child process.
6. A string left open at the end of the file after a complete document (`{}"abc`): yajl
   stops at the end of the document and never sees that the string is not closed, so the
   check accepts a file bitfrost cannot read. A string closed there (`{}"abc"`), or anything
   else after the document, is refused as trailing garbage.

Hypothesis compares the two on valid documents written with every kind of whitespace, on
those documents garbled, and on token soup, each read in chunks of a few bytes so that chunk
boundaries fall inside every token. Memory is measured in a child process on 100 MiB files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import ijson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from releases.checks import CONTENTS_CHUNK, MAX_JSON_DEPTH, check_contents
from releases.reasons import Refused

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "300"))
HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # The autouse fixtures (data folder, settings) do not matter to a file check.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MiB = 1024 * 1024
NOT_JSON = ("contents_not_json", {})
# Outside strings, valid JSON has no quote or backslash: this finds each string's body.
STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)")
LONG_DIGIT_RUN = re.compile(rf"[0-9]{{{sys.int_info.default_max_str_digits + 1},}}")
# A string still lexically valid at the end of the file, with its closing quote missing.
OPEN_STRING_AT_END = re.compile(r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*\Z')
# The first line of a yajl message, or the check's own.
YAJL_ERROR = re.compile(r"(?:parse|lexical) error: [^\n]+|nested too deeply")


def json_loads_accepts(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):  # ValueError: an integer over the conversion limit
        return False
    return True


def as_yajl_reads(text: str) -> bool:
    """json.loads's verdict, corrected by the differences listed in the module docstring."""
    # 3. and 5.: refused before yajl reads the file.
    if "\v" in text or "\f" in text or LONG_DIGIT_RUN.search(text):
        return False
    if (accepted := yajl_document(text)) is not None:
        return accepted
    # 6. Whatever comes before the open string is all yajl reads.
    open_string = OPEN_STRING_AT_END.search(text)
    return bool(open_string and yajl_document(text[: open_string.start()]))


def yajl_document(text: str) -> bool | None:
    """None if json.loads refuses `text`, else whether yajl accepts it."""
    try:
        value = json.loads(text, parse_constant=no_constants)  # 1.
    except (ValueError, RecursionError):  # 5. is one of these ValueErrors.
        return None
    return depth(value) <= MAX_JSON_DEPTH and not any(  # 2.
        map(has_a_lone_low_surrogate, STRING.findall(text))  # 4.
    )


def no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def depth(value) -> int:
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            deepest = max(deepest, level + 1)
            stack.extend((child, level + 1) for child in node)
    return deepest


def has_a_lone_low_surrogate(body: str) -> bool:
    """Whether yajl decodes a low surrogate on its own: not right after a high one."""
    low_half_at = None
    for escape in ESCAPE.finditer(body):
        if escape.start() == low_half_at and escape[1]:
            low_half_at = None  # taken as the low half, whatever its value
            continue
        low_half_at = None
        code = int(escape[1] or "0", 16)
        if 0xDC00 <= code <= 0xDFFF:
            return True
        if 0xD800 <= code <= 0xDBFF:
            low_half_at = escape.end()
    return False


def reference(data: bytes, max_bytes: int, accepts=json_loads_accepts) -> tuple[str, dict]:
    """The check as it was: the whole file in memory, then json.loads (or `accepts`)."""
    if not data:
        return "contents_empty", {}
    if len(data) > max_bytes:
        return "contents_too_big", {"limit": max_bytes}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return "contents_not_utf8", {"position": exc.start}
    if not accepts(text):
        return NOT_JSON
    return "ok", {"sha256": hashlib.sha256(data).hexdigest()}


def outcome(call) -> tuple[str, dict]:
    try:
        return "ok", {"sha256": call()}
    except Refused as rejection:
        return rejection.code, rejection.params


def verdict(result: tuple[str, dict]) -> tuple[str, dict]:
    """The result without yajl's wording of a JSON error, once it is seen to be one line."""
    code, params = result
    if code == NOT_JSON[0] and YAJL_ERROR.fullmatch(params["error"]):
        return NOT_JSON
    return result


def checked(path: Path, *, max_bytes: int, chunk_bytes: int) -> tuple[str, dict]:
    return outcome(lambda: check_contents(path, max_bytes=max_bytes, chunk_bytes=chunk_bytes))


def assert_agrees(folder: Path, data: bytes, *, chunk_bytes: int, max_bytes: int = 10**9):
    path = folder / "build.contents"
    path.write_bytes(data)
    expected = reference(data, max_bytes, accepts=as_yajl_reads)
    json_loads = reference(data, max_bytes)
    for size in (chunk_bytes, CONTENTS_CHUNK):
        result = checked(path, max_bytes=max_bytes, chunk_bytes=size)
        assert verdict(result) == expected, (data, size, "json.loads says", json_loads)


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
    [b"[", b"]", b"{", b"}", b",", b":", b'"', b"\\", b"\\u", b"\\ud800", b"\\udc00", b"0",
     b"-", b".", b"e", b"1e+", b"tru", b"null", b"NaN", b"-Infinity", b" ", b"\n", b"\v",
     b"\f", b"\x00", b"\x1f", b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80",
     b"\xf0\x9f\x98\x80", b"\xef\xbb\xbf"]
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
    return checked(path, max_bytes=max_bytes, chunk_bytes=chunk_bytes)


def accepted(data: bytes) -> tuple[str, dict]:
    return "ok", {"sha256": hashlib.sha256(data).hexdigest()}


def not_json(error: str) -> tuple[str, dict]:
    return "contents_not_json", {"error": error}


def test_it_accepts_an_empty_files_object(tmp_path):
    # The scanner this check replaced refused it on Debian 12's Python 3.11.2 (a re bug).
    data = b'{"files": {}}'

    assert check(tmp_path, data) == accepted(data)


def test_it_hashes_a_file_read_in_many_chunks(tmp_path):
    data = json.dumps({"files": {f"usr/lib/f{n}": [420, n, "é"] for n in range(2000)}}).encode()

    assert check(tmp_path, data, chunk_bytes=1000) == accepted(data)


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "a": 2}',
        '"\\ud800"',
        '"\\ud800\\udc00"',
        '"\\ud800\\u0041"',
        '"\\u0000"',
        '"\u2028\x7f"',
        "-0.0e-0",
        "1e999",
        " \t\r\n{}\n",
        "-" + "9" * 4300,
        "[" * 512 + "]" * 512,
        '{"a":' * 512 + "1" + "}" * 512,
    ],
)
def test_it_accepts_what_json_loads_accepts(tmp_path, text):
    assert (json_loads_accepts(text), check(tmp_path, text.encode())[0]) == (True, "ok")


BAD_ESCAPE = "lexical error: inside a string, '\\' occurs before a character which it may not."
NOT_HEX = "lexical error: invalid (non-hex) character occurs after '\\u' inside string."
COMMENT = "lexical error: probable comment found in input text, comments are not enabled."


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (" ", "parse error: premature EOF"),
        ('["' + "x" * 50, "parse error: premature EOF"),
        ("[1,]", "parse error: unallowed token at this point in JSON text"),
        ('{"a":1,}', "parse error: invalid object key (must be a string)"),
        ('{"a" 1}', "parse error: object key and value must be separated by a colon (':')"),
        ("[1 2]", "parse error: after array element, I expect ',' or ']'"),
        ("[1]]", "parse error: trailing garbage"),
        ('{}"abc"', "parse error: trailing garbage"),
        ("01", "parse error: trailing garbage"),
        ("[1.]", "lexical error: malformed number, a digit is required after the decimal point."),
        ("1e+", "lexical error: malformed number, a digit is required after the exponent."),
        ('"ab\n"', "lexical error: invalid character inside string."),
        ('"ab\\x"', BAD_ESCAPE),
        ('"ab\\u12"', NOT_HEX),
        ("\ufeff[]", "lexical error: invalid char in json text."),
        ("/* c */ []", COMMENT),
    ],
)
def test_it_refuses_what_json_loads_refuses_in_yajls_words(tmp_path, text, error):
    assert (json_loads_accepts(text), check(tmp_path, text.encode())) == (False, not_json(error))


def test_it_gives_the_first_line_of_yajls_message_when_its_excerpt_cuts_a_character(tmp_path):
    # yajl quotes the 30 bytes before the error, here from the middle of an "é": ijson then
    # hands over the message as bytes, not text.
    data = ('["' + "é" * 40 + '"]]').encode()

    assert check(tmp_path, data, chunk_bytes=CONTENTS_CHUNK) == not_json(
        "parse error: trailing garbage"
    )


def test_it_refuses_nan_and_infinity_which_json_loads_accepts(tmp_path):
    for text in ("NaN", "[Infinity]", '{"a": -Infinity}'):
        assert (json_loads_accepts(text), verdict(check(tmp_path, text.encode()))) == (
            True,
            NOT_JSON,
        ), text


@pytest.mark.parametrize(
    "text", ["[" * 513 + "]" * 513, '{"a":' * 513 + "1" + "}" * 513], ids=["arrays", "objects"]
)
def test_it_refuses_nesting_deeper_than_its_limit_which_json_loads_accepts(tmp_path, text):
    assert (json_loads_accepts(text), check(tmp_path, text.encode())) == (
        True,
        not_json("nested too deeply"),
    )


@pytest.mark.parametrize("space", ["\v", "\f"], ids=["vertical-tab", "form-feed"])
@pytest.mark.parametrize("template", ["{0}[1,{0}2]", '["a{0}b"]'], ids=["between", "inside"])
def test_it_refuses_vertical_tab_and_form_feed_anywhere_as_json_loads_does(
    tmp_path, space, template
):
    # yajl would take them for whitespace between tokens: refused before it reads the file.
    text = template.format(space)
    at = text.index(space)

    assert (json_loads_accepts(text), check(tmp_path, text.encode(), chunk_bytes=2)) == (
        False,
        not_json(f"lexical error: a vertical tab or form feed at byte {at}"),
    )


@pytest.mark.parametrize("text", ["1" * 5000 + ".5", "1." + "0" * 5000, '["' + "7" * 4301 + '"]'])
def test_it_refuses_any_run_of_over_4300_digits_even_where_json_loads_takes_it(tmp_path, text):
    # Stricter than json.loads (a float, a string): a run that long is never in a manifest,
    # and an integer that long can crash ijson's C parser, so it never reaches it.
    assert (json_loads_accepts(text), check(tmp_path, text.encode(), chunk_bytes=1000)) == (
        True,
        not_json("lexical error: a number of more than 4300 digits"),
    )


@pytest.mark.parametrize("text", ['{}"abc', '{"files": {}} "a\\"b\\u0041', '1"'])
def test_it_accepts_a_string_left_open_after_the_document_which_json_loads_refuses(tmp_path, text):
    # yajl's choice: a file bitfrost's json.loads cannot read passes this check.
    data = text.encode()

    assert (json_loads_accepts(text), check(tmp_path, data)) == (False, accepted(data))


@pytest.mark.parametrize(
    "text",
    ['"\\udc00"', '["a\\udfff", 1]', '"\\ud800\\ud800\\udc00"', '{"\\udc00": 1}'],
)
def test_it_refuses_a_lone_low_surrogate_escape_rather_than_crash(tmp_path, text):
    # json.loads takes it, but ijson's yajl raises UnicodeDecodeError on it.
    assert (json_loads_accepts(text), verdict(check(tmp_path, text.encode()))) == (
        True,
        NOT_JSON,
    )


@pytest.mark.parametrize(
    "body", [r"\udc00", r"\ud800\udc00", r"\ud800\ud800\udc00", r"\\udc00", r"\ud800x"]
)
def test_the_reference_pairs_surrogate_escapes_as_yajl_does(body):
    try:
        list(ijson.basic_parse(io.BytesIO(f'"{body}"'.encode())))
    except UnicodeDecodeError:
        lone = True
    else:
        lone = False

    assert has_a_lone_low_surrogate(body) == lone


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


def test_it_refuses_an_empty_file_before_trying_it_as_json(tmp_path):
    assert check(tmp_path, b"") == ("contents_empty", {})


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


# --- In a child process: memory, and what kills the process ---------------------------------

CHILD = """
import sys
from releases.checks import check_contents
from releases.reasons import Refused
path, max_bytes, chunk_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    print(check_contents(path, max_bytes=max_bytes, chunk_bytes=chunk_bytes))
except Refused as rejection:
    print(rejection.code)
status = open("/proc/self/status").read()
print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
"""


def check_in_a_child(path: Path, *, chunk_bytes: int = CONTENTS_CHUNK) -> tuple[int, str, int]:
    """Return the child's exit status, the check's answer and the child's peak RSS in kB."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(256 * MiB), str(chunk_bytes)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    answer, peak_kb = [*result.stdout.split(), "", "0"][:2]
    return result.returncode, answer, int(peak_kb)


@pytest.mark.parametrize(
    ("text", "chunk_bytes"),
    [
        ("9" * 4301, CONTENTS_CHUNK),
        ("[-" + "9" * 4301 + "]", 3),
        ('{"a": ' + "9" * 4301 + "}", CONTENTS_CHUNK),
    ],
    ids=["alone", "in-small-chunks", "in-an-object"],
)
def test_it_refuses_an_integer_too_long_to_convert_rather_than_crash(tmp_path, text, chunk_bytes):
    # json.loads raises ValueError; under ijson's yajl the check raises it too, or the
    # process dies of a segfault.
    path = tmp_path / "long.contents"
    path.write_text(text)

    status, answer, _peak = check_in_a_child(path, chunk_bytes=chunk_bytes)

    assert (json_loads_accepts(text), status, answer) == (False, 0, "contents_not_json")


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


@pytest.mark.parametrize(
    ("head", "unit", "count", "tail", "peak_mb"),
    [
        # json.loads took a worker to 5 GB; streamed, this stays near the interpreter's size.
        (b"[", b"[],", 100 * MiB // 3, b"[]]", 100),
        # ijson builds a string whole (and yajl buffers it too): about 2.4 bytes a byte, so
        # the file limit (MAX_CONTENTS_BYTES, 32 MiB) is what bounds this one, within the
        # 150 MB every validation step must stay under.
        (b'"', b"a", 32 * MiB - 2, b'"', 150),
    ],
    ids=["empty-arrays-100-mib", "one-string-at-the-limit"],
)
def test_it_checks_a_large_file_within_its_memory_bound(tmp_path, head, unit, count, tail, peak_mb):
    path = tmp_path / "big.contents"
    sha256 = write_streamed(path, head, unit, count, tail)

    status, answer, peak_kb = check_in_a_child(path)

    assert (status, answer, peak_kb < peak_mb * 1000) == (0, sha256, True), f"peak {peak_kb} kB"
