#!/usr/bin/env python3
"""Socket activation (LISTEN_FDS / LISTEN_FDNAMES), driven by systemd-socket-activate: it binds
the -l addresses, and at the first connection execs the daemon (same pid) with the listening
sockets as fds 3, 4, ... named by --fdname.

Which ports the daemon listens on is read from the kernel (its fds' socket inodes in
/proc/net/tcp), not only from its log. Skipped (77) without systemd-socket-activate or when the
binary is not linked with libsystemd."""

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import echochatd_testlib as tl  # noqa: E402
from echochatd_testlib import (  # noqa: E402
    Daemon, Skip, T, TestFailure, binary, check, check_eq, command, connect,
    daemon_env, echo_check, free_port, main)

for _v in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
           "LISTEN_FDNAMES"):
    os.environ.pop(_v, None)

ACTIVATE = shutil.which("systemd-socket-activate")
_linked = None


def require_tools():
    global _linked
    if ACTIVATE is None:
        raise Skip("systemd-socket-activate not installed")
    if _linked is None:
        try:
            r = subprocess.run(["ldd", binary()], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               universal_newlines=True, timeout=30)
            _linked = "libsystemd" in r.stdout
        except (OSError, subprocess.SubprocessError):
            with open(binary(), "rb") as f:
                _linked = b"libsystemd.so" in f.read()
    if not _linked:
        raise Skip("%s is not linked with libsystemd (built --without-systemd)" % binary())


class Activated(Daemon):
    """systemd-socket-activate -l 127.0.0.1:P ... --fdname=N:N echochatd ARGS.

    self.pid is systemd-socket-activate's until the first connection, then (after its exec)
    the daemon's: cleanup kills that pid whichever it is."""

    def __init__(self, listen_ports, fdnames, **kw):
        self.listen_ports = list(listen_ports)
        self.fdnames = list(fdnames)
        kw.setdefault("default_listen", False)
        kw.setdefault("only_echo", False)
        super().__init__(**kw)

    def start(self):
        pre = [ACTIVATE]
        for p in self.listen_ports:
            pre += ["-l", "127.0.0.1:%d" % p]
        pre += ["--fdname=" + ":".join(self.fdnames)]
        self.proc = subprocess.Popen(pre + command(self.argv), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=daemon_env(self.env), close_fds=True)
        self.pid = self.proc.pid
        with tl._live_lock:
            tl._live.add(self)
        self._t_err = threading.Thread(target=self._read_stderr, daemon=True)
        self._t_out = threading.Thread(target=self._read_stdout, daemon=True)
        self._t_err.start()
        self._t_out.start()
        return self

    def wait_activator_listening(self):
        for i, p in enumerate(self.listen_ports):
            self.wait_for_log(r"^Listening on 127\.0\.0\.1:%d as %d\.$" % (p, 3 + i), timeout=10)


def activate(fdnames, listen_count, config, overrides, first_connect_port_index=0):
    """Start systemd-socket-activate on fresh ports and trigger the exec with a first echo
    connection. Returns (daemon, ports, the first connection)."""
    for attempt in range(3):
        ports = []
        while len(ports) < listen_count:
            p = free_port()
            if p not in ports:
                ports.append(p)
        d = Activated(ports, fdnames, config=config(ports) if callable(config) else config,
                      overrides=overrides)
        try:
            d.wait_activator_listening()
        except TestFailure:
            d.cleanup()
            if "Address already in use" in "\n".join(d.log_lines()) and attempt < 2:
                continue
            raise
        try:
            first = connect(ports[first_connect_port_index])
            try:
                echo_check(first, b"the first connection starts the daemon\n", timeout=10)
                d.wait_ready()
                check_eq(read_comm(d.pid), "echochatd", "comm of the activated process")
            except BaseException:
                first.close()
                raise
        except TestFailure as e:
            d.cleanup()
            raise TestFailure("%s\n%s" % (e, d.tail())) from e
        except BaseException:
            d.cleanup()
            raise
        return d, ports, first
    raise TestFailure("no free ports in 3 attempts")


def read_comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


def listening_ports(pid):
    """TCP ports the process `pid` holds a listening socket on (from /proc)."""
    inodes = set()
    fddir = "/proc/%d/fd" % pid
    for fd in os.listdir(fddir):
        try:
            target = os.readlink(os.path.join(fddir, fd))
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]$", target)
        if m:
            inodes.add(m.group(1))
    ports = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    p = line.split()
                    if int(p[3], 16) == tl.TCP_LISTEN and p[9] in inodes:
                        ports.add(int(p[1].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            pass
    return ports


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
    check(first.startswith("* welcome to echochatd"), "chat welcome line on port %d: %r" % (port, first))
    return s


def echo_on(port, data=b"ping\n"):
    s = connect(port)
    try:
        echo_check(s, data)
    finally:
        s.close()


def two_service_config(pe, pc):
    return "[echo]\nport = %d\n[chat]\nport = %d\n" % (pe, pc)


BINDS = ["echo.bind=127.0.0.1", "chat.bind=127.0.0.1"]


# --------------------------------------------------------------------------

def test_echo_and_chat_inherited():
    require_tools()
    cfg_e, cfg_c = free_port(), free_port()
    d, (p1, p2), first = activate(["echo", "chat"], 2, two_service_config(cfg_e, cfg_c), BINDS)
    with d:
        try:
            for svc, p in (("echo", p1), ("chat", p2)):
                check(d.find_log(r"notice: %s: listening on 127\.0\.0\.1:%d \(socket from systemd\)$"
                                 % (svc, p)), "no '%s: listening on 127.0.0.1:%d (socket from "
                      "systemd)' line\n%s" % (svc, p, d.tail()))
            for p in (cfg_e, cfg_c):
                check(not d.find_log(r"listening on [^ ]*:%d\b" % p),
                      "the daemon logged listening on its config port %d\n%s" % (p, d.tail()))
            check_eq(listening_ports(d.pid), {p1, p2}, "ports the daemon listens on "
                     "(config ports %d/%d)" % (cfg_e, cfg_c))
            echo_on(p1, b"second echo connection\n")
            c = chat_welcome(p2)
            c.close()
            echo_check(first, b"the first client is still served\n")
        finally:
            first.close()
        check_eq(d.stop(), 0, "exit status")


def test_reload_keeps_inherited_sockets():
    require_tools()
    cfg_e, cfg_c, new_e = free_port(), free_port(), free_port()
    d, (p1, p2), first = activate(["echo", "chat"], 2, two_service_config(cfg_e, cfg_c), BINDS)
    with d:
        try:
            for rnd, text in enumerate((
                    two_service_config(cfg_e, cfg_c) + "idle_timeout = 100\n",   # plain reload
                    two_service_config(new_e, cfg_c))):                          # echo.port changed
                mark = d.mark()
                d.write_config(text)
                d.send_signal(signal.SIGHUP)
                d.wait_for_log(r"notice: configuration reloaded$", since=mark)
                check(not d.find_log(r"stopped listening", since=mark),
                      "reload %d closed a listener\n%s" % (rnd + 1, d.tail()))
                check_eq(listening_ports(d.pid), {p1, p2},
                         "ports the daemon listens on after reload %d" % (rnd + 1))
                echo_on(p1, b"echo after reload %d\n" % (rnd + 1))
                chat_welcome(p2).close()
                echo_check(first, b"old client after reload %d\n" % (rnd + 1))
        finally:
            first.close()
        check_eq(d.stop(), 0, "exit status")


def test_only_echo_inherited():
    require_tools()
    cfg_e = free_port()
    d, (p1,), first = activate(["echo"], 1, "[echo]\nport = %d\n" % cfg_e,
                               BINDS + ["chat.port=0"])
    with d:
        try:
            check(d.find_log(r"notice: echo: listening on 127\.0\.0\.1:%d \(socket from systemd\)$" % p1),
                  "no inherited echo listener line\n" + d.tail())
            pc = d.port("chat")          # "chat: listening on 127.0.0.1:P" (bound from the config)
            check(pc not in (p1, cfg_e), "chat port %d" % pc)
            check_eq(listening_ports(d.pid), {p1, pc}, "ports the daemon listens on")
            echo_on(p1)
            chat_welcome(pc).close()
        finally:
            first.close()
        check_eq(d.stop(), 0, "exit status")


def test_unknown_fd_name_closed():
    require_tools()
    cfg_e = free_port()
    d, (p1, p2), first = activate(["echo", "bogus"], 2, "[echo]\nport = %d\n" % cfg_e,
                                  BINDS + ["chat.port=0"])
    with d:
        try:
            m = d.find_log(r"warning: .*\bbogus\b.*")
            check(m, "no warning naming the fd called 'bogus'\n" + d.tail())
            check(re.search(r"\bclosed\b", m.group(0)), "the warning does not say the socket is "
                  "closed: %r" % m.group(0))
            pc = d.port("chat")
            ports = listening_ports(d.pid)
            check_eq(ports, {p1, pc}, "ports the daemon listens on (the 'bogus' one is %d)" % p2)
            # nobody holds the closed socket any more: connections are refused
            s, err = tl.try_connect(p2, timeout=5)
            if s is not None:
                s.close()
            check_eq(errno.errorcode.get(err, err), "ECONNREFUSED", "connect to the closed fd's port %d" % p2)
            check(d.running(), "daemon not running")
            echo_on(p1)
            chat_welcome(pc).close()
        finally:
            first.close()
        check_eq(d.stop(), 0, "exit status")


if __name__ == "__main__":
    main([test_echo_and_chat_inherited, test_reload_keeps_inherited_sockets,
          test_only_echo_inherited, test_unknown_fd_name_closed], per_test_timeout=30)
