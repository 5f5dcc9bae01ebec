"""Helpers for the echochatd chat-service integration tests (Python 3 stdlib only).

Builds on echochatd_testlib (daemon start/stop, timeouts scaled by
ECHOCHATD_TIMEOUT_FACTOR / ECHOCHATD_WRAPPER, the ok/not ok runner).

    d, port = start_chat("chat.history=3")
    a = ChatClient(port, "a")          # connects and skips the welcome sequence
    b = ChatClient(port, "b")
    a.expect("* %s has joined #lobby" % b.nick)
    a.say("hello")
    b.expect("<%s> hello" % a.nick)
    a.sync()                           # proves that a got nothing before the sync reply

Every line a ChatClient receives is checked: it must end with CRLF, contain no
other CR or LF and be valid UTF-8 (the daemon turns invalid input into U+FFFD,
so it never has a reason to send anything else).  Nothing here sleeps to wait
for something: reads wait for data with select() and a (generous) deadline.
"""

import inspect
import os
import re
import selectors
import socket
import sys
import time
from collections import deque

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import echochatd_testlib as tl  # noqa: E402
from echochatd_testlib import T, TestFailure, Timeout, check, check_eq  # noqa: E402,F401

CHAT_BASE = ["echo.enabled=no", "chat.bind=127.0.0.1", "chat.port=0"]

IAC, DONT, DO, WONT, WILL, SB, SE, NOP = 255, 254, 253, 252, 251, 250, 240, 241

MEMBERS_RE = re.compile(r"\* members of (#[A-Za-z0-9_-]+) \((\d+)\): (.*)")
MEMBERS_CONT_RE = re.compile(r"\* members of (#[A-Za-z0-9_-]+) \(continued\): (.*)")
YOU_ARE_RE = re.compile(r"\* you are (guest\d+); type /help for the commands")
SYNC_RE = re.compile(r"\* (topic for #[A-Za-z0-9_-]+: .*|no topic is set for #[A-Za-z0-9_-]+)")


def start_chat(*overrides, **kw):
    """Start a daemon with only the chat service on 127.0.0.1, port 0.

    An empty config file is passed with -c so that no system-wide
    echochatd.ini can change the defaults.  Returns (Daemon, port)."""
    if "only_echo" in inspect.signature(tl.Daemon.__init__).parameters:
        kw.setdefault("only_echo", False)          # the testlib would add -o chat.enabled=no
    d = tl.Daemon(config="", default_listen=False, overrides=CHAT_BASE + list(overrides), **kw)
    try:
        port = d.port("chat")
        d.wait_ready()
    except BaseException:
        d.cleanup()
        raise
    return d, port


def rx(pattern):
    """A compiled regex (for expect(): a str is an exact line, a regex must fullmatch)."""
    return re.compile(pattern)


def _describe(pattern):
    return "/%s/" % pattern.pattern if isinstance(pattern, re.Pattern) else repr(pattern)


def _matches(pattern, line):
    if isinstance(pattern, re.Pattern):
        return pattern.fullmatch(line)
    return line == pattern


def parse_members(line):
    """'* members of #R (N): a, b' -> (room, N, [a, b]); None if it is not such a line."""
    m = MEMBERS_RE.fullmatch(line)
    if not m:
        return None
    return m.group(1), int(m.group(2)), [n for n in m.group(3).split(", ") if n]


# every C0 control but TAB, DEL, C1 controls, bidi embeddings/overrides/isolates
FORBIDDEN_CHARS = (set(range(0x00, 0x20)) - {0x09}) | {0x7F} | set(range(0x80, 0xA0)) \
    | set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A))


def forbidden_in(text):
    """Code points of `text` that must never reach a chat client (as a sorted list)."""
    return sorted({ord(c) for c in text if ord(c) in FORBIDDEN_CHARS})


class ChatClient:
    """One chat connection, read through select() with deadlines.

    Lines are kept without their CRLF in .pending (not yet consumed) and in
    .all_lines (everything ever received).  telnet=True strips telnet commands
    (IAC ...) that the server sends (collected in .iac as bytes); without it a
    0xFF byte from the server is an error (invalid UTF-8)."""

    def __init__(self, port, name=None, welcome=True, room="#lobby", rcvbuf=None, sndbuf=None,
                 telnet=False, host="127.0.0.1", timeout=10):
        self.name = name or "client"
        self.port = port
        self.telnet = telnet
        self.buf = bytearray()
        self.pending = deque()
        self.all_lines = []
        self.raw = bytearray()
        self.iac = []
        self.eof = None            # None, "eof" (clean FIN) or "reset"
        self.nick = None
        self.welcome_lines = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if sndbuf:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            self.sock.settimeout(T(timeout))
            self.sock.connect((host, port))
            self.sock.settimeout(T(20))     # for sendall(); reads go through select()
            if welcome:
                self.skip_welcome(room)
        except BaseException:
            self.sock.close()
            raise

    def __repr__(self):
        return "<ChatClient %s (%s)>" % (self.name, self.nick)

    def who(self):
        return "%s (%s)" % (self.name, self.nick) if self.nick else self.name

    # ---------------------------------------------------------------- input
    def fileno(self):
        return self.sock.fileno()

    def recv_once(self):
        """One recv() on a readable socket; parses what arrived. False at EOF/reset."""
        try:
            data = self.sock.recv(1 << 16)
        except (ConnectionResetError, ConnectionAbortedError):
            self.eof = "reset"
            return False
        except (BlockingIOError, InterruptedError, socket.timeout):
            return True
        if not data:
            self.eof = "eof"
            return False
        self.raw += data
        self.buf += data
        self._parse()
        return True

    def _parse(self):
        if self.telnet:
            self._strip_iac()
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                break
            piece = bytes(self.buf[:i + 1])
            del self.buf[:i + 1]
            if not piece.endswith(b"\r\n") or b"\r" in piece[:-2]:
                raise TestFailure("%s: line not terminated by CRLF (or stray CR inside): %s"
                                  % (self.who(), tl.short(piece, 120)))
            try:
                line = piece[:-2].decode("utf-8")
            except UnicodeDecodeError as e:
                raise TestFailure("%s: server sent invalid UTF-8 (%s): %s"
                                  % (self.who(), e.reason, tl.short(piece, 120)))
            self.pending.append(line)
            self.all_lines.append(line)

    def _strip_iac(self):
        out = bytearray()
        b = self.buf
        i = 0
        while i < len(b):
            if b[i] != IAC:
                out.append(b[i])
                i += 1
                continue
            if i + 1 >= len(b):
                break                       # incomplete: keep for the next recv
            cmd = b[i + 1]
            n = 3 if cmd in (WILL, WONT, DO, DONT) else 2
            if cmd == IAC:
                raise TestFailure("%s: server sent IAC IAC (a 0xFF data byte)" % self.who())
            if i + n > len(b):
                break
            self.iac.append(bytes(b[i:i + n]))
            i += n
        self.buf = out + b[i:]

    def _fill(self, deadline):
        """Wait (until deadline) for data and read it. Returns False at EOF or deadline."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sel = selectors.DefaultSelector()
        try:
            sel.register(self.sock, selectors.EVENT_READ)
            if not sel.select(left):
                return False
        finally:
            sel.close()
        return self.recv_once()

    def wait_data(self, timeout):
        """Wait at most `timeout` (unscaled) seconds for input and read what came.
        For loops that interleave other work; returns False at EOF or if nothing came."""
        return self._fill(time.monotonic() + timeout)

    def read_line(self, timeout=10, what=None):
        """The next line (str, without CRLF). Fails at EOF or after the deadline."""
        return self._read_line_by(time.monotonic() + T(timeout), what)

    def _read_line_by(self, deadline, what=None):
        while not self.pending:
            tail = ("; unterminated data %s" % tl.short(bytes(self.buf))) if self.buf else ""
            if self.eof:
                raise TestFailure("%s: connection closed (%s) while waiting for %s%s"
                                  % (self.who(), self.eof, what or "a line", tail))
            if time.monotonic() >= deadline:
                raise Timeout("%s: nothing arrived in time while waiting for %s%s"
                              % (self.who(), what or "a line", tail))
            self._fill(deadline)
        return self.pending.popleft()

    def expect(self, pattern, timeout=10):
        """The next line must be `pattern` (str: exact, regex: fullmatch); returns it."""
        line = self.read_line(timeout, _describe(pattern))
        if not _matches(pattern, line):
            raise TestFailure("%s: expected %s, got %r" % (self.who(), _describe(pattern), line))
        return line

    def expect_match(self, pattern, timeout=10):
        """Like expect() with a regex (str or compiled); returns the match object."""
        if not isinstance(pattern, re.Pattern):
            pattern = re.compile(pattern)
        line = self.read_line(timeout, _describe(pattern))
        m = pattern.fullmatch(line)
        if not m:
            raise TestFailure("%s: expected %s, got %r" % (self.who(), _describe(pattern), line))
        return m

    def expect_lines(self, lines, timeout=10):
        """The next lines must be exactly `lines` (each a str or regex), in order."""
        return [self.expect(p, timeout) for p in lines]

    def wait_for(self, pattern, timeout=10):
        """Skip lines until one matches; returns (line, [skipped lines])."""
        deadline = time.monotonic() + T(timeout)
        skipped = []
        while True:
            try:
                line = self._read_line_by(deadline, _describe(pattern))
            except Timeout:
                raise Timeout("%s: no line %s within %.1f s; last lines skipped: %r"
                              % (self.who(), _describe(pattern), T(timeout), skipped[-5:]))
            if _matches(pattern, line):
                return line, skipped
            skipped.append(line)

    def assert_no_line(self, window=0.5):
        """Negative check only: nothing (no line, no byte, no EOF) arrives within `window`
        seconds. Use after a positive sync point; prefer sync()/markers."""
        check(not self.pending, "%s: unexpected line %r" % (self.who(), self.pending and self.pending[0]))
        deadline = time.monotonic() + window
        n = len(self.raw)
        while time.monotonic() < deadline and not self.eof:
            self._fill(deadline)
            if len(self.raw) != n:
                break
        check(not self.eof, "%s: unexpected %s" % (self.who(), self.eof))
        check(len(self.raw) == n and not self.pending,
              "%s: unexpected data %s" % (self.who(),
                                          repr(self.pending[0]) if self.pending
                                          else tl.short(bytes(self.raw[n:]))))

    def check_nothing_pending(self):
        check(not self.pending and not self.buf,
              "%s: unexpected %s" % (self.who(), repr(self.pending[0]) if self.pending
                                     else tl.short(bytes(self.buf))))

    def expect_eof(self, timeout=10, clean=True):
        """No further line, then EOF. clean=True requires a FIN (not a reset)."""
        deadline = time.monotonic() + T(timeout)
        while not self.eof:
            if self.pending:
                raise TestFailure("%s: expected EOF, got %r" % (self.who(), self.pending[0]))
            if time.monotonic() >= deadline:
                raise Timeout("%s: no EOF within %.1f s" % (self.who(), T(timeout)))
            self._fill(deadline)
        self.check_nothing_pending()
        if clean:
            check_eq(self.eof, "eof", "%s: end of the connection" % self.who())
        return self.eof

    # ---------------------------------------------------------------- output
    def send_raw(self, data):
        self.sock.sendall(data)

    def say(self, text, eol=b"\r\n"):
        """Send one line (str is UTF-8 encoded)."""
        if isinstance(text, str):
            text = text.encode("utf-8")
        self.sock.sendall(text + eol)

    send_line = say

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # ---------------------------------------------------------------- chat steps
    def skip_welcome(self, room="#lobby", timeout=20):
        """Read the welcome sequence up to and including the members line of `room`
        (and its continuation lines); remembers the guest nick. Returns the lines."""
        lines = []
        members = None
        while True:
            line = self.read_line(timeout, "the welcome sequence")
            lines.append(line)
            m = YOU_ARE_RE.fullmatch(line)
            if m:
                self.nick = m.group(1)
            members = parse_members(line)
            if members and members[0] == room:
                break
        names = list(members[2])
        while len(names) < members[1]:
            line = self.expect(rx(r"\* members of %s \(continued\): .*" % re.escape(room)), timeout)
            lines.append(line)
            names += MEMBERS_CONT_RE.fullmatch(line).group(2).split(", ")
        check(self.nick is not None, "%s: no '* you are guestN' line in the welcome %r"
              % (self.who(), lines))
        self.welcome_lines = lines
        self.members = names
        return lines

    def sync(self, timeout=10):
        """Send /topic and require its reply as the very next line: whatever the server
        had queued for us before the reply would have come first."""
        self.say("/topic")
        return self.expect(SYNC_RE, timeout)

    def set_nick(self, nick, timeout=10):
        old = self.nick
        self.say("/nick " + nick)
        self.expect("* %s is now known as %s" % (old, nick), timeout)
        self.nick = nick
        return old


# ------------------------------------------------------------------------ many clients

class Pool:
    """Read from many ChatClients at once with one selector (no threads)."""

    def __init__(self, clients=()):
        self.sel = selectors.DefaultSelector()
        self.clients = []
        for c in clients:
            self.add(c)

    def add(self, c):
        self.sel.register(c.sock, selectors.EVENT_READ, c)
        self.clients.append(c)

    def remove(self, c):
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        if c in self.clients:
            self.clients.remove(c)

    def poll(self, timeout=0):
        """Read whatever is readable now (waiting at most `timeout` s for something)."""
        n = 0
        for key, _ in self.sel.select(timeout):
            c = key.data
            if not c.recv_once():
                self.sel.unregister(c.sock)
            n += 1
        return n

    def pump(self, pred, timeout, what):
        """Read from every client until pred() is true; fails after the deadline."""
        deadline = time.monotonic() + T(timeout)
        while True:
            v = pred()
            if v:
                return v
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout("timed out after %.1f s waiting for %s" % (T(timeout), what))
            self.poll(min(left, 0.5))

    def close(self):
        for c in self.clients:
            c.close()
        self.sel.close()


class Session:
    """A daemon plus the clients of one test; everything is closed/killed on exit.

        with Session("chat.history=3") as s:
            a, b = s.client("a"), s.client("b")
    """

    def __init__(self, *overrides, **kw):
        self.clients = []
        self.d, self.port = start_chat(*overrides, **kw)

    def client(self, name=None, **kw):
        c = ChatClient(self.port, name, **kw)
        self.clients.append(c)
        return c

    def close_clients(self):
        for c in self.clients:
            c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close_clients()
        self.d.cleanup()
        return False
