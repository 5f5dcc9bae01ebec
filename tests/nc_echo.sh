#!/bin/bash
# Use echochatd the way a user would, with netcat-openbsd:
#   printf 'hello\n' | nc -N 127.0.0.1 PORT   prints hello.
# Exit 0 pass, 1 fail, 77 skip (no suitable nc).
set -u

here=$(cd "$(dirname "$0")" && pwd)
bin=${ECHOCHATD:-}
if [ -z "$bin" ]; then
    if [ -x "$here/../src/echochatd" ]; then bin=$here/../src/echochatd; else bin=./src/echochatd; fi
fi
factor=${ECHOCHATD_TIMEOUT_FACTOR:-}
if [ -z "$factor" ]; then
    if [ -n "${ECHOCHATD_WRAPPER:-}" ]; then factor=10; else factor=1; fi
fi

if ! command -v nc >/dev/null 2>&1; then
    echo "ok - nc_echo # SKIP nc not installed"
    exit 77
fi
# -N (shutdown after EOF on stdin) is netcat-openbsd's
if ! nc -h 2>&1 | grep -q -- '-N'; then
    echo "ok - nc_echo # SKIP nc is not netcat-openbsd (no -N)"
    exit 77
fi
if [ ! -x "$bin" ]; then
    echo "not ok - nc_echo: binary $bin not found"
    exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/echochatd-nc.XXXXXX")
pid=
# shellcheck disable=SC2317   # called through trap
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

fail() {
    echo "not ok - nc_echo: $*"
    sed 's/^/#   | /' "$tmp/stderr" 2>/dev/null | tail -n 20
    exit 1
}

: > "$tmp/echochatd.ini"
# switch off every other service the binary knows (e.g. chat on its fixed port 7008):
# the sections of the -T dump that have an "enabled" key, except [echo]
others=$("$bin" -T -c "$tmp/echochatd.ini" 2>/dev/null | awk '
    /^\[.*\]$/ { sec = substr($0, 2, length($0) - 2); next }
    /^[ \t]*enabled[ \t]*=/ && sec != "echo" { print sec }')
set --
for svc in $others; do
    set -- "$@" -o "$svc.enabled=no"
done
# shellcheck disable=SC2086   # the wrapper is meant to be split into words
env -u JOURNAL_STREAM ${ECHOCHATD_WRAPPER:-} "$bin" -c "$tmp/echochatd.ini" \
    -o echo.bind=127.0.0.1 -o echo.port=0 "$@" </dev/null >"$tmp/stdout" 2>"$tmp/stderr" &
pid=$!

# poll the log for the port (bounded)
port=
tries=$((200 * factor))
while [ "$tries" -gt 0 ]; do
    port=$(sed -n 's/.*echo: listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$tmp/stderr" | head -n 1)
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || fail "daemon exited before listening"
    sleep 0.1
    tries=$((tries - 1))
done
[ -n "$port" ] || fail "no 'echo: listening on 127.0.0.1:PORT' line within $((20 * factor)) s"

out=$(printf 'hello\n' | timeout $((10 * factor)) nc -N 127.0.0.1 "$port") \
    || fail "nc failed (status $?)"
[ "$out" = "hello" ] || fail "expected 'hello', got '$out'"

# several lines, and a line without a newline at the end
out=$(printf 'one\ntwo\nthree' | timeout $((10 * factor)) nc -N 127.0.0.1 "$port") \
    || fail "nc failed (status $?)"
[ "$out" = "$(printf 'one\ntwo\nthree')" ] || fail "multi-line echo differs: '$out'"

# graceful stop: SIGTERM, exit status 0 within a bounded time
kill -TERM "$pid"
tries=$((200 * factor))
while kill -0 "$pid" 2>/dev/null && [ "$tries" -gt 0 ]; do
    sleep 0.1
    tries=$((tries - 1))
done
kill -0 "$pid" 2>/dev/null && fail "daemon did not exit within $((20 * factor)) s of SIGTERM"
wait "$pid"
status=$?
pid=
[ "$status" -eq 0 ] || fail "exit status $status after SIGTERM"

echo "ok - nc_echo"
exit 0
