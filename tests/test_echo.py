#!/usr/bin/env python3
"""Echo behaviour (RFC 862): correctness, binary data, concurrency, half-close, IPv6, logging."""

import os
import re
import selectors
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from echochatd_testlib import (  # noqa: E402
    KIB, MIB, Daemon, Sender, Skip, T, TestFailure, Timeout, check, check_eq, connect,
    echo_check, ipv6_available, main, pattern_data, peer_str, recv_exact, recv_until_eof,
    set_linger0)


def test_one_byte():
    with Daemon() as d:
        s = connect(d.port())
        try:
            echo_check(s, b"\x00")
            echo_check(s, b"A")
            s.shutdown(socket.SHUT_WR)
            data, how = recv_until_eof(s)
            check_eq((data, how), (b"", "eof"), "after shutdown(SHUT_WR)")
        finally:
            s.close()


def test_several_lines():
    lines = [b"hello\n", b"world\r\n", b"\n", b"a longer line with some words in it\n",
             b"no newline at the end"]
    with Daemon() as d:
        s = connect(d.port())
        try:
            for l in lines:                      # one at a time
                echo_check(s, l)
            blob = b"".join(lines) * 50          # all at once
            echo_check(s, blob)
        finally:
            s.close()


def test_8mib_binary():
    data = pattern_data(8 * MIB)
    check_eq(len(set(data)), 256, "distinct byte values in the test data")
    with Daemon() as d:
        s = connect(d.port())
        try:
            snd = Sender(s, data, shut_wr=True)
            snd.start()
            got, how = recv_until_eof(s, timeout=60, limit=len(data))
            snd.finish()
            if got != data:
                i = next((k for k in range(min(len(got), len(data))) if got[k] != data[k]),
                         min(len(got), len(data)))
                raise TestFailure("received %d of %d bytes; first difference at offset %d"
                                  % (len(got), len(data), i))
            check_eq(how, "eof", "end of the echo")
        finally:
            s.close()
        d.wait_for_log(r"closed \(peer closed\): %d bytes in, %d bytes out" % (len(data), len(data)))


def test_200_concurrent_clients():
    n_clients, size = 200, 64 * KIB
    # 200 clients from one address: above the default max_clients_per_address (64)
    with Daemon(overrides=["server.max_clients_per_address=0"]) as d:
        port = d.port()
        sel = selectors.DefaultSelector()
        clients = []
        try:
            for i in range(n_clients):
                s = connect(port, timeout=30)
                s.setblocking(False)
                c = {"sock": s, "data": os.urandom(size), "sent": 0, "recv": bytearray(),
                     "eof": False, "i": i}
                clients.append(c)
                sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
            # every client is connected at the same time
            d.wait_for_log(r"echo: #\d+ 127\.0\.0\.1:\d+ connected", count=n_clients, timeout=30)
            deadline = time.monotonic() + T(60)
            open_clients = n_clients
            while open_clients:
                if time.monotonic() > deadline:
                    short_ = [c["i"] for c in clients if not c["eof"]]
                    raise Timeout("%d clients unfinished, e.g. #%d with %d/%d bytes back"
                                  % (len(short_), short_[0], len(clients[short_[0]]["recv"]), size))
                for key, ev in sel.select(timeout=1.0):
                    c = key.data
                    s = c["sock"]
                    if ev & selectors.EVENT_WRITE and c["sent"] < size:
                        try:
                            c["sent"] += s.send(c["data"][c["sent"]:c["sent"] + 16 * KIB])
                        except BlockingIOError:
                            pass
                        if c["sent"] == size:
                            s.shutdown(socket.SHUT_WR)
                            sel.modify(s, selectors.EVENT_READ, c)
                    if ev & selectors.EVENT_READ:
                        try:
                            chunk = s.recv(64 * KIB)
                        except BlockingIOError:
                            continue
                        except ConnectionResetError:
                            raise TestFailure("client %d: connection reset after %d bytes"
                                              % (c["i"], len(c["recv"])))
                        if chunk:
                            c["recv"] += chunk
                            check(len(c["recv"]) <= size, "client %d: too much data" % c["i"])
                        else:
                            c["eof"] = True
                            sel.unregister(s)
                            open_clients -= 1
            for c in clients:
                if bytes(c["recv"]) != c["data"]:
                    raise TestFailure("client %d: echo differs (%d of %d bytes)"
                                      % (c["i"], len(c["recv"]), size))
        finally:
            for c in clients:
                c["sock"].close()
            sel.close()
        d.wait_for_log(r"closed \(peer closed\): %d bytes in, %d bytes out" % (size, size),
                       count=n_clients, timeout=30)


def test_half_close():
    with Daemon() as d:
        port = d.port()
        # small: everything is sent before the FIN
        s = connect(port)
        try:
            s.sendall(b"0123456789")
            s.shutdown(socket.SHUT_WR)
            data, how = recv_until_eof(s)
            check_eq(data, b"0123456789", "echo after half-close")
            check_eq(how, "eof", "end of stream")
        finally:
            s.close()
        # large: the server still owes most of it when the FIN arrives
        data = pattern_data(2 * MIB)
        s = connect(port)
        try:
            snd = Sender(s, data, shut_wr=True)
            snd.start()
            got, how = recv_until_eof(s, timeout=60, limit=len(data))
            snd.finish()
            check(got == data, "echo after half-close: got %d of %d bytes (equal prefix: %s)"
                  % (len(got), len(data), got == data[:len(got)]))
            check_eq(how, "eof", "end of stream")
            # the socket must stay usable for reading only: more recv calls keep returning b''
            check_eq(s.recv(10), b"", "recv after EOF")
        finally:
            s.close()


def test_ipv6():
    if not ipv6_available():
        raise Skip("::1 cannot be bound on this host")
    with Daemon(host="::1") as d:
        port = d.port(host="::1")
        s = connect(port, host="::1")
        try:
            me = peer_str(s.getsockname())
            d.wait_for_log(r"echo: #\d+ %s connected$" % re.escape(me))
            echo_check(s, b"over IPv6\n")
            echo_check(s, pattern_data(100 * KIB))
            s.shutdown(socket.SHUT_WR)
            check_eq(recv_until_eof(s), (b"", "eof"), "EOF after half-close")
        finally:
            s.close()
        d.wait_for_log(r"echo: #\d+ %s closed \(peer closed\): %d bytes in, %d bytes out"
                       % (re.escape(me), 10 + 100 * KIB, 10 + 100 * KIB))
        # nothing listens on IPv4
        try:
            socket.create_connection(("127.0.0.1", port), timeout=T(5)).close()
            raise TestFailure("127.0.0.1:%d accepts although only ::1 is configured" % port)
        except ConnectionRefusedError:
            pass


def test_connection_log_lines():
    with Daemon() as d:
        port = d.port()
        s = connect(port)
        try:
            me = peer_str(s.getsockname())
            m = d.wait_for_log(r"^\S+ \S+ info: echo: #(\d+) %s connected$" % re.escape(me))
            cid = m.group(1)
            echo_check(s, b"12345")
            echo_check(s, b"67")
        finally:
            s.close()
        m = d.wait_for_log(r"^\S+ \S+ info: echo: #%s %s closed \(peer closed\): "
                           r"(\d+) bytes in, (\d+) bytes out, (\d+\.\d\d) s$" % (cid, re.escape(me)))
        check_eq((m.group(1), m.group(2)), ("7", "7"), "byte counts in the close line")
        check(float(m.group(3)) < T(30), "implausible duration %s" % m.group(3))
        # a second client gets a different id
        s = connect(port)
        try:
            me2 = peer_str(s.getsockname())
            m2 = d.wait_for_log(r"echo: #(\d+) %s connected$" % re.escape(me2))
            check(m2.group(1) != cid, "two clients share id #%s" % cid)
        finally:
            s.close()


def test_reset_by_peer_logged():
    with Daemon() as d:
        port = d.port()
        s = connect(port)
        me = peer_str(s.getsockname())
        echo_check(s, b"abc")
        set_linger0(s)
        s.close()                                 # RST
        d.wait_for_log(r"echo: #\d+ %s closed \(connection reset by peer\): 3 bytes in, 3 bytes out"
                       % re.escape(me))
        # the daemon is fine afterwards
        s = connect(port)
        try:
            echo_check(s, b"still there")
        finally:
            s.close()


def test_interleaved_clients():
    """Two clients' streams never mix."""
    with Daemon() as d:
        port = d.port()
        a, b = connect(port), connect(port)
        try:
            for i in range(50):
                a.sendall(b"A" * 1000)
                b.sendall(b"B" * 777)
                check_eq(recv_exact(a, 1000), b"A" * 1000, "client A echo")
                check_eq(recv_exact(b, 777), b"B" * 777, "client B echo")
        finally:
            a.close()
            b.close()


def test_client_vanishes_mid_echo():
    """A client resets while the daemon still writes to it (EPIPE/ECONNRESET; SIGPIPE is
    ignored): the daemon lives on and serves others."""
    with Daemon() as d:
        port = d.port()
        for i in range(5):
            s = connect(port, rcvbuf=64 * KIB)
            try:
                s.settimeout(T(10))
                # fill the pipeline in both directions without reading
                s.setblocking(False)
                sent = 0
                deadline = time.monotonic() + T(10)
                while sent < 4 * MIB and time.monotonic() < deadline:
                    try:
                        sent += s.send(b"v" * (256 * KIB))
                    except BlockingIOError:
                        break
                set_linger0(s)
            finally:
                s.close()                 # RST with data unread on both sides
        c = connect(port)
        try:
            echo_check(c, b"still alive")
        finally:
            c.close()
        d.wait_for_log(r"closed \((connection reset by peer|error: [^)]*)\)", count=5)
        check(d.running(), "daemon died\n" + d.tail())
        check_eq(d.stop(), 0, "exit status")


def test_bind_host_name():
    with Daemon(host="localhost", default_listen=False,
                overrides=["echo.bind=localhost", "echo.port=0"]) as d:
        m = d.wait_for_log(r"echo: listening on (127\.0\.0\.1|\[::1\]):(\d+)$")
        host = "::1" if m.group(1) == "[::1]" else "127.0.0.1"
        s = connect(int(m.group(2)), host=host)
        try:
            echo_check(s, b"by name")
        finally:
            s.close()


if __name__ == "__main__":
    main([test_one_byte, test_several_lines, test_8mib_binary, test_200_concurrent_clients,
          test_half_close, test_ipv6, test_connection_log_lines, test_reset_by_peer_logged,
          test_interleaved_clients, test_client_vanishes_mid_echo, test_bind_host_name])
