#!/usr/bin/env python3
"""Chat service limits: 500 clients in one room, a slow consumer is dropped without
holding anybody up, flood control delays (never drops) a flooder's lines without
slowing the others down.  One selector reads all clients (no threads)."""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from chatlib import (  # noqa: E402
    MEMBERS_CONT_RE, Pool, Session, T, TestFailure, YOU_ARE_RE, check, check_eq, parse_members)
import echochatd_testlib as tl  # noqa: E402
from echochatd_testlib import Skip  # noqa: E402


def raise_nofile(need):
    """Raise the soft RLIMIT_NOFILE (inherited by the daemon) up to the hard limit."""
    try:
        import resource
    except ImportError:
        raise Skip("no resource module")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        want = hard if hard != resource.RLIM_INFINITY else max(need, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError) as e:
            raise Skip("cannot raise RLIMIT_NOFILE to %d: %s" % (want, e))
        soft = want
    if soft != resource.RLIM_INFINITY and soft < need:
        raise Skip("RLIMIT_NOFILE hard limit %d < %d" % (hard, need))


def take(c, n):
    out = [c.pending.popleft() for _ in range(n)]
    return out


def test_500_clients():
    n, n_msgs = 500, 100
    raise_nofile(2 * n + 200)
    # all from 127.0.0.1: above the default max_clients_per_address (64)
    with Session("chat.rate=0", "server.max_clients=%d" % (n + 10),
                 "server.max_clients_per_address=0") as s:
        pool = Pool()
        clients = []
        t0 = time.monotonic()
        for i in range(n):
            c = s.client("c%d" % i, welcome=False, timeout=30)
            clients.append(c)
            pool.add(c)
            pool.poll(0)                                  # keep everybody drained
        last = clients[-1]

        unnamed = set(clients)

        def all_named():
            for c in list(unnamed):
                for l in c.all_lines:
                    m = YOU_ARE_RE.fullmatch(l)
                    if m:
                        c.nick = m.group(1)
                        unnamed.discard(c)
                        break
            return not unnamed
        pool.pump(all_named, 60, "the '* you are' line of all %d clients" % n)
        nicks = [c.nick for c in clients]
        check_eq(len(set(x.lower() for x in nicks)), n, "distinct guest nicks")

        # every client: its welcome, its join, the member list, then the later joins, in order
        last_join = "* %s has joined #lobby" % last.nick
        incomplete = set(clients)

        def all_complete():
            for c in list(incomplete):
                if (c.pending and c.pending[-1] == last_join) if c is not last else _members_done(c):
                    incomplete.discard(c)
            return not incomplete
        pool.pump(all_complete, 60, "all join notices")
        for i, c in enumerate(clients):
            check_eq(c.pending.popleft(), "* welcome to echochatd 0.1.0, %d user%s online"
                     % (i + 1, "" if i == 0 else "s"), "%s: welcome" % c.name)
            check(YOU_ARE_RE.fullmatch(c.pending.popleft()), "%s: '* you are'" % c.name)
            check_eq(c.pending.popleft(), "* %s has joined #lobby" % c.nick, "%s: own join" % c.name)
            check_eq(c.pending.popleft(), "* no topic is set for #lobby", "%s: topic" % c.name)
            room, count, names = parse_members(c.pending.popleft()) or (None, 0, [])
            check_eq((room, count), ("#lobby", i + 1), "%s: members line" % c.name)
            while len(names) < count:
                m = MEMBERS_CONT_RE.fullmatch(c.pending.popleft() if c.pending else "")
                check(m, "%s: members list ends after %d of %d names" % (c.name, len(names), count))
                names += m.group(2).split(", ")
            check_eq(sorted(names), sorted(nicks[:i + 1]), "%s: member names" % c.name)
            want = ["* %s has joined #lobby" % x for x in nicks[i + 1:]]
            got = take(c, len(c.pending))
            if got != want:
                raise TestFailure("%s: after the welcome expected %d join notices, got %d (first "
                                  "difference: %r)" % (c.name, len(want), len(got),
                                                       next(((g, w) for g, w in zip(got, want)
                                                             if g != w), None)))
        t_joined = time.monotonic() - t0

        # one sender, 100 messages, everybody else receives all of them in order
        sender = clients[0]
        msgs = ["message %03d from the sender %s" % (k, "." * (k % 37)) for k in range(n_msgs)]
        t1 = time.monotonic()
        sender.send_raw("".join(m + "\r\n" for m in msgs).encode())
        others = clients[1:]
        pool.pump(lambda: all(len(c.pending) >= n_msgs for c in others), 60,
                  "%d messages at %d clients" % (n_msgs, len(others)))
        want = ["<%s> %s" % (sender.nick, m) for m in msgs]
        for c in others:
            got = take(c, len(c.pending))
            check(got == want, "%s: %d lines, first difference %r"
                  % (c.name, len(got), next(((g, w) for g, w in zip(got, want) if g != w), None)))
        t_msgs = time.monotonic() - t1
        sender.sync(timeout=30)                           # and not its own
        last.say("/who")
        room, count, names = parse_members(last.read_line(30)) or (None, 0, [])
        check_eq((room, count), ("#lobby", n), "/who with %d members" % n)
        while len(names) < count:
            names += last.expect_match(MEMBERS_CONT_RE).group(2).split(", ")
        check_eq(sorted(names), sorted(nicks), "/who names")
        print("# %d clients joined in %.1f s, %d x %d lines in %.1f s"
              % (n, t_joined, n_msgs, len(others), t_msgs))
        pool.close()


def _members_done(c):
    """c (the last client) has its complete member list."""
    lines = list(c.all_lines)
    for k, l in enumerate(lines):
        m = parse_members(l)
        if m:
            names = list(m[2])
            for l2 in lines[k + 1:]:
                if len(names) >= m[1]:
                    break
                mc = MEMBERS_CONT_RE.fullmatch(l2)
                if not mc:
                    break
                names += mc.group(2).split(", ")
            return len(names) >= m[1]
    return False


def test_slow_consumer():
    line_len, batch, max_lines = 200, 100, 40000
    with Session("chat.rate=0", "chat.history=0", "chat.max_output=65536") as s:
        slow = s.client("slow", rcvbuf=4096)             # reads its welcome, then never again
        slow_port = slow.sock.getsockname()[1]
        snd = s.client("sender")
        obs = s.client("observer")
        snd.expect("* %s has joined #lobby" % obs.nick)
        pool = Pool([snd, obs])
        quit_line = "* %s has quit (slow consumer)" % slow.nick
        sent = []

        def quit_seen():              # any quit notice of the slow client ends the flood
            return any(l.startswith("* %s has quit" % slow.nick) for l in obs.all_lines[-batch - 5:])

        t0 = time.monotonic()
        while not quit_seen():
            check(len(sent) < max_lines, "the never-reading client was not dropped after %d lines "
                  "(%d bytes)" % (len(sent), len(sent) * line_len))
            lines = ["L%05d " % (len(sent) + k) for k in range(batch)]
            lines = [l + "x" * (line_len - len(l)) for l in lines]
            sent += lines
            snd.send_raw("".join(l + "\r\n" for l in lines).encode())
            want = len(sent)
            pool.pump(lambda: sum(1 for l in obs.all_lines if l.startswith("<")) >= want, 30,
                      "the observer to receive %d lines" % want)
        t_drop = time.monotonic() - t0
        quits = [l for l in obs.all_lines if l.startswith("* %s has quit" % slow.nick)]
        check_eq(quits, [quit_line], "the quit notice of the slow consumer at the observer")
        s.d.wait_for_log(r"warning: chat: #\d+ 127\.0\.0\.1:%d closed \(slow consumer: output "
                         r"queue passed max_output\)" % slow_port)

        # the observer got every line in order, and the quit notice somewhere between them
        got = [l for l in obs.all_lines if l.startswith("<")]
        want = ["<%s> %s" % (snd.nick, l) for l in sent]
        if got != want:
            raise TestFailure("observer: %d lines, first difference %r" % (
                len(got), next(((g, w) for g, w in zip(got, want) if g != w), None)))
        snd.expect(quit_line)
        snd.sync()
        obs.pending.clear()
        obs.sync()

        # the dropped client's socket ends (after what the kernel still held for it)
        data, how = tl.recv_until_eof(slow.sock, timeout=30)
        check(how in ("eof", "reset"), "slow client: %s" % how)
        # what it got is a prefix of the room's traffic (perhaps cut in the middle of a line)
        lines = data.split(b"\r\n")[:-1]
        expect = ["* %s has joined #lobby" % snd.nick, "* %s has joined #lobby" % obs.nick] + want
        check(len(lines) < len(expect), "slow client received all %d lines" % len(lines))
        got = [l.decode("utf-8", "replace") for l in lines]
        if got != expect[:len(got)]:
            raise TestFailure("slow client: first difference %r" % (
                next(((g, w) for g, w in zip(got, expect) if g != w), None),))
        print("# dropped after %d lines (%d KiB) in %.1f s; it had received %d KiB until the %s"
              % (len(sent), len(sent) * line_len // 1024, t_drop, len(data) // 1024, how))
        pool.close()


def test_flood_control():
    n_flood, rate, burst = 200, 20, 5
    with Session("chat.rate=%d" % rate, "chat.burst=%d" % burst, "chat.history=0") as s:
        f = s.client("flooder")
        b = s.client("talker")
        f.expect("* %s has joined #lobby" % b.nick)
        c = s.client("observer")
        for x in (f, b):
            x.expect("* %s has joined #lobby" % c.nick)
        pool = Pool([f, b, c])
        flood = ["flood %03d" % k for k in range(n_flood)]
        want = ["<%s> %s" % (f.nick, l) for l in flood]
        talk = "<%s> quick one" % b.nick

        def floods():
            return sum(1 for l in c.all_lines if l.startswith("<%s> flood " % f.nick))

        t0 = time.monotonic()
        f.send_raw("".join(l + "\r\n" for l in flood).encode())
        pool.pump(lambda: floods() >= 2 * burst, 20, "the first %d flood lines" % (2 * burst))
        check(floods() < n_flood, "all %d flood lines arrived at once" % n_flood)
        t1 = time.monotonic()
        b.say("quick one")
        pool.pump(lambda: talk in c.all_lines, 20, "the talker's line at the observer")
        dt = time.monotonic() - t1
        n_before = floods()
        check(dt < T(1.0), "the talker's line took %.2f s to arrive while the flooder was "
              "throttled" % dt)
        check(n_before < n_flood, "the talker's line arrived only after all %d flood lines" % n_flood)
        pool.pump(lambda: floods() >= n_flood, 30, "all %d flood lines" % n_flood)
        t_all = time.monotonic() - t0
        pool.pump(lambda: sum(1 for l in b.all_lines if l.startswith("<")) >= n_flood, 20,
                  "all %d flood lines at the talker" % n_flood)
        got = [l for l in c.all_lines if l.startswith("<") and l != talk]
        if got != want:
            raise TestFailure("observer: %d flood lines, first difference %r" % (
                len(got), next(((g, w) for g, w in zip(got, want) if g != w), None)))
        min_t = (n_flood - burst) / rate - 2.75
        check(t_all > min_t, "%d lines at rate %d burst %d arrived in %.2f s (expected > %.2f s)"
              % (n_flood, rate, burst, t_all, min_t))
        check_eq([l for l in b.all_lines if l.startswith("<")], want, "talker's lines")
        f.expect(talk)
        f.check_nothing_pending()
        f.sync()                                          # the flooder got none of its lines back
        print("# talker's line after %.2f s (with %d flood lines before it); %d flood lines in %.1f s"
              % (dt, n_before, n_flood, t_all))
        pool.close()


if __name__ == "__main__":
    tl.main([test_500_clients, test_slow_consumer, test_flood_control], per_test_timeout=60)
