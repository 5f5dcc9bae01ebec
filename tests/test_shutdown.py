#!/usr/bin/env python3
"""Graceful shutdown on SIGTERM/SIGINT: drain, shutdown_timeout, second signal, quick restart."""

import os
import re
import signal
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from echochatd_testlib import (  # noqa: E402
    KIB, MIB, TCP_TIME_WAIT, Daemon, Receiver, Sender, T, TestFailure, check, check_eq, connect,
    echo_check, main, pattern_data, peer_str, recv_until_eof, tcp_sockets, unsent_bytes,
    wait_sendq_empty, wait_until)


def test_idle_daemon_sigterm_and_sigint():
    for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")):
        with Daemon() as d:
            port = d.port()
            d.wait_ready()
            t0 = time.monotonic()
            rc = d.stop(timeout=10, sig=sig)
            check_eq(rc, 0, "exit status after %s" % name)
            check(time.monotonic() - t0 < T(5), "idle daemon took %.1f s to exit on %s"
                  % (time.monotonic() - t0, name))
            d.wait_for_log(r"notice: shutting down on %s: 0 clients to drain$" % name)
            d.wait_for_log(r"notice: exiting$")


def test_sigterm_after_client_finished_writing():
    """Client writes 1 MiB (reading concurrently is allowed, but it may lag), all of it is
    acknowledged by the server's kernel, then SIGTERM: the client must get all 1 MiB back
    and then a clean EOF (never a reset); the daemon exits 0."""
    data = pattern_data(1 * MIB)
    with Daemon() as d:
        s = connect(d.port())
        try:
            me = peer_str(s.getsockname())
            rcv = Receiver(s)
            snd = Sender(s, data)
            snd.start()
            # Normally the kernel buffers absorb 1 MiB and we read nothing before the signal;
            # if they do not, back-pressure stalls the sender and we must start reading.
            if not snd.done.wait(T(3)):
                print("# 1 MiB did not fit into the socket buffers: reading before SIGTERM")
                rcv.start()
            snd.finish()                 # all 1 MiB handed to the kernel
            wait_sendq_empty(s)          # ... and acknowledged by the server side
            mark = d.mark()
            d.send_signal(signal.SIGTERM)
            d.wait_for_log(r"shutting down on SIGTERM: 1 clients to drain$", since=mark)
            if rcv.ident is None:
                rcv.start()              # only now start reading
            got, how = rcv.finish()
            check(got == data, "after SIGTERM the client got %d of %d bytes (prefix equal: %s)"
                  % (len(got), len(data), got == data[:len(got)]))
            check_eq(how, "eof", "end of the echo after SIGTERM")
        finally:
            s.close()                    # our FIN lets the daemon finish draining
        check_eq(d.wait(timeout=10), 0, "exit status")
        m = d.wait_for_log(r"echo: #\d+ %s closed \((.*?)\): (\d+) bytes in, (\d+) bytes out"
                           % re.escape(me))
        check_eq(m.groups(), ("shutdown", str(len(data)), str(len(data))), "close line")


def test_sigterm_with_data_in_flight():
    """16 MiB in flight when SIGTERM arrives (the client reads slowly, so back-pressure keeps
    most of it in the pipeline): the client receives a prefix of what it sent that covers at
    least everything the server's kernel had acknowledged at the signal, then a clean EOF."""
    data = pattern_data(16 * MIB)
    with Daemon() as d:
        s = connect(d.port(), rcvbuf=64 * KIB)
        try:
            rcv = Receiver(s, slow=(16 * KIB, 0.005))
            snd = Sender(s, data, chunk=16 * KIB, shut_wr=True)
            rcv.start()
            snd.start()
            wait_until(lambda: rcv.received >= 256 * KIB or snd.done.is_set(), 20,
                       "some echo to arrive")
            check(not snd.done.is_set(), "the sender finished before SIGTERM: nothing in flight")
            sent_before = snd.sent
            acked = sent_before - unsent_bytes(s)       # lower bound of what the server got
            mark = d.mark()
            d.send_signal(signal.SIGTERM)
            d.wait_for_log(r"shutting down on SIGTERM: 1 clients to drain$", since=mark)
            rcv.full_speed.set()
            snd.finish()          # the daemon keeps reading (and discarding) until our FIN
            got, how = rcv.finish()
            print("# %d bytes sent, %d acknowledged at SIGTERM, %d echoed"
                  % (len(data), acked, len(got)))
            check(got == data[:len(got)], "echo is not a prefix of the sent data")
            check(len(got) >= acked, "echo has %d bytes, but %d had been acknowledged before "
                  "SIGTERM" % (len(got), acked))
            check_eq(how, "eof", "end of the echo after SIGTERM")
        finally:
            s.close()
        check_eq(d.wait(timeout=15), 0, "exit status")


def test_shutdown_timeout_idle_client():
    timeout = 2
    with Daemon(overrides=["server.shutdown_timeout=%d" % timeout]) as d:
        port = d.port()
        s = connect(port)
        try:
            me = peer_str(s.getsockname())
            echo_check(s, b"hi")
            t0 = time.monotonic()
            d.send_signal(signal.SIGTERM)
            # our FIN comes at once: nothing is owed
            data, how = recv_until_eof(s, timeout=10)
            t_eof = time.monotonic() - t0
            check_eq((data, how), (b"", "eof"), "what the idle client sees after SIGTERM")
            # new connections are refused during the drain
            d.wait_for_log(r"shutting down on SIGTERM: 1 clients to drain$")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=T(5)).close()
                if d.running():
                    raise TestFailure("a new connection was accepted during the drain")
            except ConnectionRefusedError:
                pass
            # we never close: the daemon gives up after shutdown_timeout and exits 0
            rc = d.wait(timeout=timeout + 10)
            elapsed = time.monotonic() - t0
            check_eq(rc, 0, "exit status")
            print("# EOF after %.2f s, exit after %.2f s" % (t_eof, elapsed))
            check(t_eof < T(timeout), "the client saw EOF only after %.2f s" % t_eof)
            check(elapsed >= timeout - 0.5, "daemon exited after %.2f s, before shutdown_timeout=%d"
                  % (elapsed, timeout))
            check(elapsed <= T(timeout + 2), "daemon took %.2f s to exit (shutdown_timeout=%d)"
                  % (elapsed, timeout))
            m = d.wait_for_log(r"echo: #\d+ %s closed \((.*?)\): \d+ bytes in" % re.escape(me))
            # the reason, optionally followed by ": detail"
            check_eq(m.group(1).split(":")[0], "shutdown timeout",
                     "close reason of a peer that never closed")
        finally:
            s.close()


def test_second_signal_exits_promptly():
    for first, second, name in ((signal.SIGTERM, signal.SIGTERM, "TERM+TERM"),
                                (signal.SIGINT, signal.SIGTERM, "INT+TERM")):
        with Daemon(overrides=["server.shutdown_timeout=60"]) as d:
            s = connect(d.port())
            try:
                echo_check(s, b"x")
                mark = d.mark()
                d.send_signal(first)
                d.wait_for_log(r"shutting down on SIG(TERM|INT): 1 clients to drain$", since=mark)
                check_eq(recv_until_eof(s, timeout=10), (b"", "eof"), "client after the first signal")
                check(d.running(), "daemon exited after the first signal although a client is open")
                t0 = time.monotonic()
                d.send_signal(second)
                rc = d.wait(timeout=10)
                check_eq(rc, 0, "%s: exit status" % name)
                check(time.monotonic() - t0 < T(3), "%s: second signal took %.1f s"
                      % (name, time.monotonic() - t0))
            finally:
                s.close()


def test_restart_same_port_with_time_wait():
    with Daemon() as d1:
        port = d1.port()
        clients = [connect(port) for _ in range(5)]
        try:
            for c in clients:
                echo_check(c, b"some data " * 100)
            d1.send_signal(signal.SIGTERM)
            for c in clients:
                # the server sent its FIN first; our FIN completes the close
                check_eq(recv_until_eof(c, timeout=10), (b"", "eof"), "client after SIGTERM")
                c.close()
        finally:
            for c in clients:
                c.close()
        check_eq(d1.wait(timeout=15), 0, "first daemon exit status")
    tw = tcp_sockets(lport=port, state=TCP_TIME_WAIT)
    check(tw, "no TIME_WAIT socket on the server port %d after the shutdown: the server did not "
          "close first" % port)
    with Daemon(default_listen=False, overrides=["echo.bind=127.0.0.1", "echo.port=%d" % port]) as d2:
        check_eq(d2.port(timeout=10), port, "port of the restarted daemon")
        check(tcp_sockets(lport=port, state=TCP_TIME_WAIT),
              "TIME_WAIT vanished before the restart; the test proves nothing")
        c = connect(port)
        try:
            echo_check(c, b"after restart")
        finally:
            c.close()
        check_eq(d2.stop(), 0, "second daemon exit status")


if __name__ == "__main__":
    main([test_idle_daemon_sigterm_and_sigint, test_sigterm_after_client_finished_writing,
          test_sigterm_with_data_in_flight, test_shutdown_timeout_idle_client,
          test_second_signal_exits_promptly, test_restart_same_port_with_time_wait])
