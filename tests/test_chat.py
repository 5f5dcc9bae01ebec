#!/usr/bin/env python3
"""Chat service: welcome sequence, messages, rooms, commands, history, line endings, quit, SIGTERM.

Absence ("X did not get Y") is proved by ordering, not by waiting: the client
sends /topic (ChatClient.sync) and its reply must be the very next line, or a
marker sent through the same path must be the next line a receiver reads."""

import os
import re
import signal
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from chatlib import (  # noqa: E402
    Session, check, check_eq, parse_members, rx, SYNC_RE, YOU_ARE_RE)
import echochatd_testlib as tl  # noqa: E402

NICK_INVALID = "! a nick is 1-24 letters, digits, _ or -, starting with a letter"
ROOM_INVALID = "! a room name is # (optional) and 1-32 letters, digits, _ or -"


def expect_members(c, room, names):
    line = c.expect(rx(r"\* members of %s \(\d+\): .*" % re.escape(room)))
    r, n, listed = parse_members(line)
    check_eq(n, len(names), "%s: member count in %r" % (c.who(), line))
    check_eq(sorted(listed), sorted(names), "%s: members in %r" % (c.who(), line))


def expect_join(c, room, members, topic=None, history=()):
    """c just joined `room`: its part of the join sequence (after the left notices)."""
    c.expect("* %s has joined %s" % (c.nick, room))
    c.expect("* topic for %s: %s" % (room, topic) if topic else "* no topic is set for %s" % room)
    expect_members(c, room, members)
    for h in history:
        c.expect(h)


def all_expect(clients, line):
    for c in clients:
        c.expect(line)


def sync_all(clients):
    for c in clients:
        c.sync()


# --------------------------------------------------------------------------

def test_welcome_sequence():
    with Session("chat.motd=line one\\nline two") as s:
        a = s.client("a", welcome=False)
        a.expect("* welcome to echochatd 0.1.0, 1 user online")
        a.expect("* line one")
        a.expect("* line two")
        a.nick = a.expect_match(YOU_ARE_RE).group(1)
        a.expect("* %s has joined #lobby" % a.nick)
        a.expect("* no topic is set for #lobby")
        a.expect("* members of #lobby (1): %s" % a.nick)
        a.sync()                                   # nothing else (no history yet)

        b = s.client("b", welcome=False)
        b.expect("* welcome to echochatd 0.1.0, 2 users online")
        b.expect_lines(["* line one", "* line two"])
        b.nick = b.expect_match(YOU_ARE_RE).group(1)
        check(b.nick != a.nick, "two clients got the same guest nick %s" % b.nick)
        b.expect("* %s has joined #lobby" % b.nick)
        b.expect("* no topic is set for #lobby")
        expect_members(b, "#lobby", [a.nick, b.nick])
        a.expect("* %s has joined #lobby" % b.nick)     # the room sees the newcomer

        c = s.client("c")                                # skip_welcome
        check_eq(c.welcome_lines[0], "* welcome to echochatd 0.1.0, 3 users online", "3rd welcome")
        check(len({a.nick, b.nick, c.nick}) == 3, "guest nicks not unique: %s %s %s"
              % (a.nick, b.nick, c.nick))
        all_expect([a, b], "* %s has joined #lobby" % c.nick)
        b.close()
        all_expect([a, c], "* %s has quit" % b.nick)
        d = s.client("d")
        check_eq(d.welcome_lines[0], "* welcome to echochatd 0.1.0, 3 users online",
                 "welcome after one left")
        check(d.nick not in (a.nick, c.nick), "guest nick %s given twice" % d.nick)
        all_expect([a, c], "* %s has joined #lobby" % d.nick)
        sync_all([a, c, d])

    with Session() as s:                                 # no motd: no motd lines
        a = s.client("a", welcome=False)
        a.expect("* welcome to echochatd 0.1.0, 1 user online")
        a.nick = a.expect_match(YOU_ARE_RE).group(1)
        check(re.fullmatch(r"guest\d+", a.nick), "guest nick %r" % a.nick)
        expect_join(a, "#lobby", [a.nick])


def test_two_and_three_clients():
    with Session("chat.rate=0") as s:
        a = s.client("a")
        b = s.client("b")
        a.expect("* %s has joined #lobby" % b.nick)
        a.say("hello from a")
        b.expect("<%s> hello from a" % a.nick)
        b.say("hello from b")
        a.expect("<%s> hello from b" % b.nick)
        sync_all([a, b])                                 # the sender does not get its own

        c = s.client("c")
        c.expect_lines(["<%s> hello from a" % a.nick, "<%s> hello from b" % b.nick])  # history
        all_expect([a, b], "* %s has joined #lobby" % c.nick)
        text = "gr\u00fc\u00dfe \u2713 \u65e5\u672c\tTAB  two  spaces"
        c.say(text)
        all_expect([a, b], "<%s> %s" % (c.nick, text))
        batch = ["line %03d" % i for i in range(60)]
        b.send_raw("".join(l + "\r\n" for l in batch).encode())
        for x in (a, c):
            x.expect_lines(["<%s> %s" % (b.nick, l) for l in batch])
        a.say("from a again")
        all_expect([b, c], "<%s> from a again" % a.nick)
        sync_all([a, b, c])


def test_room_isolation():
    with Session("chat.rate=0") as s:
        a, b = s.client("a"), s.client("b")
        a.expect("* %s has joined #lobby" % b.nick)
        c = s.client("c")
        all_expect([a, b], "* %s has joined #lobby" % c.nick)

        c.say("/join #other")
        all_expect([a, b, c], "* %s has left #lobby" % c.nick)
        expect_join(c, "#other", [c.nick])

        a.say("lobby msg")
        b.expect("<%s> lobby msg" % a.nick)
        c.sync()                                          # c did not get the lobby message
        c.say("other msg")
        c.sync()                                          # processed by now
        a.say("marker 1")
        b.expect("<%s> marker 1" % a.nick)                # and not "<c> other msg" before it
        a.sync()

        d = s.client("d")
        all_expect([a, b], "* %s has joined #lobby" % d.nick)
        d.expect_lines(["<%s> lobby msg" % a.nick, "<%s> marker 1" % a.nick])   # history
        d.say("/join other")                              # '#' is optional
        all_expect([a, b, d], "* %s has left #lobby" % d.nick)
        c.expect("* %s has joined #other" % d.nick)
        expect_join(d, "#other", [c.nick, d.nick], history=["<%s> other msg" % c.nick])
        c.say("hi d")
        d.expect("<%s> hi d" % c.nick)
        a.say("marker 2")
        b.expect("<%s> marker 2" % a.nick)
        c.sync()
        d.sync()

        d.say("/part")
        all_expect([c, d], "* %s has left #other" % d.nick)
        all_expect([a, b], "* %s has joined #lobby" % d.nick)
        expect_join(d, "#lobby", [a.nick, b.nick, d.nick],
                    history=["<%s> %s" % (a.nick, t) for t in ("lobby msg", "marker 1", "marker 2")])
        sync_all([a, b, c, d])


def test_join_part_errors():
    with Session("chat.rate=0") as s:
        a = s.client("a")
        a.say("/part")
        a.expect("! you are in #lobby, the default room, already")
        a.say("/join #lobby")
        a.expect("! you are already in #lobby")
        a.say("/join lobby")
        a.expect("! you are already in #lobby")
        for bad in ("bad.name", "#no way", "x" * 33, "#" + "y" * 33, "##two", "caf\u00e9"):
            a.say("/join " + bad)
            a.expect(ROOM_INVALID)
        name = "#R" + "z" * 30                            # 32 characters: fine
        a.say("/join " + name)
        a.expect("* %s has left #lobby" % a.nick)
        expect_join(a, name, [a.nick])
        a.say("/join " + name)
        a.expect("! you are already in %s" % name)
        a.say("/join _a-1")
        a.expect("* %s has left %s" % (a.nick, name))
        expect_join(a, "#_a-1", [a.nick])
        a.sync()


def test_nick():
    with Session("chat.rate=0") as s:
        a, b = s.client("a"), s.client("b")
        a.expect("* %s has joined #lobby" % b.nick)
        c = s.client("c")
        all_expect([a, b], "* %s has joined #lobby" % c.nick)

        old = a.set_nick("alice")
        all_expect([b, c], "* %s is now known as alice" % old)
        for taken in ("alice", "ALICE", "Alice", c.nick, c.nick.upper()):
            b.say("/nick " + taken)
            b.expect("! the nick %s is taken" % taken)
        a.say("/nick alice")
        a.expect("! you are already alice")
        for bad in ("1abc", "-x", "_x", "a" * 25, "bad!", "b\u00e4d", "a.b"):
            b.say("/nick " + bad)
            b.expect(NICK_INVALID)
        b.say("/nick")
        b.expect(rx(r"! usage: /nick NAME \(.*\)"))
        old = b.set_nick("B" * 24)                        # 24 characters: fine
        all_expect([a, c], "* %s is now known as %s" % (old, "B" * 24))
        b.set_nick("bob_-9")
        all_expect([a, c], "* %s is now known as bob_-9" % ("B" * 24))
        b.say("hello")
        all_expect([a, c], "<bob_-9> hello")
        sync_all([a, b, c])                               # nobody saw the others' errors

        # the guest nicks are reserved too, and a new guest never gets a taken nick
        d = s.client("d")
        d.expect("<bob_-9> hello")                        # history
        all_expect([a, b, c], "* %s has joined #lobby" % d.nick)
        c.say("/nick " + d.nick.upper())
        c.expect("! the nick %s is taken" % d.nick.upper())
        n = int(d.nick[5:])
        squat = ["guest%d" % (n + k) for k in (1, 2)]
        old = c.set_nick(squat[0])
        all_expect([a, b, d], "* %s is now known as %s" % (old, squat[0]))
        b.set_nick(squat[1].upper())
        all_expect([a, c, d], "* bob_-9 is now known as %s" % squat[1].upper())
        e = s.client("e")
        e.expect("<bob_-9> hello")                        # history
        check(e.nick.lower() not in squat, "new client got the taken nick %s" % e.nick)
        all_expect([a, b, c, d], "* %s has joined #lobby" % e.nick)
        sync_all([a, b, c, d, e])


def test_msg():
    with Session("chat.rate=0") as s:
        a, b = s.client("a"), s.client("b")
        a.expect("* %s has joined #lobby" % b.nick)
        c = s.client("c")
        all_expect([a, b], "* %s has joined #lobby" % c.nick)
        a.set_nick("alice")
        all_expect([b, c], rx(r"\* guest\d+ is now known as alice"))
        b.set_nick("bob")
        all_expect([a, c], rx(r"\* guest\d+ is now known as bob"))

        a.say("/msg bob hi there, bob")
        b.expect("*alice* hi there, bob")
        a.say("marker")
        b.expect("<alice> marker")
        c.expect("<alice> marker")                        # c did not get the private message
        a.sync()                                          # nor did the sender
        a.say("/msg nobody hello?")
        a.expect("! no such nick: nobody")
        a.say("/msg bob")
        a.expect("! usage: /msg NICK TEXT")
        a.say("/msg")
        a.expect("! usage: /msg NICK TEXT")
        b.say("/join #elsewhere")
        all_expect([a, b, c], "* bob has left #lobby")
        expect_join(b, "#elsewhere", ["bob"])
        a.say("/msg bob across rooms")
        b.expect("*alice* across rooms")
        b.say("/msg alice back at you")
        a.expect("*bob* back at you")
        sync_all([a, b, c])


def test_me():
    with Session("chat.rate=0") as s:
        a, b = s.client("a"), s.client("b")
        a.expect("* %s has joined #lobby" % b.nick)
        c = s.client("c")
        all_expect([a, b], "* %s has joined #lobby" % c.nick)
        a.say("/me waves hello")
        all_expect([b, c], "* %s waves hello" % a.nick)
        a.say("/ME shouts")                               # command names are case-insensitive
        all_expect([b, c], "* %s shouts" % a.nick)
        a.say("/me")
        a.expect("! usage: /me TEXT")
        sync_all([a, b, c])


def test_topic():
    with Session("chat.rate=0") as s:
        a, b = s.client("a"), s.client("b")
        a.expect("* %s has joined #lobby" % b.nick)
        a.say("/topic")
        a.expect("* no topic is set for #lobby")
        a.say("/topic Welcome to the lobby \u2615")
        all_expect([a, b], "* %s set the topic of #lobby: Welcome to the lobby \u2615" % a.nick)
        b.say("/topic")
        b.expect("* topic for #lobby: Welcome to the lobby \u2615")
        c = s.client("c", welcome=False)
        c.expect(rx(r"\* welcome to .*"))
        c.nick = c.expect_match(YOU_ARE_RE).group(1)
        c.expect("* %s has joined #lobby" % c.nick)
        c.expect("* topic for #lobby: Welcome to the lobby \u2615")
        expect_members(c, "#lobby", [a.nick, b.nick, c.nick])
        all_expect([a, b], "* %s has joined #lobby" % c.nick)
        c.say("/rooms")
        c.expect("* 1 room:")
        c.expect("* #lobby (3): Welcome to the lobby \u2615")
        b.say("/topic second topic")
        all_expect([a, b, c], "* %s set the topic of #lobby: second topic" % b.nick)
        c.say("/TOPIC")
        c.expect("* topic for #lobby: second topic")
        sync_all([a, b, c])


def test_rooms_and_who():
    with Session("chat.rate=0") as s:
        a, b = s.client("a"), s.client("b")
        a.expect("* %s has joined #lobby" % b.nick)
        c = s.client("c")
        all_expect([a, b], "* %s has joined #lobby" % c.nick)
        a.say("/who")
        expect_members(a, "#lobby", [a.nick, b.nick, c.nick])
        b.say("/join #b1")
        all_expect([a, b, c], "* %s has left #lobby" % b.nick)
        expect_join(b, "#b1", [b.nick])
        c.say("/join c1")
        all_expect([a, c], "* %s has left #lobby" % c.nick)
        expect_join(c, "#c1", [c.nick])
        c.say("/topic the c room")
        c.expect("* %s set the topic of #c1: the c room" % c.nick)
        a.say("/rooms")
        a.expect("* 3 rooms:")
        got = sorted(a.read_line() for _ in range(3))
        check_eq(got, sorted(["* #lobby (1)", "* #b1 (1)", "* #c1 (1): the c room"]), "/rooms list")
        a.say("/WHO")
        a.expect("* members of #lobby (1): %s" % a.nick)
        c.say("/join #b1")
        c.expect("* %s has left #c1" % c.nick)
        b.expect("* %s has joined #b1" % c.nick)
        expect_join(c, "#b1", [b.nick, c.nick])
        b.say("/who")
        expect_members(b, "#b1", [b.nick, c.nick])
        sync_all([a, b, c])


def test_help_and_unknown_command():
    with Session("chat.rate=0") as s:
        a = s.client("a")
        a.say("/frobnicate")
        a.expect("! unknown command: /frobnicate (type /help for the commands)")
        a.say("/help")
        a.expect("* commands (case-insensitive):")
        a.say("/topic")                                   # marks the end of the help text
        line, help_lines = a.wait_for(SYNC_RE)
        check(len(help_lines) >= 5, "/help: only %d lines after the first" % len(help_lines))
        for l in help_lines:
            check(l.startswith("* "), "/help line %r does not start with '* '" % l)
        a.say("/HeLp")
        a.expect("* commands (case-insensitive):")


def test_double_slash_and_empty_lines():
    with Session("chat.rate=0") as s:
        a, b = s.client("a"), s.client("b")
        a.expect("* %s has joined #lobby" % b.nick)
        a.say("//text with a slash")
        b.expect("<%s> /text with a slash" % a.nick)
        a.say("//nick x")
        b.expect("<%s> /nick x" % a.nick)
        a.send_raw(b"\r\n\n\r\n\r\x00\r\n")              # empty lines are ignored
        a.say("after the empty lines")
        b.expect("<%s> after the empty lines" % a.nick)
        sync_all([a, b])


def test_quit():
    with Session("chat.rate=0") as s:
        a, b = s.client("a"), s.client("b")
        a.expect("* %s has joined #lobby" % b.nick)
        c = s.client("c")
        all_expect([a, b], "* %s has joined #lobby" % c.nick)
        d = s.client("d")
        all_expect([a, b, c], "* %s has joined #lobby" % d.nick)

        c.say("/quit going home, bye all")
        c.expect("* bye")
        c.expect_eof(clean=True)
        all_expect([a, b, d], "* %s has quit (going home, bye all)" % c.nick)

        b.say("/QUIT")
        b.expect("* bye")
        b.expect_eof(clean=True)
        all_expect([a, d], "* %s has quit" % b.nick)

        f = s.client("f")                                # lines after /quit are not processed
        all_expect([a, d], "* %s has joined #lobby" % f.nick)
        f.send_raw(b"/quit now\r\nafter the quit\r\n/nick ghost\r\n")
        f.expect("* bye")
        f.expect_eof(clean=True)
        all_expect([a, d], "* %s has quit (now)" % f.nick)
        a.say("marker")
        d.expect("<%s> marker" % a.nick)

        d.close()                                        # just disconnects
        a.expect("* %s has quit" % d.nick)
        e = s.client("e")
        a.expect("* %s has joined #lobby" % e.nick)
        tl.set_linger0(e.sock)
        e.close()                                        # disconnects with a reset
        a.expect(rx(r"\* %s has quit( \(.*\))?" % e.nick))
        a.say("/who")
        a.expect("* members of #lobby (1): %s" % a.nick)
        s.d.wait_for_log(r"chat: #\d+ 127\.0\.0\.1:\d+ closed \(")


def test_idle_timeout():
    with Session("chat.rate=0", "chat.idle_timeout=1", "chat.history=0") as s:
        a, b = s.client("a"), s.client("b")
        a.expect("* %s has joined #lobby" % b.nick)
        # b keeps talking to the server (input) while a stays silent: wait for a's notice,
        # looking at a's socket at most 0.2 s at a time between two commands of b
        deadline = time.monotonic() + tl.T(15)
        t0 = time.monotonic()
        while not (a.pending or a.eof):
            check(time.monotonic() < deadline, "no idle timeout after %.0f s" % tl.T(15))
            b.say("/topic")
            a.wait_data(0.2)
        dt = time.monotonic() - t0
        a.expect("! idle timeout: closing")
        a.expect_eof(clean=True)
        line, skipped = b.wait_for("* %s has quit (idle timeout)" % a.nick)
        for l in skipped:
            check(SYNC_RE.fullmatch(l), "b: unexpected %r" % l)
        check(dt > 0.5, "idle timeout after only %.2f s" % dt)
        b.say("/who")
        b.wait_for("* members of #lobby (1): %s" % b.nick)


def test_history():
    with Session("chat.rate=0", "chat.history=3") as s:
        a, b = s.client("a"), s.client("b")
        a.expect("* %s has joined #lobby" % b.nick)
        a.say("m1")
        a.say("m2")
        a.say("/me m3")
        a.say("/msg %s private" % b.nick)               # not room history
        a.say("/topic not history either")
        a.say("m4")
        a.expect("* %s set the topic of #lobby: not history either" % a.nick)
        a.sync()                                          # all of a's lines are processed
        b.say("b5")
        b.expect_lines(["<%s> m1" % a.nick, "<%s> m2" % a.nick, "* %s m3" % a.nick,
                        "*%s* private" % a.nick,
                        "* %s set the topic of #lobby: not history either" % a.nick,
                        "<%s> m4" % a.nick])
        a.expect("<%s> b5" % b.nick)

        c = s.client("c", welcome=False)
        c.expect(rx(r"\* welcome .*"))
        c.nick = c.expect_match(YOU_ARE_RE).group(1)
        c.expect("* %s has joined #lobby" % c.nick)
        c.expect("* topic for #lobby: not history either")
        expect_members(c, "#lobby", [a.nick, b.nick, c.nick])
        c.expect_lines(["* %s m3" % a.nick, "<%s> m4" % a.nick, "<%s> b5" % b.nick])
        c.sync()                                          # exactly 3, nothing more
        all_expect([a, b], "* %s has joined #lobby" % c.nick)

        # per room: #other has its own (empty) history
        c.say("/join #other")
        all_expect([a, b, c], "* %s has left #lobby" % c.nick)
        expect_join(c, "#other", [c.nick])
        c.sync()

    with Session("chat.rate=0") as s:                    # default: 20
        a = s.client("a")
        a.send_raw(b"".join(b"msg %02d\r\n" % i for i in range(25)))
        a.sync()
        b = s.client("b")
        b.expect_lines(["<%s> msg %02d" % (a.nick, i) for i in range(5, 25)])
        b.sync()

    with Session("chat.rate=0", "chat.history=0") as s:
        a = s.client("a")
        a.say("lost")
        a.sync()
        b = s.client("b")
        b.sync()


def test_line_endings():
    with Session("chat.rate=0") as s:
        a, b = s.client("a"), s.client("b")
        a.expect("* %s has joined #lobby" % b.nick)
        A = a.nick

        a.send_raw(b"l1\nl2\r\nl3\r\x00l4\rl5\r\n")
        b.expect_lines(["<%s> l%d" % (A, i) for i in range(1, 6)])

        # one line split over several sends
        a.send_raw(b"spl")
        a.send_raw(b"it ")
        a.send_raw(b"line\r\n")
        b.expect("<%s> split line" % A)

        # the CR/LF and CR/NUL boundaries split across two sends; a bare CR at the end of
        # what was sent ends the line at once (no waiting for a possible LF)
        a.send_raw(b"s1\r")
        b.expect("<%s> s1" % A)
        a.send_raw(b"\ns2\r")
        b.expect("<%s> s2" % A)
        a.send_raw(b"\x00s3\r")
        b.expect("<%s> s3" % A)
        a.send_raw(b"s4\n")
        b.expect("<%s> s4" % A)
        a.send_raw(b"s5\r")
        b.expect("<%s> s5" % A)
        a.send_raw(b"\r\n")                              # CR then CRLF: one empty line, ignored
        a.send_raw(b"s6\r\n")
        b.expect("<%s> s6" % A)
        sync_all([a, b])

        for c in (a, b):                                  # CRLF on every line sent to us
            raw = bytes(c.raw)
            check(raw.endswith(b"\r\n"), "%s: data does not end with CRLF" % c.who())
            check_eq(raw.count(b"\n"), raw.count(b"\r\n"), "%s: LFs vs CRLFs" % c.who())
            check_eq(raw.count(b"\r"), raw.count(b"\r\n"), "%s: CRs vs CRLFs" % c.who())


def test_crlf_everywhere():
    """Every command's output, on the raw byte stream: each LF has a CR before it,
    each CR an LF after it (ChatClient also checks this for every line)."""
    with Session("chat.rate=0", "chat.motd=m1\\nm2") as s:
        a, b = s.client("a"), s.client("b")
        a.expect("* %s has joined #lobby" % b.nick)
        for cmd in ("/help", "/rooms", "/who", "/topic", "/topic t", "/nick zed", "/nick 1",
                    "/me x", "/msg nobody x", "/msg", "/join #x", "/part", "/x", "hello"):
            a.say(cmd)
        a.wait_for("! unknown command: /x (type /help for the commands)")
        b.wait_for("<zed> hello")
        b.say("/quit")
        b.wait_for("* bye")
        b.expect_eof()
        a.wait_for(rx(r"\* \S+ has quit"))
        for c in (a, b):
            raw = bytes(c.raw)
            check(len(raw) > 300, "%s: only %d bytes" % (c.who(), len(raw)))
            check_eq(raw.count(b"\n"), raw.count(b"\r\n"), "%s: LFs vs CRLFs" % c.who())
            check_eq(raw.count(b"\r"), raw.count(b"\r\n"), "%s: CRs vs CRLFs" % c.who())
            check(raw.endswith(b"\r\n"), "%s: stream does not end with CRLF" % c.who())


def test_last_line_without_newline():
    with Session("chat.rate=0", "chat.history=0") as s:
        a, b = s.client("a"), s.client("b")
        a.expect("* %s has joined #lobby" % b.nick)
        a.send_raw(b"first\r\nthe end")
        a.shutdown_write()
        b.expect("<%s> first" % a.nick)
        b.expect("<%s> the end" % a.nick)
        b.expect("* %s has quit" % a.nick)
        a.expect_eof(clean=True)
        b.sync()

        c = s.client("c")                                # a bare CR right before the FIN
        all_expect([b], "* %s has joined #lobby" % c.nick)
        c.send_raw(b"cr at the end\r")
        c.shutdown_write()
        b.expect("<%s> cr at the end" % c.nick)
        b.expect("* %s has quit" % c.nick)
        c.expect_eof(clean=True)


def test_sigterm():
    with Session("chat.rate=0") as s:
        a, b = s.client("a"), s.client("b")
        a.expect("* %s has joined #lobby" % b.nick)
        c = s.client("c")
        all_expect([a, b], "* %s has joined #lobby" % c.nick)
        c.say("/join #other")
        all_expect([a, b, c], "* %s has left #lobby" % c.nick)
        expect_join(c, "#other", [c.nick])
        b.send_raw(b"partial line without end")           # pending input must not matter
        sync_all([a, c])
        mark = s.d.mark()
        s.d.send_signal(signal.SIGTERM)
        for x in (a, b, c):
            x.expect("* server shutting down")
            x.expect_eof(clean=True)                      # no quit notices, then FIN
            x.close()
        check_eq(s.d.wait(20), 0, "exit status after SIGTERM")
        s.d.wait_for_log(r"exiting$", since=mark)


if __name__ == "__main__":
    tl.main([test_welcome_sequence, test_two_and_three_clients, test_room_isolation,
             test_join_part_errors, test_nick, test_msg, test_me, test_topic, test_rooms_and_who,
             test_help_and_unknown_command, test_double_slash_and_empty_lines, test_quit, test_idle_timeout,
             test_history, test_line_endings, test_crlf_everywhere,
             test_last_line_without_newline, test_sigterm], per_test_timeout=30)
