#!/usr/bin/env python3
"""Back-pressure: a client that writes without reading must not make the daemon buffer
without bound; once it reads, it gets every byte back in order."""

import os
import selectors
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from echochatd_testlib import (  # noqa: E402
    KIB, MIB, Daemon, T, TestFailure, Timeout, check, check_eq, connect, echo_check, main,
    pattern_data, rss_kib)

TOTAL = 16 * MIB
MAX_GROWTH_KIB = 10 * 1024
BLOCKED_FOR = 2.0          # the send side counts as stalled after this long without progress


def flood_without_reading(d, s, data, deadline_s=60):
    """Non-blocking writes until everything is written or nothing moved for BLOCKED_FOR s.

    Returns (bytes written, peak RSS KiB seen while writing/stalled)."""
    s.setblocking(False)
    sent = 0
    peak = rss_kib(d.pid)
    last_progress = time.monotonic()
    deadline = time.monotonic() + T(deadline_s)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_WRITE)
    try:
        while sent < len(data):
            now = time.monotonic()
            if now - last_progress >= BLOCKED_FOR:
                break
            if now > deadline:
                raise Timeout("flood: neither finished nor stalled within %.0f s (%d bytes)"
                              % (T(deadline_s), sent))
            peak = max(peak, rss_kib(d.pid))
            if not sel.select(timeout=0.1):
                continue
            try:
                n = s.send(data[sent:sent + 256 * KIB])
            except BlockingIOError:
                continue
            except (ConnectionResetError, BrokenPipeError) as e:
                raise TestFailure("connection broken while flooding after %d bytes: %r" % (sent, e))
            if n:
                sent += n
                last_progress = time.monotonic()
        # let the daemon settle in its stalled state and look at it once more
        settle = time.monotonic() + 0.5
        while time.monotonic() < settle:
            peak = max(peak, rss_kib(d.pid))
            sel.select(timeout=0.1)
    finally:
        sel.close()
    return sent, peak


def read_back_while_writing(s, data, sent, timeout=60):
    """Write the rest of data while reading; require every byte back, in order, then EOF."""
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    got = 0
    shut = False
    mv = memoryview(data)
    deadline = time.monotonic() + T(timeout)
    try:
        while True:
            if time.monotonic() > deadline:
                raise Timeout("read-back: %d of %d bytes echoed, %d written, before the deadline"
                              % (got, len(data), sent))
            for key, ev in sel.select(timeout=1.0):
                if ev & selectors.EVENT_WRITE:
                    if sent < len(data):
                        try:
                            sent += s.send(mv[sent:sent + 256 * KIB])
                        except BlockingIOError:
                            pass
                    if sent == len(data) and not shut:
                        s.shutdown(socket.SHUT_WR)
                        shut = True
                        sel.modify(s, selectors.EVENT_READ)
                if ev & selectors.EVENT_READ:
                    try:
                        chunk = s.recv(1 * MIB)
                    except BlockingIOError:
                        continue
                    except ConnectionResetError:
                        raise TestFailure("connection reset after %d of %d bytes echoed" % (got, len(data)))
                    if not chunk:
                        check_eq(got, len(data), "bytes echoed before EOF")
                        return
                    n = len(chunk)
                    if got + n > len(data):
                        raise TestFailure("more bytes echoed than sent (%d > %d)" % (got + n, len(data)))
                    if chunk != mv[got:got + n]:
                        raise TestFailure("echo differs from the data in the window %d..%d" % (got, got + n))
                    got += n
    finally:
        sel.close()


def test_flood_without_reading():
    data = pattern_data(TOTAL)
    with Daemon() as d:
        port = d.port()
        # a small receive buffer on our side keeps the kernel from absorbing the flood,
        # so the daemon's own buffering is what gets measured
        s = connect(port, rcvbuf=64 * KIB)
        try:
            echo_check(s, b"warm-up")
            before = rss_kib(d.pid)
            sent, peak = flood_without_reading(d, s, data)
            growth = peak - before
            print("# wrote %.1f MiB without reading; RSS %d KiB -> peak %d KiB (+%d KiB)"
                  % (sent / MIB, before, peak, growth))
            check(d.running(), "daemon died during the flood\n" + d.tail())
            check(growth < MAX_GROWTH_KIB, "daemon RSS grew by %d KiB (limit %d KiB) while the "
                  "client did not read" % (growth, MAX_GROWTH_KIB))
            read_back_while_writing(s, data, sent)
        finally:
            s.close()
        n = TOTAL + len(b"warm-up")
        d.wait_for_log(r"closed \(peer closed\): %d bytes in, %d bytes out" % (n, n))
        check_eq(d.stop(), 0, "exit status")


def test_stalled_client_does_not_block_others():
    """While one client is stalled by back-pressure, another is served normally."""
    data = pattern_data(8 * MIB)
    with Daemon() as d:
        port = d.port()
        stalled = connect(port, rcvbuf=64 * KIB)
        other = connect(port)
        try:
            sent, _ = flood_without_reading(d, stalled, data)
            for i in range(20):
                echo_check(other, os.urandom(1000 + i), timeout=10)
            read_back_while_writing(stalled, data, sent)
        finally:
            stalled.close()
            other.close()


if __name__ == "__main__":
    main([test_flood_without_reading, test_stalled_client_does_not_block_others])
