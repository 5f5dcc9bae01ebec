"""Helpers for the hardening and stress tests of echochatd (Python 3 stdlib only).

Builds on echochatd_testlib (daemon, timeouts, runner) and chatlib (ChatClient):
  - many loopback source addresses (127.0.0.2, 127.0.0.3, ...): a client socket is
    bound to one before connect(), so that neither the ephemeral ports of one
    address nor the daemon's per-address limit run short;
  - /proc readings of the daemon (descriptors, CPU time, RSS);
  - RLIMIT_NOFILE of the test process raised up to its hard limit;
  - many non-blocking connects with a bounded number in flight;
  - a well-behaved client (chat pair + echo) that runs in a thread and checks
    every answer and its latency while a test abuses the daemon.
Nothing here sleeps to wait for the daemon: waits poll a condition against a deadline.
"""

import errno
import os
import re
import resource
import selectors
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import echochatd_testlib as tl  # noqa: E402
from echochatd_testlib import T, TestFailure, Timeout, check  # noqa: E402,F401

# Linux: IP_BIND_ADDRESS_NO_PORT (24) defers the port choice to connect(), which then
# only needs a unique 4-tuple (more connections per source address).
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


# --------------------------------------------------------------------------
# the test process

def raise_nofile(want=None):
    """Raise RLIMIT_NOFILE's soft limit (to `want`, or to the hard limit). Returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if want is None else (want if hard == resource.RLIM_INFINITY else min(want, hard))
    if soft != resource.RLIM_INFINITY and (target == resource.RLIM_INFINITY or soft < target):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def source(i, first=2, count=20):
    """Round-robin loopback source address number i: 127.0.0.first .. 127.0.0.(first+count-1)."""
    return "127.0.0.%d" % (first + i % count)


def socket_from(src):
    """A TCP socket bound to the loopback source address src (port chosen at connect)."""
    s = socket.socket(tl.family_of(src), socket.SOCK_STREAM)
    try:
        if tl.family_of(src) == socket.AF_INET:
            try:
                s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            except OSError:
                pass
        s.bind((src, 0))
    except BaseException:
        s.close()
        raise
    return s


def connect_from(port, src="127.0.0.1", host="127.0.0.1", timeout=10):
    """Connected blocking socket from source address src, with a (scaled) timeout."""
    s = socket_from(src)
    try:
        s.settimeout(T(timeout))
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    return s


def turned_away(port, src="127.0.0.1", host="127.0.0.1", send=b"anyone there?", timeout=5,
                expect=b""):
    """Connect from src; require that the daemon closes at once without sending anything
    (or exactly `expect`, such as the chat service's refusal line).

    Returns (what we received, 'eof'/'reset'/'refused'). Fails if the connection stays
    open for `timeout` s or if data arrives."""
    try:
        s = connect_from(port, src, host, timeout=timeout)
    except ConnectionRefusedError:
        return b"", "refused"
    try:
        if send:
            try:
                s.sendall(send)
            except (BrokenPipeError, ConnectionResetError):
                return b"", "reset"
        try:
            data, how = tl.recv_until_eof(s, timeout=timeout)
        except Timeout:
            raise TestFailure("a connection from %s that should be refused stayed open for %.0f s"
                              % (src, T(timeout)))
        tl.check_eq(data, expect, "data sent to a refused client from %s (then %s)" % (src, how))
        return data, how
    finally:
        s.close()


def served(port, src="127.0.0.1", host="127.0.0.1", payload=None, timeout=10):
    """Connect from src and require an echo; returns the open socket."""
    s = connect_from(port, src, host, timeout=timeout)
    try:
        tl.echo_check(s, payload or ("hello from %s" % src).encode(), timeout=timeout)
    except BaseException:
        s.close()
        raise
    return s


# --------------------------------------------------------------------------
# /proc of the daemon

_rss_note = None


def rss_not_comparable():
    """Why the daemon's RSS says nothing about its own memory use (a reason string), or
    None: under a wrapper (valgrind) RSS is the wrapper's; a sanitizer build (ASan keeps
    freed memory in quarantine, shadow memory) grows its RSS by design."""
    global _rss_note
    if _rss_note is None:
        _rss_note = ""
        if tl.wrapper():
            _rss_note = "the daemon runs under a wrapper"
        else:
            try:
                with open(tl.binary(), "rb") as f:
                    image = f.read()
                for sym, what in ((b"__asan_init", "AddressSanitizer"),
                                  (b"__msan_init", "MemorySanitizer"),
                                  (b"__tsan_init", "ThreadSanitizer")):
                    if sym in image:
                        _rss_note = "the daemon is built with %s" % what
                        break
            except OSError:
                pass
    return _rss_note or None

def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def cpu_seconds(pid):
    """utime + stime of a process in seconds (/proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def nofile_limit(pid):
    """(soft, hard) 'Max open files' of a process from /proc/PID/limits."""
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                p = line.split()
                return p[3], p[4]
    return None


def wait_fds(d, want, timeout=20):
    """Wait until the daemon holds exactly `want` descriptors; returns the count."""
    seen = []

    def ok():
        n = fd_count(d.pid)
        seen.append(n)
        return n == want

    try:
        wait_until_alive(d, ok, timeout, "the daemon's descriptors to return to %d" % want)
    except Timeout:
        raise TestFailure("the daemon holds %d descriptors, expected %d (after %.0f s)\n%s"
                          % (seen[-1], want, T(timeout), d.tail(10)))
    return seen[-1]


def wait_until_alive(d, pred, timeout, what, interval=0.05):
    """wait_until() that fails at once when the daemon has died."""
    def both():
        if not d.running():
            raise TestFailure("the daemon died (status %s) while waiting for %s\n%s"
                              % (d.proc.poll(), what, d.tail()))
        return pred()
    return tl.wait_until(both, timeout, what, interval)


# warnings that are no fault of the tests' subject: the tests may run as root
EXPECTED_WARNINGS = [re.compile(r"running as root: set \[server\] user")]


def unexpected_problems(d, since=0, allow=()):
    """Warning and error log lines since `since`, except EXPECTED_WARNINGS and the
    regexes in `allow`."""
    rxs = EXPECTED_WARNINGS + [re.compile(a) for a in allow]
    return ["%s: %s" % (lvl, msg) for lvl, msg in d.messages(since)
            if lvl in ("warning", "error") and not any(rx.search(msg) for rx in rxs)]


# --------------------------------------------------------------------------
# many connections

class Conn:
    __slots__ = ("sock", "kind", "state", "got", "t0", "index")

    def __init__(self, sock, kind, index):
        self.sock, self.kind, self.index = sock, kind, index
        self.state = "connecting"
        self.got = b""
        self.t0 = time.monotonic()


def open_many(targets, sources, max_inflight=500, timeout=60, per_conn_timeout=30,
              on_connect=None, check_reply=None, reply_len=1):
    """Open len(targets) connections; targets[i] = (kind, port). Non-blocking connects from
    sources[i % len(sources)], at most max_inflight connecting or awaiting their reply at a
    time. on_connect(conn) -> bytes to send once connected; check_reply(conn) -> None while
    the reply is incomplete, True when it is right, or an error string.

    Returns (open Conns, {failure reason: count}); failed sockets are closed."""
    sel = selectors.DefaultSelector()
    done, failures = [], {}
    nxt = 0
    inflight = 0
    deadline = time.monotonic() + T(timeout)
    last_scan = time.monotonic()

    def fail(c, why):
        nonlocal inflight
        failures[why] = failures.get(why, 0) + 1
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        c.state = "failed"
        inflight -= 1

    try:
        while nxt < len(targets) or inflight:
            now = time.monotonic()
            if now > deadline:
                raise Timeout("open_many: %d of %d connections done after %.0f s (%d in flight, "
                              "failures %r)" % (len(done), len(targets), T(timeout), inflight,
                                                failures))
            while nxt < len(targets) and inflight < max_inflight:
                kind, port = targets[nxt]
                s = socket_from(sources[nxt % len(sources)])
                s.setblocking(False)
                c = Conn(s, kind, nxt)
                nxt += 1
                inflight += 1
                err = s.connect_ex(("127.0.0.1", port))
                if err not in (0, errno.EINPROGRESS):
                    fail(c, "connect: " + errno.errorcode.get(err, str(err)))
                    continue
                sel.register(s, selectors.EVENT_WRITE, c)
            for key, ev in sel.select(timeout=0.2):
                c = key.data
                if c.state == "connecting":
                    err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        fail(c, "connect: " + errno.errorcode.get(err, str(err)))
                        continue
                    c.state = "waiting"
                    out = on_connect(c) if on_connect else b""
                    try:
                        if out:
                            c.sock.send(out)       # tiny: fits into an empty send buffer
                    except OSError as e:
                        fail(c, "send: " + (errno.errorcode.get(e.errno) or str(e)))
                        continue
                    sel.modify(c.sock, selectors.EVENT_READ, c)
                    continue
                try:
                    data = c.sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError as e:
                    fail(c, "recv: " + (errno.errorcode.get(e.errno) or str(e)))
                    continue
                if not data:
                    fail(c, "closed by the daemon (EOF) before the reply")
                    continue
                c.got += data
                verdict = check_reply(c) if check_reply else True
                if verdict is None:
                    continue
                if verdict is not True:
                    fail(c, verdict)
                    continue
                c.state = "open"
                sel.unregister(c.sock)
                inflight -= 1
                done.append(c)
            now = time.monotonic()
            if inflight and now - last_scan >= 1.0:
                last_scan = now
                # connections that hang for per_conn_timeout count as failures
                for key in list(sel.get_map().values()):
                    c = key.data
                    if now - c.t0 > T(per_conn_timeout):
                        fail(c, "no %s within %.0f s" % ("connection" if c.state == "connecting"
                                                         else "reply", T(per_conn_timeout)))
    except BaseException:
        for c in done:
            c.sock.close()
        for key in list(sel.get_map().values()):
            key.data.sock.close()
        raise
    finally:
        sel.close()
    return done, failures


def close_all(conns):
    for c in conns:
        try:
            (c.sock if isinstance(c, Conn) else c).close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# a well-behaved client in a thread

class WellBehaved(threading.Thread):
    """Every `period` s: chat client a says "calm N" (b must receive "<a> calm N" as its
    very next line) and the echo client sends "ping N" (and must get it back). Each answer
    must arrive within `max_latency` s (scaled). The first failure stops the thread and is
    kept in .error; .ticks counts complete rounds, .worst the slowest answer."""

    def __init__(self, chat_port, echo_port, room="#calm", period=0.05, max_latency=2.0):
        super().__init__(daemon=True)
        import chatlib
        self.period, self.max_latency = period, T(max_latency)
        self.stop_event = threading.Event()
        self.error = None
        self.ticks = 0
        self.worst = 0.0
        self.a = chatlib.ChatClient(chat_port, "calm-a")
        self.b = chatlib.ChatClient(chat_port, "calm-b")
        self.echo = None
        try:
            for c in (self.a, self.b):
                c.say("/join " + room)
                c.wait_for(chatlib.rx(r"\* members of %s \(\d+\): .*" % room))
            self.a.expect("* %s has joined %s" % (self.b.nick, room))
            self.a.sync()
            self.b.sync()
            self.echo = tl.connect(echo_port)
            tl.echo_check(self.echo, b"warm-up")
        except BaseException:
            self.close()
            raise

    def close(self):
        for c in (self.a, self.b):
            c.close()
        if self.echo is not None:
            self.echo.close()

    def _tick(self, n):
        t0 = time.monotonic()
        msg = "calm %d" % n
        ping = b"ping %d\n" % n
        self.a.say(msg)
        self.echo.sendall(ping)
        line = self.b.read_line(self.max_latency, "<%s> %s" % (self.a.nick, msg))
        if line != "<%s> %s" % (self.a.nick, msg):
            raise TestFailure("well-behaved chat client got %r, expected %r"
                              % (line, "<%s> %s" % (self.a.nick, msg)))
        got = tl.recv_exact(self.echo, len(ping), timeout=max(0.1, self.max_latency
                                                               - (time.monotonic() - t0)))
        if got != ping:
            raise TestFailure("well-behaved echo client got %r, expected %r" % (got, ping))
        lat = time.monotonic() - t0
        self.worst = max(self.worst, lat)
        if lat > self.max_latency:
            raise TestFailure("round %d of the well-behaved client took %.2f s" % (n, lat))

    def run(self):
        n = 0
        nxt = time.monotonic()
        try:
            while not self.stop_event.is_set():
                self._tick(n)
                n += 1
                self.ticks = n
                nxt += self.period
                pause = nxt - time.monotonic()
                if pause > 0:
                    self.stop_event.wait(pause)   # pacing of this client, not a wait for the daemon
                else:
                    nxt = time.monotonic()
        except BaseException as e:
            self.error = "round %d: %s" % (n, e)

    def finish(self, min_ticks=1):
        self.stop_event.set()
        self.join(T(20))
        check(not self.is_alive(), "the well-behaved client is stuck")
        if self.error:
            raise TestFailure("well-behaved client failed: %s" % self.error)
        check(self.ticks >= min_ticks, "the well-behaved client made only %d rounds" % self.ticks)
        # nothing else arrived for b (no garbage leaked into its room) and a got nothing
        self.a.sync()
        self.b.sync()
        tl.echo_check(self.echo, b"final")
        return self.ticks, self.worst
