#!/usr/bin/env python3
"""The metrics endpoint ([metrics]): /metrics in the Prometheus text format 0.0.4
(checked by a strict parser of our own, and by promtool when it is installed),
exact counter deltas after known echo and chat traffic, refusals, close reasons,
slow consumers and reloads; /healthz (also during a graceful shutdown), /clients,
404 and 405; off by default; opened and closed by a reload; SIGUSR1's stats line.

Each daemon gets -o metrics.enabled=yes -o metrics.port=0 -o metrics.bind=127.0.0.1
and the test reads the port from the log line "metrics: listening on 127.0.0.1:PORT".
Counters are compared between two scrapes with nothing in flight; where the daemon
counts a close only after the FIN exchange, the test polls the scrape (with a
deadline) until the connections gauge says the clients are gone."""

import errno
import http.client
import json
import math
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import echochatd_testlib as tl  # noqa: E402
from chatlib import ChatClient, IAC, DO, WILL, Pool, SYNC_RE  # noqa: E402
from echochatd_testlib import (  # noqa: E402
    Daemon, Skip, T, TestFailure, Timeout, check, check_eq, connect, echo_check, free_port,
    peer_str, recv_until_eof, set_linger0, try_connect, wait_until, wrapper)

METRICS_ON = ["metrics.enabled=yes", "metrics.port=0", "metrics.bind=127.0.0.1"]
CHAT_ON = ["chat.bind=127.0.0.1", "chat.port=0"]
CHAT_OFF = ["chat.enabled=no"]
METRICS_RE = r"notice: metrics: listening on 127\.0\.0\.1:(\d+)$"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SERVICES = ("echo", "chat")
REFUSE_REASONS = ("max_clients", "per_address", "fd_exhausted", "denied")
CLOSE_REASONS = ("peer", "idle", "slow_consumer", "error", "shutdown")

# name -> (type, label names); the whole exposition, nothing more, nothing less
FAMILIES = {
    "echochatd_build_info": ("gauge", ("version",)),
    "echochatd_process_start_time_seconds": ("gauge", ()),
    "echochatd_connections": ("gauge", ("service",)),
    "echochatd_connections_accepted_total": ("counter", ("service",)),
    "echochatd_connections_refused_total": ("counter", ("service", "reason")),
    "echochatd_connections_closed_total": ("counter", ("service", "reason")),
    "echochatd_received_bytes_total": ("counter", ("service",)),
    "echochatd_sent_bytes_total": ("counter", ("service",)),
    "echochatd_chat_lines_received_total": ("counter", ()),
    "echochatd_chat_lines_delivered_total": ("counter", ()),
    "echochatd_chat_rooms": ("gauge", ()),
    "echochatd_chat_members": ("gauge", ()),
    "echochatd_chat_slow_consumers_total": ("counter", ()),
    "echochatd_config_reloads_total": ("counter", ("result",)),
}

# Present only with [cluster] enabled = yes (tests/test_cluster.py reads them).
CLUSTER_FAMILIES = {
    "echochatd_cluster_connected": ("gauge", ()),
    "echochatd_cluster_messages_published_total": ("counter", ()),
    "echochatd_cluster_messages_received_total": ("counter", ()),
    "echochatd_cluster_messages_dropped_total": ("counter", ()),
    "echochatd_cluster_queue_dropped_total": ("counter", ()),
    "echochatd_cluster_queue_length": ("gauge", ()),
    "echochatd_cluster_nodes": ("gauge", ()),
}


def expected_series():
    """Every (name, labels) the exposition must hold (labels as a sorted tuple of pairs)."""
    out = set()

    def add(name, **labels):
        out.add((name, tuple(sorted(labels.items()))))
    add("echochatd_build_info", version="0.1.0")
    add("echochatd_process_start_time_seconds")
    for svc in SERVICES:
        for n in ("echochatd_connections", "echochatd_connections_accepted_total",
                  "echochatd_received_bytes_total", "echochatd_sent_bytes_total"):
            add(n, service=svc)
        for r in REFUSE_REASONS:
            add("echochatd_connections_refused_total", service=svc, reason=r)
        for r in CLOSE_REASONS:
            add("echochatd_connections_closed_total", service=svc, reason=r)
    for n in ("echochatd_chat_lines_received_total", "echochatd_chat_lines_delivered_total",
              "echochatd_chat_rooms", "echochatd_chat_members",
              "echochatd_chat_slow_consumers_total"):
        add(n)
    for r in ("ok", "failed"):
        add("echochatd_config_reloads_total", result=r)
    return out


# --------------------------------------------------------------------------
# a strict parser of the Prometheus text exposition format 0.0.4

class FormatError(TestFailure):
    pass


METRIC_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
FLOAT_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN")
TIMESTAMP_RE = re.compile(r"-?\d+")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
# the sample names a family of each type may have
SUFFIXES = {"counter": ("",), "gauge": ("",), "untyped": ("",),
            "histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}


def _unescape(text, allowed, where):
    """Undo the format's backslash escapes; any other escape is an error."""
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text) or text[i + 1] not in allowed:
                raise FormatError("%s: invalid escape sequence %r" % (where, text[i:i + 2]))
            out.append(allowed[text[i + 1]])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _parse_labels(line, i, where):
    """Parse '{k="v",...}' from line[i] == '{'; returns ({k: v}, index after '}')."""
    labels = {}
    i += 1

    def blanks(j):
        while j < len(line) and line[j] in " \t":
            j += 1
        return j
    i = blanks(i)
    while True:
        if i < len(line) and line[i] == "}":
            return labels, i + 1
        m = LABEL_NAME_RE.match(line, i)
        if not m:
            raise FormatError("%s: invalid label name at column %d" % (where, i + 1))
        name = m.group(0)
        if name.startswith("__"):
            raise FormatError("%s: label name %s is reserved (starts with __)" % (where, name))
        if name in labels:
            raise FormatError("%s: label %s given twice" % (where, name))
        i = blanks(m.end())
        if i >= len(line) or line[i] != "=":
            raise FormatError("%s: expected '=' after label name %s" % (where, name))
        i = blanks(i + 1)
        if i >= len(line) or line[i] != '"':
            raise FormatError("%s: label value of %s is not quoted" % (where, name))
        j = i + 1
        while j < len(line) and line[j] != '"':
            j += 2 if line[j] == "\\" else 1
        if j >= len(line):
            raise FormatError("%s: unterminated label value of %s" % (where, name))
        labels[name] = _unescape(line[i + 1:j], {"\\": "\\", '"': '"', "n": "\n"},
                                 "%s: label %s" % (where, name))
        i = blanks(j + 1)
        if i < len(line) and line[i] == ",":
            i = blanks(i + 1)
            continue
        if i < len(line) and line[i] == "}":
            return labels, i + 1
        raise FormatError("%s: expected ',' or '}' after the value of label %s" % (where, name))


def parse_exposition(data):
    """Parse a whole exposition strictly; returns (families, samples).

    families: {name: {"type": T, "help": H}}; samples: {(name, sorted label pairs): value}.
    Raises FormatError on the first violation of the text format 0.0.4 or of our own
    rules: every sample's family has # HELP and # TYPE (counter or gauge) before its
    first sample, counters are named *_total and are not negative, no series twice,
    every line ends with \\n."""
    if not isinstance(data, bytes):
        raise FormatError("the exposition is not bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError("the exposition is not UTF-8: %s" % e)
    if not text:
        raise FormatError("the exposition is empty")
    if not text.endswith("\n"):
        raise FormatError("the last line does not end with \\n: %r" % text[-40:])
    if "\r" in text:
        raise FormatError("the exposition contains CR (lines must end with \\n alone)")
    families = {}
    samples = {}
    done = set()            # families whose group has ended
    current = None          # the family of the previous HELP/TYPE/sample line

    def enter(fam, where):
        nonlocal current
        if fam != current:
            if fam in done:
                raise FormatError("%s: lines of %s are not in one group" % (where, fam))
            if current is not None:
                done.add(current)
            current = fam

    for n, line in enumerate(text[:-1].split("\n"), 1):
        where = "line %d (%r)" % (n, line[:80])
        if line.strip(" \t") == "":
            continue                                   # empty lines are ignored
        if line.startswith("#"):
            parts = line[1:].lstrip(" \t").split(None, 2)
            if not parts or parts[0] not in ("HELP", "TYPE"):
                continue                               # a plain comment
            if len(parts) < 2:
                raise FormatError("%s: # %s without a metric name" % (where, parts[0]))
            name = parts[1]
            if not METRIC_NAME_RE.fullmatch(name):
                raise FormatError("%s: invalid metric name %r" % (where, name))
            enter(name, where)
            fam = families.setdefault(name, {"type": None, "help": None, "samples": 0})
            if parts[0] == "HELP":
                if fam["help"] is not None:
                    raise FormatError("%s: second # HELP for %s" % (where, name))
                rest = line.split(name, 1)[1]
                rest = rest[1:] if rest[:1] in (" ", "\t") else rest
                fam["help"] = _unescape(rest, {"\\": "\\", "n": "\n"}, where)
            else:
                if fam["type"] is not None:
                    raise FormatError("%s: second # TYPE for %s" % (where, name))
                if fam["samples"]:
                    raise FormatError("%s: # TYPE of %s after its samples" % (where, name))
                if len(parts) != 3 or parts[2] not in TYPES:
                    raise FormatError("%s: invalid type %r" % (where, " ".join(parts[2:])))
                fam["type"] = parts[2]
            continue
        m = METRIC_NAME_RE.match(line)
        if not m:
            raise FormatError("%s: a sample must start with a metric name" % where)
        name = m.group(0)
        i = m.end()
        labels = {}
        if i < len(line) and line[i] == "{":
            labels, i = _parse_labels(line, i, where)
        if i >= len(line) or line[i] not in " \t":
            raise FormatError("%s: expected blank before the value" % where)
        fields = line[i:].split()
        if not 1 <= len(fields) <= 2:
            raise FormatError("%s: expected a value and an optional timestamp" % where)
        if not FLOAT_RE.fullmatch(fields[0]):
            raise FormatError("%s: value %r is not a float" % (where, fields[0]))
        if len(fields) == 2 and not TIMESTAMP_RE.fullmatch(fields[1]):
            raise FormatError("%s: timestamp %r is not an integer" % (where, fields[1]))
        value = float(fields[0].replace("Inf", "inf"))
        # the family of this sample: the name itself, or the name without a
        # histogram/summary suffix if that family is typed so
        fam_name = name
        if name not in families:
            for base in families:
                t = families[base]["type"]
                if t and any(s and name == base + s for s in SUFFIXES[t]):
                    fam_name = base
                    break
        fam = families.get(fam_name)
        if fam is None or fam["type"] is None:
            raise FormatError("%s: no # TYPE line before the first sample of %s" % (where, name))
        if fam["help"] is None:
            raise FormatError("%s: no # HELP line before the first sample of %s" % (where, name))
        if fam["type"] not in ("counter", "gauge"):
            raise FormatError("%s: %s is a %s; only counters and gauges are expected"
                              % (where, fam_name, fam["type"]))
        if fam["type"] == "counter":
            if not name.endswith("_total"):
                raise FormatError("%s: counter %s is not named *_total" % (where, name))
            if math.isnan(value) or value < 0:
                raise FormatError("%s: counter %s has the value %s" % (where, name, fields[0]))
        enter(fam_name, where)
        fam["samples"] += 1
        key = (name, tuple(sorted(labels.items())))
        if key in samples:
            raise FormatError("%s: duplicate series %s%s" % (where, name, labels or ""))
        samples[key] = value
    for name, fam in families.items():
        if fam["samples"] == 0:
            raise FormatError("%s has # HELP/# TYPE but no sample" % name)
        if fam["type"] is None:
            raise FormatError("%s has no # TYPE line" % name)
        if fam["help"] is None:
            raise FormatError("%s has no # HELP line" % name)
    return families, samples


# --------------------------------------------------------------------------
# HTTP and scrapes

def http_request(port, method="GET", path="/metrics", body=None, host="127.0.0.1",
                 source=None, timeout=10):
    """One request on a fresh connection: (status, {lower-case header: value}, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=T(timeout),
                                      source_address=(source, 0) if source else None)
    try:
        conn.request(method, path, body=body)
        r = conn.getresponse()
        data = r.read()
        headers = {}
        for k, v in r.getheaders():
            headers.setdefault(k.lower(), v)
        return r.status, headers, data
    finally:
        conn.close()


class Scrape:
    """One parsed /metrics answer."""

    def __init__(self, port, body):
        self.port = port
        self.body = body
        self.families, self.samples = parse_exposition(body)

    def get(self, name, **labels):
        key = (name, tuple(sorted(labels.items())))
        if key not in self.samples:
            raise TestFailure("no series %s%s in the exposition" % (name, labels or ""))
        return self.samples[key]

    def __call__(self, name, **labels):
        return int(self.get(name, **labels))


def scrape(port):
    status, headers, body = http_request(port)
    check_eq(status, 200, "status of GET /metrics")
    check_eq(headers.get("content-type"), CONTENT_TYPE, "Content-Type of /metrics")
    return Scrape(port, body)


def deltas(before, after):
    """{(name, labels): after - before} for the series that changed."""
    out = {}
    for key, v in after.samples.items():
        d = v - before.samples.get(key, 0)
        if d and key[0] not in ("echochatd_connections", "echochatd_chat_rooms",
                                "echochatd_chat_members"):
            out[key] = d
    return out


def K(name, **labels):
    return (name, tuple(sorted(labels.items())))


def check_deltas(before, after, want, what):
    """The counters (not the gauges) changed by exactly `want` ({K(...): delta}), the
    others not at all."""
    got = deltas(before, after)
    want = {k: v for k, v in want.items() if v}
    if got != want:
        lines = []
        for k in sorted(set(got) | set(want)):
            if got.get(k, 0) != want.get(k, 0):
                lines.append("%s%s: expected +%d, got +%d" % (
                    k[0], "{%s}" % ",".join('%s="%s"' % kv for kv in k[1]) if k[1] else "",
                    want.get(k, 0), got.get(k, 0)))
        raise TestFailure("%s: counter deltas differ:\n%s" % (what, "\n".join(lines)))


def wait_scrape(port, pred, timeout, what):
    """Scrape until pred(scrape) is true; returns that scrape."""
    last = [None]

    def look():
        s = scrape(port)
        last[0] = s
        return s if pred(s) else None
    try:
        return wait_until(look, timeout, what, interval=0.05)
    except Timeout as e:
        raise Timeout("%s; last exposition:\n%s" % (e, "\n".join(
            "#   | " + l for l in last[0].body.decode().splitlines()
            if not l.startswith("#")) if last[0] else ""))


def connections_are(port, echo=None, chat=None, timeout=20):
    """Wait until the connections gauges show these numbers; returns the scrape."""
    def ok(s):
        return ((echo is None or s("echochatd_connections", service="echo") == echo) and
                (chat is None or s("echochatd_connections", service="chat") == chat))
    return wait_scrape(port, ok, timeout, "connections{echo}=%s, {chat}=%s" % (echo, chat))


# --------------------------------------------------------------------------
# daemons

def metrics_port(d, since=0, timeout=20):
    return int(d.wait_for_log(METRICS_RE, since=since, timeout=timeout).group(1))


class MDaemon:
    """A daemon with the metrics endpoint on 127.0.0.1, port 0 (echo and, with
    chat=True, chat on 127.0.0.1 port 0 too); .echo, .chat and .mport are the ports."""

    def __init__(self, *overrides, chat=True, config="", **kw):
        ov = METRICS_ON + (CHAT_ON if chat else CHAT_OFF) + list(overrides)
        self.d = Daemon(config=config, overrides=ov, only_echo=False, **kw)
        try:
            self.echo = self.d.port("echo")
            self.chat = self.d.port("chat") if chat else None
            self.mport = metrics_port(self.d)
            self.d.wait_ready()
        except BaseException:
            self.d.cleanup()
            raise

    def scrape(self):
        return scrape(self.mport)

    def __enter__(self):
        self.d.__enter__()
        return self

    def __exit__(self, *exc):
        return self.d.__exit__(*exc)


class CountingChat(ChatClient):
    """A ChatClient that counts the bytes it sends."""

    def __init__(self, *a, **kw):
        self.sent_bytes = 0
        super().__init__(*a, **kw)

    def send_raw(self, data):
        self.sent_bytes += len(data)
        super().send_raw(data)

    def say(self, text, eol=b"\r\n"):
        if isinstance(text, str):
            text = text.encode("utf-8")
        self.send_raw(text + eol)

    send_line = say


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# the format

def test_parser_selftest():
    """The parser rejects what it must (so that its silence on the daemon's output means
    something) and takes the format's legal corner cases."""
    good = (b"# a plain comment\n"
            b"# HELP x_total A \\\\ backslash and a \\n newline.\n"
            b"# TYPE x_total counter\n"
            b'x_total{a="q\\"uote",b="back\\\\slash",c="new\\nline",} 3 1700000000000\n'
            b"x_total 1e3\n"
            b"\n"
            b"# TYPE g gauge\n"
            b"# HELP g Any gauge.\n"
            b"g -Inf\n"
            b'g{ a = "1" , b="2"} +Inf\n'
            b"g{c=\"\"} NaN\n"
            b"g{d=\"x\"}\t.5\n")
    fams, samples = parse_exposition(good)
    check_eq(fams["x_total"]["help"], "A \\ backslash and a \n newline.", "HELP unescaped")
    check_eq(samples[K("x_total", a='q"uote', b="back\\slash", c="new\nline")], 3.0,
             "escaped label values")
    check_eq(samples[K("g", a="1", b="2")], float("inf"), "+Inf")
    check(math.isnan(samples[K("g", c="")]), "NaN")
    head = b"# HELP m M.\n# TYPE m gauge\n"
    bad = {
        "no TYPE": b"# HELP m M.\nm 1\n",
        "no HELP": b"# TYPE m gauge\nm 1\n",
        "TYPE after the sample": b"# HELP m M.\nm 1\n# TYPE m gauge\n",
        "second TYPE": head + b"# TYPE m gauge\nm 1\n",
        "second HELP": head + b"# HELP m again\nm 1\n",
        "unknown type": b"# HELP m M.\n# TYPE m meter\nm 1\n",
        "bad metric name": b"# HELP 1m M.\n# TYPE 1m gauge\n1m 1\n",
        "bad name in a sample": head + b"m-x 1\n",
        "bad label name": head + b'm{1a="x"} 1\n',
        "reserved label name": head + b'm{__a="x"} 1\n',
        "label twice": head + b'm{a="x",a="y"} 1\n',
        "unquoted label value": head + b"m{a=x} 1\n",
        "bad escape in a label": head + b'm{a="x\\t"} 1\n',
        "unterminated label value": head + b'm{a="x} 1\n',
        "missing comma": head + b'm{a="x" b="y"} 1\n',
        "bad escape in HELP": b"# HELP m a \\t tab\n# TYPE m gauge\nm 1\n",
        "value not a float": head + b"m one\n",
        "value with a unit": head + b"m 1s\n",
        "no value": head + b"m\n",
        "bad timestamp": head + b"m 1 1.5\n",
        "extra field": head + b"m 1 2 3\n",
        "duplicate series": head + b'm{a="x"} 1\nm{a="x"} 2\n',
        "duplicate series, labels reordered": head + b'm{a="x",b="y"} 1\nm{b="y",a="x"} 2\n',
        "counter without _total": b"# HELP c C.\n# TYPE c counter\nc 1\n",
        "negative counter": b"# HELP c_total C.\n# TYPE c_total counter\nc_total -1\n",
        "no final newline": head + b"m 1",
        "CRLF": b"# HELP m M.\r\n# TYPE m gauge\r\nm 1\r\n",
        "split group": head + b"m 1\n# HELP n N.\n# TYPE n gauge\nn 1\nm{a=\"x\"} 2\n",
        "family without samples": head,
        "empty": b"",
        "not UTF-8": head + b'm{a="\xff"} 1\n',
        "histogram": b"# HELP h H.\n# TYPE h histogram\nh_count 1\n",
    }
    for what, data in bad.items():
        try:
            parse_exposition(data)
        except FormatError:
            continue
        raise TestFailure("the parser accepted an exposition with: %s" % what)


def test_exposition_format():
    t0 = time.time()
    with MDaemon() as m:
        t1 = time.time()
        # something to count: an open echo client, an open chat client
        e = connect(m.echo)
        c = ChatClient(m.chat, "c")
        try:
            echo_check(e, b"hello")
            c.sync()
            s = connections_are(m.mport, echo=1, chat=1)
            body = s.body
            check_eq(set(s.samples), expected_series(), "the series of the exposition")
            for name, (typ, labels) in FAMILIES.items():
                check_eq(s.families[name]["type"], typ, "# TYPE of %s" % name)
                check(s.families[name]["help"].strip(), "empty # HELP of %s" % name)
            check_eq(sorted(s.families), sorted(FAMILIES), "the metric families")
            for key, v in s.samples.items():
                check(v >= 0 and v == int(v), "%s%s = %r is not a whole number >= 0"
                      % (key[0], dict(key[1]), v))
            check_eq(s("echochatd_build_info", version="0.1.0"), 1, "build_info")
            st = s.get("echochatd_process_start_time_seconds")
            check(int(t0) - 1 <= st <= t1 + 1, "process_start_time_seconds %r not between %.0f "
                  "and %.0f" % (st, t0, t1))
            check_eq((s("echochatd_connections", service="echo"),
                      s("echochatd_connections", service="chat")), (1, 1), "connections")
            check_eq((s("echochatd_chat_rooms"), s("echochatd_chat_members")), (1, 1),
                     "chat rooms, members")
            # every sample line follows its # HELP and # TYPE (one group per family)
            lines = body.decode().split("\n")[:-1]
            for i, l in enumerate(lines):
                if l.startswith("# HELP "):
                    name = l.split()[2]
                    check_eq(lines[i + 1].split()[:3], ["#", "TYPE", name],
                             "line after # HELP %s" % name)
            # HEAD: the same headers, no body
            status, headers, data = http_request(m.mport, "HEAD", "/metrics")
            check_eq((status, headers.get("content-type"), data), (200, CONTENT_TYPE, b""),
                     "HEAD /metrics: status, Content-Type, body")
            promtool = shutil.which("promtool")
            if promtool:
                r = subprocess.run([promtool, "check", "metrics"], input=body,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   timeout=T(30))
                check(r.returncode == 0, "promtool check metrics failed (%d):\n%s"
                      % (r.returncode, r.stdout.decode(errors="replace")))
                print("# promtool check metrics: OK")
            else:
                print("# promtool not installed: only our own parser checked the format")
        finally:
            e.close()
            c.close()
        check_eq(m.d.stop(), 0, "exit status")


# --------------------------------------------------------------------------
# counters

def test_echo_counters():
    with MDaemon() as m:
        before = m.scrape()
        socks = [connect(m.echo) for _ in range(3)]
        try:
            for i, s in enumerate(socks):
                echo_check(s, tl.pattern_data(1000) if i == 0 else os.urandom(1000))
            s_open = connections_are(m.mport, echo=3, chat=0)
            check_deltas(before, s_open, {
                K("echochatd_connections_accepted_total", service="echo"): 3,
                K("echochatd_received_bytes_total", service="echo"): 3000,
                K("echochatd_sent_bytes_total", service="echo"): 3000,
            }, "3 echo clients after 1000 bytes each")
        finally:
            close_all(socks)
        after = connections_are(m.mport, echo=0)
        check_deltas(before, after, {
            K("echochatd_connections_accepted_total", service="echo"): 3,
            K("echochatd_connections_closed_total", service="echo", reason="peer"): 3,
            K("echochatd_received_bytes_total", service="echo"): 3000,
            K("echochatd_sent_bytes_total", service="echo"): 3000,
        }, "3 echo clients, 1000 bytes each, closed")
        check_eq(m.d.stop(), 0, "exit status")


def test_echo_half_close_counts_peer():
    """A client that sends, closes its side and reads the rest: peer close, every byte
    counted both ways."""
    with MDaemon(chat=False) as m:
        before = m.scrape()
        s = connect(m.echo)
        try:
            data = os.urandom(200 * 1024)
            snd = tl.Sender(s, data, shut_wr=True)
            rcv = tl.Receiver(s)
            snd.start()
            rcv.start()
            snd.finish()
            got, how = rcv.finish()
            check(got == data and how == "eof", "echo of 200 KiB then FIN: %d bytes, %s"
                  % (len(got), how))
        finally:
            s.close()
        after = connections_are(m.mport, echo=0)
        check_deltas(before, after, {
            K("echochatd_connections_accepted_total", service="echo"): 1,
            K("echochatd_connections_closed_total", service="echo", reason="peer"): 1,
            K("echochatd_received_bytes_total", service="echo"): len(data),
            K("echochatd_sent_bytes_total", service="echo"): len(data),
        }, "200 KiB echoed with a half-close")
        check_eq(m.d.stop(), 0, "exit status")


def test_chat_counters():
    with MDaemon("chat.rate=0", "chat.history=20") as m:
        before = m.scrape()
        a = CountingChat(m.chat, "a")
        b = CountingChat(m.chat, "b")
        try:
            a.expect("* %s has joined #lobby" % b.nick)
            old = a.set_nick("alice")                     # /nick: 1 line in, 2 out
            b.expect("* %s is now known as alice" % old)
            s = m.scrape()
            check_eq((s("echochatd_connections", service="chat"), s("echochatd_chat_rooms"),
                      s("echochatd_chat_members")), (2, 1, 2),
                     "connections{chat}, rooms, members with 2 clients in #lobby")
            for k in range(5):
                a.say("message %d" % k)
            for k in range(5):
                b.expect("<alice> message %d" % k)
            b.sync()                                       # /topic
            b.say("/join #side")
            a.expect("* %s has left #lobby" % b.nick)
            b.expect("* %s has left #lobby" % b.nick)
            b.expect("* %s has joined #side" % b.nick)
            b.expect("* no topic is set for #side")
            b.expect("* members of #side (1): %s" % b.nick)
            s = m.scrape()
            check_eq((s("echochatd_chat_rooms"), s("echochatd_chat_members")), (2, 2),
                     "rooms, members with alice in #lobby and bob in #side")
            a.say("/quit see you")
            a.expect("* bye")
            a.expect_eof()
            a.close()                                     # the daemon waits for our FIN
            s = connections_are(m.mport, chat=1)
            check_eq((s("echochatd_chat_rooms"), s("echochatd_chat_members")), (1, 1),
                     "rooms, members after alice quit")
            b.shutdown_write()
            b.expect_eof()
            b.close()
        finally:
            a.close()
            b.close()
        after = connections_are(m.mport, chat=0)
        check_eq((after("echochatd_chat_rooms"), after("echochatd_chat_members")), (0, 0),
                 "rooms, members when everybody left")
        # lines in: a: /nick, 5 messages, /quit; b: /topic, /join
        lines_in = 7 + 2
        lines_out = len(a.all_lines) + len(b.all_lines)
        # a: welcome, you are, join, topic, members; b's join; the nick change; b's left; bye
        # b: welcome, you are, join, topic, members; the nick change; 5 messages; topic;
        #    left, joined, topic, members of #side
        check_eq((len(a.all_lines), len(b.all_lines)), (9, 16), "lines received by a and b")
        check_deltas(before, after, {
            K("echochatd_connections_accepted_total", service="chat"): 2,
            K("echochatd_connections_closed_total", service="chat", reason="peer"): 2,
            K("echochatd_received_bytes_total", service="chat"): a.sent_bytes + b.sent_bytes,
            K("echochatd_sent_bytes_total", service="chat"): len(a.raw) + len(b.raw),
            K("echochatd_chat_lines_received_total"): lines_in,
            K("echochatd_chat_lines_delivered_total"): lines_out,
        }, "a chat session of two clients")
        check_eq(m.d.stop(), 0, "exit status")


def test_chat_line_counting_rules():
    """What is a line: blank-only and control-only lines are; empty lines and over-long
    lines are not; a broadcast counts once per receiver; the history replayed on a join
    counts; every line ending counts once."""
    with MDaemon("chat.rate=0", "chat.history=5", "chat.max_line=16", chat=True) as m:
        a = ChatClient(m.chat, "a")
        b = ChatClient(m.chat, "b")
        c = ChatClient(m.chat, "c")
        try:
            a.expect("* %s has joined #lobby" % b.nick)
            a.expect("* %s has joined #lobby" % c.nick)
            b.expect("* %s has joined #lobby" % c.nick)
            before = m.scrape()
            # 4 lines with 4 kinds of line ending, 2 empty lines, 1 line too long
            a.send_raw(b"one\ntwo\r\nthree\r\x00four\r\r\n\n" + b"x" * 40 + b"\r\n")
            for x in (b, c):
                x.expect_lines(["<%s> %s" % (a.nick, w) for w in ("one", "two", "three", "four")])
            a.expect("! line too long (at most 16 bytes): discarded")
            a.sync()
            b.sync()
            c.sync()
            after = m.scrape()
            check_eq(after("echochatd_chat_lines_received_total") -
                     before("echochatd_chat_lines_received_total"), 4 + 3,
                     "lines received (4 messages, 3 /topic; not the empty or over-long ones)")
            check_eq(after("echochatd_chat_lines_delivered_total") -
                     before("echochatd_chat_lines_delivered_total"), 4 * 2 + 1 + 3,
                     "lines delivered (4 messages to 2 receivers, 1 error, 3 topic replies)")
            # the history replayed on a join counts too: d gets 5 lines + its welcome
            before = after
            d = ChatClient(m.chat, "d")
            try:
                hist = ["<%s> %s" % (a.nick, w) for w in ("one", "two", "three", "four")]
                for x in (a, b, c):
                    x.expect("* %s has joined #lobby" % d.nick)
                    x.sync()
                lines_d = list(d.welcome_lines)
                for h in hist:
                    lines_d.append(d.expect(h))
                d.sync()
                after = m.scrape()
                check_eq(after("echochatd_chat_lines_delivered_total") -
                         before("echochatd_chat_lines_delivered_total"),
                         len(lines_d) + 1 + 3 + 3,
                         "lines delivered for a join with history (d's %d lines and its /topic "
                         "reply, the join notice at 3 others and their /topic replies)"
                         % len(lines_d))
            finally:
                d.close()
        finally:
            a.close()
            b.close()
            c.close()
        check_eq(m.d.stop(), 0, "exit status")


def test_chat_telnet_replies_not_lines():
    """The daemon's telnet answers (IAC WONT x / IAC DONT x) are bytes sent, but not
    lines delivered - also for option 10, whose byte is a line feed."""
    with MDaemon("chat.rate=0") as m:
        c = ChatClient(m.chat, "c", telnet=True)
        try:
            before = m.scrape()
            raw0 = len(c.raw)
            asked = bytes([IAC, DO, 1, IAC, WILL, 3, IAC, DO, 10, IAC, WILL, 10, IAC, DO, 13])
            c.send_raw(asked + b"/topic\r\n")
            c.expect(SYNC_RE)                  # the answers come before the /topic reply
            c.sync()
            after = m.scrape()
            check_eq(sorted(c.iac), sorted(bytes([IAC, 252 if x[0] == DO else 254, x[1]])
                                           for x in ((DO, 1), (WILL, 3), (DO, 10), (WILL, 10),
                                                     (DO, 13))), "telnet answers received")
            check_eq(after("echochatd_chat_lines_received_total") -
                     before("echochatd_chat_lines_received_total"), 2, "lines received")
            check_eq(after("echochatd_sent_bytes_total", service="chat") -
                     before("echochatd_sent_bytes_total", service="chat"),
                     len(c.raw) - raw0, "bytes sent (5 answers of 3 bytes and 2 lines)")
            check_eq(after("echochatd_chat_lines_delivered_total") -
                     before("echochatd_chat_lines_delivered_total"), 2,
                     "lines delivered for 2 /topic replies and 5 telnet answers "
                     "(IAC WONT 10 and IAC DONT 10 end in a line feed byte, but are no lines)")
        finally:
            c.close()
        check_eq(m.d.stop(), 0, "exit status")


# --------------------------------------------------------------------------
# refusals

def test_refused_max_clients():
    with MDaemon("server.max_clients=1", "server.max_clients_per_address=0") as m:
        before = m.scrape()
        keep = connect(m.echo)
        try:
            echo_check(keep, b"the one allowed")
            for port in (m.echo, m.chat, m.echo):
                s = connect(port)
                try:
                    data, how = recv_until_eof(s, timeout=10)
                    check_eq(data, b"", "data sent to a client over max_clients")
                finally:
                    s.close()
            after = m.scrape()
            check_deltas(before, after, {
                K("echochatd_connections_accepted_total", service="echo"): 1,
                K("echochatd_received_bytes_total", service="echo"): 15,
                K("echochatd_sent_bytes_total", service="echo"): 15,
                K("echochatd_connections_refused_total", service="echo", reason="max_clients"): 2,
                K("echochatd_connections_refused_total", service="chat", reason="max_clients"): 1,
            }, "max_clients = 1: 1 served, 3 refused")
            check_eq(after("echochatd_connections", service="echo"), 1, "connections{echo}")
        finally:
            keep.close()
        check_eq(m.d.stop(), 0, "exit status")


def test_refused_per_address():
    from stresslib import connect_from, turned_away
    with MDaemon("server.max_clients_per_address=1") as m:
        before = m.scrape()
        keep = connect(m.echo)
        try:
            echo_check(keep, b"x")
            turned_away(m.echo, "127.0.0.1", send=None)
            turned_away(m.chat, "127.0.0.1", send=None,
                        expect=b"! too many connections from your address\r\n")
            other = connect_from(m.echo, "127.0.0.2")     # another address is not limited
            try:
                echo_check(other, b"y")
            finally:
                other.close()
            after = connections_are(m.mport, echo=1)
            check_deltas(before, after, {
                K("echochatd_connections_accepted_total", service="echo"): 2,
                K("echochatd_connections_closed_total", service="echo", reason="peer"): 1,
                K("echochatd_received_bytes_total", service="echo"): 2,
                K("echochatd_sent_bytes_total", service="echo"): 2,
                K("echochatd_connections_refused_total", service="echo", reason="per_address"): 1,
                K("echochatd_connections_refused_total", service="chat", reason="per_address"): 1,
            }, "max_clients_per_address = 1 (the chat refusal line is not counted as sent)")
        finally:
            keep.close()
        check_eq(m.d.stop(), 0, "exit status")


def test_refused_denied():
    from stresslib import served, turned_away
    with MDaemon("server.deny=127.0.0.2") as m:
        before = m.scrape()
        turned_away(m.echo, "127.0.0.2", send=None)
        turned_away(m.echo, "127.0.0.2", send=None)
        turned_away(m.chat, "127.0.0.2", send=None)
        s = served(m.echo, "127.0.0.3", payload=b"allowed")
        s.close()
        after = connections_are(m.mport, echo=0)
        check_deltas(before, after, {
            K("echochatd_connections_accepted_total", service="echo"): 1,
            K("echochatd_connections_closed_total", service="echo", reason="peer"): 1,
            K("echochatd_received_bytes_total", service="echo"): 7,
            K("echochatd_sent_bytes_total", service="echo"): 7,
            K("echochatd_connections_refused_total", service="echo", reason="denied"): 2,
            K("echochatd_connections_refused_total", service="chat", reason="denied"): 1,
        }, "deny = 127.0.0.2")
        # the allow/deny lists are for the services: the endpoint answers a denied address
        status, _, _ = http_request(m.mport, "GET", "/healthz", source="127.0.0.2")
        check_eq(status, 200, "GET /healthz from the denied address 127.0.0.2")
        check_eq(m.d.stop(), 0, "exit status")


def test_refused_fd_exhausted():
    """Out of descriptors: the connection the daemon accepts with its spare descriptor
    and closes at once counts as refused (fd_exhausted)."""
    import resource
    from stresslib import fd_count, raise_nofile, socket_from
    if wrapper():
        raise Skip("descriptor limits do not apply to a wrapped daemon")
    if not hasattr(resource, "prlimit"):
        raise Skip("no resource.prlimit")
    raise_nofile()
    storm_n = 40                                    # below the backlog: none waits for a SYN
    with MDaemon("server.max_clients=1000", "server.max_clients_per_address=0",
                 chat=False) as m:
        before = m.scrape()
        soft, hard = resource.prlimit(m.d.pid, resource.RLIMIT_NOFILE)
        limit = fd_count(m.d.pid) + 8
        try:
            resource.prlimit(m.d.pid, resource.RLIMIT_NOFILE, (limit, hard))
        except (PermissionError, OSError) as e:
            raise Skip("cannot lower the daemon's RLIMIT_NOFILE: %s" % e)
        storm = []
        sel = selectors.DefaultSelector()
        try:
            mark = m.d.mark()
            for i in range(storm_n):
                s = socket_from("127.0.0.%d" % (2 + i % 20))
                s.setblocking(False)
                err = s.connect_ex(("127.0.0.1", m.echo))
                check(err in (0, errno.EINPROGRESS), "connect: %s" % os.strerror(err))
                storm.append(s)
                sel.register(s, selectors.EVENT_READ)
            m.d.wait_for_log(r"warning: accept: Too many open files: pausing listeners", since=mark)
            shed = set()

            def one_shed():
                for key, _ in sel.select(timeout=0.05):
                    try:
                        data = key.fileobj.recv(100)
                    except OSError:
                        data = b""
                    check_eq(data, b"", "data sent to a connection shed for lack of descriptors")
                    sel.unregister(key.fileobj)
                    shed.add(key.fileobj)
                return shed
            wait_until(one_shed, 10, "a connection closed by the daemon for lack of descriptors")
        finally:
            resource.prlimit(m.d.pid, resource.RLIMIT_NOFILE, (soft, hard))
        try:
            # every storm connection is accounted for: accepted, or refused for lack of fds
            def all_counted(s):
                return (s("echochatd_connections_accepted_total", service="echo") -
                        before("echochatd_connections_accepted_total", service="echo") +
                        s("echochatd_connections_refused_total", service="echo",
                          reason="fd_exhausted") >= storm_n)
            s = wait_scrape(m.mport, all_counted, 20, "all %d connections counted" % storm_n)
            refused = s("echochatd_connections_refused_total", service="echo",
                        reason="fd_exhausted")
            accepted = (s("echochatd_connections_accepted_total", service="echo") -
                        before("echochatd_connections_accepted_total", service="echo"))
            check(refused >= 1, "refused{fd_exhausted} = %d" % refused)
            check_eq(accepted + refused, storm_n, "accepted + refused{fd_exhausted}")
            check_eq(s("echochatd_connections", service="echo"), accepted, "connections{echo}")
            # and the refused ones are exactly those that the daemon closed at once
            wait_until(lambda: len(one_shed()) >= refused, 10,
                       "%d connections closed by the daemon" % refused)
            for key, _ in sel.select(timeout=0.2):
                raise TestFailure("an accepted storm connection was closed, or more than %d "
                                  "were shed" % refused)
            check_eq(len(shed), refused, "connections closed by the daemon at once")
            print("# %d connections: %d accepted, %d refused (fd_exhausted)"
                  % (storm_n, accepted, refused))
        finally:
            sel.close()
            close_all(storm)
        s = connections_are(m.mport, echo=0)
        check_eq(s("echochatd_connections_closed_total", service="echo", reason="error") +
                 s("echochatd_connections_closed_total", service="echo", reason="peer"),
                 accepted, "closed{peer} + closed{error} after the storm left")
        check_eq(m.d.stop(), 0, "exit status")


# --------------------------------------------------------------------------
# close reasons

def test_slow_consumer():
    """A chat client that never reads is dropped: slow_consumers_total +1 and
    closed{chat,slow_consumer} +1; what it was never sent is not counted as sent."""
    line_len, batch, max_lines = 200, 100, 40000
    with MDaemon("chat.rate=0", "chat.history=0", "chat.max_output=65536") as m:
        before = m.scrape()
        slow = CountingChat(m.chat, "slow", rcvbuf=4096)  # reads its welcome, then never again
        snd = CountingChat(m.chat, "sender")
        obs = CountingChat(m.chat, "observer")
        pool = Pool([snd, obs])
        try:
            snd.expect("* %s has joined #lobby" % obs.nick)
            slow_nick = slow.nick
            slow_peer = peer_str(slow.sock.getsockname())
            before_drop = m.scrape()
            sent = 0

            def quit_seen():
                return any(l.startswith("* %s has quit" % slow_nick)
                           for l in obs.all_lines[-batch - 5:])
            while not quit_seen():
                check(sent < max_lines, "the never-reading client was not dropped after %d "
                      "lines" % sent)
                lines = ["L%05d " % (sent + k) for k in range(batch)]
                snd.send_raw("".join(l + "x" * (line_len - len(l)) + "\r\n"
                                     for l in lines).encode())
                sent += batch
                pool.pump(lambda: sum(1 for l in obs.all_lines if l.startswith("<")) >= sent,
                          30, "the observer to receive %d lines" % sent)
            snd.wait_for("* %s has quit (slow consumer)" % slow_nick)
            snd.sync()
            obs.pending.clear()
            obs.sync()
            after = connections_are(m.mport, chat=2)
            got = deltas(before_drop, after)
            check_eq((got.get(K("echochatd_chat_slow_consumers_total")),
                      got.get(K("echochatd_connections_closed_total", service="chat",
                                reason="slow_consumer"))),
                     (1, 1), "slow_consumers_total, closed{chat,slow_consumer} deltas")
            other = {k: v for k, v in got.items() if k[0] == "echochatd_connections_closed_total"
                     and k != K("echochatd_connections_closed_total", service="chat",
                                reason="slow_consumer")}
            check_eq(other, {}, "other closed counters")
            # bytes: what the dropped client can still read is what was written for it
            rest, how = recv_until_eof(slow.sock, timeout=30)
            check_eq(how, "eof", "end of the dropped client's connection")
            slow_out = len(slow.raw) + len(rest)
            mm = m.d.wait_for_log(r"warning: chat: #\d+ %s closed \(slow consumer: output queue "
                                  r"passed max_output\): 0 bytes in, (\d+) bytes out"
                                  % re.escape(slow_peer))
            check_eq(int(mm.group(1)), slow_out, "bytes out in the log line = bytes the dropped "
                     "client received")
            check_eq(after("echochatd_sent_bytes_total", service="chat") -
                     before("echochatd_sent_bytes_total", service="chat"),
                     slow_out + len(snd.raw) + len(obs.raw),
                     "sent{chat}: the bytes the 3 clients received (not what was dropped unsent)")
            check_eq(after("echochatd_received_bytes_total", service="chat") -
                     before("echochatd_received_bytes_total", service="chat"),
                     slow.sent_bytes + snd.sent_bytes + obs.sent_bytes, "received{chat}")
            print("# dropped after %d lines; it had been sent %d bytes" % (sent, slow_out))
        finally:
            pool.close()
            slow.close()
        check_eq(m.d.stop(), 0, "exit status")


def test_close_reasons_idle_and_error():
    with MDaemon("echo.idle_timeout=1", "chat.idle_timeout=1") as m:
        before = m.scrape()
        e = connect(m.echo)
        c = ChatClient(m.chat, "c")
        try:
            data, how = recv_until_eof(e, timeout=10)        # idle: FIN from the daemon
            check_eq((data, how), (b"", "eof"), "the idle echo client's end")
            c.expect("! idle timeout: closing")
            c.expect_eof()
        finally:
            e.close()
            c.close()
        s = connections_are(m.mport, echo=0, chat=0)
        got = deltas(before, s)
        check_eq((got.get(K("echochatd_connections_closed_total", service="echo", reason="idle")),
                  got.get(K("echochatd_connections_closed_total", service="chat", reason="idle"))),
                 (1, 1), "closed{idle} deltas of echo and chat")
        # a reset: closed{error}
        before = s
        r = connect(m.echo)
        echo_check(r, b"then a reset")
        s = connections_are(m.mport, echo=1)
        set_linger0(r)
        r.close()
        after = connections_are(m.mport, echo=0)
        check_deltas(before, after, {
            K("echochatd_connections_accepted_total", service="echo"): 1,
            K("echochatd_connections_closed_total", service="echo", reason="error"): 1,
            K("echochatd_received_bytes_total", service="echo"): 12,
            K("echochatd_sent_bytes_total", service="echo"): 12,
        }, "an echo client that resets its connection")
        check_eq(m.d.stop(), 0, "exit status")


def test_healthz_during_shutdown():
    with MDaemon("server.shutdown_timeout=5") as m:
        status, headers, body = http_request(m.mport, "GET", "/healthz")
        check_eq((status, body), (200, b"ok\n"), "/healthz while serving")
        a = connect(m.echo)
        b = connect(m.echo)
        c = ChatClient(m.chat, "c")
        try:
            echo_check(a, b"a")
            echo_check(b, b"b")
            before = connections_are(m.mport, echo=2, chat=1)
            raw0 = len(c.raw)
            mark = m.d.mark()
            m.d.send_signal(signal.SIGTERM)
            m.d.wait_for_log(r"shutting down on SIGTERM: 3 clients to drain$", since=mark)
            status, headers, body = http_request(m.mport, "GET", "/healthz")
            check_eq((status, body), (503, b"shutting down\n"), "/healthz during the drain")
            status, _, _ = http_request(m.mport, "HEAD", "/healthz")
            check_eq(status, 503, "HEAD /healthz during the drain")
            # a and the chat client close after our FIN; b keeps the drain going
            check_eq(recv_until_eof(a, timeout=10), (b"", "eof"), "a: end after SIGTERM")
            a.close()
            c.expect("* server shutting down")
            c.expect_eof()
            c.close()
            s = connections_are(m.mport, echo=1, chat=0)
            check_deltas(before, s, {
                K("echochatd_connections_closed_total", service="echo", reason="shutdown"): 1,
                K("echochatd_connections_closed_total", service="chat", reason="shutdown"): 1,
                K("echochatd_sent_bytes_total", service="chat"): len(c.raw) - raw0,
                K("echochatd_chat_lines_delivered_total"): 1,
            }, "during the drain")
            status, _, _ = http_request(m.mport, "GET", "/healthz")
            check_eq(status, 503, "/healthz still during the drain")
        finally:
            a.close()
            c.close()
            b.close()
        check_eq(m.d.wait(20), 0, "exit status after the drain")


# --------------------------------------------------------------------------
# the HTTP side

def test_http_paths_and_methods():
    with MDaemon(chat=False) as m:
        status, headers, body = http_request(m.mport, "GET", "/healthz")
        check_eq((status, body), (200, b"ok\n"), "GET /healthz")
        check(headers.get("content-type", "").startswith("text/plain"),
              "Content-Type of /healthz: %r" % headers.get("content-type"))
        status, headers, body = http_request(m.mport, "HEAD", "/healthz")
        check_eq((status, body), (200, b""), "HEAD /healthz")
        status, headers, body = http_request(m.mport, "GET", "/metrics?name=x")
        check_eq((status, headers.get("content-type")), (200, CONTENT_TYPE),
                 "GET /metrics with a query string")
        Scrape(m.mport, body)
        for path in ("/", "/nope", "/metrics/", "/METRICS", "/healthz/x", "/clients.json"):
            status, headers, body = http_request(m.mport, "GET", path)
            check_eq(status, 404, "GET %s" % path)
            status, headers, body = http_request(m.mport, "HEAD", path)
            check_eq((status, body), (404, b""), "HEAD %s" % path)
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            for path in ("/metrics", "/healthz", "/clients", "/nope"):
                status, headers, body = http_request(m.mport, method, path, body=b"x=1")
                check_eq(status, 405, "%s %s" % (method, path))
                check_eq(headers.get("allow"), "GET, HEAD", "Allow header of %s %s"
                         % (method, path))
        # the endpoint is still fine, and the daemon counted none of this as a client
        s = m.scrape()
        check_eq(s("echochatd_connections_accepted_total", service="echo"), 0,
                 "accepted{echo} after HTTP requests only")
        check_eq(m.d.stop(), 0, "exit status")


def test_clients_json():
    with MDaemon("chat.rate=0") as m:
        status, headers, body = http_request(m.mport, "GET", "/clients")
        check_eq(status, 200, "GET /clients")
        check_eq(headers.get("content-type"), "application/json", "Content-Type of /clients")
        check_eq(json.loads(body.decode("utf-8")), [], "/clients without clients")
        t0 = time.monotonic()
        e = connect(m.echo)
        c = CountingChat(m.chat, "c")
        d = ChatClient(m.chat, "d")
        try:
            echo_check(e, b"e" * 123)
            c.expect("* %s has joined #lobby" % d.nick)
            old = c.set_nick("carol")
            d.expect("* %s is now known as carol" % old)
            d.say("/join #side")
            d.wait_for("* members of #side (1): %s" % d.nick)
            c.expect("* %s has left #lobby" % d.nick)
            c.sync()
            m.d.wait_for_log(r"chat: #\d+ %s connected" % re.escape(peer_str(d.sock.getsockname())))
            status, headers, body = http_request(m.mport, "GET", "/clients")
            age_max = time.monotonic() - t0 + 1
            check_eq(status, 200, "GET /clients")
            try:
                got = json.loads(body.decode("utf-8"))
            except ValueError as ex:
                raise TestFailure("/clients is not JSON (%s): %r" % (ex, body[:200]))
            check(isinstance(got, list) and len(got) == 3, "/clients: %r" % (got,))
            by_peer = {x.get("peer"): x for x in got}
            ids = {}
            for sock, svc in ((e, "echo"), (c.sock, "chat"), (d.sock, "chat")):
                peer = peer_str(sock.getsockname())
                check(peer in by_peer, "/clients has no entry for %s: %r" % (peer, got))
                x = by_peer[peer]
                keys = {"id", "service", "peer", "age_seconds", "bytes_in", "bytes_out"}
                if svc == "chat":
                    keys |= {"nick", "room"}
                check_eq(set(x), keys, "keys of the /clients entry of %s" % peer)
                check_eq(x["service"], svc, "service of %s" % peer)
                age = x["age_seconds"]
                check(isinstance(age, (int, float)) and 0 <= age <= age_max,
                      "age_seconds of %s: %r" % (peer, age))
                mm = m.d.find_log(r"%s: #(\d+) %s connected" % (svc, re.escape(peer)))
                check(mm, "no 'connected' log line of %s" % peer)
                check_eq(x["id"], int(mm.group(1)), "id of %s (as in the log)" % peer)
                ids[peer] = x["id"]
            xe = by_peer[peer_str(e.getsockname())]
            check_eq((xe["bytes_in"], xe["bytes_out"]), (123, 123), "echo bytes_in, bytes_out")
            xc = by_peer[peer_str(c.sock.getsockname())]
            check_eq((xc["nick"], xc["room"]), ("carol", "#lobby"), "nick and room of carol")
            check_eq((xc["bytes_in"], xc["bytes_out"]), (c.sent_bytes, len(c.raw)),
                     "carol's bytes_in, bytes_out")
            xd = by_peer[peer_str(d.sock.getsockname())]
            check_eq((xd["nick"], xd["room"]), (d.nick, "#side"), "nick and room of d")
            check_eq(len(set(ids.values())), 3, "distinct ids")
            status, headers, body = http_request(m.mport, "HEAD", "/clients")
            check_eq((status, body), (200, b""), "HEAD /clients")
        finally:
            e.close()
            c.close()
            d.close()
        connections_are(m.mport, echo=0, chat=0)
        status, headers, body = http_request(m.mport, "GET", "/clients")
        check_eq(json.loads(body.decode("utf-8")), [], "/clients after everybody left")
        check_eq(m.d.stop(), 0, "exit status")


# --------------------------------------------------------------------------
# configuration

def test_bind_list():
    """bind is an address list: one socket per address (with port 0 each its own port)."""
    if not tl.ipv6_available():
        raise Skip("no IPv6 loopback (::1)")
    with Daemon(config="", overrides=CHAT_OFF + ["metrics.enabled=yes", "metrics.port=0",
                                                 "metrics.bind=127.0.0.1, ::1"],
                only_echo=False) as d:
        d.port()
        d.wait_ready()
        p4 = metrics_port(d)
        p6 = int(d.wait_for_log(r"notice: metrics: listening on \[::1\]:(\d+)$").group(1))
        status, headers, body = http_request(p6, host="::1")
        check_eq((status, headers.get("content-type")), (200, CONTENT_TYPE), "GET /metrics on ::1")
        check_eq(set(Scrape(p6, body).samples), set(scrape(p4).samples),
                 "series on ::1 and on 127.0.0.1")
        check_eq(d.stop(), 0, "exit status")


def test_port_taken():
    """At start-up an endpoint that cannot listen is fatal (exit 1); on a reload it is
    logged, the endpoint stays closed, and the reload still counts as ok."""
    blocker = socket.socket()
    try:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        taken = blocker.getsockname()[1]
        r = tl.run_cli(["-o", "echo.bind=127.0.0.1", "-o", "echo.port=0"] + sum(
            (["-o", o] for o in CHAT_OFF + ["metrics.enabled=yes", "metrics.bind=127.0.0.1",
                                            "metrics.port=%d" % taken]), []))
        check_eq(r.returncode, 1, "exit status with the metrics port taken")
        check(re.search(r"metrics: cannot listen on 127\.0\.0\.1\D+%d\b" % taken, r.stderr),
              "no 'metrics: cannot listen on 127.0.0.1 ... %d' line:\n%s" % (taken, r.stderr))
        check(not re.search(r"(^|: )ready$", r.stderr, re.M), "'ready' logged:\n" + r.stderr)
        # on a reload
        with Daemon(config=metrics_cfg(), default_listen=False, only_echo=False) as d:
            echo = d.port()
            p1 = metrics_port(d)
            d.wait_ready()
            d.write_config(metrics_cfg(port=taken))
            mark = hup(d)
            d.wait_for_log(r"error: metrics: cannot listen on 127\.0\.0\.1\D+%d\b" % taken,
                           since=mark)
            expect_refused(p1)
            d.write_config(metrics_cfg())
            mark = hup(d)
            p2 = metrics_port(d, since=mark)
            s = scrape(p2)
            check_eq((s("echochatd_config_reloads_total", result="ok"),
                      s("echochatd_config_reloads_total", result="failed")), (2, 0),
                     "reloads: the one that could not open the endpoint counts as ok")
            e = connect(echo)
            try:
                echo_check(e, b"still serving")
            finally:
                e.close()
            check_eq(d.stop(), 0, "exit status")
    finally:
        blocker.close()


def test_disabled_by_default():
    # no [metrics] at all: no "metrics:" line, and -T says enabled = no
    with Daemon(config="", overrides=CHAT_OFF, only_echo=False) as d:
        d.port()
        d.wait_ready()
        mark = d.mark()
        d.send_signal(signal.SIGUSR1)                 # something to wait for
        d.wait_for_log(r"notice: stats: ", since=mark)
        check(not d.find_log(r"metrics:"), "a 'metrics:' log line without [metrics] enabled:\n"
              + d.tail())
        check_eq(d.stop(), 0, "exit status")
    with Daemon(config="", start=False) as empty:          # (for its empty config file)
        r = tl.run_cli(["-T", "-c", empty.config_path])
    check_eq(r.returncode, 0, "echochatd -T exit status")
    dump = r.stdout.split("[metrics]\n", 1)
    check(len(dump) == 2, "no [metrics] section in the -T output:\n" + r.stdout)
    check(dump[1].startswith("enabled = no\nbind = 127.0.0.1\nport = 9707\n"),
          "[metrics] in the -T output:\n" + dump[1])
    # a port given, but not enabled (by default, or explicitly): nothing listens
    for extra in ([], ["metrics.enabled=no"]):
        for _ in range(3):
            port = free_port()
            with Daemon(config="", overrides=CHAT_OFF + ["metrics.port=%d" % port,
                                                         "metrics.bind=127.0.0.1"] + extra,
                        only_echo=False) as d:
                d.port()
                d.wait_ready()
                s, err = try_connect(port, timeout=5)
                if s is not None:
                    s.close()
                    # somebody else may have taken the port meanwhile: not ours?
                    check(not d.find_log(r"metrics:"), "metrics endpoint opened with %s" % extra)
                    continue
                check_eq(errno.errorcode.get(err, err), "ECONNREFUSED",
                         "connect to metrics.port %d with %s" % (port, extra or "no enabled"))
                check(not d.find_log(r"metrics:"), "a 'metrics:' log line with %s:\n%s"
                      % (extra, d.tail()))
                check_eq(d.stop(), 0, "exit status")
                break
        else:
            raise TestFailure("port %d was always taken by somebody else" % port)
    # enabled without bind: 127.0.0.1 only
    with Daemon(config="", overrides=CHAT_OFF + ["metrics.enabled=yes", "metrics.port=0"],
                only_echo=False) as d:
        d.port()
        d.wait_ready()
        lines = [l for l in d.log_lines() if "metrics: listening on" in l]
        check_eq(len(lines), 1, "'metrics: listening' lines with the default bind")
        check(re.search(METRICS_RE, lines[0]), "default bind: %r" % lines[0])
        check_eq(d.stop(), 0, "exit status")


def test_sigusr1_stats():
    stats_re = re.compile(
        r"^notice: stats: (\d+) clients \(echo (\d+), chat (\d+)\), (\d+) rooms; accepted echo "
        r"(\d+) chat (\d+); bytes in/out echo (\d+)/(\d+) chat (\d+)/(\d+); chat lines in (\d+) "
        r"out (\d+); slow consumers (\d+); reloads (\d+) ok (\d+) failed$")
    with MDaemon("chat.rate=0") as m:
        e = connect(m.echo)
        e2 = connect(m.echo)
        a = ChatClient(m.chat, "a")
        b = ChatClient(m.chat, "b")
        try:
            echo_check(e, b"x" * 500)
            e2.close()
            a.expect("* %s has joined #lobby" % b.nick)
            a.say("hi")
            b.expect("<%s> hi" % a.nick)
            b.say("/join #other")
            b.wait_for("* members of #other (1): %s" % b.nick)
            a.expect("* %s has left #lobby" % b.nick)
            a.sync()
            b.sync()
            s = connections_are(m.mport, echo=1, chat=2)
            mark = m.d.mark()
            m.d.send_signal(signal.SIGUSR1)
            m.d.wait_for_log(r"stats: ", since=mark)
            m.scrape()                       # a round trip through the loop after the signal
            lines = [l for l in m.d.log_lines(mark) if "stats: " in l]
            check_eq(len(lines), 1, "stats lines after one SIGUSR1")
            body = tl.LOG_LINE_RE.match(lines[0])
            check(body, "malformed log line %r" % lines[0])
            mm = stats_re.match("%s: %s" % (body.group(2), body.group(3)))
            check(mm, "the stats line %r does not match /%s/" % (lines[0], stats_re.pattern))
            got = [int(x) for x in mm.groups()]
            want = [3, 1, 2, s("echochatd_chat_rooms"),
                    s("echochatd_connections_accepted_total", service="echo"),
                    s("echochatd_connections_accepted_total", service="chat"),
                    s("echochatd_received_bytes_total", service="echo"),
                    s("echochatd_sent_bytes_total", service="echo"),
                    s("echochatd_received_bytes_total", service="chat"),
                    s("echochatd_sent_bytes_total", service="chat"),
                    s("echochatd_chat_lines_received_total"),
                    s("echochatd_chat_lines_delivered_total"),
                    s("echochatd_chat_slow_consumers_total"),
                    s("echochatd_config_reloads_total", result="ok"),
                    s("echochatd_config_reloads_total", result="failed")]
            check_eq(got, want, "the numbers of the stats line (vs. the scrape)")
            check_eq(got[3:6], [2, 2, 2], "rooms, accepted echo, accepted chat")
            check_eq(got[6:8], [500, 500], "echo bytes in/out")
            check(not m.d.find_log(r"reloading configuration", since=mark),
                  "SIGUSR1 reloaded the configuration")
            check(m.d.running(), "the daemon died on SIGUSR1")
            echo_check(e, b"still served after SIGUSR1")
        finally:
            for x in (e, e2, a, b):
                x.close()
        check_eq(m.d.stop(), 0, "exit status")


def metrics_cfg(enabled="yes", port=0, extra=""):
    return ("[echo]\nbind = 127.0.0.1\nport = 0\n[chat]\nenabled = no\n"
            "[metrics]\nenabled = %s\nbind = 127.0.0.1\nport = %d\n%s" % (enabled, port, extra))


def hup(d, ok=True):
    mark = d.mark()
    d.send_signal(signal.SIGHUP)
    d.wait_for_log(r"notice: reloading configuration\b", since=mark)
    if ok:
        d.wait_for_log(r"notice: configuration reloaded$", since=mark)
    else:
        d.wait_for_log(r"error: reload failed, keeping the old configuration", since=mark)
    return mark


def expect_refused(port):
    s, err = try_connect(port, timeout=5)
    if s is not None:
        s.close()
        raise TestFailure("127.0.0.1:%d still accepts connections" % port)
    check_eq(errno.errorcode.get(err, err), "ECONNREFUSED", "connect to 127.0.0.1:%d" % port)


def test_reload_counters():
    with Daemon(config=metrics_cfg(), default_listen=False, only_echo=False) as d:
        echo = d.port()
        mport = metrics_port(d)
        d.wait_ready()
        e = connect(echo)
        try:
            echo_check(e, b"before")
            before = connections_are(mport, echo=1)
            check_eq((before("echochatd_config_reloads_total", result="ok"),
                      before("echochatd_config_reloads_total", result="failed")), (0, 0),
                     "reloads before any SIGHUP")
            mark = hup(d)                                   # unchanged file: ok
            s = scrape(mport)                               # the same endpoint, kept
            check(not d.find_log(r"metrics: (listening|stopped)", since=mark),
                  "a reload without changes reopened the endpoint:\n" + d.tail())
            check_deltas(before, s, {K("echochatd_config_reloads_total", result="ok"): 1},
                         "after a good reload")
            check_eq(s.get("echochatd_process_start_time_seconds"),
                     before.get("echochatd_process_start_time_seconds"), "start time")
            d.write_config(metrics_cfg(extra="colour = red\n"))   # unknown key: failed
            mark = hup(d, ok=False)
            s2 = scrape(mport)
            check_deltas(s, s2, {K("echochatd_config_reloads_total", result="failed"): 1},
                         "after a bad reload")
            d.write_config("[log]\ntarget = %s\n" % os.path.join(d.tmpdir, "no", "such", "x.log")
                           + metrics_cfg())                 # valid, but cannot be opened
            mark = hup(d, ok=False)
            check(d.find_log(r"error: reload failed, keeping the old configuration \(1 error\)$",
                             since=mark), "the reload did not fail on the log file:\n" + d.tail())
            s3 = scrape(mport)
            check_deltas(s2, s3, {K("echochatd_config_reloads_total", result="failed"): 1},
                         "after a reload whose log file cannot be opened")
            d.write_config(metrics_cfg())
            hup(d)
            after = scrape(mport)
            check_eq((after("echochatd_config_reloads_total", result="ok"),
                      after("echochatd_config_reloads_total", result="failed")), (2, 2),
                     "reloads ok, failed in the end")
            check_eq(after("echochatd_connections_accepted_total", service="echo"), 1,
                     "accepted{echo} kept across reloads")
            echo_check(e, b"after")
        finally:
            e.close()
        check_eq(d.stop(), 0, "exit status")


def test_reload_opens_and_closes_endpoint():
    with Daemon(config=metrics_cfg(enabled="no"), default_listen=False, only_echo=False) as d:
        d.port()
        d.wait_ready()
        check(not d.find_log(r"metrics:"), "'metrics:' logged while disabled")
        # enable: opened at once
        d.write_config(metrics_cfg())
        mark = hup(d)
        p1 = metrics_port(d, since=mark)
        s = scrape(p1)
        check_eq(s("echochatd_config_reloads_total", result="ok"), 1, "reloads{ok}")
        # another port: the old one closes, the new one opens
        p2 = free_port()
        d.write_config(metrics_cfg(port=p2))
        mark = hup(d)
        d.wait_for_log(r"notice: metrics: listening on 127\.0\.0\.1:%d$" % p2, since=mark)
        check(d.find_log(r"notice: metrics: stopped listening", since=mark),
              "no 'metrics: stopped listening' line when the port changed:\n" + d.tail())
        expect_refused(p1)
        check_eq(scrape(p2)("echochatd_config_reloads_total", result="ok"), 2, "reloads{ok}")
        # disable: closed at once
        d.write_config(metrics_cfg(enabled="no", port=p2))
        mark = hup(d)
        d.wait_for_log(r"notice: metrics: stopped listening", since=mark)
        expect_refused(p2)
        # and enabled again
        d.write_config(metrics_cfg())
        mark = hup(d)
        p3 = metrics_port(d, since=mark)
        check_eq(scrape(p3)("echochatd_config_reloads_total", result="ok"), 4, "reloads{ok}")
        check_eq(d.stop(), 0, "exit status")


def test_doc_lists_every_metric():
    """doc/metrics.md has a table row for every metric, with its type and labels."""
    path = os.path.join(os.environ.get("srcdir") or os.path.join(tl.HERE, os.pardir),
                        "doc", "metrics.md")
    if not os.path.exists(path):
        raise Skip("no %s" % path)
    with open(path, encoding="utf-8") as f:
        rows = {}
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 4 and cells[0].startswith("`echochatd_"):
                rows[cells[0].strip("`")] = (cells[1], tuple(
                    c.strip("` ") for c in cells[2].split(",") if c.strip()))
    everything = dict(FAMILIES, **CLUSTER_FAMILIES)
    check_eq(sorted(rows), sorted(everything), "metrics in the table of doc/metrics.md")
    for name, (typ, labels) in everything.items():
        check_eq(rows[name], (typ, labels), "type and labels of %s in doc/metrics.md" % name)


if __name__ == "__main__":
    tl.main([test_parser_selftest, test_exposition_format, test_echo_counters,
             test_echo_half_close_counts_peer, test_chat_counters, test_chat_line_counting_rules,
             test_chat_telnet_replies_not_lines, test_refused_max_clients,
             test_refused_per_address, test_refused_denied, test_refused_fd_exhausted,
             test_slow_consumer, test_close_reasons_idle_and_error, test_healthz_during_shutdown,
             test_http_paths_and_methods, test_clients_json, test_bind_list, test_port_taken,
             test_disabled_by_default,
             test_sigusr1_stats, test_reload_counters, test_reload_opens_and_closes_endpoint,
             test_doc_lists_every_metric],
            per_test_timeout=60)
