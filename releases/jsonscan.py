"""Check that text is JSON, as `json.loads` would, in memory that does not grow with it.

`json.loads` builds the whole document: a 200 MiB .contents file of `[[],[],…]` once took a
worker to 5 GB. `validate` reads the text piece by piece and keeps only the open brackets,
so its memory is a few pieces' worth whatever the input. It accepts exactly what
`json.loads` accepts (NaN and Infinity, duplicate keys, lone surrogate escapes, any
top-level value) with two differences, both refusals:

- nesting deeper than MAX_DEPTH levels (`json.loads` runs out of recursion near 1000);
- an integer with more than INT_DIGITS digits, which `json.loads` refuses too, with a
  ValueError instead of a JSONDecodeError.

A refusal is `NotJSON`, whose message is the one `json.loads` gives, at the same position
("Expecting ',' delimiter: line 1 column 5 (char 4)").

Speed comes from "runs": one regular expression match consumes many comma-separated values
(scalars, and arrays or objects at most RUN_DEPTH deep) in C, and one more match opens or
closes a whole run of brackets. The Python state machine steps through what is left a
token at a time, so deep documents made of tiny containers are the slow case (a few MB/s),
still linear. A string or number longer than a piece is read on across pieces without
being kept. Pure module: no Django, no I/O.
"""

import re
import sys
from collections.abc import Iterable, Iterator

MAX_DEPTH = 512
INT_DIGITS = sys.int_info.default_max_str_digits
# Enough text to decide any token but a string or a number ("-Infinity" is the longest).
LOOKAHEAD = 16

_WS = r"[ \t\n\r]*+"
_CHAR = r'[^"\\\x00-\x1f]'
_STRING = rf'"{_CHAR}*+(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{{4}}){_CHAR}*+)*+"'
# In a run, an integer may not have more digits than Python converts: a longer one is
# left to the state machine, which refuses it (or accepts it as a float).
_INTEGER = rf"[1-9][0-9]{{0,{INT_DIGITS - 1}}}+"
_FRACTION = r"(?:\.[0-9]++)?(?:[eE][-+]?[0-9]++)?"
# Every alternative starts with a fixed character, which the regex engine tries first:
# that (not atomic groups, which cost more) keeps a failed value cheap.
_SCALAR = (
    rf"{_STRING}|0{_FRACTION}|{_INTEGER}{_FRACTION}|-0{_FRACTION}|-{_INTEGER}{_FRACTION}"
    r"|true|false|null|NaN|Infinity|-Infinity"
)


def _value(depth: int) -> str:
    """A scalar, or an array or object (no trailing comma) of `_value(depth - 1)`."""
    if not depth:
        return _SCALAR
    inner = _value(depth - 1)
    array = rf"\[{_WS}(?:(?:{inner}){_WS}(?:,{_WS}(?:{inner}){_WS})*+)?\]"
    member = rf"{_STRING}{_WS}:{_WS}(?:{inner}){_WS}"
    return rf"{_SCALAR}|{array}|\{{{_WS}(?:{member}(?:,{_WS}{member})*+)?\}}"


# A value in a run is at most RUN_DEPTH deep: [1, [2]] or {"a": [1]}, not [[[1]]].
RUN_DEPTH = 2
_VALUE = f"(?:{_value(RUN_DEPTH)})"
_MEMBER = rf"{_STRING}{_WS}:{_WS}{_VALUE}{_WS}"
# Each value in a run ends with its comma, so a run never stops inside a token, even at
# the end of the buffer; group 1 is set when the run also closes its container.
ARRAY_RUN = re.compile(rf"(?:{_WS}{_VALUE}{_WS},)*+(?:{_WS}{_VALUE}{_WS}(\]))?")
OBJECT_RUN = re.compile(rf"(?:{_WS}{_MEMBER},)*+(?:{_WS}{_MEMBER}(\}}))?")
# Runs of brackets, for deep documents: "[[{"a": [" opens four containers in one match.
OPENERS = re.compile(rf"(?:\[{_WS}|\{{{_WS}{_STRING}{_WS}:{_WS})++")
# Closing brackets, and the comma after them (group 2) that usually follows.
CLOSERS = re.compile(rf"([\]}}](?:{_WS}[\]}}])*+)({_WS},)?")
KEY_COLON = re.compile(rf"{_STRING}{_WS}:")

WS = re.compile(_WS)
STRING = re.compile(_STRING)
LITERAL = re.compile(r"true|false|null|NaN|Infinity|-Infinity")
NUMBER = re.compile(r"(?>-?(0|[1-9][0-9]*+)(\.[0-9]++)?([eE][-+]?[0-9]++)?)")
DIGITS = re.compile(r"[0-9]*+")
# A string's text up to its closing quote, a bad character or the end of the buffer. A
# \uXXXX escape needs a character after it: json refuses one at the very end of the text.
STRING_PART = re.compile(rf"{_CHAR}*+(?:\\(?:[\"\\/bfnrt]|u[0-9a-fA-F]{{4}}(?=[\s\S])){_CHAR}*+)*+")
# Turns a run of OPENERS (strings removed) or CLOSERS into the openers it opens or closes.
_OPENERS_ONLY = str.maketrans("]}", "[{", " \t\n\r:")

# What the scanner expects next.
VALUE, ARRAY_FIRST, OBJECT_FIRST, KEY, COLON, AFTER_VALUE = range(6)
ARRAY, OBJECT = ord("["), ord("{")


class NotJSON(ValueError):
    """The text is not JSON; the message says why and where, as `json.loads` words it."""


def validate(pieces: Iterable[str]) -> None:
    """Raise NotJSON unless the concatenated pieces are one JSON document."""
    _Scanner(iter(pieces)).run()


class _Scanner:
    def __init__(self, pieces: Iterator[str]):
        self.pieces = pieces
        self.eof = False
        self.base = 0  # position in the whole text of the buffer's first character
        self.lines = 0  # newlines before the buffer
        self.last_newline = -1  # position of the last of them

    def run(self) -> None:
        stack = bytearray()
        state = VALUE
        buf, pos = self._fill("", 0)
        if buf.startswith("\ufeff"):
            raise self._error("Unexpected UTF-8 BOM (decode using utf-8-sig)", buf, 0)
        while True:
            # 1. Many simple values at once, when inside a container.
            if stack and len(stack) <= MAX_DEPTH - RUN_DEPTH:
                if stack[-1] == ARRAY and state in (VALUE, ARRAY_FIRST):
                    m = ARRAY_RUN.match(buf, pos)
                elif state in (KEY, OBJECT_FIRST):
                    m = OBJECT_RUN.match(buf, pos)
                else:
                    m = None
                if m and m.end() > pos:
                    pos = m.end()
                    if m.lastindex:
                        stack.pop()
                        state = AFTER_VALUE
                        continue
                    state = VALUE if stack[-1] == ARRAY else KEY

            # 2. Otherwise one token, with enough text in hand to decide it.
            if len(buf) - pos < LOOKAHEAD or buf[pos] in " \t\n\r":
                pos = WS.match(buf, pos).end()
                while len(buf) - pos < LOOKAHEAD and not self.eof:
                    buf, pos = self._fill(buf, pos)
                    pos = WS.match(buf, pos).end()
            c = buf[pos] if pos < len(buf) else ""

            if state == AFTER_VALUE:
                if not stack:
                    if c:
                        raise self._error("Extra data", buf, self.base + pos)
                    return
                if c == ",":
                    state = VALUE if stack[-1] == ARRAY else KEY
                    pos += 1
                elif c == "]" or c == "}":
                    m = CLOSERS.match(buf, pos)
                    closed = m[1].translate(_OPENERS_ONLY).encode()
                    if not stack.endswith(closed[::-1]):
                        raise self._closer_error(stack, closed, buf, pos)
                    del stack[-len(closed) :]
                    if m[2] and stack:
                        state = VALUE if stack[-1] == ARRAY else KEY
                        pos = m.end()
                    else:  # a comma after the last bracket is extra data, found next
                        pos = m.end(1)
                else:
                    raise self._error("Expecting ',' delimiter", buf, self.base + pos)
            elif state in (VALUE, ARRAY_FIRST):
                if c == "]" and state == ARRAY_FIRST:
                    stack.pop()
                    pos += 1
                    state = AFTER_VALUE
                elif m := OPENERS.match(buf, pos):
                    opened = m[0]
                    if '"' in opened:
                        opened = STRING.sub("", opened)
                    opened = opened.translate(_OPENERS_ONLY)
                    if len(stack) + len(opened) > MAX_DEPTH:
                        raise NotJSON("nested too deeply")
                    stack += opened.encode()
                    pos = m.end()
                    state = ARRAY_FIRST if opened[-1] == "[" else VALUE
                elif c == "{":  # with no key and colon after it
                    if len(stack) == MAX_DEPTH:
                        raise NotJSON("nested too deeply")
                    stack.append(OBJECT)
                    pos += 1
                    state = OBJECT_FIRST
                elif c == '"':
                    buf, pos = self._string(buf, pos)
                    state = AFTER_VALUE
                elif m := LITERAL.match(buf, pos):
                    pos = m.end()
                    state = AFTER_VALUE
                elif c == "-" or "0" <= c <= "9":
                    buf, pos = self._number(buf, pos, stack)
                    state = AFTER_VALUE
                else:
                    raise self._error("Expecting value", buf, self.base + pos)
            elif state in (KEY, OBJECT_FIRST):
                if c == "}" and state == OBJECT_FIRST:
                    stack.pop()
                    pos += 1
                    state = AFTER_VALUE
                elif m := KEY_COLON.match(buf, pos):
                    pos = m.end()
                    state = VALUE
                elif c == '"':
                    buf, pos = self._string(buf, pos)
                    state = COLON
                else:
                    raise self._error(
                        "Expecting property name enclosed in double quotes", buf, self.base + pos
                    )
            elif c == ":":  # state == COLON
                pos += 1
                state = VALUE
            else:
                raise self._error("Expecting ':' delimiter", buf, self.base + pos)

    def _string(self, buf: str, pos: int) -> tuple[str, int]:
        """Read the string at pos across pieces, keeping at most an unfinished escape."""
        start = self.base + pos
        pos += 1
        while True:
            end = STRING_PART.match(buf, pos).end()
            if end < len(buf):
                c = buf[end]
                if c == '"':
                    return buf, end + 1
                if c != "\\":
                    raise self._error("Invalid control character at", buf, self.base + end)
                if len(buf) - end >= 7 or self.eof:  # room for \uXXXX and what follows
                    if end + 1 == len(buf):
                        raise self._error("Unterminated string starting at", buf, start)
                    if buf[end + 1] == "u":
                        raise self._error("Invalid \\uXXXX escape", buf, self.base + end + 1)
                    raise self._error("Invalid \\escape", buf, self.base + end)
            elif self.eof:
                raise self._error("Unterminated string starting at", buf, start)
            buf, pos = self._fill(buf, end)

    def _number(self, buf: str, pos: int, stack: bytearray) -> tuple[str, int]:
        """Read the number at pos. An integer part is counted, not kept, as it may be long."""
        m = NUMBER.match(buf, pos)
        if not m:
            raise self._error("Expecting value", buf, self.base + pos)
        # With three characters after it, no more text could make the number longer.
        if m.end() + 3 <= len(buf) or self.eof:
            if m[2] is None and m[3] is None and len(m[1]) > INT_DIGITS:
                raise self._too_long(buf, self.base + pos)
            return buf, m.end()
        start = self.base + pos
        if buf[pos] == "-":
            pos += 1
        if buf[pos] == "0":
            digits, pos = 1, pos + 1
        else:
            buf, pos, digits = self._digits(buf, pos)
        fraction = exponent = False
        buf, pos, c = self._peek(buf, pos)
        if c == ".":
            dot = self.base + pos
            buf, pos, c = self._peek(buf, pos + 1)
            if not "0" <= c <= "9":
                # json ends the number before the "." and then finds no delimiter there.
                self._check_integer(digits, buf, start)
                raise self._after_value_error(stack, buf, dot)
            buf, pos, _ = self._digits(buf, pos)
            fraction = True
            buf, pos, c = self._peek(buf, pos)
        if c == "e" or c == "E":
            e = self.base + pos
            buf, pos, c = self._peek(buf, pos + 1)
            if c == "+" or c == "-":
                buf, pos, c = self._peek(buf, pos + 1)
            if not "0" <= c <= "9":
                if not fraction:
                    self._check_integer(digits, buf, start)
                raise self._after_value_error(stack, buf, e)
            buf, pos, _ = self._digits(buf, pos)
            exponent = True
        if not (fraction or exponent):
            self._check_integer(digits, buf, start)
        return buf, pos

    def _digits(self, buf: str, pos: int) -> tuple[str, int, int]:
        count = 0
        while True:
            end = DIGITS.match(buf, pos).end()
            count += end - pos
            if end < len(buf) or self.eof:
                return buf, end, count
            buf, pos = self._fill(buf, end)

    def _peek(self, buf: str, pos: int) -> tuple[str, int, str]:
        while pos >= len(buf) and not self.eof:
            buf, pos = self._fill(buf, pos)
        return buf, pos, buf[pos] if pos < len(buf) else ""

    def _fill(self, buf: str, keep: int) -> tuple[str, int]:
        """Drop the buffer before `keep`, append the next piece; return (buffer, 0)."""
        if keep:
            self.lines += buf.count("\n", 0, keep)
            newline = buf.rfind("\n", 0, keep)
            if newline >= 0:
                self.last_newline = self.base + newline
            self.base += keep
            buf = buf[keep:]
        for piece in self.pieces:
            if piece:
                return buf + piece, 0
        self.eof = True
        return buf, 0

    def _check_integer(self, digits: int, buf: str, start: int) -> None:
        if digits > INT_DIGITS:
            raise self._too_long(buf, start)

    def _too_long(self, buf: str, at: int) -> NotJSON:
        return self._error(f"Integer with more than {INT_DIGITS} digits", buf, at)

    def _closer_error(self, stack: bytearray, closed: bytes, buf: str, pos: int) -> NotJSON:
        """The error at the first bracket of a run of CLOSERS (at pos) that closes nothing open."""
        depth = len(stack)
        bad = next(i for i, opener in enumerate(closed) if i == depth or stack[-1 - i] != opener)
        message = "Extra data" if bad == depth else "Expecting ',' delimiter"
        at = pos
        while buf[at] not in "]}" or bad:
            bad -= buf[at] in "]}"
            at += 1
        return self._error(message, buf, self.base + at)

    def _after_value_error(self, stack: bytearray, buf: str, at: int) -> NotJSON:
        return self._error("Expecting ',' delimiter" if stack else "Extra data", buf, at)

    def _error(self, message: str, buf: str, at: int) -> NotJSON:
        """The error at position `at` of the whole text, worded like json's JSONDecodeError.

        `at` may be before the buffer (the start of a long string or number); nothing
        between there and the buffer is a newline, so the line counts still hold."""
        lines, last_newline = self.lines, self.last_newline
        pos = at - self.base
        if pos > 0:
            lines += buf.count("\n", 0, pos)
            newline = buf.rfind("\n", 0, pos)
            if newline >= 0:
                last_newline = self.base + newline
        return NotJSON(f"{message}: line {lines + 1} column {at - last_newline} (char {at})")
