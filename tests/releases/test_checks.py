"""The .md5 file, the .contents file and the contents hash command."""

import hashlib
import time

import pytest

from releases.checks import (
    CONTENTS_HASH_RE,
    HashCommandUnavailable,
    check_contents,
    normalise_contents_hash,
    parse_md5_file,
    run_contents_hash_command,
)
from releases.reasons import Refused

TARBALL = "py801-2-tree.tar.bz2"
MD5 = "0123456789abcdef0123456789abcdef"


def rejection(call, *args, **kwargs):
    with pytest.raises(Refused) as caught:
        call(*args, **kwargs)
    return caught.value.code, caught.value.params


# --- .md5 -----------------------------------------------------------------------------------


def test_it_reads_md5sum_output_with_two_spaces():
    assert parse_md5_file(f"{MD5}  {TARBALL}\n".encode(), TARBALL) == (MD5, False)


def test_it_reads_md5sum_output_with_the_binary_marker():
    assert parse_md5_file(f"{MD5} *{TARBALL}\n".encode(), TARBALL) == (MD5, False)


def test_it_reads_a_hash_and_name_separated_by_one_space():
    assert parse_md5_file(f"{MD5} {TARBALL}".encode(), TARBALL) == (MD5, False)


def test_it_reads_the_bsd_tagged_format():
    assert parse_md5_file(f"MD5 ({TARBALL}) = {MD5}\n".encode(), TARBALL) == (MD5, False)


def test_it_accepts_a_bare_hash_and_says_so():
    assert parse_md5_file(f"{MD5}\n".encode(), TARBALL) == (MD5, True)


def test_it_lowercases_an_uppercase_hash():
    assert parse_md5_file(f"{MD5.upper()}  {TARBALL}".encode(), TARBALL) == (MD5, False)


def test_it_tolerates_a_bom_crlf_and_blank_lines():
    data = f"\ufeff  {MD5}  {TARBALL}  \r\n\r\n\n".encode()

    assert parse_md5_file(data, TARBALL) == (MD5, False)


def test_it_compares_only_the_base_name_of_a_path():
    data = f"{MD5}  /home/builder/out/{TARBALL}\n".encode()

    assert parse_md5_file(data, TARBALL) == (MD5, False)


def test_it_reads_a_line_that_md5sum_escaped():
    assert parse_md5_file(f"\\{MD5}  out\\\\{TARBALL}\n".encode(), f"out\\{TARBALL}") == (
        MD5,
        False,
    )


def test_it_rejects_a_checksum_for_another_file():
    data = f"{MD5}  out/py801-1-tree.tar.bz2\n".encode()

    assert rejection(parse_md5_file, data, TARBALL) == (
        "md5_wrong_file",
        {"declared": "out/py801-1-tree.tar.bz2", "file": TARBALL},
    )


def test_it_rejects_an_empty_file():
    assert rejection(parse_md5_file, b"", TARBALL) == (
        "md5_format",
        {"problem": "the file is empty"},
    )


def test_it_rejects_a_file_of_blank_lines():
    assert rejection(parse_md5_file, b" \n\r\n", TARBALL) == (
        "md5_format",
        {"problem": "the file is empty"},
    )


def test_it_rejects_a_sha256_checksum():
    data = f"{hashlib.sha256(b'').hexdigest()}  {TARBALL}\n".encode()

    assert rejection(parse_md5_file, data, TARBALL) == (
        "md5_format",
        {"problem": "the checksum has 64 hexadecimal digits instead of 32 (a SHA-256 checksum?)"},
    )


def test_it_rejects_a_line_that_is_not_a_checksum():
    assert rejection(parse_md5_file, b"see the release notes\n", TARBALL) == (
        "md5_format",
        {"problem": "the line does not start with a 32-digit hexadecimal checksum"},
    )


def test_it_rejects_a_tab_between_hash_and_name():
    assert rejection(parse_md5_file, f"{MD5}\t{TARBALL}".encode(), TARBALL) == (
        "md5_format",
        {"problem": "the checksum must be followed by two spaces and the file name"},
    )


def test_it_rejects_a_binary_marker_without_a_name():
    assert rejection(parse_md5_file, f"{MD5} *".encode(), TARBALL) == (
        "md5_format",
        {"problem": "the file name after the checksum is missing"},
    )


def test_it_rejects_a_file_that_is_not_utf8():
    data = f"{MD5}  ".encode() + "año-tree.tar.bz2".encode("latin-1")

    assert rejection(parse_md5_file, data, TARBALL) == ("md5_bad_encoding", {})


def test_it_rejects_a_file_with_nul_bytes():
    assert rejection(parse_md5_file, f"{MD5}\0".encode(), TARBALL) == ("md5_bad_encoding", {})


def test_it_rejects_a_file_listing_several_files():
    data = f"{MD5}  {TARBALL}\n{MD5}  py801-2.contents\n".encode()

    assert rejection(parse_md5_file, data, TARBALL) == ("md5_several_lines", {"count": 2})


# --- .contents ------------------------------------------------------------------------------


def contents_file(tmp_path, data: bytes):
    path = tmp_path / "py801-2.contents"
    path.write_bytes(data)
    return path


def test_it_returns_the_sha256_of_a_good_contents_file(tmp_path):
    data = b'{"version": 1, "files": {"etc/issue": ["f", 420, "abc"]}}\n'

    assert check_contents(contents_file(tmp_path, data), max_bytes=1000) == (
        hashlib.sha256(data).hexdigest()
    )


def test_it_accepts_a_contents_file_of_exactly_the_limit(tmp_path):
    path = contents_file(tmp_path, b"[1, 2]")

    assert check_contents(path, max_bytes=6) == hashlib.sha256(b"[1, 2]").hexdigest()


def test_it_rejects_an_empty_contents_file(tmp_path):
    path = contents_file(tmp_path, b"")

    assert rejection(check_contents, path, max_bytes=1000) == ("contents_empty", {})


def test_it_rejects_a_contents_file_over_the_limit(tmp_path):
    path = contents_file(tmp_path, b"[1, 2, 3]")

    assert rejection(check_contents, path, max_bytes=8) == ("contents_too_big", {"limit": 8})


def test_it_gives_the_offset_of_the_first_byte_that_is_not_utf8(tmp_path):
    path = contents_file(tmp_path, '{"name": "a\u00f1o"}'.encode() + b'{"x": "\xff"}')

    assert rejection(check_contents, path, max_bytes=1000) == (
        "contents_not_utf8",
        {"position": 23},
    )


def test_it_rejects_a_contents_file_that_is_not_json(tmp_path):
    path = contents_file(tmp_path, b'{"files": [1, 2]}\n{"files": []}\n')

    assert rejection(check_contents, path, max_bytes=1000) == (
        "contents_not_json",
        {"error": "parse error: trailing garbage"},
    )


def test_it_rejects_json_nested_too_deeply(tmp_path):
    path = contents_file(tmp_path, b"[" * 100_000 + b"]" * 100_000)

    assert rejection(check_contents, path, max_bytes=1_000_000) == (
        "contents_not_json",
        {"error": "nested too deeply"},
    )


# --- Contents hash --------------------------------------------------------------------------


def test_it_strips_a_contents_hash():
    assert normalise_contents_hash("  4f1e8c0a9b2d7e3f\n") == "4f1e8c0a9b2d7e3f"


def test_it_accepts_every_allowed_character_in_a_contents_hash():
    value = "Az09+/=_.:-"

    assert normalise_contents_hash(value) == value


def test_it_accepts_a_contents_hash_of_128_characters():
    assert normalise_contents_hash("a" * 128) == "a" * 128


def test_it_rejects_a_contents_hash_shorter_than_8_characters():
    assert rejection(normalise_contents_hash, " abc1234 ") == ("hash_invalid", {"value": "abc1234"})


def test_it_rejects_a_contents_hash_longer_than_128_characters():
    assert rejection(normalise_contents_hash, "a" * 129) == ("hash_invalid", {"value": "a" * 129})


def test_it_rejects_a_contents_hash_with_a_space_inside():
    assert rejection(normalise_contents_hash, "abcd 1234") == (
        "hash_invalid",
        {"value": "abcd 1234"},
    )


def test_it_shortens_a_very_long_invalid_value_in_the_message():
    assert rejection(normalise_contents_hash, "x" * 1000) == (
        "hash_invalid",
        {"value": "x" * 200 + "…"},
    )


def test_the_contents_hash_pattern_is_anchored():
    assert CONTENTS_HASH_RE.match("abcdefgh") and not CONTENTS_HASH_RE.match("abcdefgh!")


def test_it_runs_the_command_on_the_contents_file_and_returns_its_output(tmp_path):
    path = contents_file(tmp_path, b"[]")
    argv = ["sh", "-c", 'sha256sum "$1" | cut -c1-64', "sh", "{path}"]

    assert run_contents_hash_command(argv, path, timeout=10) == hashlib.sha256(b"[]").hexdigest()


def test_it_substitutes_the_path_inside_a_longer_argument(tmp_path):
    path = contents_file(tmp_path, b"[]")
    argv = ["sh", "-c", 'echo "hash-of-${1#--file=}" | tr / :', "sh", "--file={path}"]

    assert run_contents_hash_command(argv, path, timeout=10) == (
        f"hash-of-{path}".replace("/", ":")
    )


def test_it_keeps_only_the_first_line_of_the_output(tmp_path):
    argv = ["sh", "-c", "printf 'abcdef12\\nsecond line\\n'"]

    assert run_contents_hash_command(argv, tmp_path / "x", timeout=10) == "abcdef12"


def test_it_gives_the_command_no_input(tmp_path):
    argv = ["sh", "-c", "if read line; then echo got-input; else echo no-input; fi"]

    assert run_contents_hash_command(argv, tmp_path / "x", timeout=10) == "no-input"


def test_it_rejects_a_build_when_the_command_fails(tmp_path):
    argv = ["sh", "-c", "echo 'not a contents file' >&2; exit 3"]

    assert rejection(run_contents_hash_command, argv, tmp_path / "x", timeout=10) == (
        "hash_command_failed",
        {"status": 3, "stderr": "not a contents file"},
    )


def test_it_reports_bin_false_as_a_failure_with_no_stderr(tmp_path):
    assert rejection(run_contents_hash_command, ["/bin/false"], tmp_path / "x", timeout=10) == (
        "hash_command_failed",
        {"status": 1, "stderr": ""},
    )


def test_it_keeps_the_last_500_characters_of_stderr(tmp_path):
    argv = ["sh", "-c", "printf 'a%.0s' $(seq 600) >&2; printf 'END\\n\\n' >&2; exit 1"]

    code, params = rejection(run_contents_hash_command, argv, tmp_path / "x", timeout=10)

    assert (code, params) == ("hash_command_failed", {"status": 1, "stderr": "a" * 495 + "END"})


def test_it_rejects_a_command_that_prints_nothing(tmp_path):
    argv = ["sh", "-c", "echo; echo '  '"]

    assert rejection(run_contents_hash_command, argv, tmp_path / "x", timeout=10) == (
        "hash_command_empty",
        {},
    )


def test_it_rejects_output_that_is_not_a_contents_hash(tmp_path):
    argv = ["sh", "-c", "echo 'Traceback (most recent call last):'"]

    assert rejection(run_contents_hash_command, argv, tmp_path / "x", timeout=10) == (
        "hash_invalid",
        {"value": "Traceback (most recent call last):"},
    )


def test_it_says_a_missing_command_is_unavailable(tmp_path):
    with pytest.raises(HashCommandUnavailable) as caught:
        run_contents_hash_command(["/nonexistent/bitfrost-hash", "{path}"], tmp_path, timeout=10)

    assert (caught.value.code, caught.value.params) == (
        "hash_command_unavailable",
        {"error": "/nonexistent/bitfrost-hash: No such file or directory"},
    )


def test_it_says_a_command_it_may_not_execute_is_unavailable(tmp_path):
    script = tmp_path / "hash.sh"
    script.write_text("#!/bin/sh\necho abcdefgh\n")
    script.chmod(0o644)

    with pytest.raises(HashCommandUnavailable) as caught:
        run_contents_hash_command([str(script)], tmp_path, timeout=10)

    assert caught.value.params == {"error": f"{script}: Permission denied"}


def test_it_says_an_empty_command_is_unavailable(tmp_path):
    with pytest.raises(HashCommandUnavailable) as caught:
        run_contents_hash_command([], tmp_path, timeout=10)

    assert caught.value.params == {"error": "no command is configured"}


def test_it_gives_up_on_a_command_that_takes_too_long(tmp_path):
    with pytest.raises(HashCommandUnavailable) as caught:
        run_contents_hash_command(["sleep", "30"], tmp_path, timeout=1)

    assert caught.value.params == {"error": "no answer after 1 seconds"}


def test_it_also_kills_what_a_slow_command_started(tmp_path):
    started = time.monotonic()

    with pytest.raises(HashCommandUnavailable):
        run_contents_hash_command(["sh", "-c", "sleep 30; echo abcdefgh"], tmp_path, timeout=1)

    assert time.monotonic() - started < 5


def test_an_unavailable_command_is_not_a_rejected_build():
    assert not issubclass(HashCommandUnavailable, Refused)


def test_an_unavailable_command_renders_its_message():
    error = HashCommandUnavailable("no answer after 1 seconds")

    assert "no answer after 1 seconds" in str(error)
