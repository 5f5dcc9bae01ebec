#!/usr/bin/env python3
"""Stress: 10,000 concurrent connections (echo and chat); connect/close storms and hostile
floods at the chat port while a well-behaved client checks every answer.

Clients use the loopback source addresses 127.0.0.2.. (bound before connect), so that the
ephemeral ports of one address do not run short."""

import os
import re
import resource
import selectors
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import chatlib  # noqa: E402
import echochatd_testlib as tl  # noqa: E402
from chatlib import DO, IAC, SB, WILL, DONT, WONT  # noqa: E402
from echochatd_testlib import (  # noqa: E402
    KIB, MIB, Daemon, T, TestFailure, check, check_eq, connect, echo_check, rss_kib,
    set_linger0, wrapper)
from stresslib import (  # noqa: E402
    WellBehaved, close_all, fd_count, open_many, raise_nofile, rss_not_comparable,
    socket_from, source, unexpected_problems, wait_fds)

CHAT_ON = ["chat.bind=127.0.0.1", "chat.port=0"]
WELCOME = b"* welcome to echochatd "


def plan_connections(want=10000):
    """How many connections this machine allows: (count, reason it was scaled down or None)."""
    soft = raise_nofile()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = soft if hard == resource.RLIM_INFINITY else hard
    n, why = want, None
    if hard < want + 200:
        n, why = max(100, hard - 300), "RLIMIT_NOFILE hard limit %d" % hard
    try:
        with open("/proc/sys/fs/file-nr") as f:
            used, _, fmax = (int(x) for x in f.read().split())
        if fmax - used < 2 * n + 2000:          # our end and the daemon's end of each
            n, why = max(100, (fmax - used - 2000) // 2), "fs.file-max %d (%d in use)" % (fmax, used)
    except (OSError, ValueError):
        pass
    if wrapper() and n > 1000:
        n, why = 1000, "the daemon runs under a wrapper (%s)" % os.environ.get("ECHOCHATD_WRAPPER")
    return n - n % 2, why


def test_ten_thousand_connections():
    n, why = plan_connections(10000)
    if why:
        print("# scaled down to %d connections: %s" % (n, why))
    rooms = max(1, n // 2 // 20)
    with Daemon(config="", overrides=CHAT_ON + [
            "server.max_clients=12000", "server.max_clients_per_address=0", "chat.rate=0",
            "chat.history=0", "echo.backlog=1024", "chat.backlog=1024"]) as d:
        eport, cport = d.port("echo"), d.port("chat")
        d.wait_ready()
        fd0, rss0 = fd_count(d.pid), rss_kib(d.pid)
        targets = [("echo", eport) if i % 2 == 0 else ("chat", cport) for i in range(n)]
        sources = [source(i, 2, 20) for i in range(20)]

        def on_connect(c):
            if c.kind == "echo":
                return b"e"
            # Every chat client moves on from #lobby at once, to one of n/40 rooms (about
            # 20 members each): in one room the join notices alone would be n^2/2 lines.
            return b"/join #s%d\r\n" % (c.index % rooms)

        def check_reply(c):
            if c.kind == "echo":
                return True if c.got == b"e" else "echo sent %r" % c.got[:20]
            if b"\r\n" not in c.got:
                return None if len(c.got) < 200 else "no line end in %r" % c.got[:60]
            first = c.got.split(b"\r\n", 1)[0]
            return True if first.startswith(WELCOME) else "first chat line %r" % first[:80]

        t0 = time.monotonic()
        conns = []
        try:
            conns, failures = open_many(targets, sources, max_inflight=500, timeout=60,
                                        on_connect=on_connect, check_reply=check_reply)
            took = time.monotonic() - t0
            check(not failures, "%d of %d connections failed: %r"
                  % (sum(failures.values()), n, failures))
            check_eq(len(conns), n, "connections open")
            wait_fds(d, fd0 + n, timeout=20)    # every connection is a client of the daemon
            rss1 = rss_kib(d.pid)
            print("# %d connections (%d echo, %d chat) open in %.1f s; daemon RSS %d -> %d KiB"
                  % (n, n // 2, n // 2, took, rss0, rss1))
            print("# RSS per idle connection: %.1f KiB" % ((rss1 - rss0) / n))
            if rss_not_comparable():
                print("# RSS not checked: %s" % rss_not_comparable())
            else:
                check((rss1 - rss0) / n < 64, "%.1f KiB of RSS per idle connection"
                      % ((rss1 - rss0) / n))
            bad = d.find_log(r".*refused.*")
            check(not bad, "refusals: %s" % (bad and bad.group(0)))
            # the daemon still answers at once with everybody connected
            t1 = time.monotonic()
            c = connect(eport)
            try:
                echo_check(c, b"one more", timeout=10)
            finally:
                c.close()
            check(time.monotonic() - t1 < T(5), "a fresh echo took %.1f s with %d clients"
                  % (time.monotonic() - t1, n))
            # a sample of the idle echo clients still echo
            for c in [x for x in conns if x.kind == "echo"][::max(1, n // 40)]:
                c.sock.setblocking(True)
                echo_check(c.sock, b"sample %d" % c.index, timeout=10)
        finally:
            close_all(conns)
        t2 = time.monotonic()
        wait_fds(d, fd0, timeout=60)
        print("# all closed; descriptors back to %d after %.1f s" % (fd0, time.monotonic() - t2))
        # (a lowered max_clients is expected when the limit was scaled down)
        bad = unexpected_problems(d, allow=[r"^max_clients = \d+ does not fit"])
        check(not bad, "warnings/errors in the log: %r" % bad[:3])
        check_eq(d.stop(), 0, "exit status")


# --------------------------------------------------------------------------

class Storm(threading.Thread):
    """n connect+close in a row (echo and chat alternately, from 127.0.0.2..21): a third
    close with RST, a third after sending a few bytes, a third plainly."""

    def __init__(self, eport, cport, n):
        super().__init__(daemon=True)
        self.eport, self.cport, self.n = eport, cport, n
        self.done = 0
        self.failures = {}
        self.error = None

    def run(self):
        try:
            for i in range(self.n):
                s = socket_from(source(i, 2, 20))
                try:
                    s.settimeout(T(10))
                    s.connect(("127.0.0.1", self.cport if i % 2 else self.eport))
                    if i % 3 == 0:
                        set_linger0(s)
                    elif i % 3 == 1:
                        s.send(b"hello and goodbye\r\n")
                    self.done += 1
                except OSError as e:
                    k = type(e).__name__
                    self.failures[k] = self.failures.get(k, 0) + 1
                finally:
                    s.close()
        except BaseException as e:
            self.error = e


class RecordingChatClient(chatlib.ChatClient):
    """A ChatClient that records lines violating the output rules (CRLF, valid UTF-8)
    instead of failing at once, so that a flood can go on and the test reports them at
    the end, after its other checks."""

    def __init__(self, *a, **kw):
        self.violations = []
        super().__init__(*a, **kw)

    def _parse(self):
        while True:
            try:
                return super()._parse()
            except TestFailure as e:
                if "IAC IAC" in str(e):       # _strip_iac did not consume it: cannot go on
                    raise
                self.violations.append(str(e))  # the bad line is consumed: parse the rest


def drain(c):
    """Read what a ChatClient has waiting now, without blocking (sets c.eof at EOF)."""
    sel = selectors.DefaultSelector()
    sel.register(c.sock, selectors.EVENT_READ)
    try:
        while not c.eof and sel.select(0):
            c.recv_once()
    finally:
        sel.close()


def flood(items, timeout=60):
    """items: [(ChatClient, payload)]. Send every payload concurrently (non-blocking) while
    reading whatever the daemon sends back (parsed and checked by the ChatClient)."""
    sel = selectors.DefaultSelector()
    state = {}
    for c, payload in items:
        c.sock.setblocking(False)
        state[c] = [memoryview(payload), 0]
        sel.register(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
    left = len(items)
    deadline = time.monotonic() + T(timeout)
    try:
        while left:
            check(time.monotonic() < deadline, "flood: %d clients still sending after %.0f s"
                  % (left, T(timeout)))
            for key, ev in sel.select(0.5):
                c = key.data
                if ev & selectors.EVENT_READ:
                    if not c.recv_once():
                        raise TestFailure("%s: the daemon closed the connection (%s) during the "
                                          "flood (%d of %d bytes sent)"
                                          % (c.who(), c.eof, state[c][1], len(state[c][0])))
                if ev & selectors.EVENT_WRITE:
                    data, off = state[c]
                    try:
                        state[c][1] += c.sock.send(data[off:off + 64 * KIB])
                    except BlockingIOError:
                        pass
                    if state[c][1] == len(data):
                        sel.modify(c.sock, selectors.EVENT_READ, c)
                        left -= 1
    finally:
        sel.close()
        for c, _ in items:
            c.sock.setblocking(True)
            c.sock.settimeout(T(20))


def test_storm_and_garbage():
    with Daemon(config="", overrides=CHAT_ON + ["chat.rate=0", "chat.history=0"]) as d:
        eport, cport = d.port("echo"), d.port("chat")
        d.wait_ready()
        rss0 = rss_kib(d.pid)
        wb = WellBehaved(cport, eport)
        hostile = []
        try:
            wb.start()

            def client(kind, k):
                c = RecordingChatClient(cport, "%s%d" % (kind, k), telnet=True)
                hostile.append(c)
                room = "#%s%d" % (kind, k)        # a room of its own: no broadcast amplification
                c.say("/join " + room)
                c.wait_for(chatlib.rx(r"\* members of %s \(1\): .*" % room))
                return c

            garbage = [client("junk", k) for k in range(20)]
            longs = [client("long", k) for k in range(3)]
            nuls = [client("nul", k) for k in range(2)]
            negs = [client("neg", k) for k in range(2)]
            subs = [client("sub", k) for k in range(2)]
            tail = b"\r\n/topic\r\n"
            neg = b"".join(bytes([IAC, WILL, x, IAC, DO, x]) for x in range(256))
            noff = os.urandom(MIB).replace(bytes([IAC]), b"\x00")    # no IAC: no SE either
            items = [(c, os.urandom(MIB)) for c in garbage]
            items += [(c, b"L" * MIB + tail) for c in longs]
            items += [(c, b"\x00" * MIB + tail) for c in nuls]
            items += [(c, neg * (MIB // len(neg)) + tail) for c in negs]
            items += [(c, bytes([IAC, SB]) + noff) for c in subs]

            storm = Storm(eport, cport, 3000)
            t0 = time.monotonic()
            storm.start()
            flood(items, timeout=60)
            storm.join(T(60))
            check(not storm.is_alive(), "the connect/close storm is stuck (%d done)" % storm.done)
            t_storm = time.monotonic() - t0
            if storm.error:
                raise TestFailure("storm: %r" % storm.error)
            check(not storm.failures, "storm connects failed: %r" % storm.failures)
            check(d.running(), "the daemon died\n" + d.tail())

            # the over-long lines: one error each, the connection stays, then /topic
            for c in longs + nuls:
                _, skipped = c.wait_for(chatlib.SYNC_RE, timeout=20)
                check_eq(skipped, ["! line too long (at most 512 bytes): discarded"],
                         "%s: lines before the /topic reply" % c.who())
            # telnet negotiation floods: one answer per option, never more
            for c in negs:
                c.wait_for(chatlib.SYNC_RE, timeout=20)
                want = {bytes([IAC, DONT, x]) for x in range(256)} | \
                    {bytes([IAC, WONT, x]) for x in range(256)}
                check(len(c.iac) == len(set(c.iac)) == 512 and set(c.iac) == want,
                      "%s: %d telnet answers (%d distinct, %d expected ones) for 512 options "
                      "asked %d times each" % (c.who(), len(c.iac), len(set(c.iac)),
                                               len(set(c.iac) & want), MIB // len(neg)))
            t_flood = time.monotonic() - t0       # sent, and the daemon got to the end
            # everyone is still connected (the SB floods and the garbage, too)
            for c in garbage + subs:
                drain(c)
                check(c.eof is None, "%s: closed by the daemon (%s)" % (c.who(), c.eof))
            rss1 = rss_kib(d.pid)

            # the well-behaved client goes on for a few more rounds, then is checked
            n0 = wb.ticks
            tl.wait_until(lambda: wb.ticks >= n0 + 10 or wb.error, 10, "more calm rounds")
            ticks, worst = wb.finish(min_ticks=20)
            print("# storm of 3000 in %.1f s, %d floods of 1 MiB in %.1f s; well-behaved client: "
                  "%d rounds, slowest %.0f ms; daemon RSS %d -> %d KiB"
                  % (t_storm, len(items), t_flood, ticks, 1000 * worst, rss0, rss1))
            # what the daemon sent the hostile clients must follow the rules, too; and the
            # same deterministically: an unknown command name, longer than the daemon keeps,
            # made of multi-byte characters, must not be cut inside a character
            problems = [v for c in hostile for v in c.violations]
            probes = []
            p = longs[0]
            for name in ("\u00e9" * 40, "ab" + "\u65e5" * 20):
                before = len(p.violations)
                p.say("/" + name)
                p.say("/topic")
                _, skipped = p.wait_for(chatlib.SYNC_RE, timeout=10)
                if len(p.violations) > before:
                    probes.append("the answer to the unknown command /%s... (%d bytes "
                                    "of UTF-8): %s" % (name[:3], len(name.encode()),
                                                       p.violations[before]))
                else:
                    check(len(skipped) == 1 and skipped[0].startswith("! unknown command: /"),
                          "answer to an unknown command: %r" % skipped)
            # the daemon read every byte of the unterminated subnegotiations (it sees them
            # when they close)
            for c in subs:
                me = tl.peer_str(c.sock.getsockname())
                c.close()
                m = d.wait_for_log(r"chat: #\d+ %s closed \((.*?)\): (\d+) bytes in"
                                   % re.escape(me))
                want = len(("/join #%s\r\n" % c.name).encode()) + 2 + MIB
                check_eq((m.group(1), int(m.group(2))), ("peer closed", want),
                         "%s: close reason and bytes read" % c.who())
            problems = probes + problems
            if problems:
                raise TestFailure("%d invalid lines sent to clients; first: %s"
                                  % (len(problems), "\n".join(problems[:3])))
        finally:
            for c in hostile:
                c.close()
            wb.close()
        c = connect(eport)
        try:
            echo_check(c, b"still up")
        finally:
            c.close()
        check_eq(d.stop(), 0, "exit status")


if __name__ == "__main__":
    raise_nofile()
    tl.main([test_ten_thousand_connections, test_storm_and_garbage], per_test_timeout=90)
