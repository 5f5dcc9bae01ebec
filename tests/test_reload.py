#!/usr/bin/env python3
"""SIGHUP: reload the configuration file (plus the -o overrides) without disturbing clients."""

import errno
import os
import re
import signal
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from echochatd_testlib import (  # noqa: E402
    Daemon, Skip, T, TestFailure, check, check_eq, connect, echo_check, free_port,
    ipv6_available, main, peer_str, recv_until_eof, try_connect, wait_for_file_line, wait_until)


def cfg(port, bind="127.0.0.1", extra=""):
    return "[echo]\nbind = %s\nport = %d\n%s" % (bind, port, extra)


def start_on_free_port(make_config, overrides=None, attempts=3):
    """Start a daemon whose config names a fixed (free) port; retry if somebody took it."""
    for _ in range(attempts):
        port = free_port()
        d = Daemon(config=make_config(port), default_listen=False, overrides=overrides)
        try:
            d.wait_for_log(r"echo: listening on 127\.0\.0\.1:%d$" % port, timeout=20)
            d.wait_ready()
            return d, port
        except TestFailure:
            d.cleanup()
            if "Address already in use" not in "\n".join(d.log_lines()):
                raise
    raise TestFailure("no free port found in %d attempts" % attempts)


def hup(d, ok=True, timeout=20):
    """SIGHUP and wait for the outcome; returns the log mark from before the signal."""
    mark = d.mark()
    d.send_signal(signal.SIGHUP)
    # (the daemon may name the file: "reloading configuration from FILE")
    d.wait_for_log(r"notice: reloading configuration\b", since=mark, timeout=timeout)
    if ok:
        d.wait_for_log(r"notice: configuration reloaded$", since=mark, timeout=timeout)
    else:
        d.wait_for_log(r"error: reload failed, keeping the old configuration \(\d+ errors?\)$",
                       since=mark, timeout=timeout)
    return mark


def expect_refused(port, host="127.0.0.1"):
    s, err = try_connect(port, host, timeout=5)
    if s is not None:
        s.close()
        raise TestFailure("%s:%d still accepts connections" % (host, port))
    check_eq(errno.errorcode.get(err, err), "ECONNREFUSED", "connect to %s:%d" % (host, port))


def test_reload_port_change():
    d, p1 = start_on_free_port(cfg)
    with d:
        old = connect(p1)
        try:
            echo_check(old, b"before reload")
            p2 = free_port()
            d.write_config(cfg(p2))
            mark = hup(d)
            d.wait_for_log(r"echo: listening on 127\.0\.0\.1:%d$" % p2, since=mark)
            d.wait_for_log(r"echo: stopped listening on 127\.0\.0\.1:%d$" % p1, since=mark)
            new = connect(p2)
            try:
                echo_check(new, b"on the new port")
            finally:
                new.close()
            expect_refused(p1)
            echo_check(old, b"the old connection still echoes")
            me = re.escape(peer_str(old.getsockname()))
            check(not d.find_log(r"echo: #\d+ %s closed" % me), "the old client was closed by "
                  "the reload:\n" + d.tail())
        finally:
            old.close()
        check_eq(d.stop(), 0, "exit status")


def test_reload_broken_file_keeps_old_config():
    d, p1 = start_on_free_port(cfg)
    with d:
        old = connect(p1)
        try:
            echo_check(old, b"x")
            p2 = free_port()
            broken = ("[echo]\n"                 # 1
                      "bind = 127.0.0.1\n"       # 2
                      "port = %d\n"              # 3
                      "backlog = many\n"         # 4
                      "colour = red\n"           # 5
                      "[nosuch]\n") % p2         # 6
            d.write_config(broken)
            mark = hup(d, ok=False)
            path = re.escape(d.config_path)
            for want in (r'error: %s:4: \[echo\] backlog: "many" is not a number$' % path,
                         r"error: %s:5: \[echo\] colour: unknown key$" % path,
                         r"error: %s:6: \[nosuch\]: unknown section$" % path):
                check(d.find_log(want, since=mark), "no log line /%s/\n%s" % (want, d.tail()))
            check(d.find_log(r"reload failed, keeping the old configuration \(3 errors\)$", since=mark),
                  "reload failure does not report 3 errors\n" + d.tail())
            # the error lines come before the summary
            lines = d.log_lines(mark)
            i_sum = max(i for i, l in enumerate(lines) if "reload failed" in l)
            i_err = max(i for i, l in enumerate(lines) if re.search(path + r":\d+: ", l))
            check(i_err < i_sum, "error lines logged after the 'reload failed' line")
            check(not d.find_log(r"configuration reloaded", since=mark), "'configuration reloaded' "
                  "logged for a broken file")
            # still serving on the old port, nothing on the new one
            c = connect(p1)
            try:
                echo_check(c, b"still on the old port")
            finally:
                c.close()
            expect_refused(p2)
            echo_check(old, b"old connection fine")
            # fixing the file makes the next reload work
            d.write_config(cfg(p1, extra="idle_timeout = 100\n"))
            hup(d)
            echo_check(old, b"after the good reload")
        finally:
            old.close()
        # a config file that disappeared is a failed reload too
        os.unlink(d.config_path)
        mark = hup(d, ok=False)
        check(d.find_log(r"error: %s: cannot read: No such file or directory$" % re.escape(d.config_path),
                         since=mark), "missing file not reported\n" + d.tail())
        c = connect(p1)
        try:
            echo_check(c, b"y")
        finally:
            c.close()
        check_eq(d.stop(), 0, "exit status")


def test_unchanged_port_never_refuses():
    d, p1 = start_on_free_port(cfg)
    with d:
        stop = threading.Event()
        results = {"ok": 0, "errors": []}
        lock = threading.Lock()

        def hammer():
            while not stop.is_set():
                try:
                    s = socket.create_connection(("127.0.0.1", p1), timeout=T(10))
                except OSError as e:
                    with lock:
                        results["errors"].append("connect: %r" % e)
                    continue
                try:
                    s.sendall(b"p")
                    if s.recv(1) != b"p":
                        raise OSError("no echo")
                    with lock:
                        results["ok"] += 1
                except OSError as e:
                    with lock:
                        results["errors"].append("echo: %r" % e)
                finally:
                    s.close()

        threads = [threading.Thread(target=hammer, daemon=True) for _ in range(2)]
        long_lived = connect(p1)
        try:
            for t in threads:
                t.start()
            for i in range(6):
                n_before = results["ok"]
                hup(d)
                # make sure connections are attempted between the reloads as well
                deadline = time.monotonic() + T(10)
                while results["ok"] < n_before + 3 and time.monotonic() < deadline:
                    time.sleep(0.01)
            echo_check(long_lived, b"survived six reloads")
        finally:
            stop.set()
            for t in threads:
                t.join(T(15))
            long_lived.close()
        print("# %d connections during the reloads" % results["ok"])
        check(not results["errors"], "%d failures while reloading, first: %s"
              % (len(results["errors"]), results["errors"][:1]))
        check(results["ok"] > 0, "no connection succeeded")
        check(not d.find_log(r"stopped listening"), "a listener was closed by a no-op reload")
        check_eq(d.stop(), 0, "exit status")


def test_reload_keeps_overrides():
    # the file says p2, the command line says p1: p1 must stay in force after a reload
    p2 = free_port()
    d = None
    for _ in range(3):
        p1 = free_port()
        d = Daemon(config=cfg(p2), default_listen=False, overrides=["echo.port=%d" % p1])
        try:
            d.wait_for_log(r"echo: listening on 127\.0\.0\.1:%d$" % p1)
            break
        except TestFailure:
            d.cleanup()
            d = None
    check(d is not None, "daemon did not start")
    with d:
        d.wait_ready()
        expect_refused(p2)
        hup(d)
        c = connect(p1)
        try:
            echo_check(c, b"override kept")
        finally:
            c.close()
        expect_refused(p2)
        check_eq(d.stop(), 0, "exit status")


def test_reload_reopens_log_file():
    d0 = None
    for _ in range(3):
        port = free_port()
        d0 = Daemon(config=None, start=False, default_listen=False)
        log = os.path.join(d0.tmpdir, "echochatd.log")
        d0.write_config(cfg(port, extra="[log]\ntarget = %s\n" % log))
        d0.argv = ["-c", d0.config_path] + d0.argv
        d0.start()
        try:
            wait_for_file_line(log, r"notice: ready$")
            break
        except TestFailure:
            d0.cleanup()
            d0 = None
    check(d0 is not None, "daemon did not start")
    with d0 as d:
        check(not d.find_log(r"listening"), "logged to stderr although target is a file")
        os.rename(log, log + ".1")
        d.send_signal(signal.SIGHUP)
        wait_for_file_line(log, r"notice: configuration reloaded$")
        c = connect(port)
        try:
            me = peer_str(c.getsockname())
            echo_check(c, b"z")
        finally:
            c.close()
        wait_for_file_line(log, r"echo: #\d+ %s closed" % re.escape(me))
        with open(log + ".1") as f:
            check(me not in f.read(), "connection logged into the rotated file")
        check_eq(d.stop(), 0, "exit status")


def test_reload_applies_max_clients():
    d, p1 = start_on_free_port(lambda p: cfg(p) + "[server]\nmax_clients = 10\n")
    with d:
        a = connect(p1)
        b = None
        try:
            echo_check(a, b"a")
            d.write_config(cfg(p1) + "[server]\nmax_clients = 1\n")
            mark = hup(d)
            b = connect(p1)
            b.sendall(b"should not be echoed")
            data, how = recv_until_eof(b, timeout=10)
            check_eq(data, b"", "echo to a client over the new limit")
            d.wait_for_log(r"warning: echo: 127\.0\.0\.1:\d+ refused: max_clients \(1\) reached",
                           since=mark)
            echo_check(a, b"first client unaffected")
        finally:
            a.close()
            if b:
                b.close()
        check_eq(d.stop(), 0, "exit status")


def test_reload_adds_and_removes_listener():
    if not ipv6_available():
        raise Skip("::1 cannot be bound on this host")
    d, p1 = start_on_free_port(cfg)
    with d:
        c4 = connect(p1)
        try:
            echo_check(c4, b"v4")
            d.write_config(cfg(p1, bind="127.0.0.1, ::1"))
            mark = hup(d)
            d.wait_for_log(r"echo: listening on \[::1\]:%d$" % p1, since=mark)
            check(not d.find_log(r"stopped listening", since=mark), "a kept listener was closed")
            c6 = connect(p1, host="::1")
            try:
                echo_check(c6, b"v6")
                d.write_config(cfg(p1, bind="127.0.0.1"))
                mark = hup(d)
                d.wait_for_log(r"echo: stopped listening on \[::1\]:%d$" % p1, since=mark)
                expect_refused(p1, host="::1")
                echo_check(c6, b"v6 client survives the removal of its listener")
            finally:
                c6.close()
            echo_check(c4, b"v4 again")
        finally:
            c4.close()
        check_eq(d.stop(), 0, "exit status")


def test_reload_applies_log_level():
    d, p1 = start_on_free_port(cfg)
    with d:
        p2 = free_port()
        d.write_config(cfg(p2) + "[log]\nlevel = warning\n")
        d.send_signal(signal.SIGHUP)
        # the reload is done when the new port accepts (its notice may not be logged any more)
        s = wait_until(lambda: try_connect(p2, timeout=5)[0], 20, "port %d to accept" % p2)
        try:
            quiet = peer_str(s.getsockname())
            echo_check(s, b"not logged at warning level")
        finally:
            s.close()
        d.write_config(cfg(p2) + "[log]\nlevel = info\n")
        d.send_signal(signal.SIGHUP)
        # back at info: connections are logged again (poll: the reload is asynchronous)
        deadline = time.monotonic() + T(20)
        while True:
            c = connect(p2)
            me = peer_str(c.getsockname())
            echo_check(c, b"logged")
            c.close()
            try:
                d.wait_for_log(r"echo: #\d+ %s closed" % re.escape(me), timeout=0.5)
                break
            except TestFailure:
                check(d.running(), "daemon died\n" + d.tail())
                check(time.monotonic() < deadline, "info lines not logged after the second reload")
        check(not d.find_log(re.escape(quiet)), "a connection was logged at level warning:\n"
              + d.tail())
        check_eq(d.stop(), 0, "exit status")


if __name__ == "__main__":
    main([test_reload_port_change, test_reload_broken_file_keeps_old_config,
          test_unchanged_port_never_refuses, test_reload_keeps_overrides,
          test_reload_reopens_log_file, test_reload_applies_max_clients,
          test_reload_adds_and_removes_listener, test_reload_applies_log_level])
