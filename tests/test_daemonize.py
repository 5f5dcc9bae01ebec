#!/usr/bin/env python3
"""-d (classic daemon): the command returns once the daemon serves (0) or failed (1, the error on
stderr); the daemon is detached (double fork, own session, cwd /, umask 027, stdio /dev/null);
[server] pidfile is written atomically, refused when it names a live echochatd, overwritten when
stale, removed at exit.

The daemon is not our child: it is found by its pidfile, and in any case by its command line
(which names this test's unique temporary directory), and killed by pid in cleanup. A daemon
that has exited may stay a zombie when PID 1 does not reap (containers): that counts as gone."""

import atexit
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
    Skip, T, TestFailure, Timeout, check, check_eq, command, connect, daemon_env, echo_check,
    main, quiet_services_args, wait_for_file_line, wait_until, wrapper)

_runs = set()


def proc_state(pid):
    """The state letter from /proc/PID/stat, or None when there is no such process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data.rsplit(")", 1)[1].split()[0]


def alive(pid):
    return proc_state(pid) not in (None, "Z", "X")


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


class Run:
    """A temporary directory with a config file, a pidfile path and a log file, and the -d
    runs that use them."""

    def __init__(self):
        self.dir = os.path.realpath(tempfile.mkdtemp(prefix="echochatd-daemonize-"))
        self.config = os.path.join(self.dir, "e.ini")
        self.pidfile = os.path.join(self.dir, "e.pid")
        self.log = os.path.join(self.dir, "e.log")
        open(self.config, "w").close()
        _runs.add(self)

    def argv(self, extra=(), port=0):
        return (["-d", "-c", self.config, "-o", "server.pidfile=" + self.pidfile,
                 "-o", "log.target=" + self.log, "-o", "echo.bind=127.0.0.1",
                 "-o", "echo.port=%d" % port] + quiet_services_args() + list(extra))

    def start(self, extra=(), port=0, timeout=20):
        """Run echochatd -d ...; returns (status, stdout, stderr, seconds). Output goes to
        files, so a daemon that kept our pipes open could not hang the test."""
        n = len(os.listdir(self.dir))
        out_path = os.path.join(self.dir, "cmd%d.out" % n)
        err_path = os.path.join(self.dir, "cmd%d.err" % n)
        t0 = time.monotonic()
        with open(out_path, "w") as out, open(err_path, "w") as err:
            try:
                r = subprocess.run(command(self.argv(extra, port)), stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=err, env=daemon_env(), timeout=T(timeout),
                                   close_fds=True)
            except subprocess.TimeoutExpired:
                raise Timeout("echochatd -d did not return within %.0f s" % T(timeout))
        dt = time.monotonic() - t0
        with open(out_path, errors="replace") as f:
            o = f.read()
        with open(err_path, errors="replace") as f:
            e = f.read()
        return r.returncode, o, e, dt

    def read_pid(self):
        try:
            with open(self.pidfile) as f:
                text = f.read()
        except FileNotFoundError:
            return None
        check(re.match(r"^\d+\n$", text), "pidfile content %r" % text)
        return int(text)

    def our_pids(self):
        """Processes whose command line names our directory (our daemons, live or zombie)."""
        pids = []
        me = os.getpid()
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == me:
                continue
            try:
                with open("/proc/%s/cmdline" % name, "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if self.dir.encode() in cmd and alive(int(name)):
                pids.append(int(name))
        return pids

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def tail(self, n=15):
        return "\n".join("#   | " + l for l in self.log_text().splitlines()[-n:])

    def port(self):
        m = wait_for_file_line(self.log, r"echo: listening on 127\.0\.0\.1:(\d+)$")
        return int(m.group(1))

    def started(self, extra=()):
        """Start, require status 0; returns the daemon's pid."""
        rc, out, err, dt = self.start(extra)
        check_eq(rc, 0, "status of echochatd -d (stderr %r)\n%s" % (err, self.tail()))
        pid = self.read_pid()
        check(pid is not None, "no pidfile after echochatd -d returned 0")
        check(alive(pid), "pid %d from the pidfile is not running\n%s" % (pid, self.tail()))
        return pid

    def wait_gone(self, pid, timeout=20):
        wait_until(lambda: not alive(pid), timeout, "process %d to exit" % pid)

    def cleanup(self):
        pids = set(self.our_pids())
        try:
            pid = self.read_pid()
            if pid is not None and alive(pid) and comm(pid) == "echochatd":
                pids.add(pid)
        except (TestFailure, ValueError, OSError):
            pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in pids:
            try:
                wait_until(lambda: not alive(pid), 10, "killed process %d to go" % pid)
            except Timeout:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
        _runs.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and isinstance(exc, TestFailure):
            exc.args = ("%s\n#   daemon log %s:\n%s" % (exc, self.log, self.tail()),)
        self.cleanup()
        return False


@atexit.register
def _cleanup_all():
    for r in list(_runs):
        r.cleanup()


def require_bare_binary():
    if wrapper():
        raise Skip("the checks identify the daemon by /proc/PID/comm: not with ECHOCHATD_WRAPPER")


def echo_on(port, data=b"daemonized\n"):
    s = connect(port)
    try:
        echo_check(s, data)
    finally:
        s.close()


# --------------------------------------------------------------------------

def test_detached_and_serving():
    require_bare_binary()
    with Run() as r:
        rc, out, err, dt = r.start()
        check_eq(rc, 0, "status of echochatd -d (stderr %r)" % err)
        check(dt < T(5), "echochatd -d took %.1f s to return" % dt)
        check(not re.search(r"\berror\b", err), "stderr of a good start: %r" % err)
        pid = r.read_pid()
        check(pid is not None, "no pidfile %s after the command returned" % r.pidfile)
        # ready before the command returned: "ready" is in the log already
        check(re.search(r"notice: ready$", r.log_text(), re.M), "no 'ready' in the log when the "
              "command returned")
        check_eq(comm(pid), "echochatd", "/proc/%d/comm" % pid)
        st = proc_status(pid)
        check(int(st["PPid"]) != os.getpid(), "the daemon's parent is the test")
        check(os.getsid(pid) != os.getsid(0), "the daemon is in the test's session")
        check(os.getsid(pid) != pid, "the daemon is a session leader (no second fork)")
        check(os.getpgid(pid) != os.getpgid(0), "the daemon is in the test's process group")
        check_eq(os.readlink("/proc/%d/cwd" % pid), "/", "the daemon's working directory")
        if "Umask" in st:
            check_eq(st["Umask"], "0027", "the daemon's umask")
        for fd in (0, 1, 2):
            check_eq(os.readlink("/proc/%d/fd/%d" % (pid, fd)), "/dev/null", "the daemon's fd %d" % fd)
        # a file log target stays a file, in the usual format
        text = r.log_text()
        check(re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} notice: echochatd \S+ starting "
                        r"\(config: %s\)$" % re.escape(r.config), text, re.M),
              "no start line in the log file:\n" + r.tail())
        echo_on(r.port())
        check_eq(r.our_pids(), [pid], "processes of this test besides the daemon")
        os.kill(pid, signal.SIGTERM)
        r.wait_gone(pid)


def test_sigterm_removes_pidfile():
    require_bare_binary()
    with Run() as r:
        pid = r.started()
        port = r.port()
        echo_on(port)
        os.kill(pid, signal.SIGTERM)
        r.wait_gone(pid)
        wait_for_file_line(r.log, r"notice: exiting$")
        check(not os.path.exists(r.pidfile), "pidfile %s still there after exit" % r.pidfile)
        check_eq(r.our_pids(), [], "processes left")
        check_eq([f for f in os.listdir(r.dir) if f.startswith("e.pid")], [], "pidfile leftovers")


def test_second_instance_refused():
    require_bare_binary()
    with Run() as r:
        pid = r.started()
        rc, out, err, dt = r.start()
        check_eq(rc, 1, "status of a second echochatd -d with the same pidfile")
        check(re.search(r"already running: %s names process %d" % (re.escape(r.pidfile), pid), err),
              "stderr of the refused start: %r" % err)
        check(dt < T(5), "the refused start took %.1f s" % dt)
        check(alive(pid), "the first daemon is gone")
        check_eq(r.read_pid(), pid, "pid in the pidfile after the refused start")
        check_eq(r.our_pids(), [pid], "processes of this test (the refused one must be gone)")
        echo_on(r.port())
        # the same in the foreground
        fg = subprocess.run(command(r.argv()[1:]), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=daemon_env(), timeout=T(20),
                            universal_newlines=True)
        check_eq(fg.returncode, 1, "status of a foreground start with the same pidfile")
        check("already running" in fg.stderr, "stderr of the foreground start: %r" % fg.stderr)
        os.kill(pid, signal.SIGTERM)
        r.wait_gone(pid)


def test_start_failure_reported():
    require_bare_binary()
    with Run() as r:
        hold = socket.socket()
        try:
            hold.bind(("127.0.0.1", 0))
            hold.listen(1)
            busy = hold.getsockname()[1]
            rc, out, err, dt = r.start(port=busy)
        finally:
            hold.close()
        check_eq(rc, 1, "status of echochatd -d on a busy port (stderr %r)" % err)
        check(re.search(r"echo: cannot listen on 127\.0\.0\.1:%d: Address already in use" % busy, err),
              "stderr: %r" % err)
        check(dt < T(5), "the failed start took %.1f s" % dt)
        check(not os.path.exists(r.pidfile), "pidfile left by a failed start")
        # The daemon reported the failure before exiting; its exit (slow under the
        # sanitizers' leak check at exit) follows within a bounded time.
        try:
            wait_until(lambda: not r.our_pids(), T(10), "the failed daemon to exit")
        except (TestFailure, Timeout):
            pass
        check_eq(r.our_pids(), [], "processes left by a failed start")


def test_stale_pidfile():
    require_bare_binary()
    with Run() as r:
        child = subprocess.Popen(["true"])
        child.wait()
        stale = [("%d\n" % child.pid, "a dead process"),
                 ("%d\n" % os.getpid(), "a live process that is not echochatd"),
                 ("garbage\n", "no pid"),
                 ("", "nothing")]
        for content, what in stale:
            with open(r.pidfile, "w") as f:
                f.write(content)
            pid = r.started()
            check(str(pid) + "\n" != content, "pidfile not rewritten")
            echo_on(r.port())
            os.kill(pid, signal.SIGTERM)
            r.wait_gone(pid)
            check(not os.path.exists(r.pidfile), "pidfile left after exit (stale: %s)" % what)
            os.unlink(r.log)


def test_pidfile_atomic():
    require_bare_binary()
    with Run() as r:
        seen = []
        stop = threading.Event()

        def watch():
            # read the pidfile as fast as we can while the daemon starts
            while not stop.is_set():
                try:
                    with open(r.pidfile, "rb") as f:
                        seen.append(f.read())
                except FileNotFoundError:
                    pass

        for rnd in range(5):
            t = threading.Thread(target=watch, daemon=True)
            stop.clear()
            t.start()
            try:
                pid = r.started()
            finally:
                stop.set()
                t.join(10)
            bad = [c for c in seen if not re.match(rb"^\d+\n$", c)]
            check(not bad, "the pidfile was seen with content %r during start %d" % (bad[:3], rnd + 1))
            left = [f for f in os.listdir(r.dir) if f.startswith("e.pid") and f != "e.pid"]
            check_eq(left, [], "temporary pidfiles left after start")
            os.kill(pid, signal.SIGTERM)
            r.wait_gone(pid)
            check(not os.path.exists(r.pidfile), "pidfile left after exit")
            os.unlink(r.log)
        check(seen, "the pidfile was never seen (the watcher did not run)")


if __name__ == "__main__":
    main([test_detached_and_serving, test_sigterm_removes_pidfile, test_second_instance_refused,
          test_start_failure_reported, test_stale_pidfile, test_pidfile_atomic],
         per_test_timeout=40)
