#!/usr/bin/env python3
"""sd_notify: READY=1 only once every listener accepts, STATUS=, RELOADING=1 + MONOTONIC_USEC=,
STOPPING=1 and the watchdog pings, received on our own NOTIFY_SOCKET (an AF_UNIX datagram
socket bound to a temporary path).

Skipped (77) when the binary is not linked with libsystemd (configure --without-systemd)."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from echochatd_testlib import (  # noqa: E402
    Daemon, Skip, T, TestFailure, Timeout, binary, check, check_eq, connect, echo_check,
    free_port, main, wait_until)

# whatever runs us (systemd, a CI service) must not leak its own protocol variables
for _v in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
           "LISTEN_FDNAMES"):
    os.environ.pop(_v, None)

STATUS_RE = re.compile(r"^(\d+) clients \(echo (\d+), chat (\d+)\), (\d+) rooms$")

_linked = None


def require_libsystemd():
    """Skip unless the binary was built with systemd support (linked with libsystemd)."""
    global _linked
    if _linked is None:
        b = binary()
        try:
            r = subprocess.run(["ldd", b], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               universal_newlines=True, timeout=30)
            _linked = "libsystemd" in r.stdout
        except (OSError, subprocess.SubprocessError):
            # no ldd: the DT_NEEDED strings are in the file
            with open(b, "rb") as f:
                _linked = b"libsystemd.so" in f.read()
    if not _linked:
        raise Skip("%s is not linked with libsystemd (built --without-systemd)" % binary())


class NotifySocket:
    """Our NOTIFY_SOCKET. A thread receives the datagrams; each one is recorded as
    (CLOCK_MONOTONIC at reception, {VAR: value}, raw text). An `on_message` hook runs in
    the receiving thread itself, the instant a datagram arrives."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="echochatd-notify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.msgs = []
        self.cond = threading.Condition()
        self.stop_ev = threading.Event()
        self.on_message = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_ev.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            t = time.clock_gettime(time.CLOCK_MONOTONIC)
            text = data.decode("utf-8", "replace")
            fields = {}
            for line in text.split("\n"):
                if line:
                    k, _, v = line.partition("=")
                    fields[k] = v
            hook = self.on_message
            if hook is not None:
                try:
                    hook(fields)
                except Exception as e:       # reported through the message list
                    fields = dict(fields, _hook_error=repr(e))
            with self.cond:
                self.msgs.append((t, fields, text))
                self.cond.notify_all()

    def env(self, extra=None):
        e = {"NOTIFY_SOCKET": self.path}
        e.update(extra or {})
        return e

    def mark(self):
        with self.cond:
            return len(self.msgs)

    def messages(self, since=0):
        with self.cond:
            return list(self.msgs[since:])

    def dump(self, since=0):
        return "\n".join("#   notify %.3f %r" % (t, raw) for t, _, raw in self.messages(since)[-20:])

    def wait_for(self, pred, what, since=0, timeout=10):
        """Index of the first message (index >= since) for which pred(fields) is true."""
        deadline = time.monotonic() + T(timeout)
        idx = since
        with self.cond:
            while True:
                while idx < len(self.msgs):
                    if pred(self.msgs[idx][1]):
                        return idx
                    idx += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout("no notification %s within %.1f s; received:\n%s"
                                  % (what, T(timeout), self.dump(since)))
                self.cond.wait(min(left, 0.5))

    def wait_var(self, var, value=None, since=0, timeout=10):
        what = "%s=%s" % (var, value if value is not None else "*")
        return self.wait_for(lambda f: var in f and (value is None or f[var] == value),
                             what, since, timeout)

    def wait_count(self, var, value, n, since=0, timeout=10):
        """Wait until n messages (index >= since) have var=value; returns the index of the n-th."""
        seen = [0]

        def pred(f):
            if f.get(var) == value:
                seen[0] += 1
            return seen[0] >= n
        return self.wait_for(pred, "%d x %s=%s" % (n, var, value), since, timeout)

    def count(self, var, value, since=0):
        return sum(1 for _, f, _ in self.messages(since) if f.get(var) == value)

    def close(self):
        self.stop_ev.set()
        self.thread.join(5)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def both_services(port_echo=0, port_chat=0):
    return ["echo.bind=127.0.0.1", "echo.port=%d" % port_echo,
            "chat.bind=127.0.0.1", "chat.port=%d" % port_chat]


def start(ns, overrides=None, env_extra=None, both=True):
    """Daemon with NOTIFY_SOCKET (echo and chat on 127.0.0.1, port 0); waits for 'ready'."""
    ov = (both_services() if both else []) + list(overrides or [])
    d = Daemon(config="", default_listen=not both, only_echo=not both, overrides=ov,
               env=ns.env(env_extra))
    try:
        d.wait_ready()
    except BaseException:
        d.cleanup()
        raise
    return d


def chat_welcome(port):
    s = connect(port)
    buf = b""
    deadline = time.monotonic() + T(10)
    while b"\r\n" not in buf:
        check(time.monotonic() < deadline, "no welcome line from chat port %d" % port)
        chunk = s.recv(4096)
        check(chunk, "chat port %d closed before the welcome line" % port)
        buf += chunk
    first = buf.split(b"\r\n", 1)[0].decode("utf-8", "replace")
    check(first.startswith("* welcome to echochatd"), "chat welcome line: %r" % first)
    return s


def hup_and_wait(d, ns):
    """SIGHUP; returns (mark, index of RELOADING=1, index of the READY=1 after it,
    CLOCK_MONOTONIC us just before the signal)."""
    mark = ns.mark()
    t0 = time.clock_gettime(time.CLOCK_MONOTONIC)
    d.send_signal(signal.SIGHUP)
    i_rel = ns.wait_var("RELOADING", "1", since=mark)
    i_ready = ns.wait_var("READY", "1", since=i_rel)
    return mark, i_rel, i_ready, t0


# --------------------------------------------------------------------------

def test_ready_only_when_listening():
    require_libsystemd()
    for attempt in range(3):
        pe, pc = free_port(), free_port()
        if pe == pc:
            continue
        results = {}

        def on_msg(fields):
            # runs the instant READY=1 arrives: both services must accept already
            if fields.get("READY") == "1" and "connect" not in results:
                out = {}
                for name, port in (("echo", pe), ("chat", pc)):
                    s = socket.socket()
                    s.settimeout(T(5))
                    try:
                        s.connect(("127.0.0.1", port))
                        out[name] = None
                    except OSError as e:
                        out[name] = e
                    finally:
                        s.close()
                results["connect"] = out

        with NotifySocket() as ns:
            ns.on_message = on_msg
            d = Daemon(config="", default_listen=False, only_echo=False,
                       overrides=both_services(pe, pc), env=ns.env())
            with d:
                try:
                    i_ready = ns.wait_var("READY", "1")
                except Timeout:
                    if "Address already in use" in "\n".join(d.log_lines()):
                        continue        # somebody took a port we picked: pick again
                    raise
                res = results.get("connect")
                check(res is not None, "the READY=1 hook did not run")
                for name in ("echo", "chat"):
                    check(res[name] is None, "%s port refused a connection made the moment "
                          "READY=1 arrived: %r" % (name, res[name]))
                # the first STATUS= comes before READY=1 and says nothing is going on
                i_status = ns.wait_var("STATUS")
                check(i_status < i_ready, "first STATUS= after READY=1:\n" + ns.dump())
                check_eq(ns.messages()[i_status][1]["STATUS"], "0 clients (echo 0, chat 0), 0 rooms",
                         "start-up STATUS")
                check_eq(ns.count("READY", "1"), 1, "READY=1 notifications at start-up")
                # the log agrees: both listening lines come before "ready"
                d.wait_ready()
                lines = d.log_lines()
                i_log_ready = next(i for i, l in enumerate(lines) if re.search(r"notice: ready$", l))
                for svc, port in (("echo", pe), ("chat", pc)):
                    idx = [i for i, l in enumerate(lines)
                           if re.search(r"%s: listening on 127\.0\.0\.1:%d$" % (svc, port), l)]
                    check(idx and idx[0] < i_log_ready, "%s listening line missing or after "
                          "'ready':\n%s" % (svc, d.tail()))
                c = connect(pe)
                try:
                    echo_check(c, b"after READY\n")
                finally:
                    c.close()
                check_eq(d.stop(), 0, "exit status")
                return
    raise TestFailure("could not start on free fixed ports in 3 attempts")


def test_status_format():
    require_libsystemd()
    with NotifySocket() as ns:
        with start(ns) as d:
            ns.wait_var("READY", "1")
            pe, pc = d.port("echo"), d.port("chat")
            e = connect(pe)
            c = chat_welcome(pc)
            try:
                echo_check(e, b"x")
                want = "2 clients (echo 1, chat 1), 1 rooms"
                ns.wait_var("STATUS", want, timeout=5)
            finally:
                e.close()
                c.close()
            ns.wait_for(lambda f: "STATUS" in f and f["STATUS"].startswith("0 clients (echo 0, chat 0)"),
                        "STATUS=0 clients (echo 0, chat 0), ... after the clients left", timeout=5)
            # at most one update a second, however often the numbers change
            mark = ns.mark()
            t_end = time.monotonic() + 2.5
            n = 0
            while time.monotonic() < t_end:
                s = connect(pe)
                echo_check(s, b"churn")
                s.close()
                n += 1
            elapsed = time.monotonic() - (t_end - 2.5)
            sts = [f["STATUS"] for _, f, _ in ns.messages(mark) if "STATUS" in f]
            check(n >= 5, "only %d connections in 2.5 s" % n)
            check(len(sts) <= int(elapsed) + 2, "%d STATUS= updates in %.1f s of connection churn "
                  "(%d connections; at most one a second expected):\n%s"
                  % (len(sts), elapsed, n, ns.dump(mark)))
            # every STATUS= has the documented format and adds up
            for _, f, raw in ns.messages():
                if "STATUS" in f:
                    m = STATUS_RE.match(f["STATUS"])
                    check(m, "STATUS= format: %r" % raw)
                    check_eq(int(m.group(1)), int(m.group(2)) + int(m.group(3)),
                             "total in %r" % raw)
            check_eq(d.stop(), 0, "exit status")


def test_reload_notifications():
    require_libsystemd()
    with NotifySocket() as ns:
        with start(ns) as d:
            ns.wait_var("READY", "1")
            mark, i_rel, i_ready, t0 = hup_and_wait(d, ns)
            t_rx, f, raw = ns.messages()[i_rel]
            check("MONOTONIC_USEC" in f, "RELOADING=1 without MONOTONIC_USEC= in the same "
                  "message: %r" % raw)
            check(re.match(r"^\d+$", f["MONOTONIC_USEC"]), "MONOTONIC_USEC=%r" % f["MONOTONIC_USEC"])
            usec = int(f["MONOTONIC_USEC"])
            lo, hi = int(t0 * 1e6) - 1000, int(t_rx * 1e6) + 1000
            check(lo <= usec <= hi, "MONOTONIC_USEC=%d not between the signal (%d) and the "
                  "reception (%d) on CLOCK_MONOTONIC (off by %.3f s)"
                  % (usec, lo, hi, (usec - t_rx * 1e6) / 1e6))
            check(abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 5,
                  "MONOTONIC_USEC not within 5 s of CLOCK_MONOTONIC")
            check(i_ready > i_rel, "READY=1 not after RELOADING=1")
            d.wait_for_log(r"notice: configuration reloaded$")
            check(d.running(), "daemon gone after SIGHUP")
            check_eq(d.stop(), 0, "exit status")


def test_failed_reload_still_ready():
    require_libsystemd()
    with NotifySocket() as ns:
        with start(ns) as d:
            ns.wait_var("READY", "1")
            pe = d.port("echo")
            old = connect(pe)
            try:
                echo_check(old, b"before")
                d.write_config("[echo]\nport = not-a-port\n[nosuch]\n")
                lmark = d.mark()
                mark, i_rel, i_ready, _ = hup_and_wait(d, ns)
                d.wait_for_log(r"error: reload failed, keeping the old configuration", since=lmark)
                check(d.running(), "daemon gone after a failed reload")
                echo_check(old, b"old client still served")
                new = connect(pe)
                try:
                    echo_check(new, b"new client served")
                finally:
                    new.close()
                # a second, good reload works as well
                d.write_config("")
                hup_and_wait(d, ns)
                d.wait_for_log(r"notice: configuration reloaded$", since=lmark)
                echo_check(old, b"after the good reload")
            finally:
                old.close()
            check_eq(d.stop(), 0, "exit status")


def test_stopping():
    require_libsystemd()
    with NotifySocket() as ns:
        with start(ns) as d:
            ns.wait_var("READY", "1")
            pe = d.port("echo")
            c = connect(pe)
            try:
                echo_check(c, b"hold the daemon in its drain phase")
                mark = ns.mark()
                d.send_signal(signal.SIGTERM)
                # STOPPING=1 when the shutdown begins, not when the process is gone
                ns.wait_var("STOPPING", "1", since=mark)
                check(d.running(), "daemon exited before its client closed")
                check_eq(ns.count("READY", "1", since=mark), 0, "READY=1 after SIGTERM")
            finally:
                c.close()
            check_eq(d.wait(), 0, "exit status after SIGTERM")
            check_eq(ns.count("STOPPING", "1"), 1, "STOPPING=1 notifications")


def test_watchdog_pings():
    require_libsystemd()
    with NotifySocket() as ns:
        with start(ns, env_extra={"WATCHDOG_USEC": "200000"}) as d:
            i_ready = ns.wait_var("READY", "1")
            # >= 3 pings within 2 s of READY=1 (one every 100 ms expected)
            ns.wait_count("WATCHDOG", "1", 3, since=i_ready, timeout=2)
            # and no flood: over one second not more than a few times 1/(100 ms)
            mark = ns.mark()
            t0 = time.monotonic()
            wait_until(lambda: time.monotonic() - t0 >= 1.0, 5, "1 s to pass")
            n = ns.count("WATCHDOG", "1", since=mark)
            check(n <= 30, "%d WATCHDOG=1 in 1 s with WATCHDOG_USEC=200000 (about 10 expected)" % n)
            # the pings come from the event loop: still pinging after a reload
            hup_and_wait(d, ns)
            mark = ns.mark()
            ns.wait_count("WATCHDOG", "1", 2, since=mark, timeout=2)
            check_eq(d.stop(), 0, "exit status")


def test_no_watchdog_without_watchdog_usec():
    require_libsystemd()
    with NotifySocket() as ns:
        with start(ns) as d:
            ns.wait_var("READY", "1")
            # sync point: a reload round trip proves the daemon has been through its event loop
            hup_and_wait(d, ns)
            mark = ns.mark()
            t0 = time.monotonic()
            # bounded window: a watchdog at even the slowest sensible rate would ping in 1.5 s;
            # nothing changes, so no STATUS= either
            wait_until(lambda: time.monotonic() - t0 >= 1.5, 5, "1.5 s to pass")
            check_eq(ns.count("WATCHDOG", "1"), 0, "WATCHDOG=1 without WATCHDOG_USEC (whole run)")
            sts = [raw for _, f, raw in ns.messages(mark) if "STATUS" in f]
            check(not sts, "STATUS= repeated although nothing changed: %r" % sts)
            d.wait_for_log(r"notice: configuration reloaded$")
            check_eq(d.stop(), 0, "exit status")


if __name__ == "__main__":
    main([test_ready_only_when_listening, test_status_format, test_reload_notifications,
          test_failed_reload_still_ready, test_stopping, test_watchdog_pings,
          test_no_watchdog_without_watchdog_usec], per_test_timeout=30)
