#!/usr/bin/env python3
"""Cluster ([cluster], doc: the Redis-backed cluster of chat nodes): room messages,
actions, join/part/topic/nick/quit notices, private messages, nick uniqueness,
/who and /rooms and the shared history across nodes; Redis stopped and restarted
(local chat goes on, the queued messages arrive afterwards), Redis down at start,
a node killed with SIGKILL ("node lost"), a node stopped with SIGTERM, garbage
published on the cluster channels, and the [cluster] configuration checks.

Every test starts its own redis-server (no persistence, 127.0.0.1, a free port,
in a temporary directory; stopped by pid at the end, also on failure) and two or
three daemons with chat on 127.0.0.1 port 0, echo off, chat.rate=0,
cluster.heartbeat=1 and a key prefix of its own. The whole file skips when
redis-server is not installed or the daemon was built without hiredis.

Lines from another node arrive asynchronously, so before a test relies on what a
user sees it waits (by polling /who or /rooms, with a deadline) until the node
knows the remote users. From then on lines are checked exactly and in order, and
absence is proved by ordering as in test_chat.py: a /topic reply (sync) or a
marker message sent through the same Redis connection must be the next line.
Until that point only membership notices (joined, left, quit, nick changes, guest
renames) may be skipped, never a message."""

import http.client
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from chatlib import (  # noqa: E402
    ChatClient, MEMBERS_RE, MEMBERS_CONT_RE, rx, start_chat)
import echochatd_testlib as tl  # noqa: E402
from echochatd_testlib import (  # noqa: E402
    EX_CONFIG, EX_OK, Skip, T, TestFailure, Timeout, check, check_eq, free_port, run_cli,
    wait_until)

HB = 1                                   # cluster.heartbeat of every daemon here
LOST_WITHIN = 3 * HB + 2                 # a killed node's users are gone by then (spec: 3 x hb + 1)
REDIS_SERVER = os.environ.get("REDIS_SERVER") or shutil.which("redis-server") \
    or "/usr/bin/redis-server"

CONNECTED_RE = r"notice: cluster: connected to redis 127\.0\.0\.1:%d(?!\d)"
UNREACHABLE_RE = r"warning: cluster: redis 127\.0\.0\.1:%d unreachable: "
METRICS_RE = r"notice: metrics: listening on 127\.0\.0\.1:(\d+)$"
METRICS_ON = ["metrics.enabled=yes", "metrics.port=0", "metrics.bind=127.0.0.1"]

NICK_CHANGE_RE = re.compile(r"\* (\S+) is now known as (\S+)")
# notices about membership that may arrive while the nodes learn of each other, and
# the renaming of a guest whose guestN is held on another node (its form is not fixed)
NOISE_RE = re.compile(r"\* (?:[A-Za-z][A-Za-z0-9_-]* has (?:joined|left) #[A-Za-z0-9_-]+"
                      r"|[A-Za-z][A-Za-z0-9_-]* has quit(?: \(.*\))?"
                      r"|[A-Za-z][A-Za-z0-9_-]* is now known as [A-Za-z][A-Za-z0-9_-]*"
                      r"|you are now .*)"
                      r"|! the nick guest\d+ is (?:taken|in use on another server of the cluster)")
ROOMS_HEAD_RE = re.compile(r"\* (\d+) rooms?:")
ROOM_LINE_RE = re.compile(r"\* (#[A-Za-z0-9_-]+) \((\d+)\)(?:: (.*))?")


# --------------------------------------------------------------------------
# a tiny RESP (Redis protocol) client

class RedisError(TestFailure):
    pass


class Resp:
    """One connection to Redis; call("PUBLISH", chan, payload) returns the decoded reply
    (str for +OK, int, bytes or None for bulk strings, list for arrays)."""

    def __init__(self, port, host="127.0.0.1", timeout=5):
        self.sock = tl.connect(port, host, timeout)
        self.buf = bytearray()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, int):
                a = str(a)
            if isinstance(a, str):
                a = a.encode("utf-8")
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _more(self):
        try:
            chunk = self.sock.recv(1 << 16)
        except socket.timeout:
            raise Timeout("redis: no reply in time")
        if not chunk:
            raise TestFailure("redis closed the connection")
        self.buf += chunk

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            self._more()

    def _exact(self, n):
        while len(self.buf) < n:
            self._more()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError("redis error: %s" % rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n + 2)[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise TestFailure("redis: unexpected reply %r" % line[:60])


def redis_ping(port):
    try:
        with Resp(port, timeout=2) as r:
            return r.call("PING") == "PONG"
    except (OSError, TestFailure):
        return False


# --------------------------------------------------------------------------
# redis-server

class RedisServer:
    """A redis-server in the foreground on 127.0.0.1:port (a free port unless given),
    without persistence, in a temporary directory. Stopped and started by pid."""

    def __init__(self, port=None):
        self.tmpdir = os.path.realpath(tempfile.mkdtemp(prefix="echochatd-redis-"))
        self.logpath = os.path.join(self.tmpdir, "redis.log")
        self.proc = None
        self.pid = 0
        tl.track(self)                             # stopped by pid even if a test fails
        try:
            if port is not None:
                self.port = port
                self.start()
            else:
                for attempt in range(5):           # the free port may be taken meanwhile
                    self.port = free_port()
                    try:
                        self.start()
                        break
                    except TestFailure:
                        if attempt == 4 or "in use" not in self.tail():
                            raise
        except BaseException:
            self.cleanup()
            raise

    def start(self):
        check(not self.running(), "redis-server is running already")
        with open(self.logpath, "ab") as log:
            self.proc = subprocess.Popen(
                [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--daemonize", "no",
                 "--dir", self.tmpdir, "--logfile", ""],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.tmpdir, close_fds=True)
        self.pid = self.proc.pid

        def up():
            if self.proc.poll() is not None:
                raise TestFailure("redis-server on port %d exited with status %s\n%s"
                                  % (self.port, self.proc.returncode, self.tail()))
            return redis_ping(self.port)
        wait_until(up, 15, "redis-server on port %d to answer PING" % self.port, interval=0.05)
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15):
        """SIGTERM by pid and wait for the exit."""
        if self.running():
            os.kill(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(T(timeout))
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(30)
            raise Timeout("redis-server %d did not exit on SIGTERM within %.1f s"
                          % (self.pid, T(timeout)))

    def tail(self, n=10):
        try:
            with open(self.logpath, errors="replace") as f:
                lines = f.read().splitlines()[-n:]
        except OSError:
            lines = []
        return "\n".join("#   | redis: " + l for l in lines)

    def conn(self):
        return Resp(self.port)

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        tl.untrack(self)
        shutil.rmtree(self.tmpdir, ignore_errors=True)


# --------------------------------------------------------------------------
# is there anything to test?

_support = None


def require_cluster():
    """Skip unless redis-server is installed and the daemon was built with hiredis;
    fail if the daemon does not know the [cluster] section at all."""
    global _support
    if not (os.path.isfile(REDIS_SERVER) and os.access(REDIS_SERVER, os.X_OK)):
        raise Skip("redis-server is not installed (%s)" % REDIS_SERVER)
    if _support is None:
        d = tempfile.mkdtemp(prefix="echochatd-probe-")
        try:
            empty = os.path.join(d, "empty.ini")
            open(empty, "w").close()
            r = run_cli(["-t", "-c", empty, "-o", "cluster.enabled=yes",
                         "-o", "cluster.redis=127.0.0.1:1"])
        finally:
            shutil.rmtree(d, ignore_errors=True)
        if r.returncode == EX_CONFIG and "cluster support is not built in" in r.stderr:
            _support = ("skip", "echochatd was built without cluster support (no hiredis)")
        elif r.returncode != EX_OK:
            _support = ("fail", "-t -o cluster.enabled=yes: exit status %d\n# stderr: %r"
                        % (r.returncode, r.stderr[-600:]))
        else:
            _support = ("ok", "")
    kind, why = _support
    if kind == "skip":
        raise Skip(why)
    if kind == "fail":
        raise TestFailure(why)


# --------------------------------------------------------------------------
# nodes, clients and the cluster of one test

class Node:
    def __init__(self, name, d, port, mport=None):
        self.name, self.d, self.port, self.mport = name, d, port, mport

    def __repr__(self):
        return "<node %s pid %d chat %d>" % (self.name, self.d.pid, self.port)


class Cluster:
    """redis-server + daemons n1..nN + the chat clients of one test; all stopped on exit.

        with Cluster(2) as cl:
            a = cl.client("n1", "alice")
            b = cl.client("n2", "bob")
            cl.settle([a, b])
    """

    def __init__(self, nodes=2, extra=(), metrics=False, redis=True):
        require_cluster()
        self.prefix = "t%08x:" % random.getrandbits(32)
        self.nodes = {}
        self.clients = []
        self.redis = None
        self.extra, self.metrics = list(extra), metrics
        try:
            if redis:
                self.redis = RedisServer()
                self.rport = self.redis.port
            else:
                self.rport = free_port()         # nothing listens there (yet)
            for i in range(nodes):
                self.add_node("n%d" % (i + 1), wait_connected=redis)
        except BaseException:
            self.close()
            raise

    def add_node(self, name, wait_connected=True):
        ov = ["chat.rate=0", "cluster.enabled=yes", "cluster.redis=127.0.0.1:%d" % self.rport,
              "cluster.node=" + name, "cluster.heartbeat=%d" % HB,
              "cluster.prefix=" + self.prefix]
        if self.metrics:
            ov += METRICS_ON
        d, port = start_chat(*(ov + self.extra))
        node = Node(name, d, port)
        self.nodes[name] = node
        if self.metrics:
            node.mport = int(d.wait_for_log(METRICS_RE).group(1))
        if wait_connected:
            d.wait_for_log(CONNECTED_RE % self.rport, timeout=15)
        return node

    def __getitem__(self, name):
        return self.nodes[name]

    def client(self, node, nick=None, name=None):
        c = ChatClient(self.nodes[node].port, name or "%s@%s" % (nick or "client", node))
        c.node = node
        self.clients.append(c)
        if nick:
            set_nick(c, nick)
        return c

    def settle(self, clients, room="#lobby", timeout=15):
        """Wait until /who of each client lists exactly these clients' nicks."""
        want = [c.nick for c in clients]
        for c in clients:
            wait_members(c, want, room, timeout)

    def key(self, rest):
        return self.prefix + rest

    def close(self, exc_type=None, exc=None, tb=None):
        for c in self.clients:
            c.close()
        if exc is not None and self.redis is not None and not isinstance(exc, Skip):
            try:
                exc.daemon_tails = getattr(exc, "daemon_tails", []) + [
                    (self.redis.pid, self.redis.tail())]
            except (AttributeError, TypeError):
                pass
        for n in self.nodes.values():
            n.d.__exit__(exc_type, exc, tb)      # the runner prints their log tails
        if self.redis is not None:
            self.redis.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(exc_type, exc, tb)
        return False


def read_until(c, pattern, timeout=10, what=None):
    """Read lines until one matches `pattern` (regex, fullmatch); membership notices
    (NOISE_RE) before it are skipped, anything else fails. Returns the match."""
    deadline = time.monotonic() + T(timeout)
    what = what or "/%s/" % pattern.pattern
    skipped = []
    while True:
        try:
            line = c._read_line_by(deadline, what)
        except Timeout:
            raise Timeout("%s: no line %s within %.1f s; notices skipped: %r"
                          % (c.who(), what, T(timeout), skipped[-6:]))
        m = pattern.fullmatch(line)
        if m:
            return m
        if not NOISE_RE.fullmatch(line):
            raise TestFailure("%s: unexpected line %r while waiting for %s"
                              % (c.who(), line, what))
        skipped.append(line)


def try_nick(c, nick, timeout=10):
    """/nick NICK: True when the change is confirmed, False for '! the nick NICK is taken'."""
    c.say("/nick " + nick)
    taken = "! the nick %s is taken" % nick
    deadline = time.monotonic() + T(timeout)
    while True:
        line = c._read_line_by(deadline, "the answer to /nick %s" % nick)
        m = NICK_CHANGE_RE.fullmatch(line)
        if m and m.group(2) == nick:
            c.nick = nick
            return True
        if line == taken:
            return False
        if not NOISE_RE.fullmatch(line):
            raise TestFailure("%s: unexpected line %r after /nick %s" % (c.who(), line, nick))


def set_nick(c, nick, timeout=10):
    check(try_nick(c, nick, timeout), "%s: /nick %s: the nick is taken" % (c.who(), nick))


def claim_nick(c, nick, timeout):
    """/nick NICK until it succeeds (the nick is being released somewhere)."""
    deadline = time.monotonic() + T(timeout)
    tries = 0
    while True:
        tries += 1
        if try_nick(c, nick):
            return tries
        if time.monotonic() >= deadline:
            raise Timeout("%s: /nick %s still taken after %d tries in %.1f s"
                          % (c.who(), nick, tries, T(timeout)))
        c.wait_data(0.2)                          # read what comes meanwhile, at most 0.2 s


def who(c, timeout=10):
    """/who -> (room, N, [names])."""
    c.say("/who")
    m = read_until(c, MEMBERS_RE, timeout, "the /who reply")
    room, n = m.group(1), int(m.group(2))
    names = [x for x in m.group(3).split(", ") if x]
    while len(names) < n:
        names += c.expect_match(MEMBERS_CONT_RE).group(2).split(", ")
    return room, n, names


def wait_members(c, want, room="#lobby", timeout=15):
    deadline = time.monotonic() + T(timeout)
    while True:
        r, n, names = who(c)
        if r.lower() == room.lower() and n == len(want) and sorted(names) == sorted(want):
            return names
        if time.monotonic() >= deadline:
            raise Timeout("%s: /who still says %s (%d): %s; waited %.1f s for %s"
                          % (c.who(), r, n, ", ".join(names), T(timeout), ", ".join(sorted(want))))
        c.wait_data(0.2)


def rooms(c, timeout=10):
    """/rooms -> {lowercase room: (room as shown, members, topic or None)}."""
    c.say("/rooms")
    n = int(read_until(c, ROOMS_HEAD_RE, timeout, "the /rooms reply").group(1))
    out = {}
    for _ in range(n):
        m = c.expect_match(ROOM_LINE_RE)
        out[m.group(1).lower()] = (m.group(1), int(m.group(2)), m.group(3))
    return out


def wait_rooms(c, want, timeout=15, exact=True):
    """Poll /rooms until it shows `want` ({room: (room, members, topic)}; all the rooms
    with exact=True, at least these otherwise)."""
    want = {k.lower(): v for k, v in want.items()}
    deadline = time.monotonic() + T(timeout)
    while True:
        got = rooms(c)
        if exact and got == want:
            return got
        if not exact and all(got.get(k) == v for k, v in want.items()):
            return got
        if time.monotonic() >= deadline:
            raise Timeout("%s: /rooms still says %r; waited %.1f s for %r"
                          % (c.who(), got, T(timeout), want))
        c.wait_data(0.2)


def expect_members(c, room, names):
    m = c.expect_match(MEMBERS_RE)
    check_eq(m.group(1), room, "%s: room of the members line" % c.who())
    listed = [x for x in m.group(3).split(", ") if x]
    check_eq((int(m.group(2)), sorted(listed)), (len(names), sorted(names)),
             "%s: members of %s" % (c.who(), room))


def sync_all(clients):
    for c in clients:
        c.sync()


def all_expect(clients, line, timeout=10):
    for c in clients:
        c.expect(line, timeout)


def expect_in_order(c, lines, timeout=15):
    """The lines arrive in this order; only membership notices may come between them."""
    deadline = time.monotonic() + T(timeout)
    got = []
    for want in lines:
        while True:
            line = c._read_line_by(deadline, "%r (got %d of %d in order)"
                                   % (want, len(got), len(lines)))
            if line == want:
                got.append(line)
                break
            if not NOISE_RE.fullmatch(line):
                raise TestFailure("%s: got %r while waiting for %r (%d of %d received)"
                                  % (c.who(), line, want, len(got), len(lines)))


def metric(port, name):
    """Sum of the samples of metric `name` in GET /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=T(10))
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        body = r.read().decode("utf-8", "replace")
        check_eq(r.status, 200, "status of GET /metrics")
    finally:
        conn.close()
    total = None
    rxm = re.compile(r"%s(?:\{[^}]*\})? (\S+)" % re.escape(name))
    for line in body.splitlines():
        m = rxm.fullmatch(line)
        if m:
            total = (total or 0) + float(m.group(1))
    if total is None:
        raise TestFailure("no %s in GET /metrics" % name)
    return total


def wait_metric(port, name, pred, timeout, what):
    last = [None]

    def look():
        last[0] = metric(port, name)
        return pred(last[0])
    try:
        wait_until(look, timeout, what, interval=0.1)
    except Timeout as e:
        raise Timeout("%s (last value of %s: %s)" % (e, name, last[0]))
    return last[0]


# --------------------------------------------------------------------------

def test_cross_node_room_chat():
    with Cluster(2) as cl:
        alice = cl.client("n1", "alice")
        carol = cl.client("n1", "carol")
        bob = cl.client("n2", "bob")
        cl.settle([alice, carol, bob])

        alice.say("hi")
        bob.expect("<alice> hi")
        carol.expect("<alice> hi")
        alice.say("/me waves")
        all_expect([bob, carol], "* alice waves")
        bob.say("hello from n2")
        all_expect([alice, carol], "<bob> hello from n2")
        # the marker went through n1's Redis subscription after alice's lines: a copy
        # of them coming back through Redis would be read first
        bob.say("marker 1")
        all_expect([alice, carol], "<bob> marker 1")
        sync_all([alice, bob, carol])

        text = "gr\u00fc\u00dfe \u2713 \u65e5\u672c\tTAB  two  spaces"
        bob.say(text)
        all_expect([alice, carol], "<bob> " + text)

        a_lines = ["a %02d" % i for i in range(50)]
        b_lines = ["b %02d" % i for i in range(50)]
        alice.send_raw("".join(l + "\r\n" for l in a_lines).encode())
        bob.send_raw("".join(l + "\r\n" for l in b_lines).encode())
        bob.expect_lines(["<alice> " + l for l in a_lines])
        alice.expect_lines(["<bob> " + l for l in b_lines])
        got = [carol.read_line(10, "line %d of 100" % (i + 1)) for i in range(100)]
        check_eq([l for l in got if l.startswith("<alice> ")], ["<alice> " + l for l in a_lines],
                 "carol: alice's 50 lines in order")
        check_eq([l for l in got if l.startswith("<bob> ")], ["<bob> " + l for l in b_lines],
                 "carol: bob's 50 lines in order")
        bob.say("marker 2")
        all_expect([alice, carol], "<bob> marker 2")
        sync_all([alice, bob, carol])


def test_cross_node_notices():
    with Cluster(2) as cl:
        alice = cl.client("n1", "alice")
        bob = cl.client("n2", "bob")
        carol = cl.client("n2", "carol")
        cl.settle([alice, bob, carol])

        carol.say("/join #x")
        all_expect([alice, bob, carol], "* carol has left #lobby")
        carol.expect("* carol has joined #x")
        carol.expect("* no topic is set for #x")
        expect_members(carol, "#x", ["carol"])
        wait_rooms(alice, {"#lobby": ("#lobby", 2, None), "#x": ("#x", 1, None)})

        alice.say("/join #x")
        all_expect([alice, bob], "* alice has left #lobby")
        carol.expect("* alice has joined #x")
        alice.expect("* alice has joined #x")
        alice.expect("* no topic is set for #x")
        expect_members(alice, "#x", ["carol", "alice"])

        alice.say("/topic cross-node topic")
        all_expect([alice, carol], "* alice set the topic of #x: cross-node topic")
        carol.say("/topic")
        carol.expect("* topic for #x: cross-node topic")

        alice.say("/nick alicia")
        all_expect([alice, carol], "* alice is now known as alicia")
        alice.nick = "alicia"
        bob.sync()                                  # bob (#lobby) got none of #x's notices

        bob.say("/join #x")
        bob.expect("* bob has left #lobby")
        all_expect([alice, carol], "* bob has joined #x")
        bob.expect("* bob has joined #x")
        bob.expect("* topic for #x: cross-node topic")
        expect_members(bob, "#x", ["carol", "alicia", "bob"])

        alice.say("hi all")
        all_expect([bob, carol], "<alicia> hi all")
        carol.say("/quit gone fishing")
        carol.expect("* bye")
        carol.expect_eof()
        all_expect([alice, bob], "* carol has quit (gone fishing)")
        bob.close()
        alice.expect("* bob has quit")
        alice.sync()
        wait_members(alice, ["alicia"], "#x")


def test_cross_node_private_message():
    with Cluster(2) as cl:
        alice = cl.client("n1", "alice")
        bob = cl.client("n2", "bob")
        cl.settle([alice, bob])

        alice.say("/msg bob hello")
        bob.expect("*alice* hello")
        alice.say("/msg BOB hello \u2713 again")
        bob.expect("*alice* hello \u2713 again")
        alice.say("room marker")                    # a duplicate of the pm would come first
        bob.expect("<alice> room marker")
        bob.say("/msg Alice back at you")
        alice.expect("*bob* back at you")
        alice.say("/msg nobody x")
        alice.expect("! no such nick: nobody")
        sync_all([alice, bob])

        bob.say("/join #elsewhere")                 # private messages reach any room
        alice.expect("* bob has left #lobby")
        bob.wait_for("* members of #elsewhere (1): bob")
        alice.say("/msg bob still there?")
        bob.expect("*alice* still there?")
        bob.say("/msg alice yes")
        alice.expect("*bob* yes")
        sync_all([alice, bob])


def test_lines_after_nick_wait_for_the_claim():
    """A /nick and the lines behind it in one packet: the lines speak as the new nick."""
    with Cluster(2) as cl:
        alice = cl.client("n1", "alice")
        bob = cl.client("n2", "bob")
        cl.settle([alice, bob])
        alice.send_raw(b"/nick alicia\r\nfirst as alicia\r\n/me still alicia\r\n")
        expect_in_order(bob, ["* alice is now known as alicia", "<alicia> first as alicia",
                              "* alicia still alicia"])
        # a refused claim: the following line still comes, under the old nick
        bob.send_raw(b"/nick alicia\r\nstill bob\r\n")
        bob.expect("! the nick alicia is taken")
        alice.wait_for("<bob> still bob")
        sync_all([alice, bob])


def test_cross_node_nick_collision():
    with Cluster(2) as cl:
        alice = cl.client("n1", "Sam")
        bob = cl.client("n2", "bob")
        carol = cl.client("n1", "carol")
        cl.settle([alice, bob, carol])
        with cl.redis.conn() as r:
            check_eq(r.call("GET", cl.key("nick:sam")), b"n1", "owner of %s" % cl.key("nick:sam"))
            ttl = r.call("PTTL", cl.key("node:n1"))
            check(0 < ttl <= 3000 * HB, "PTTL of the presence key %s: %s (want 1..%d)"
                  % (cl.key("node:n1"), ttl, 3000 * HB))

        for taken in ("sam", "SAM", "Sam"):
            bob.say("/nick " + taken)
            bob.expect("! the nick %s is taken" % taken)
        carol.say("/nick BOB")
        carol.expect("! the nick BOB is taken")
        sync_all([alice, bob, carol])

        # two users on two nodes want the same nick at once: exactly one gets it
        for k in range(5):
            nick = "zed%d" % k
            old = {bob: bob.nick, carol: carol.nick}
            bob.say("/nick " + nick)
            carol.say("/nick " + nick)
            winners = set()
            for c in (bob, carol):
                lost = False
                winner = None
                while winner is None or (winner is not c and not lost):
                    line = c.read_line(10, "the outcome of the race for %s" % nick)
                    m = NICK_CHANGE_RE.fullmatch(line)
                    if line == "! the nick %s is taken" % nick and not lost:
                        lost = True
                    elif m and m.group(2) == nick and winner is None and \
                            m.group(1) in old.values():
                        winner = bob if m.group(1) == old[bob] else carol
                    else:
                        raise TestFailure("%s: unexpected %r in the race for %s"
                                          % (c.who(), line, nick))
                check(not (winner is c and lost), "%s: both won and lost %s" % (c.who(), nick))
                winners.add(winner)
            check_eq(len(winners), 1, "winners of the race for %s as seen by the two" % nick)
            w = winners.pop()
            w.nick = nick
            alice.expect("* %s is now known as %s" % (old[w], nick))
            sync_all([alice, bob, carol])

        alice.say("/quit")
        alice.expect("* bye")
        alice.expect_eof()
        all_expect([bob, carol], "* Sam has quit")
        old = bob.nick
        claim_nick(bob, "sam", 5)
        carol.expect("* %s is now known as sam" % old)
        carol.say("/nick Sam")
        carol.expect("! the nick Sam is taken")
        with cl.redis.conn() as r:
            check_eq(r.call("GET", cl.key("nick:sam")), b"n2", "owner of %s" % cl.key("nick:sam"))
        sync_all([bob, carol])


def test_cross_node_rooms():
    with Cluster(2) as cl:
        alice = cl.client("n1", "alice")
        carol = cl.client("n1", "carol")
        bob = cl.client("n2", "bob")
        cl.settle([alice, carol, bob])

        alice.say("/join #OnlyHere")
        all_expect([alice, carol, bob], "* alice has left #lobby")
        alice.expect("* alice has joined #OnlyHere")
        alice.expect("* no topic is set for #OnlyHere")
        expect_members(alice, "#OnlyHere", ["alice"])
        alice.say("/topic secret plans")
        alice.expect("* alice set the topic of #OnlyHere: secret plans")
        want = {"#lobby": ("#lobby", 2, None), "#OnlyHere": ("#OnlyHere", 1, "secret plans")}
        wait_rooms(bob, want)
        wait_rooms(carol, want)

        bob.say("/join #BobRoom")                   # a room that exists on n2 only
        all_expect([bob, carol], "* bob has left #lobby")
        bob.wait_for("* members of #BobRoom (1): bob")
        want = {"#lobby": ("#lobby", 1, None), "#OnlyHere": ("#OnlyHere", 1, "secret plans"),
                "#BobRoom": ("#BobRoom", 1, None)}
        wait_rooms(carol, want)                     # (exact: the header says 3 rooms)
        wait_rooms(alice, want)

        bob.say("/part")                            # #BobRoom is gone everywhere
        carol.expect("* bob has joined #lobby")
        bob.wait_for(rx(r"\* members of #lobby \(2\): .*"))
        want = {"#lobby": ("#lobby", 2, None), "#OnlyHere": ("#OnlyHere", 1, "secret plans")}
        wait_rooms(alice, want)
        wait_rooms(carol, want)
        sync_all([alice, bob, carol])


def test_cross_node_history():
    with Cluster(2) as cl:
        alice = cl.client("n1", "alice")
        alice.say("/join #Hist")
        alice.expect("* alice has left #lobby")
        alice.expect("* alice has joined #Hist")
        alice.expect("* no topic is set for #Hist")
        expect_members(alice, "#Hist", ["alice"])
        lines = ["first", "second \u2713", "third"]
        alice.send_raw("".join(l + "\r\n" for l in lines).encode())
        alice.sync()
        with cl.redis.conn() as r:                  # the stream key is lowercased
            wait_until(lambda: r.call("XLEN", cl.key("history:#hist")) >= 3, 10,
                       "3 entries in the stream %s" % cl.key("history:#hist"))

        dave = cl.client("n2", "dave")
        wait_rooms(dave, {"#lobby": ("#lobby", 1, None), "#Hist": ("#Hist", 1, None)})
        dave.say("/join #Hist")
        dave.expect("* dave has left #lobby")
        dave.expect("* dave has joined #Hist")
        dave.expect("* no topic is set for #Hist")
        expect_members(dave, "#Hist", ["alice", "dave"])
        dave.expect_lines(["<alice> " + l for l in lines])
        dave.sync()
        alice.expect("* dave has joined #Hist")

        dave.say("from n2")
        alice.expect("<dave> from n2")
        alice.say("/me nods")
        dave.expect("* alice nods")
        sync_all([alice, dave])

        erin = cl.client("n1", "erin")              # history from both nodes, on n1
        erin.say("/join #hist")
        erin.expect("* erin has left #lobby")
        erin.expect("* erin has joined #Hist")
        erin.expect("* no topic is set for #Hist")
        expect_members(erin, "#Hist", ["alice", "dave", "erin"])
        erin.expect_lines(["<alice> " + l for l in lines] + ["<dave> from n2", "* alice nods"])
        erin.sync()
        all_expect([alice, dave], "* erin has joined #Hist")
        sync_all([alice, dave])


def test_redis_restart():
    with Cluster(2) as cl:
        alice = cl.client("n1", "alice")
        amy = cl.client("n1", "amy")
        bob = cl.client("n2", "bob")
        cl.settle([alice, amy, bob])
        marks = {n: cl[n].d.mark() for n in ("n1", "n2")}

        cl.redis.stop()
        t_down = time.monotonic()
        for n in ("n1", "n2"):
            cl[n].d.wait_for_log(UNREACHABLE_RE % cl.rport, since=marks[n], timeout=15)
        check(cl["n1"].d.running() and cl["n2"].d.running(), "a daemon died with Redis")

        # local chat goes on; what n1's users say waits in n1's queue for Redis
        outage = []
        alice.say("during 1")
        amy.expect("<alice> during 1")
        outage.append("<alice> during 1")
        amy.say("/me is still here")
        alice.expect("* amy is still here")
        outage.append("* amy is still here")
        batch = ["during %d" % i for i in range(2, 12)]
        alice.send_raw("".join(l + "\r\n" for l in batch).encode())
        amy.expect_lines(["<alice> " + l for l in batch])
        outage += ["<alice> " + l for l in batch]
        bob.say("bob during the outage")
        sync_all([alice, amy, bob])

        cl.redis.start()                            # the same port, empty
        for n in ("n1", "n2"):
            cl[n].d.wait_for_log(CONNECTED_RE % cl.rport, since=marks[n], timeout=20)
        t_up = time.monotonic()
        if t_up - t_down < 29:
            for n in ("n1", "n2"):
                c = cl[n].d.count_log(UNREACHABLE_RE % cl.rport, since=marks[n])
                check(c == 1, "%s logged the unreachable warning %d times in %.0f s"
                      % (n, c, t_up - t_down))

        expect_in_order(bob, outage, timeout=20)    # the queued messages, in order
        expect_in_order(alice, ["<bob> bob during the outage"], timeout=20)
        expect_in_order(amy, ["<bob> bob during the outage"], timeout=20)
        cl.settle([alice, amy, bob], timeout=20)

        alice.say("after")
        bob.expect("<alice> after")
        amy.expect("<alice> after")
        bob.say("welcome back")
        all_expect([alice, amy], "<bob> welcome back")
        bob.say("/msg amy pm after")
        amy.expect("*bob* pm after")
        sync_all([alice, amy, bob])


def test_redis_down_at_start():
    with Cluster(1, redis=False) as cl:
        d1 = cl["n1"].d
        d1.wait_for_log(UNREACHABLE_RE % cl.rport, timeout=15)
        t_warn = time.monotonic()
        alice = cl.client("n1", "alice")
        amy = cl.client("n1", "amy")
        cl.settle([alice, amy])
        alice.say("before redis")
        amy.expect("<alice> before redis")
        amy.say("/me waits")
        alice.expect("* amy waits")
        sync_all([alice, amy])

        mark = d1.mark()
        cl.redis = RedisServer(port=cl.rport)
        d1.wait_for_log(CONNECTED_RE % cl.rport, since=mark, timeout=20)
        if time.monotonic() - t_warn < 29:
            c = d1.count_log(UNREACHABLE_RE % cl.rport)
            check(c == 1, "n1 logged the unreachable warning %d times within 30 s" % c)
        with cl.redis.conn() as r:                  # the queue went to the stream
            wait_until(lambda: r.call("XLEN", cl.key("history:#lobby")) >= 2, 10,
                       "2 entries in %s" % cl.key("history:#lobby"))

        cl.add_node("n2")
        bob = cl.client("n2", name="bob@n2")
        bob.expect_lines(["<alice> before redis", "* amy waits"])    # the history
        set_nick(bob, "bob")
        cl.settle([alice, amy, bob])
        bob.say("hello n1")
        all_expect([alice, amy], "<bob> hello n1")
        alice.say("hello n2")
        bob.expect("<alice> hello n2")
        amy.expect("<alice> hello n2")
        sync_all([alice, amy, bob])


def test_node_killed():
    with Cluster(3, metrics=True) as cl:
        alice = cl.client("n1", "alice")
        bob = cl.client("n2", "bob")
        carol = cl.client("n3", "carol")
        cl.settle([alice, bob, carol])
        wait_metric(cl["n1"].mport, "echochatd_cluster_nodes", lambda v: v == 2, 10,
                    "n1 to count 2 other nodes")

        n3 = cl["n3"].d
        n3.send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        check_eq(n3.wait(10), -signal.SIGKILL, "exit status of n3")
        alice.expect("* carol has quit (node lost)", timeout=LOST_WITHIN)
        bob.expect("* carol has quit (node lost)", timeout=LOST_WITHIN)
        took = time.monotonic() - t0
        check(took <= T(LOST_WITHIN), "the quit came %.1f s after the SIGKILL" % took)
        for c in (alice, bob):
            check_eq(sorted(who(c)[2]), ["alice", "bob"], "%s: /who after n3 was lost" % c.who())
        wait_metric(cl["n1"].mport, "echochatd_cluster_nodes", lambda v: v == 1, 5,
                    "n1 to count 1 other node")

        dan = cl.client("n1", name="dan@n1")
        claim_nick(dan, "carol", LOST_WITHIN)       # n3's nick is free now
        cl.settle([alice, bob, dan])
        dan.say("I am carol now")
        all_expect([alice, bob], "<carol> I am carol now")
        sync_all([alice, bob, dan])


def garbage_payloads():
    big = b"A" * (100 * 1024)
    return [
        b"",
        b"\xff" + os.urandom(255),
        b"\x00\x01\x02\t\t\t",
        b"1",
        b"1\t",
        b"\t\t\t\t\t\t",
        b"2\tmsg\tn9\t-\tmallory\t#lobby\twrong version",
        b"10\tmsg\tn9\t-\tmallory\t#lobby\twrong version",
        b"1\tmsg\tn9\t-\tbad nick!\t#lobby\tx",
        b"1\tmsg\tn9\t-\tmallory\t#bad.room\tx",
        b"1\tmsg\tbad node!\t-\tmallory\t#lobby\tx",
        b"1\tmsg\tn9\t-\tmallory\t#lobby\t" + big,
        b"1\tme\tn9\t-\tmallory\t#lobby\t" + big,
        b"1\tmsg\tn9\t-\tmallory\t#lobby\tline one\r\n<alice> forged",
        b"1\tmsg\tn9\t-\tmallory\t#lobby\tline one\n* bob has quit",
        b"1\tmsg\tn9\t-\tmallory\t#lobby\tcarriage\rreturn",
        b"1\tmsg\tn9\t-\tmallory\t#lobby\tnul\x00byte",
        b"1\tmsg\tn9",
        b"1\tbogus\tn9\tmallory\t#lobby",
        b"1\tjoin\tn9\tmal\nlory\t#lobby",
        b"1\tjoin\tn9\tmallory\t#lobby\textra",
        b"1\tjoin\tn9\tbad nick!\t#lobby",
        b"1\tpart\tn9\tmallory",
        b"1\tquit\tn9\tmallory",
        b"1\tnick\tn9\tmallory\tbad nick!\t#lobby",
        b"1\ttopic\tn9\tbad nick!\t#lobby\tevil topic",
        b"1\tpm\tn9\tmallory\talice",
        b"1\tpm\tn9\tbad nick!\talice\thello",
        b"1\tpm\tn9\tmallory\talice\thi\r\nthere",
        b"1\tbye",
        b"1\thb\tn9\tnot-a-number\nbad nick!\t#lobby",
        b"1\thb\tbad node!\t1\nmallory\t#lobby",
        b"1\tmsg\tn9\t-\tmallory\t#lobby\t" + big + b"\r\n" + big,
    ]


def test_garbage_on_channels():
    with Cluster(2, metrics=True) as cl:
        alice = cl.client("n1", "alice")
        bob = cl.client("n2", "bob")
        cl.settle([alice, bob])
        before = {n: metric(cl[n].mport, "echochatd_cluster_messages_dropped_total")
                  for n in ("n1", "n2")}
        channels = [(cl.key("ctl"), 2), (cl.key("room:#lobby"), 2), (cl.key("node:n1"), 1)]
        with cl.redis.conn() as r:
            for chan, subscribers in channels:
                for p in garbage_payloads():
                    got = r.call("PUBLISH", chan, p)
                    check_eq(got, subscribers, "PUBLISH %s: number of subscribers" % chan)
        # the garbage reached each node before this line (one Redis, published earlier)
        alice.say("still alive")
        bob.expect("<alice> still alive")
        bob.say("me too")
        alice.expect("<bob> me too")
        bob.say("/msg alice pm works")
        alice.expect("*bob* pm works")
        sync_all([alice, bob])
        for n in ("n1", "n2"):
            check(cl[n].d.running(), "%s died of the garbage" % n)
            wait_metric(cl[n].mport, "echochatd_cluster_messages_dropped_total",
                        lambda v, b=before[n]: v > b, 10, "%s to count dropped messages" % n)
        cl.settle([alice, bob])                     # no ghost user came in
        wait_rooms(alice, {"#lobby": ("#lobby", 2, None)})
        check_eq(metric(cl["n1"].mport, "echochatd_cluster_connected"), 1,
                 "echochatd_cluster_connected of n1")


def test_node_stopped_gracefully():
    with Cluster(2) as cl:
        alice = cl.client("n1", "alice")
        carol = cl.client("n1", "carol")
        bob = cl.client("n2", "bob")
        cl.settle([alice, carol, bob])

        n2 = cl["n2"].d
        n2.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        bob.expect("* server shutting down")
        bob.expect_eof()
        bob.close()
        # promptly: before n2's presence could have expired (3 x heartbeat)
        all_expect([alice, carol], "* bob has quit (server shutting down)", timeout=3 * HB)
        took = time.monotonic() - t0
        check(took < T(3 * HB), "the quit came %.1f s after the SIGTERM" % took)
        check_eq(n2.wait(20), 0, "exit status of n2 after SIGTERM")
        for c in (alice, carol):
            check_eq(sorted(who(c)[2]), ["alice", "carol"], "%s: /who after n2 stopped" % c.who())
        dan = cl.client("n1", name="dan@n1")
        claim_nick(dan, "bob", LOST_WITHIN)
        cl.settle([alice, carol, dan])
        sync_all([alice, carol, dan])


def test_config_checks():
    require_cluster()
    d = tempfile.mkdtemp(prefix="echochatd-cluster-conf-")
    try:
        path = os.path.join(d, "c.ini")
        bad = [("node", "a b"), ("node", "x" * 65), ("node", "n/1"),
               ("prefix", "a b"), ("prefix", "p" * 65), ("prefix", ""),
               ("heartbeat", "0"), ("heartbeat", "3601"), ("heartbeat", "abc"),
               ("redis", "no-port"), ("redis", "relative/path.sock"), ("redis", "host:99999"),
               ("enabled", "maybe")]
        for key, value in bad:
            with open(path, "w") as f:              # the bad value on line 3
                f.write("[cluster]\n%s\n%s = %s\n"
                        % ("; -" if key == "enabled" else "enabled = yes", key, value))
            r = run_cli(["-t", "-c", path])
            errs = tl.error_lines(r.stderr)
            check(r.returncode == EX_CONFIG, "[cluster] %s = %r: exit status %d, expected 78\n"
                  "# stderr: %r" % (key, value, r.returncode, r.stderr[-400:]))
            want = "%s:3: [cluster] %s: " % (path, key)
            check(any(e.startswith(want) for e in errs),
                  "[cluster] %s = %r: no error line starting %r in %r" % (key, value, want, errs))
        good = [("node", "web1.example_2-x:7008"), ("node", "n" * 64), ("prefix", "p" * 64),
                ("prefix", "app:chat:"), ("heartbeat", "1"), ("heartbeat", "3600"),
                ("redis", "127.0.0.1:6379"), ("redis", "[::1]:6380"),
                ("redis", "/run/redis/redis.sock"), ("redis", "localhost:6379")]
        for key, value in good:
            with open(path, "w") as f:
                f.write("[cluster]\nenabled = yes\n%s = %s\n" % (key, value))
            r = run_cli(["-t", "-c", path])
            check(r.returncode == EX_OK, "[cluster] %s = %r: exit status %d, expected 0\n"
                  "# stderr: %r" % (key, value, r.returncode, r.stderr[-400:]))
        r = run_cli(["-T", "-c", os.devnull, "-o", "cluster.node=a", "-o", "cluster.heartbeat=7"])
        check_eq(r.returncode, EX_OK, "-T exit status")
        section = re.search(r"^\[cluster\]\n((?:[^\[\n].*\n?)*)", r.stdout, re.M)
        check(section is not None, "no [cluster] section in -T output:\n%s" % r.stdout[-600:])
        keys = dict(l.split(" = ", 1) if " = " in l else (l.rstrip(" ="), "")
                    for l in section.group(1).splitlines() if l.strip())
        for k, v in (("enabled", "no"), ("redis", "127.0.0.1:6379"), ("node", "a"),
                     ("prefix", "echochat:"), ("heartbeat", "7")):
            check_eq(keys.get(k), v, "-T: [cluster] %s" % k)
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    tl.main([test_config_checks, test_cross_node_room_chat, test_cross_node_notices,
             test_cross_node_private_message, test_lines_after_nick_wait_for_the_claim,
             test_cross_node_nick_collision,
             test_cross_node_rooms, test_cross_node_history, test_redis_restart,
             test_redis_down_at_start, test_node_killed, test_garbage_on_channels,
             test_node_stopped_gracefully],
            per_test_timeout=90)
