#!/usr/bin/env python3
"""Command line, configuration checking (-t/-T/-o) and start-up failures."""

import os
import re
import shutil
import socket
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from echochatd_testlib import (  # noqa: E402
    EX_CONFIG, EX_FAIL, EX_OK, EX_USAGE, Daemon, LOG_LINE_RE, TestFailure, WRAPPER_LINE_RE,
    check, check_eq, connect, echo_check, error_lines, main, quiet_services_args, run_cli,
    wait_until)


LONG_OPTIONS = ["--config", "--set", "--check-config", "--dump-config", "--version", "--help"]
SHORT_OPTIONS = ["-c", "-o", "-t", "-T", "-V", "-h"]

GOOD_CONFIG = """\
; a comment
# another comment
[server]
max_clients = 123
shutdown_timeout = 5
tcp_keepalive = 0

[log]
level = DEBUG
target = stderr

[echo]
enabled = yes      ; inline comment after whitespace
bind = 127.0.0.1, ::1
port = 0
backlog = 64
idle_timeout = 30
"""


class TmpDir:
    def __init__(self):
        self.path = os.path.realpath(tempfile.mkdtemp(prefix="echochatd-cli-"))

    def write(self, name, text):
        p = os.path.join(self.path, name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def __enter__(self):
        return self

    def __exit__(self, *a):
        shutil.rmtree(self.path, ignore_errors=True)


def expect_status(r, want, what):
    if r.returncode != want:
        raise TestFailure("%s: exit status %d, expected %d\n# stdout: %r\n# stderr: %r"
                          % (what, r.returncode, want, r.stdout[-500:], r.stderr[-800:]))


def check_config_errors(text, expected, exact=True, name="bad.ini", problems=None):
    """Run -t on `text`; require exit 78 and, for each (line, rest) in
    expected, a stderr line "FILE:line: rest" (rest is a regex if not exact).

    With a `problems` list, mismatches are appended to it instead of raised."""
    found = []
    with TmpDir() as td:
        path = td.write(name, text)
        r = run_cli(["-t", "-c", path])
        errs = error_lines(r.stderr)
        shown = "\n".join("#   | " + e for e in errs)
        if r.returncode != EX_CONFIG:
            found.append("exit status %d (expected 78) for %r" % (r.returncode, text[:60]))
        if "configuration OK" in r.stdout:
            found.append("bad file reported OK on stdout")
        for line, rest in expected:
            if exact:
                want = "%s:%d: %s" % (path, line, rest)
                if want not in errs:
                    found.append("missing error line %r in stderr:\n%s" % (want, shown))
            else:
                rx = re.compile("^" + re.escape("%s:%d: " % (path, line)) + rest)
                if not any(rx.search(e) for e in errs):
                    found.append("no error line matching %r in stderr:\n%s" % (rx.pattern, shown))
    if found and problems is None:
        raise TestFailure("\n".join(found))
    if problems is not None:
        problems.extend(found)
    return errs, path


def parse_ini(text):
    """Minimal INI reader for -T output: {section: {key: value}}."""
    out = {}
    sec = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("["):
            check(line.endswith("]"), "bad section header in dump: %r" % raw)
            sec = line[1:-1].strip()
            out.setdefault(sec, {})
            continue
        check("=" in line and sec is not None, "unexpected line in dump: %r" % raw)
        k, v = line.split("=", 1)
        v = re.split(r"\s[;#]", v, 1)[0]
        out[sec][k.strip()] = v.strip()
    return out


def norm_list(v):
    return [x.strip() for x in v.split(",") if x.strip()]


# ---------------------------------------------------------------------------

def test_help():
    for opt in ("--help", "-h"):
        r = run_cli([opt])
        expect_status(r, EX_OK, opt)
        for o in LONG_OPTIONS:
            check(re.search(re.escape(o) + r"\b", r.stdout), "%s output lacks %s:\n%s" % (opt, o, r.stdout))
        for o in SHORT_OPTIONS:
            check(re.search(r"(^|[\s,\[])" + re.escape(o) + r"\b", r.stdout, re.M),
                  "%s output lacks %s" % (opt, o))


def test_version():
    for opt in ("--version", "-V"):
        r = run_cli([opt])
        expect_status(r, EX_OK, opt)
        check_eq(r.stdout.strip(), "echochatd 0.1.0", "%s output" % opt)


def test_bad_usage_exits_64():
    cases = [["--no-such-option"], ["-Z"], ["stray-argument"],
             ["-o", "echoport=1"],        # no '.'
             ["-o", "echo.port"],         # no '='
             ["-c"]]                      # missing argument
    for args in cases:
        r = run_cli(args)
        expect_status(r, EX_USAGE, " ".join(args))
        check(error_lines(r.stderr), "%s: nothing on stderr" % " ".join(args))


def test_check_good_config():
    with TmpDir() as td:
        path = td.write("good.ini", GOOD_CONFIG)
        for opt in ("-t", "--check-config"):
            r = run_cli([opt, "-c", path])
            expect_status(r, EX_OK, opt + " on a good file")
            check_eq(r.stdout.strip(), "configuration OK", opt + " stdout")
        # an empty file is a valid configuration too (all defaults)
        empty = td.write("empty.ini", "")
        r = run_cli(["-t", "--config", empty])
        expect_status(r, EX_OK, "-t on an empty file")
        check_eq(r.stdout.strip(), "configuration OK", "-t stdout")


def test_check_bad_config_reports_all_errors():
    text = ("[echo]\n"                # 1
            "port = abc\n"            # 2
            "bind = 127.0.0.1\n"      # 3
            "enabled = maybe\n"       # 4
            "; comment\n"             # 5
            "backlog = 0\n")          # 6
    errs, path = check_config_errors(text, [
        (2, '[echo] port: "abc" is not a number'),
        (4, '[echo] enabled: "maybe" is not a boolean (yes/no, true/false, on/off, 1/0)'),
        (6, '[echo] backlog: 0 is out of range (1..65535)'),
    ])
    with_loc = [e for e in errs if e.startswith(path + ":")]
    check_eq(len(with_loc), 3, "number of FILE:LINE error lines")


def test_error_messages():
    problems = []
    check_config_errors("[foo]\nbar = 1\n[echo]\ncolour = red\n", [
        (1, "[foo]: unknown section"),
        (4, "[echo] colour: unknown key"),
    ], problems=problems)
    check_config_errors("[echo]\nport = 70000\n", [(2, "[echo] port: 70000 is out of range (0..65535)")], problems=problems)
    check_config_errors("[server]\nmax_clients = 0\n", [(2, r"\[server\] max_clients: 0 is out of range")],
                        exact=False, problems=problems)
    check_config_errors("[server]\nshutdown_timeout = 3601\n",
                        [(2, r"\[server\] shutdown_timeout: 3601 is out of range")], exact=False, problems=problems)
    check_config_errors("[echo]\nbind = 300.1.2.3\n",
                        [(2, '[echo] bind: "300.1.2.3" is not an IP address or host name')], problems=problems)
    check_config_errors("[echo]\nport = 1\n\nport = 2\n", [(4, "[echo] port: set twice (first on line 2)")], problems=problems)
    check_config_errors("port = 1\n[echo]\n", [(1, "port: key outside any section")], problems=problems)
    check_config_errors("[echo]\njust words\n", [(2, 'syntax error: expected "key = value"')], problems=problems)
    check_config_errors("[echo\nport = 1\n", [(1, "syntax error: section header without ']'")], problems=problems)
    check_config_errors("[echo]\n; " + "x" * 300 + "\nport = 1\n",
                        [(2, "line too long (at most 198 bytes)")], problems=problems)
    check_config_errors("[echo]\nport = 1\nbind = " + "b" * 250 + "\n",
                        [(3, "line too long (at most 198 bytes)")], problems=problems)
    check_config_errors("[log]\nlevel = chatty\n", [(2, r"\[log\] level: ")], exact=False, problems=problems)
    check_config_errors("[echo]\nidle_timeout = -1\n", [(2, r"\[echo\] idle_timeout: ")], exact=False, problems=problems)
    # an inline comment needs whitespace before ';'
    check_config_errors("[echo]\nport = 1;x\n", [(2, '[echo] port: "1;x" is not a number')],
                        problems=problems)
    # errors after a long line still carry the right line numbers
    check_config_errors("[echo]\n; " + "y" * 400 + "\nport = x\n", [(3, '[echo] port: "x" is not a number')], problems=problems)
    if problems:
        raise TestFailure("%d of the messages differ from the spec:\n%s"
                          % (len(problems), "\n".join(problems)))


def test_missing_config_file():
    with TmpDir() as td:
        path = os.path.join(td.path, "does-not-exist.ini")
        r = run_cli(["-t", "-c", path])
        expect_status(r, EX_CONFIG, "-t -c missing file")
        want = "%s: cannot read: No such file or directory" % path
        check(want in error_lines(r.stderr), "expected %r on stderr, got %r" % (want, r.stderr))


def test_overrides():
    with TmpDir() as td:
        path = td.write("good.ini", GOOD_CONFIG)
        r = run_cli(["-t", "-c", path, "-o", "echo.port=1234", "--set", "server.max_clients=7"])
        expect_status(r, EX_OK, "-t with valid -o")
        check_eq(r.stdout.strip(), "configuration OK", "-t stdout")
        r = run_cli(["-T", "-c", path, "-o", "echo.port=1234", "--set", "server.max_clients=7"])
        expect_status(r, EX_OK, "-T with valid -o")
        ini = parse_ini(r.stdout)
        check_eq(ini.get("echo", {}).get("port"), "1234", "dumped echo.port after -o")
        check_eq(ini.get("server", {}).get("max_clients"), "7", "dumped server.max_clients after -o")
        # -o wins over the file even for a key the file sets
        check_eq(ini["echo"].get("backlog"), "64", "dumped echo.backlog from the file")

        r = run_cli(["-t", "-c", path, "-o", "echo.port=x"])
        expect_status(r, EX_CONFIG, "-t with -o echo.port=x")
        want = '-o echo.port=x: [echo] port: "x" is not a number'
        check(want in error_lines(r.stderr), "expected %r on stderr, got %r" % (want, r.stderr))
        r = run_cli(["-t", "-c", path, "-o", "echo.colour=red"])
        expect_status(r, EX_CONFIG, "-t with -o echo.colour=red")
        check("colour" in r.stderr, "error does not name the key: %r" % r.stderr)
        r = run_cli(["-t", "-c", path, "-o", "nosuch.port=1"])
        expect_status(r, EX_CONFIG, "-t with -o nosuch.port=1")
        # two bad -o: both reported
        r = run_cli(["-t", "-c", path, "-o", "echo.port=x", "-o", "server.max_clients=0"])
        expect_status(r, EX_CONFIG, "-t with two bad -o")
        errs = error_lines(r.stderr)
        check(any(e.startswith("-o echo.port=x:") for e in errs) and
              any(e.startswith("-o server.max_clients=0:") for e in errs),
              "not both -o errors reported: %r" % r.stderr)


def test_dump_config_roundtrip():
    with TmpDir() as td:
        path = td.write("good.ini", GOOD_CONFIG)
        r1 = run_cli(["-T", "-c", path, "-o", "echo.idle_timeout=77"])
        expect_status(r1, EX_OK, "-T")
        ini = parse_ini(r1.stdout)
        for sec in ("server", "log", "echo"):
            check(sec in ini, "dump lacks section [%s]:\n%s" % (sec, r1.stdout))
        check_eq(ini["server"].get("max_clients"), "123", "dumped max_clients")
        check_eq(ini["server"].get("shutdown_timeout"), "5", "dumped shutdown_timeout")
        check_eq(ini["server"].get("tcp_keepalive"), "0", "dumped tcp_keepalive")
        check_eq((ini["log"].get("level") or "").lower(), "debug", "dumped log level")
        check_eq(norm_list(ini["echo"].get("bind", "")), ["127.0.0.1", "::1"], "dumped bind")
        check_eq(ini["echo"].get("idle_timeout"), "77", "dumped idle_timeout (-o)")
        check_eq(ini["echo"].get("backlog"), "64", "dumped backlog")
        dump = td.write("dump.ini", r1.stdout)
        r2 = run_cli(["-c", dump, "-t"])
        expect_status(r2, EX_OK, "-t on the -T output")
        check_eq(r2.stdout.strip(), "configuration OK", "-t on -T output")
        r3 = run_cli(["-c", dump, "-T"])
        expect_status(r3, EX_OK, "-T on the -T output")
        check(r3.stdout == r1.stdout, "second -T differs from the first:\n--- first\n%s--- second\n%s"
              % (r1.stdout, r3.stdout))


def test_dump_config_defaults():
    with TmpDir() as td:
        empty = td.write("empty.ini", "")
        r = run_cli(["--dump-config", "-c", empty])
        expect_status(r, EX_OK, "-T on an empty file")
        ini = parse_ini(r.stdout)
        want = {("server", "max_clients"): "10000", ("server", "shutdown_timeout"): "10",
                ("server", "tcp_keepalive"): "300", ("log", "target"): "stderr",
                ("echo", "port"): "7007", ("echo", "backlog"): "128", ("echo", "idle_timeout"): "300"}
        for (sec, key), val in want.items():
            check_eq(ini.get(sec, {}).get(key), val, "default %s.%s" % (sec, key))
        check_eq(ini["log"].get("level", "").lower(), "info", "default log.level")
        check_eq(norm_list(ini["echo"].get("bind", "")), ["0.0.0.0", "::"], "default echo.bind")
        check(ini["echo"].get("enabled", "").lower() in ("yes", "true", "on", "1"),
              "default echo.enabled is %r" % ini["echo"].get("enabled"))
        # errors: -T exits 78 and prints no configuration
        bad = td.write("bad.ini", "[echo]\nport = abc\n")
        r = run_cli(["-T", "-c", bad])
        expect_status(r, EX_CONFIG, "-T on a bad file")
        check("[echo]" not in r.stdout, "-T printed a configuration despite errors")


def test_bad_config_at_start():
    with TmpDir() as td:
        path = td.write("bad.ini", "[echo]\nbind = 127.0.0.1\nport = 0\n[server]\nmax_clients = lots\n")
        r = run_cli(["-c", path] + quiet_services_args(), timeout=20)
        expect_status(r, EX_CONFIG, "start with a bad file")
        want = '%s:5: [server] max_clients: "lots" is not a number' % path
        check(want in error_lines(r.stderr), "expected %r on stderr, got %r" % (want, r.stderr))
        check("listening" not in r.stderr, "daemon started listening despite errors")
        # a bad -o at start is a configuration error as well
        good = td.write("good.ini", "[echo]\nbind = 127.0.0.1\nport = 0\n")
        r = run_cli(["-c", good, "-o", "echo.backlog=0"] + quiet_services_args(), timeout=20)
        expect_status(r, EX_CONFIG, "start with a bad -o")
        # missing file at start
        r = run_cli(["-c", os.path.join(td.path, "nope.ini")] + quiet_services_args(), timeout=20)
        expect_status(r, EX_CONFIG, "start with a missing -c file")


def test_cannot_bind():
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        with TmpDir() as td:
            cfg = td.write("c.ini", "")
            r = run_cli(["-c", cfg, "-o", "echo.bind=127.0.0.1", "-o", "echo.port=%d" % port]
                        + quiet_services_args(), timeout=20)
        expect_status(r, EX_FAIL, "start on a port in use")
        hits = [l for l in error_lines(r.stderr) if "cannot listen on" in l]
        check_eq(len(hits), 1, "number of 'cannot listen on' lines (stderr %r)" % r.stderr)
        want = "echo: cannot listen on 127.0.0.1:%d: Address already in use" % port
        check(hits[0].endswith(want), "expected a line ending in %r, got %r" % (want, hits[0]))
    finally:
        holder.close()


def test_cannot_open_log_file():
    with TmpDir() as td:
        cfg = td.write("c.ini", "")
        target = os.path.join(td.path, "no-such-dir", "echochatd.log")
        r = run_cli(["-c", cfg, "-o", "echo.bind=127.0.0.1", "-o", "echo.port=0",
                     "-o", "log.target=" + target] + quiet_services_args(), timeout=20)
        expect_status(r, EX_FAIL, "start with an unwritable log file")
        check(target in r.stderr, "error does not name the log file: %r" % r.stderr)


def test_log_file_target():
    with Daemon(config="", start=False) as d:
        target = os.path.join(d.tmpdir, "echochatd.log")
        d.argv += ["-o", "log.target=" + target]
        d.start()
        rx = re.compile(r"echo: listening on 127\.0\.0\.1:(\d+)$")

        def port_from_file():
            try:
                with open(target) as f:
                    for line in f:
                        m = rx.search(line.rstrip("\n"))
                        if m:
                            return int(m.group(1))
            except FileNotFoundError:
                return None
            return None

        port = wait_until(port_from_file, 20, "the listening line in the log file")
        s = connect(port)
        try:
            echo_check(s, b"via file log\n")
        finally:
            s.close()
        check_eq(d.stop(), 0, "exit status")
        with open(target) as f:
            text = f.read()
        for line in text.splitlines():
            check(LOG_LINE_RE.match(line), "bad log file line %r" % line)
        check("exiting" in text, "no 'exiting' in the log file")


def test_log_format_and_lifecycle_lines():
    with Daemon(config="") as d:
        port = d.port()
        d.wait_ready()
        check(d.find_log(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} notice: echochatd 0\.1\.0 starting "
                         r"\(config: %s\)$" % re.escape(d.config_path)),
              "no notice 'echochatd 0.1.0 starting (config: %s)' line\n%s" % (d.config_path, d.tail()))
        check(d.find_log(r" notice: echo: listening on 127\.0\.0\.1:%d$" % port),
              "listening line is not at notice level")
        check(d.find_log(r" notice: ready$"), "no 'notice: ready' line")
        s = connect(port)
        try:
            echo_check(s, b"x")
        finally:
            s.close()
        d.wait_for_log(r"closed \(peer closed\)")
        rc = d.stop()
        check_eq(rc, 0, "exit status after SIGTERM")
        # (the spec does not say whether "stopped listening" is logged at shutdown)
        for want in (r" notice: shutting down on SIGTERM: 0 clients to drain$",
                     r" notice: exiting$"):
            check(d.find_log(want), "no log line /%s/\n%s" % (want, d.tail()))
        for line in d.log_lines():
            if WRAPPER_LINE_RE.match(line):
                continue
            check(LOG_LINE_RE.match(line), "malformed log line %r" % line)
        check_eq(d.stdout(), "", "daemon stdout")


def test_start_without_config_option():
    with Daemon(config=None) as d:
        d.port()
        d.wait_ready()
        m = d.find_log(r"notice: echochatd 0\.1\.0 starting \(config: (.*)\)$")
        check(m, "no starting line\n" + d.tail())
        check(m.group(1) == "built-in defaults" or (m.group(1).startswith("/") and
                                                     m.group(1).endswith("echochatd.ini")),
              "starting line names %r" % m.group(1))
        check_eq(d.stop(), 0, "exit status")


def test_journal_stream_format():
    """With JOURNAL_STREAM naming our stderr, lines are "<N>message" (N = syslog priority)."""
    import subprocess
    from echochatd_testlib import T, command, daemon_env
    rfd, wfd = os.pipe()
    st = os.fstat(wfd)
    env = daemon_env({"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)})
    with TmpDir() as td:
        cfg = td.write("c.ini", "")
        args = ["-c", cfg, "-o", "echo.bind=127.0.0.1", "-o", "echo.port=0"] + quiet_services_args()
        proc = subprocess.Popen(command(args), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=wfd, env=env)
        os.close(wfd)
        f = os.fdopen(rfd, "rb", buffering=0)
        lines = []
        try:
            import select
            deadline = time.monotonic() + T(20)
            port = None
            pending = b""
            # raw reads: a buffered readline could hold lines select() no longer sees
            while port is None and time.monotonic() < deadline:
                r, _, _ = select.select([f], [], [], 0.5)
                if not r:
                    continue
                chunk = os.read(rfd, 65536)
                if not chunk:
                    break
                pending += chunk
                while b"\n" in pending:
                    raw, pending = pending.split(b"\n", 1)
                    lines.append(raw.decode("utf-8", "replace"))
                    m = re.search(r"echo: listening on 127\.0\.0\.1:(\d+)$", lines[-1])
                    if m:
                        port = int(m.group(1))
            check(port, "no listening line; got %r" % lines)
            c = connect(port)
            try:
                echo_check(c, b"j")
            finally:
                c.close()
            proc.terminate()
            proc.wait(T(20))
            rest = pending + f.read()
            lines += [l for l in rest.decode("utf-8", "replace").split("\n") if l]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            f.close()
        check_eq(proc.returncode, 0, "exit status")
        own = [l for l in lines if not WRAPPER_LINE_RE.match(l)]
        for l in own:
            check(re.match(r"^<[0-7]>\S", l), "line not in <N>message form: %r" % l)
        for want in (r"^<5>echochatd 0\.1\.0 starting \(config: ", r"^<5>echo: listening on 127",
                     r"^<5>ready$", r"^<6>echo: #\d+ 127\.0\.0\.1:\d+ connected$",
                     r"^<5>exiting$"):
            check(any(re.search(want, l) for l in own), "no line /%s/ in %r" % (want, own))


if __name__ == "__main__":
    main([test_help, test_version, test_bad_usage_exits_64, test_check_good_config,
          test_check_bad_config_reports_all_errors, test_error_messages, test_missing_config_file,
          test_overrides, test_dump_config_roundtrip, test_dump_config_defaults,
          test_bad_config_at_start, test_cannot_bind, test_cannot_open_log_file,
          test_log_file_target, test_log_format_and_lifecycle_lines,
          test_start_without_config_option, test_journal_stream_format])
