#!/usr/bin/env python3
"""[server] user / group: started as root, the daemon binds (a port below 1024 too), then becomes
the user for real (real, effective, saved and filesystem ids; supplementary groups; no
capabilities). Root without a user is warned about; a user that does not exist is a start-up
failure (exit 1); a reload cannot change the user (warning: next restart).

Skipped (77) unless run as root."""

import os
import pwd
import grp
import random
import re
import shutil
import signal
import socket
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from echochatd_testlib import (  # noqa: E402
    Daemon, Skip, TestFailure, check, check_eq, connect, echo_check, error_lines, main,
    quiet_services_args, run_cli)

USER = "nobody"


def require_root():
    if os.geteuid() != 0:
        raise Skip("needs root (running as uid %d)" % os.geteuid())
    try:
        pwd.getpwnam(USER)
    except KeyError:
        raise Skip("no user %s on this system" % USER)


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.split()
    return out


def free_low_port():
    """A port in 900..1000 on 127.0.0.1 that was free a moment ago."""
    ports = list(range(900, 1001))
    random.shuffle(ports)
    for p in ports:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
        finally:
            s.close()
    raise Skip("no free port in 900..1000 on 127.0.0.1")


def start_low(overrides, attempts=4):
    """A daemon with echo on a free port below 1024; retries when another test took the port."""
    for _ in range(attempts):
        port = free_low_port()
        d = Daemon(config="", overrides=["echo.port=%d" % port] + list(overrides))
        try:
            d.wait_for_log(r"echo: listening on 127\.0\.0\.1:%d$" % port)
            d.wait_ready()
            return d, port
        except TestFailure:
            d.cleanup()
            if "Address already in use" not in "\n".join(d.log_lines()):
                raise
    raise TestFailure("no free low port found in %d attempts" % attempts)


def echo_on(port, data=b"low port\n"):
    s = connect(port)
    try:
        echo_check(s, data)
    finally:
        s.close()


# --------------------------------------------------------------------------

def test_runs_as_user_on_low_port():
    require_root()
    pw = pwd.getpwnam(USER)
    d, port = start_low(["server.user=" + USER])
    with d:
        st = proc_status(d.pid)
        check_eq(st["Uid"], [str(pw.pw_uid)] * 4, "Uid (real, effective, saved, fs) of the daemon")
        check_eq(st["Gid"], [str(pw.pw_gid)] * 4, "Gid (real, effective, saved, fs) of the daemon")
        want_groups = sorted(set(os.getgrouplist(USER, pw.pw_gid)))
        check_eq(sorted(set(int(g) for g in st.get("Groups", []))), want_groups,
                 "supplementary groups of the daemon")
        for cap in ("CapEff", "CapPrm"):
            check_eq(int(st[cap][0], 16), 0, "%s of the daemon" % cap)
        check(d.find_log(r"notice: running as user %s$" % USER), "no 'running as user %s' line\n%s"
              % (USER, d.tail()))
        check(not d.find_log(r"running as root"), "'running as root' warning with a user set")
        # the log says "ready" only after the drop
        lines = d.log_lines()
        i_user = next(i for i, l in enumerate(lines) if "running as user" in l)
        i_ready = next(i for i, l in enumerate(lines) if re.search(r"notice: ready$", l))
        check(i_user < i_ready, "'ready' logged before the privilege drop")
        echo_on(port)
        echo_on(port, b"again\n")
        check_eq(d.stop(), 0, "exit status")


def test_group_option():
    require_root()
    pw = pwd.getpwnam(USER)
    # a group other than the user's own primary group
    others = [g for g in grp.getgrall() if g.gr_gid not in (0, pw.pw_gid)]
    if not others:
        raise Skip("no group besides root and %s's own" % USER)
    named = [g for g in others if g.gr_name == "daemon"]
    g = named[0] if named else sorted(others, key=lambda g: g.gr_gid)[0]
    d = Daemon(config="", overrides=["server.user=" + USER, "server.group=" + g.gr_name])
    with d:
        d.wait_ready()
        st = proc_status(d.pid)
        check_eq(st["Uid"], [str(pw.pw_uid)] * 4, "Uid")
        check_eq(st["Gid"], [str(g.gr_gid)] * 4, "Gid with server.group=%s" % g.gr_name)
        check("0" not in st.get("Groups", []), "root's group 0 among the supplementary groups")
        echo_on(d.port())
        check_eq(d.stop(), 0, "exit status")


def test_root_without_user_warns():
    require_root()
    d = Daemon(config="")
    with d:
        d.wait_ready()
        m = d.find_log(r"warning: running as root\b")
        check(m, "no 'running as root' warning\n" + d.tail())
        check_eq(proc_status(d.pid)["Uid"], ["0"] * 4, "Uid without a user")
        echo_on(d.port())
        check_eq(d.stop(), 0, "exit status")


def test_unknown_user_fails():
    require_root()
    name = "nosuchuser%d" % random.randrange(10 ** 6)
    try:
        pwd.getpwnam(name)
        raise Skip("user %s exists" % name)
    except KeyError:
        pass
    args = ["-c", "/dev/null", "-o", "echo.bind=127.0.0.1", "-o", "echo.port=0",
            "-o", "server.user=" + name] + quiet_services_args()
    r = run_cli(args)
    check_eq(r.returncode, 1, "exit status with server.user=%s (stderr %r)" % (name, r.stderr))
    errs = [l for l in error_lines(r.stderr) if name in l]
    check(errs, "no error naming the user %s on stderr: %r" % (name, r.stderr))
    check(not re.search(r"notice: ready$", r.stderr, re.M), "'ready' logged: %r" % r.stderr)
    # the same for a group
    gname = "nosuchgroup%d" % random.randrange(10 ** 6)
    r = run_cli(["-c", "/dev/null", "-o", "echo.bind=127.0.0.1", "-o", "echo.port=0",
                 "-o", "server.user=" + USER, "-o", "server.group=" + gname] + quiet_services_args())
    check_eq(r.returncode, 1, "exit status with server.group=%s (stderr %r)" % (gname, r.stderr))
    check([l for l in error_lines(r.stderr) if gname in l],
          "no error naming the group %s on stderr: %r" % (gname, r.stderr))


def test_reload_cannot_change_user():
    require_root()
    pw = pwd.getpwnam(USER)
    d = Daemon(config="")
    with d:
        d.wait_ready()
        port = d.port()
        # root -> nobody: applies at the next restart only
        d.write_config("[server]\nuser = %s\n" % USER)
        mark = d.mark()
        d.send_signal(signal.SIGHUP)
        d.wait_for_log(r"notice: configuration reloaded$", since=mark)
        check(d.find_log(r'warning: \[server\] user: changed from "" to "%s"; it takes effect at the '
                         r'next restart$' % USER, since=mark),
              "no 'takes effect at the next restart' warning\n" + d.tail())
        check_eq(proc_status(d.pid)["Uid"], ["0"] * 4, "Uid after the reload")
        echo_on(port)
        check_eq(d.stop(), 0, "exit status")

    # running as nobody: the config file must be readable by nobody for the reload
    d = Daemon(config="[server]\nuser = %s\n" % USER)
    with d:
        os.chmod(d.tmpdir, 0o755)
        os.chmod(d.config_path, 0o644)
        d.wait_ready()
        port = d.port()
        d.write_config("[server]\nuser = root\n")
        os.chmod(d.config_path, 0o644)
        mark = d.mark()
        d.send_signal(signal.SIGHUP)
        d.wait_for_log(r"notice: configuration reloaded$", since=mark)
        check(d.find_log(r'warning: \[server\] user: changed from "%s" to "root"; it takes effect at '
                         r'the next restart$' % USER, since=mark),
              "no 'takes effect at the next restart' warning\n" + d.tail())
        check_eq(proc_status(d.pid)["Uid"], [str(pw.pw_uid)] * 4, "Uid after the reload")
        echo_on(port)
        check_eq(d.stop(), 0, "exit status")


def test_pidfile_in_users_directory():
    """A pidfile in a directory the user may write: written with the daemon's pid, removed at
    exit (by the unprivileged daemon)."""
    require_root()
    pw = pwd.getpwnam(USER)
    top = tempfile.mkdtemp(prefix="echochatd-priv-")
    try:
        os.chmod(top, 0o755)
        run = os.path.join(top, "run")
        os.mkdir(run, 0o755)
        os.chown(run, pw.pw_uid, pw.pw_gid)
        pidfile = os.path.join(run, "echochatd.pid")
        d = Daemon(config="", overrides=["server.user=" + USER, "server.pidfile=" + pidfile])
        with d:
            d.wait_ready()
            with open(pidfile) as f:
                check_eq(f.read(), "%d\n" % d.pid, "pidfile content")
            echo_on(d.port())
            check_eq(d.stop(), 0, "exit status")
            check(not os.path.exists(pidfile), "pidfile left after exit")
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main([test_runs_as_user_on_low_port, test_group_option, test_root_without_user_warns,
          test_unknown_user_fails, test_reload_cannot_change_user, test_pidfile_in_users_directory],
         per_test_timeout=30)
