#!/usr/bin/env python3
"""Limits: max_clients, idle_timeout, tcp_keepalive, RLIMIT_NOFILE."""

import os
import re
import resource
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from echochatd_testlib import (  # noqa: E402
    KIB, MIB, TCP_ESTABLISHED, Daemon, Skip, T, TestFailure, check, check_eq, connect,
    echo_check, main, pattern_data, peer_str, recv_until_eof, tcp_sockets, wait_until, wrapper)


def expect_turned_away(port):
    """A connection over the limit is accepted and closed at once, without echo."""
    s = connect(port)
    try:
        me = peer_str(s.getsockname())
        try:
            s.sendall(b"over the limit")
        except (BrokenPipeError, ConnectionResetError):
            pass                          # closed so quickly that our write hit the RST
        data, how = recv_until_eof(s, timeout=10)
        check_eq(data, b"", "data echoed to a client over max_clients (%s)" % how)
        return me
    finally:
        s.close()


def test_max_clients():
    with Daemon(overrides=["server.max_clients=3"]) as d:
        port = d.port()
        first = [connect(port) for _ in range(3)]
        try:
            for i, c in enumerate(first):
                echo_check(c, b"client %d\n" % i)
            d.wait_for_log(r"echo: #\d+ \S+ connected$", count=3)
            me = expect_turned_away(port)
            d.wait_for_log(r"warning: echo: %s refused: max_clients \(3\) reached" % re.escape(me))
            check(not d.find_log(r"echo: #\d+ %s connected" % re.escape(me)),
                  "the 4th client was logged as connected")
            for i, c in enumerate(first):
                echo_check(c, b"still served %d\n" % i)
            # a freed slot can be used again
            first[0].close()
            d.wait_for_log(r"closed \(peer closed\)")
            c = connect(port)
            try:
                echo_check(c, b"took the free slot")
                expect_turned_away(port)
            finally:
                c.close()
            for c in first[1:]:
                echo_check(c, b"bye")
        finally:
            for c in first:
                c.close()
        check_eq(d.stop(), 0, "exit status")


def test_max_clients_burst():
    """Many connections at once: never more than max_clients are served."""
    limit = 5
    with Daemon(overrides=["server.max_clients=%d" % limit]) as d:
        port = d.port()
        socks = [connect(port) for _ in range(20)]
        try:
            served = 0
            for s in socks:
                try:
                    s.sendall(b"?")
                except OSError:
                    continue
            for s in socks:
                data, how = b"", None
                s.settimeout(T(10))
                try:
                    data = s.recv(1)
                except ConnectionResetError:
                    data = b""
                if data == b"?":
                    served += 1
            check_eq(served, limit, "clients served with max_clients=%d" % limit)
        finally:
            for s in socks:
                s.close()
        check_eq(d.stop(), 0, "exit status")        # all log lines are out now
        # the refusal warning is rate-limited: 15 refusals in a burst, fewer lines
        refused = d.count_log(r"refused: max_clients \(%d\) reached" % limit)
        check(1 <= refused < len(socks) - limit, "%d 'refused' warnings for %d refusals"
              % (refused, len(socks) - limit))


def test_idle_timeout():
    with Daemon(overrides=["echo.idle_timeout=1"]) as d:
        port = d.port()
        silent = connect(port)
        active = connect(port)
        try:
            me = peer_str(silent.getsockname())
            t0 = time.monotonic()
            result = {}

            def wait_silent():
                try:
                    result["r"] = recv_until_eof(silent, timeout=15)
                except Exception as e:
                    result["e"] = e
                result["t"] = time.monotonic() - t0
                silent.close()             # a well-behaved client closes on EOF

            th = threading.Thread(target=wait_silent, daemon=True)
            th.start()
            # the active client sends every 0.3 s for 3 s and is never cut off
            next_send = time.monotonic()
            end = next_send + 3.0
            n = 0
            while time.monotonic() < end:
                echo_check(active, b"tick %d" % n, timeout=5)
                n += 1
                next_send += 0.3
                pause = next_send - time.monotonic()
                if pause > 0:
                    time.sleep(pause)      # pacing of the client, not a wait for the daemon
            th.join(T(20))
            check("e" not in result, "silent client: %r" % result.get("e"))
            check_eq(result.get("r"), (b"", "eof"), "silent client's end")
            check(0.5 <= result["t"] <= T(5), "silent client closed after %.2f s (idle_timeout=1)"
                  % result["t"])
            m = d.wait_for_log(r"echo: #\d+ %s closed \((.*?)\): (\d+) bytes in, (\d+) bytes out"
                               % re.escape(me))
            check_eq(m.groups(), ("idle timeout", "0", "0"), "close line of the silent client")
            echo_check(active, b"still alive after %d ticks" % n)
        finally:
            silent.close()
            active.close()


def test_idle_timeout_stalled_writer():
    """A client that writes but never reads makes no output progress: it is closed too."""
    chunk = memoryview(pattern_data(256 * KIB))
    cap = 64 * MIB            # far more than the kernel buffers hold: then the daemon buffers
    with Daemon(overrides=["echo.idle_timeout=1"]) as d:
        port = d.port()
        s = connect(port, rcvbuf=64 * KIB)
        try:
            me = peer_str(s.getsockname())
            rx_closed = r"echo: #\d+ %s closed" % re.escape(me)
            s.setblocking(False)
            sent = 0
            deadline = time.monotonic() + T(20)
            closed = False
            while time.monotonic() < deadline and sent < cap:
                try:
                    sent += s.send(chunk)
                except BlockingIOError:
                    if d.find_log(rx_closed):
                        closed = True
                        break
                    time.sleep(0.05)   # poll interval while the daemon decides
                except (ConnectionResetError, BrokenPipeError):
                    closed = True
                    break
            check(sent < cap, "the daemon accepted %d MiB from a client that never reads"
                  % (sent // MIB))
            check(closed, "a stalled client (%d bytes written, nothing read) was not closed "
                  "within %.0f s\n%s" % (sent, T(20), d.tail()))
            m = d.wait_for_log(r"echo: #\d+ %s closed \((.*?)\): \d+ bytes in" % re.escape(me))
            # the reason, optionally followed by ": detail"
            check_eq(m.group(1).split(":")[0], "idle timeout",
                     "close reason of a client that does not read")
        finally:
            s.close()


def _server_side(port, client_port):
    return tcp_sockets(lport=port, rport=client_port, state=TCP_ESTABLISHED)


def test_tcp_keepalive():
    # /proc/net/tcp shows timer 2 (keepalive) with the time left in clock ticks (USER_HZ)
    hz = os.sysconf("SC_CLK_TCK")
    for ka, want_timer in ((300, 2), (0, 0)):
        with Daemon(overrides=["server.tcp_keepalive=%d" % ka]) as d:
            port = d.port()
            c = connect(port)
            try:
                echo_check(c, b"k")
                cport = c.getsockname()[1]
                seen = []

                def timer_is_wanted():
                    ent = _server_side(port, cport)
                    seen[:] = ent
                    return ent and ent[0]["timer"] == want_timer and ent[0]

                try:
                    e = wait_until(timer_is_wanted, 5, "timer %d" % want_timer)
                except TestFailure:
                    raise TestFailure("server socket with tcp_keepalive=%d: timer kind %s, "
                                      "expected %d (/proc/net/tcp: %r)"
                                      % (ka, seen[0]["timer"] if seen else "?", want_timer, seen))
                if ka:
                    left = e["when"] / hz
                    check(ka - 30 <= left <= ka + 1, "keepalive timer fires in %.0f s, expected "
                          "about %d s" % (left, ka))
            finally:
                c.close()


def test_max_clients_lowered_by_rlimit():
    if wrapper():
        raise Skip("file descriptor limits do not apply to a wrapped daemon")

    def low_nofile():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    with Daemon(overrides=["server.max_clients=10000"], preexec_fn=low_nofile) as d:
        port = d.port()
        d.wait_ready()
        check(d.find_log(r"warning: .*max_clients"), "no warning about lowering max_clients:\n"
              + d.tail())
        # still serving, and does not crash when more clients come than descriptors allow
        socks = []
        try:
            for _ in range(80):
                socks.append(connect(port))
            served = 0
            for i, s in enumerate(socks):
                try:
                    s.sendall(b"!")
                    s.settimeout(T(5))
                    if s.recv(1) == b"!":
                        served += 1
                except socket.timeout:
                    raise TestFailure("client %d of 80 was neither served nor closed" % i)
                except OSError:
                    pass
            check(0 < served < 64, "%d of 80 clients served with 64 descriptors" % served)
        finally:
            for s in socks:
                s.close()
        check(d.running(), "daemon died\n" + d.tail())
        c = connect(port)
        try:
            echo_check(c, b"after the crowd left")
        finally:
            c.close()
        check_eq(d.stop(), 0, "exit status")


if __name__ == "__main__":
    main([test_max_clients, test_max_clients_burst, test_idle_timeout,
          test_idle_timeout_stalled_writer, test_tcp_keepalive, test_max_clients_lowered_by_rlimit])
