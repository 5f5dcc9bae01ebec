#!/bin/bash
# valgrind memcheck over a start, echo traffic (several clients, one cut off by RST,
# one left for the shutdown) and a graceful SIGTERM: no error, no leak, exit 0.
set -u
command -v valgrind >/dev/null 2>&1 || { echo "SKIP: valgrind is not installed"; exit 77; }
bin=${ECHOCHATD:-$(dirname "$0")/../src/echochatd}
if nm -a "$bin" 2>/dev/null | grep -q __asan_init; then
	echo "SKIP: built with sanitizers, which do not run under valgrind"
	exit 77
fi

tmp=$(mktemp -d)
pid=
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
	echo "FAIL: $*"
	echo "--- daemon stderr"; cat "$tmp/err.log"
	echo "--- valgrind"; cat "$tmp/vg.log"
	exit 1
}

valgrind --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect \
	--errors-for-leak-kinds=definite,indirect --log-file="$tmp/vg.log" \
	"$bin" -o echo.bind=127.0.0.1 -o echo.port=0 -o log.level=debug 2>"$tmp/err.log" &
pid=$!

# Wait (bounded: valgrind starts slowly on a loaded machine) for the listening port.
port=
for _ in $(seq 600); do
	port=$(sed -n 's/.*echo: listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$tmp/err.log")
	[ -n "$port" ] && break
	kill -0 "$pid" 2>/dev/null || fail "daemon exited at start"
	sleep 0.1
done
[ -n "$port" ] || fail "no listening line within 60 s"

python3 - "$port" <<'PY' || fail "echo traffic"
import os, socket, struct, sys, threading
port = int(sys.argv[1])
def echo(n):
    data = os.urandom(n)
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    t = threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)))
    t.start()
    got = bytearray()
    while True:
        b = s.recv(65536)
        if not b:
            break
        got += b
    t.join()
    s.close()
    assert bytes(got) == data, "echo mismatch"
threads = [threading.Thread(target=echo, args=(n,)) for n in (1, 1000, 300000, 2000000)]
for t in threads: t.start()
for t in threads: t.join()
# A client cut off by RST in the middle of its echo.
s = socket.create_connection(("127.0.0.1", port), timeout=30)
s.sendall(os.urandom(500000))
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
PY

# A client still connected at shutdown: it must get its echo, then EOF.
python3 - "$port" "$pid" <<'PY' || fail "shutdown with a connected client"
import os, signal, socket, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port), timeout=60)
s.sendall(b"before shutdown\n")
assert s.recv(100) == b"before shutdown\n"
os.kill(pid, signal.SIGTERM)
deadline = time.time() + 60
while time.time() < deadline:
    b = s.recv(100)
    if not b:
        break
else:
    raise SystemExit("no EOF")
PY

status=0
for _ in $(seq 600); do
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
wait "$pid" || status=$?
pid=
[ "$status" -eq 0 ] || fail "exit status $status (99 = valgrind found errors)"
grep -q 'ERROR SUMMARY: 0 errors' "$tmp/vg.log" || fail "valgrind reported errors"
echo "ok - valgrind: no errors, no leaks, exit 0"
