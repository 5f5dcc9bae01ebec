#!/usr/bin/env python3
"""Chat service against hostile input: over-long lines, telnet IAC sequences, terminal
escape sequences, bidi overrides, C0/C1 controls, invalid UTF-8, NUL bytes.

Whatever one client sends, what another one receives is valid UTF-8 without
C0 controls (but TAB and the CRLF line ends), DEL, C1 controls or bidi
embedding/override/isolate characters, and never contains a 0xFF byte."""

import os
import sys
from collections import Counter

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from chatlib import (  # noqa: E402
    DO, DONT, IAC, NOP, SB, SE, WILL, WONT, Session, check, check_eq, forbidden_in)
import echochatd_testlib as tl  # noqa: E402
from echochatd_testlib import Sender  # noqa: E402

FFFD = "\ufffd"


def pair(s, **kw_a):
    """Two clients a (the hostile one) and b (the observer) in #lobby."""
    a = s.client("a", **kw_a)
    b = s.client("b")
    a.expect("* %s has joined #lobby" % b.nick)
    return a, b


def check_clean(c):
    """Nothing c ever received contains a forbidden character or byte."""
    for line in c.all_lines:
        bad = forbidden_in(line)
        check(not bad, "%s received %r containing %s" % (c.who(), line,
                                                        ", ".join("U+%04X" % x for x in bad)))
    raw = bytes(c.raw)
    ctl = sorted({x for x in raw if (x < 0x20 and x not in (9, 10, 13)) or x in (0x7F, 0xFF)})
    check(not ctl, "%s received the bytes %s" % (c.who(), ", ".join("0x%02x" % x for x in ctl)))


# --------------------------------------------------------------------------

def test_long_line():
    with Session("chat.rate=0", "chat.max_line=64", "chat.history=0") as s:
        a, b = pair(s)
        A = a.nick
        err = "! line too long (at most 64 bytes): discarded"

        a.say("x" * 64)                                          # exactly max_line: fine
        b.expect("<%s> %s" % (A, "x" * 64))
        a.say("y" * 65)
        a.expect(err)
        a.send_raw(b"z" * 200 + b"\r\nnext line\r\n")           # the rest up to the newline
        a.expect(err)                                           # is dropped, not a new line
        b.expect("<%s> next line" % A)

        # arriving in pieces, the error only once, the tail after the limit dropped
        a.send_raw(b"w" * 50)
        a.send_raw(b"w" * 50)
        a.send_raw(b"W" * 5000)
        a.send_raw(b"W" * 5000 + b"\n")
        a.say("after the pieces")
        a.expect(err)
        b.expect("<%s> after the pieces" % A)

        # 4 MiB without a line end, then a normal line: memory is not the limit
        big = Sender(a.sock, b"q" * (4 * tl.MIB) + b"\rok\r\n", chunk=256 * tl.KIB, timeout=60)
        big.start()
        b.expect("<%s> ok" % A, timeout=60)
        big.finish()
        a.expect(err)
        a.sync()                                                # still connected, nothing more
        b.sync()

        # the limit counts the line after telnet IAC removal
        a.send_raw(b"".join(b"k" + bytes([IAC, NOP]) for _ in range(64)) + b"\r\n")
        b.expect("<%s> %s" % (A, "k" * 64))
        a.sync()
        b.sync()
        check_clean(b)


def test_telnet_negotiation():
    with Session("chat.rate=0", "chat.history=0") as s:
        a, b = pair(s, telnet=True)
        A = a.nick
        a.send_raw(bytes([IAC, WILL, 24, IAC, DO, 1, IAC, WILL, 24, IAC, DO, 1,
                          IAC, WILL, 31, IAC, DO, 3]) + b"hello\r\n")
        b.expect("<%s> hello" % A)
        a.sync()
        want = Counter([bytes([IAC, DONT, 24]), bytes([IAC, WONT, 1]),
                        bytes([IAC, DONT, 31]), bytes([IAC, WONT, 3])])
        check_eq(Counter(a.iac), want, "telnet replies (IAC DONT/WONT, once per option)")

        # asked again: no second answer; an option split across two sends
        a.send_raw(bytes([IAC, DO, 1, IAC, WILL, 24, IAC, DO, 3]))
        a.send_raw(bytes([IAC, DO]))
        a.send_raw(bytes([5]) + b"x\r\n")
        b.expect("<%s> x" % A)
        a.sync()
        want[bytes([IAC, WONT, 5])] += 1
        check_eq(Counter(a.iac), want, "telnet replies after repeated requests")

        # subnegotiation, NOP, IAC IAC and an IAC split across sends inside a line
        a.send_raw(b"he" + bytes([IAC, SB, 24, 0]) + b"xterm" + bytes([IAC, SE]) + b"llo\r\n")
        b.expect("<%s> hello" % A)
        a.send_raw(b"a" + bytes([IAC, NOP]) + b"b" + bytes([IAC, NOP, IAC, NOP]) + b"c\r\n")
        b.expect("<%s> abc" % A)
        a.send_raw(b"x" + bytes([IAC, IAC]) + b"y\r\n")
        b.expect("<%s> x%sy" % (A, FFFD))
        a.send_raw(b"sp" + bytes([IAC]))
        a.send_raw(bytes([NOP]) + b"lit\r\n")
        b.expect("<%s> split" % A)
        a.send_raw(b"sub" + bytes([IAC, SB, 31, 0, 80]))
        a.send_raw(bytes([0, 24, IAC, SE]) + b"neg\r\n")
        b.expect("<%s> subneg" % A)
        a.sync()
        a.assert_no_line(0.3)                                   # no late replies either
        check_eq(Counter(a.iac), want, "telnet replies after SB/NOP/IAC IAC")
        b.sync()
        check_clean(b)


def test_escape_sequences_and_bidi():
    with Session("chat.rate=0", "chat.history=0") as s:
        a, b = pair(s)
        A = a.nick
        a.say("\x1b[2J\x1b]0;title\x07 evil")
        b.expect("<%s> [2J]0;title evil" % A)
        a.say("abc\u202edef")
        b.expect("<%s> abcdef" % A)
        a.say("1\u202a2\u202b3\u202c4\u202d5\u202e6\u20667\u20678\u20689\u2069!")
        b.expect("<%s> 123456789!" % A)
        a.say("c1:\u0085\u009b31m\u0080\u009f.")               # C1 controls (valid UTF-8)
        b.expect("<%s> c1:31m." % A)
        c0 = bytes(x for x in range(1, 0x20) if x not in (9, 10, 13))
        a.send_raw(b"c0:" + c0 + b"|\x7f|\tTAB\r\n")
        b.expect("<%s> c0:||\tTAB" % A)
        a.say("/me \x1b[5mblinks\x1b[0m")
        b.expect("* %s [5mblinks[0m" % A)
        a.say("/topic \x1b]0;pwned\x07\u202etopic")
        for c in (a, b):
            c.expect("* %s set the topic of #lobby: ]0;pwnedtopic" % A)
        b.say("/topic")
        b.expect("* topic for #lobby: ]0;pwnedtopic")
        a.say("/msg %s \x1b[H\x9b\u202eprivate\x07" % b.nick)
        b.expect("*%s* [Hprivate" % A)
        a.say("/quit \x1b[0mso long\u202e\x07")
        a.expect("* bye")
        a.expect_eof()
        b.expect("* %s has quit ([0mso long)" % A)
        b.sync()
        check_clean(b)


def test_invalid_utf8_and_nul():
    with Session("chat.rate=0", "chat.history=0") as s:
        a, b = pair(s)
        A = a.nick
        cases = [
            (b"a\x80b", "a" + FFFD + "b"),                       # lone continuation byte
            (b"\xfe\xfdz", FFFD * 2 + "z"),
            (b"\xc3(", FFFD + "("),                              # lead byte without continuation
            (b"\xc0\xaf", FFFD * 2),                             # overlong "/"
            (b"\xed\xa0\x80!", FFFD * 3 + "!"),                  # UTF-16 surrogate
            (b"\xf5\x80\x80\x80", FFFD * 4),                     # beyond U+10FFFF
            (b"trunc \xe2\x82A", "trunc " + FFFD * 2 + "A"),     # one U+FFFD per bad byte
            (b"end \xf0\x9f\x98", "end " + FFFD * 3),
            ("valid: \u00e9 \u65e5\u672c \U0001F600 \u2028".encode(),
             "valid: \u00e9 \u65e5\u672c \U0001F600 \u2028"),
            (b"n\x00u\x00\x00l", "nul"),                         # NUL bytes are removed
            (b"\x00lead", "lead"),
        ]
        for raw, want in cases:
            a.send_raw(raw + b"\r\n")
            b.expect("<%s> %s" % (A, want))
        # every byte value but CR, LF and IAC in one line
        allb = bytes(x for x in range(0, 0xFF) if x not in (10, 13))
        a.send_raw(allb + b"\r\n")
        want = "\t" + "".join(chr(x) for x in range(0x20, 0x7F)) + FFFD * (0xFF - 0x80)
        b.expect("<%s> %s" % (A, want))
        a.sync()
        b.sync()
        check_clean(b)


if __name__ == "__main__":
    tl.main([test_long_line, test_telnet_negotiation, test_escape_sequences_and_bidi,
             test_invalid_utf8_and_nul], per_test_timeout=60)
