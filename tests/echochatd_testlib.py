"""Helpers for the echochatd integration tests (Python 3 standard library only).

Every test starts the real daemon binary and talks to it over real sockets on
127.0.0.1 / ::1 with ephemeral ports.  Nothing here sleeps to "wait for"
something: waits are poll loops on a condition with a deadline, and the
deadlines are generous (they only matter when something is broken).

Environment:
  ECHOCHATD                 path of the daemon binary (default: ../src/echochatd
                            relative to this file, then ./src/echochatd)
  ECHOCHATD_WRAPPER         command prefixed to the daemon (shlex.split), e.g.
                            "valgrind --error-exitcode=99 --leak-check=full"
  ECHOCHATD_TIMEOUT_FACTOR  multiplies every timeout (default 1, or 10 when a
                            wrapper is set)
"""

import atexit
import errno
import fcntl
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import traceback

sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))

KIB = 1024
MIB = 1024 * 1024

EX_OK = 0
EX_FAIL = 1
EX_USAGE = 64
EX_CONFIG = 78
EX_SKIP = 77

LOG_LINE_RE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (debug|info|notice|warning|error): (.*)$")
# lines that a wrapper such as valgrind writes to the same stderr
WRAPPER_LINE_RE = re.compile(r"^(==\d+==|--\d+--|\*\*\d+\*\*)")


# --------------------------------------------------------------------------
# configuration of the test run

def binary():
    path = os.environ.get("ECHOCHATD")
    if path:
        return os.path.abspath(path)
    for cand in (os.path.join(HERE, os.pardir, "src", "echochatd"),
                 os.path.join(os.getcwd(), "src", "echochatd")):
        if os.path.exists(cand):
            return os.path.abspath(cand)
    return os.path.abspath(os.path.join(HERE, os.pardir, "src", "echochatd"))


def wrapper():
    w = os.environ.get("ECHOCHATD_WRAPPER", "").strip()
    return shlex.split(w) if w else []


def timeout_factor():
    f = os.environ.get("ECHOCHATD_TIMEOUT_FACTOR")
    if f:
        return float(f)
    return 10.0 if wrapper() else 1.0


def T(seconds):
    """Scale a timeout by the timeout factor."""
    return seconds * timeout_factor()


def daemon_env(extra=None):
    env = dict(os.environ)
    env.pop("JOURNAL_STREAM", None)
    env.pop("NOTIFY_SOCKET", None)
    env.setdefault("LC_ALL", "C")
    if extra:
        env.update(extra)
    return env


def command(args):
    return wrapper() + [binary()] + list(args)


_other_services = None


def other_services():
    """Services besides echo that the binary knows (e.g. chat): sections of the -T dump
    that have both `enabled` and `port`. Found once by running the binary without a wrapper."""
    global _other_services
    if _other_services is None:
        found = []
        d = tempfile.mkdtemp(prefix="echochatd-probe-")
        try:
            empty = os.path.join(d, "empty.ini")
            open(empty, "w").close()
            r = subprocess.run([binary(), "-T", "-c", empty], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=daemon_env(), timeout=30, universal_newlines=True)
            sec, keys = None, {}
            for line in r.stdout.splitlines():
                line = line.strip()
                if line.startswith("[") and line.endswith("]"):
                    sec = line[1:-1].strip()
                    keys[sec] = set()
                elif "=" in line and sec is not None and line[0] not in ";#":
                    keys[sec].add(line.split("=", 1)[0].strip())
            found = [k for k, v in keys.items() if k != "echo" and {"enabled", "port"} <= v]
        except (OSError, subprocess.SubprocessError):
            pass
        finally:
            shutil.rmtree(d, ignore_errors=True)
        _other_services = found
    return list(_other_services)


def quiet_services_args(exclude=()):
    """-o options that switch the other services off, so that only echo listens
    (no fixed ports such as chat's 7008 in the tests)."""
    args = []
    for svc in other_services():
        if svc not in exclude:
            args += ["-o", "%s.enabled=no" % svc]
    return args


# --------------------------------------------------------------------------
# errors

class Skip(Exception):
    """Raise to skip one sub-test (reported as ok ... # SKIP)."""


class TestFailure(AssertionError):
    pass


class Timeout(TestFailure):
    pass


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def check_eq(got, want, what):
    if got != want:
        raise TestFailure("%s: expected %r, got %r" % (what, want, got))


def short(data, n=60):
    """repr of bytes/str shortened for messages."""
    r = repr(data)
    return r if len(r) <= n else r[:n] + "...(%d)" % len(data)


def wait_until(pred, timeout, what, interval=0.02):
    """Poll pred() until it returns a truthy value; return that value.

    Raises Timeout naming `what` when the (scaled) deadline passes."""
    deadline = time.monotonic() + T(timeout)
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise Timeout("timed out after %.1f s waiting for %s" % (T(timeout), what))
        time.sleep(interval)


# --------------------------------------------------------------------------
# process bookkeeping: every daemon started is killed at exit at the latest

_live = set()
_live_lock = threading.Lock()


def _kill_all_live():
    with _live_lock:
        procs = list(_live)
    for d in procs:
        try:
            d.cleanup()
        except Exception:
            pass


atexit.register(_kill_all_live)


def track(proc):
    """Register a started process object (with .pid, .tail() and .cleanup()): it is
    stopped after the test that started it, and at exit at the latest."""
    with _live_lock:
        _live.add(proc)


def untrack(proc):
    with _live_lock:
        _live.discard(proc)


def _on_term(signum, frame):
    # make atexit handlers run when the harness kills us
    raise SystemExit(128 + signum)


for _s in (signal.SIGTERM, signal.SIGHUP):
    try:
        signal.signal(_s, _on_term)
    except (ValueError, OSError):
        pass


def run_cli(args, timeout=20, env=None, input=None):
    """Run the binary to completion (for -h/-V/-t/-T and failing starts).

    Returns subprocess.CompletedProcess with text stdout/stderr."""
    try:
        return subprocess.run(command(args), stdin=subprocess.DEVNULL if input is None else None,
                              input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=daemon_env(env), timeout=T(timeout),
                              universal_newlines=True, errors="replace")
    except subprocess.TimeoutExpired as e:
        raise Timeout("%s did not exit within %.1f s" % (" ".join(args), T(timeout))) from e


def error_lines(stderr):
    """stderr lines without wrapper (valgrind) noise."""
    return [l for l in stderr.splitlines() if l.strip() and not WRAPPER_LINE_RE.match(l)]


# --------------------------------------------------------------------------
# the daemon

class Daemon:
    """A running echochatd.

    d = Daemon(config="[echo]\\nbind = 127.0.0.1\\nport = 0\\n")   # -c <tmp>/echochatd.ini
    d = Daemon(overrides=["server.max_clients=3"])   # adds -o echo.bind=127.0.0.1 -o echo.port=0
    with Daemon(...) as d: ...                         # killed on exit of the block
    """

    def __init__(self, config="", overrides=None, args=None, host="127.0.0.1",
                 default_listen=True, env=None, start=True, preexec_fn=None,
                 config_name="echochatd.ini", only_echo=True):
        self.tmpdir = os.path.realpath(tempfile.mkdtemp(prefix="echochatd-test-"))
        self.config_path = os.path.join(self.tmpdir, config_name)
        self.lines = []          # stderr lines (str, no newline)
        self.stdout_data = []
        self._cond = threading.Condition()
        self._eof = False
        self.proc = None
        self.returncode = None
        self.host = host
        self.env = env
        self.preexec_fn = preexec_fn
        if config is not None:
            self.write_config(config)
        argv = []
        if config is not None:
            argv += ["-c", self.config_path]
        if only_echo:
            # other services (chat) off, unless the caller configures them; first, so
            # that the caller's own -o (the later one wins) can still switch them on
            mentioned = {o.split(".", 1)[0] for o in overrides or []}
            argv += quiet_services_args(exclude=mentioned)
        if default_listen:
            argv += ["-o", "echo.bind=" + host, "-o", "echo.port=0"]
        for o in overrides or []:
            argv += ["-o", o]
        argv += list(args or [])
        self.argv = argv
        if start:
            try:
                self.start()
            except BaseException:
                self.cleanup()       # e.g. the binary cannot be executed: no stray temp dir
                raise

    # -- context manager
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and not isinstance(exc, Skip) and "#   | " not in str(exc):
            # the runner prints this after the "not ok" line
            try:
                exc.daemon_tails = getattr(exc, "daemon_tails", []) + [(self.pid, self.tail(15))]
            except (AttributeError, TypeError):
                pass
        self.cleanup()
        return False

    def write_config(self, text):
        tmp = self.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, self.config_path)   # atomic: a HUP never sees half a file

    def start(self):
        self.proc = subprocess.Popen(command(self.argv), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=daemon_env(self.env), close_fds=True,
                                     preexec_fn=self.preexec_fn)
        self.pid = self.proc.pid
        track(self)
        self._t_err = threading.Thread(target=self._read_stderr, daemon=True)
        self._t_out = threading.Thread(target=self._read_stdout, daemon=True)
        self._t_err.start()
        self._t_out.start()
        return self

    def _read_stderr(self):
        f = self.proc.stderr
        try:
            for raw in iter(f.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stdout(self):
        try:
            for raw in iter(self.proc.stdout.readline, b""):
                self.stdout_data.append(raw.decode("utf-8", "replace"))
        except (OSError, ValueError):
            pass

    # -- log
    def mark(self):
        """Index of the next log line; pass as since= to wait for newer lines."""
        with self._cond:
            return len(self.lines)

    def log_lines(self, since=0):
        with self._cond:
            return list(self.lines[since:])

    def messages(self, since=0):
        """[(level, message)] of well-formed log lines."""
        out = []
        for l in self.log_lines(since):
            m = LOG_LINE_RE.match(l)
            if m:
                out.append((m.group(2), m.group(3)))
        return out

    def find_log(self, regex, since=0):
        rx = re.compile(regex)
        for l in self.log_lines(since):
            m = rx.search(l)
            if m:
                return m
        return None

    def count_log(self, regex, since=0):
        rx = re.compile(regex)
        return sum(1 for l in self.log_lines(since) if rx.search(l))

    def wait_for_log(self, regex, timeout=20, since=0, count=1):
        """Wait until `count` stderr lines (index >= since) match regex.

        Returns the match object of the count-th matching line."""
        rx = re.compile(regex)
        deadline = time.monotonic() + T(timeout)
        seen = 0
        idx = since
        with self._cond:
            while True:
                while idx < len(self.lines):
                    m = rx.search(self.lines[idx])
                    idx += 1
                    if m:
                        seen += 1
                        if seen >= count:
                            return m
                if self._eof:
                    rc = self.proc.poll()
                    if rc is None:
                        try:
                            rc = self.proc.wait(T(5))
                        except subprocess.TimeoutExpired:
                            rc = "?"
                    raise TestFailure("daemon exited (status %s) before logging /%s/ x%d\n%s"
                                      % (rc, regex, count, self.tail()))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout("no log line /%s/ x%d within %.1f s\n%s"
                                  % (regex, count, T(timeout), self.tail()))
                self._cond.wait(min(left, 0.5))

    def tail(self, n=25):
        lines = self.log_lines()[-n:]
        return "\n".join("#   | " + l for l in lines)

    def port(self, service="echo", host=None, timeout=20):
        host = host or self.host
        h = "[%s]" % host if ":" in host else host
        m = self.wait_for_log(r"%s: listening on %s:(\d+)$" % (re.escape(service), re.escape(h)),
                              timeout=timeout)
        return int(m.group(1))

    def wait_ready(self, timeout=20):
        self.wait_for_log(r"(^|: )ready$", timeout=timeout)

    # -- process control
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        check(self.running(), "daemon not running (status %s) when sending signal %d\n%s"
              % (self.proc.poll(), sig, self.tail()))
        os.kill(self.pid, sig)

    def wait(self, timeout=20):
        """Wait for exit; return the exit status (negative = killed by signal)."""
        try:
            self.returncode = self.proc.wait(T(timeout))
        except subprocess.TimeoutExpired:
            raise Timeout("daemon did not exit within %.1f s\n%s" % (T(timeout), self.tail()))
        self._join_readers()
        return self.returncode

    def _join_readers(self):
        for t in (getattr(self, "_t_err", None), getattr(self, "_t_out", None)):
            if t is not None:
                t.join(T(5))

    def stop(self, timeout=20, sig=signal.SIGTERM):
        """SIGTERM and wait; returns the exit status. SIGKILL if it hangs (and fail)."""
        if self.proc.poll() is None:
            os.kill(self.pid, sig)
        try:
            return self.wait(timeout)
        except Timeout:
            self.cleanup()
            raise

    def cleanup(self):
        if getattr(self, "proc", None) is not None:
            if self.proc.poll() is None:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    pass
            self._join_readers()
            # (closing a pipe that a reader thread still blocks on would block too: that
            # happens when a wrapper did not pass our signal on and the daemon lives on)
            for f, t in ((self.proc.stdout, getattr(self, "_t_out", None)),
                         (self.proc.stderr, getattr(self, "_t_err", None))):
                if t is not None and t.is_alive():
                    continue
                try:
                    f.close()
                except Exception:
                    pass
        untrack(self)
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def rss_kib(self):
        return rss_kib(self.pid)

    def stdout(self):
        return "".join(self.stdout_data)


def wait_for_file_line(path, regex, timeout=20):
    """Wait until a line of the file at path matches regex; return the match."""
    rx = re.compile(regex)

    def look():
        try:
            with open(path, errors="replace") as f:
                for line in f:
                    m = rx.search(line.rstrip("\n"))
                    if m:
                        return m
        except FileNotFoundError:
            pass
        return None

    return wait_until(look, timeout, "/%s/ in %s" % (regex, path), interval=0.05)


# --------------------------------------------------------------------------
# sockets

def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def connect(port, host="127.0.0.1", timeout=10, rcvbuf=None, sndbuf=None):
    """Connected blocking socket with a (scaled) timeout on every operation."""
    s = socket.socket(family_of(host), socket.SOCK_STREAM)
    try:
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        s.settimeout(T(timeout))
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    return s


def try_connect(port, host="127.0.0.1", timeout=10):
    """Return (socket, None) or (None, errno)."""
    try:
        return connect(port, host, timeout), None
    except ConnectionRefusedError:
        return None, errno.ECONNREFUSED
    except OSError as e:
        return None, e.errno


def recv_exact(sock, n, timeout=20):
    """Receive exactly n bytes or fail (EOF, reset or deadline)."""
    deadline = time.monotonic() + T(timeout)
    buf = bytearray()
    old = sock.gettimeout()
    try:
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout("recv_exact: got %d of %d bytes before the deadline" % (len(buf), n))
            sock.settimeout(min(left, 1.0))
            try:
                chunk = sock.recv(min(n - len(buf), 1 << 20))
            except socket.timeout:
                continue
            except ConnectionResetError:
                raise TestFailure("recv_exact: connection reset after %d of %d bytes" % (len(buf), n))
            if not chunk:
                raise TestFailure("recv_exact: EOF after %d of %d bytes" % (len(buf), n))
            buf += chunk
    finally:
        sock.settimeout(old)
    return bytes(buf)


def recv_until_eof(sock, timeout=20, limit=None):
    """Read until EOF. Returns (data, how) with how 'eof' (clean FIN) or 'reset'.

    Raises Timeout if neither happens before the deadline."""
    deadline = time.monotonic() + T(timeout)
    buf = bytearray()
    old = sock.gettimeout()
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout("recv_until_eof: no EOF before the deadline (%d bytes read)" % len(buf))
            sock.settimeout(min(left, 1.0))
            try:
                chunk = sock.recv(1 << 20)
            except socket.timeout:
                continue
            except ConnectionResetError:
                return bytes(buf), "reset"
            if not chunk:
                return bytes(buf), "eof"
            buf += chunk
            if limit is not None and len(buf) > limit:
                raise TestFailure("recv_until_eof: more than %d bytes received" % limit)
    finally:
        sock.settimeout(old)


def echo_check(sock, data, timeout=20):
    """Send data and require the identical bytes back."""
    sock.sendall(data)
    got = recv_exact(sock, len(data), timeout)
    if got != data:
        raise TestFailure("echo mismatch: sent %s got %s" % (short(data), short(got)))


def set_linger0(sock):
    """close() will send RST."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def unsent_bytes(sock):
    """Bytes in the socket's send queue not yet acknowledged by the peer (SIOCOUTQ)."""
    buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    return struct.unpack("i", buf)[0]


def wait_sendq_empty(sock, timeout=20):
    wait_until(lambda: unsent_bytes(sock) == 0, timeout, "the send queue to be acknowledged")


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago (for configs that need a fixed port)."""
    s = socket.socket(family_of(host), socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def ipv6_available():
    if not socket.has_ipv6:
        return False
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return False
    try:
        s.bind(("::1", 0))
        s.listen(1)
        return True
    except OSError:
        return False
    finally:
        s.close()


def peer_str(addr):
    """How the daemon prints a peer address: 1.2.3.4:P or [::1]:P."""
    host, port = addr[0], addr[1]
    return ("[%s]:%d" % (host, port)) if ":" in host else ("%s:%d" % (host, port))


class Sender(threading.Thread):
    """Send `data` on a blocking socket from a thread (so the caller can read).

    .sent counts the bytes handed to the kernel, .error holds an exception.
    shut_wr=True shuts down the write side when done."""

    def __init__(self, sock, data, chunk=64 * KIB, shut_wr=False, timeout=60):
        super().__init__(daemon=True)
        self.sock, self.data, self.chunk, self.shut_wr = sock, data, chunk, shut_wr
        self.timeout = timeout
        self.sent = 0
        self.error = None
        self.done = threading.Event()

    def run(self):
        try:
            deadline = time.monotonic() + T(self.timeout)
            mv = memoryview(self.data)
            while self.sent < len(self.data):
                if time.monotonic() > deadline:
                    raise Timeout("sender: deadline passed after %d bytes" % self.sent)
                try:
                    n = self.sock.send(mv[self.sent:self.sent + self.chunk])
                except socket.timeout:
                    continue
                self.sent += n
            if self.shut_wr:
                self.sock.shutdown(socket.SHUT_WR)
        except BaseException as e:
            self.error = e
        finally:
            self.done.set()

    def finish(self, timeout=60):
        self.join(T(timeout))
        check(not self.is_alive(), "sender still running after %.0f s (%d of %d bytes sent)"
              % (T(timeout), self.sent, len(self.data)))
        if self.error:
            raise TestFailure("sender failed after %d bytes: %r" % (self.sent, self.error))


class Receiver(threading.Thread):
    """Read until EOF/reset/deadline in a thread. .data, .how ('eof'/'reset'), .error."""

    def __init__(self, sock, timeout=60, slow=None):
        """slow=(bytes, seconds): read at most `bytes` per recv and pause `seconds` after
        each, until .full_speed is set."""
        super().__init__(daemon=True)
        self.sock, self.timeout = sock, timeout
        self.buf = bytearray()
        self.how = None
        self.error = None
        self.slow = slow
        self.full_speed = threading.Event()
        if not slow:
            self.full_speed.set()

    def run(self):
        deadline = time.monotonic() + T(self.timeout)
        try:
            while True:
                if time.monotonic() > deadline:
                    raise Timeout("receiver: no EOF before the deadline (%d bytes)" % len(self.buf))
                if not self.full_speed.is_set():
                    self.full_speed.wait(self.slow[1])      # throttled reading
                try:
                    chunk = self.sock.recv(1 << 20 if self.full_speed.is_set() else self.slow[0])
                except socket.timeout:
                    continue
                except ConnectionResetError:
                    self.how = "reset"
                    return
                if not chunk:
                    self.how = "eof"
                    return
                self.buf += chunk
        except BaseException as e:
            self.error = e

    @property
    def received(self):
        return len(self.buf)

    def finish(self, timeout=60):
        self.join(T(timeout))
        check(not self.is_alive(), "receiver still running after %.0f s (%d bytes)"
              % (T(timeout), len(self.buf)))
        if self.error:
            raise TestFailure("receiver failed after %d bytes: %r" % (len(self.buf), self.error))
        return bytes(self.buf), self.how


def pattern_data(n):
    """n random bytes that contain every byte value (the first 256 are 0..255)."""
    head = bytes(range(256))
    body = os.urandom(max(0, n - 256))
    return (head + body)[:n]


# --------------------------------------------------------------------------
# /proc

def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise TestFailure("no VmRSS in /proc/%d/status" % pid)


def _proc_net_tcp_entries():
    out = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    p = line.split()
                    lport = int(p[1].rsplit(":", 1)[1], 16)
                    rport = int(p[2].rsplit(":", 1)[1], 16)
                    state = int(p[3], 16)
                    tr, when = p[5].split(":")
                    out.append({"lport": lport, "rport": rport, "state": state,
                                "timer": int(tr, 16), "when": int(when, 16)})
        except FileNotFoundError:
            pass
    return out


TCP_ESTABLISHED = 0x01
TCP_TIME_WAIT = 0x06
TCP_LISTEN = 0x0A


def tcp_sockets(lport=None, rport=None, state=None):
    """Sockets from /proc/net/tcp{,6} filtered by local/remote port and state."""
    return [e for e in _proc_net_tcp_entries()
            if (lport is None or e["lport"] == lport)
            and (rport is None or e["rport"] == rport)
            and (state is None or e["state"] == state)]


# --------------------------------------------------------------------------
# runner

class _TestTimeout(BaseException):
    pass


def _print_tails(exc):
    for pid, tail in getattr(exc, "daemon_tails", []):
        print("#   log of daemon %d:" % pid)
        print(tail)


def run(tests, per_test_timeout=120):
    """Run test functions; print 'ok - name' / 'not ok - name: reason'.

    Returns 0 if nothing failed (and something ran), 77 if everything was
    skipped, 1 otherwise. Usage: sys.exit(run([test_a, test_b]))."""
    b = binary()
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        print("not ok - binary %s not found or not executable (set ECHOCHATD)" % b)
        return EX_FAIL
    only = os.environ.get("ECHOCHATD_TEST_ONLY")
    failed = passed = skipped = 0
    use_alarm = hasattr(signal, "SIGALRM")

    def on_alarm(signum, frame):
        raise _TestTimeout()

    if use_alarm:
        signal.signal(signal.SIGALRM, on_alarm)
    t_all = time.monotonic()
    for fn in tests:
        name = fn.__name__
        if name.startswith("test_"):
            name = name[5:]
        if only and name not in only.split(","):
            continue
        t0 = time.monotonic()
        failed_before = failed
        if use_alarm:
            signal.alarm(int(T(per_test_timeout)))
        try:
            fn()
        except Skip as e:
            skipped += 1
            print("ok - %s # SKIP %s" % (name, e))
        except _TestTimeout:
            failed += 1
            print("not ok - %s: test exceeded %.0f s" % (name, T(per_test_timeout)))
        except (TestFailure, AssertionError) as e:
            failed += 1
            msg = str(e).splitlines() or [""]
            print("not ok - %s: %s" % (name, msg[0]))
            for l in msg[1:]:
                print(l if l.startswith("#") else "#   " + l)
            _print_tails(e)
        except Exception as e:
            failed += 1
            tb = traceback.format_exc().rstrip().splitlines()
            print("not ok - %s: unexpected %s" % (name, tb[-1]))
            for l in tb:
                print("#   " + l)
            _print_tails(e)
        else:
            passed += 1
            print("ok - %s (%.1f s)" % (name, time.monotonic() - t0))
        finally:
            if use_alarm:
                signal.alarm(0)
            if failed != failed_before:
                with _live_lock:
                    still = list(_live)
                for d in still:           # daemons the failed test left running
                    print("#   log of daemon %d (still running):" % d.pid)
                    print(d.tail(15))
            _kill_all_live()
        sys.stdout.flush()
    print("# %d passed, %d failed, %d skipped in %.1f s"
          % (passed, failed, skipped, time.monotonic() - t_all))
    if failed:
        return EX_FAIL
    if passed == 0 and skipped > 0:
        return EX_SKIP
    return EX_OK


def main(tests, per_test_timeout=120):
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass
    sys.exit(run(tests, per_test_timeout))
