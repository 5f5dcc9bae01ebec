#!/bin/bash
# valgrind memcheck over a start, echo traffic (several clients, one cut off by RST,
# one left for the shutdown), chat traffic (messages, commands, a quit, a client
# cut off, a slow consumer) and a graceful SIGTERM: no error, no leak, exit 0.
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
	"$bin" -o echo.bind=127.0.0.1 -o echo.port=0 -o chat.bind=127.0.0.1 -o chat.port=0 \
	-o chat.max_output=65536 -o chat.rate=0 -o log.level=debug 2>"$tmp/err.log" &
pid=$!

# Wait (bounded: valgrind starts slowly on a loaded machine) for the listening port.
port=
chat_port=
for _ in $(seq 600); do
	port=$(sed -n 's/.*echo: listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$tmp/err.log")
	chat_port=$(sed -n 's/.*chat: listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$tmp/err.log")
	[ -n "$port" ] && [ -n "$chat_port" ] && break
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

python3 - "$chat_port" <<'PY' || fail "chat traffic"
import socket, struct, sys, time
port = int(sys.argv[1])
class Client:
    def __init__(self, rcvbuf=None):
        self.s = socket.socket()
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(60)
        self.s.connect(("127.0.0.1", port))
        self.buf = b""
        self.lines = []
    def send(self, text):
        self.s.sendall(text.encode() + b"\r\n")
    def expect(self, want):
        # any line received so far counts, also one an earlier expect passed over
        deadline = time.time() + 60
        while time.time() < deadline:
            while b"\r\n" in self.buf:
                line, self.buf = self.buf.split(b"\r\n", 1)
                self.lines.append(line.decode("utf-8", "replace"))
            for line in self.lines:
                if want in line:
                    return line
            data = self.s.recv(65536)
            if not data:
                raise SystemExit("EOF while waiting for %r" % want)
            self.buf += data
        raise SystemExit("timeout waiting for %r" % want)
a, b = Client(), Client()
a.expect("members of #lobby"); b.expect("members of #lobby")
a.send("/nick alice"); b.expect("is now known as alice")
b.send("/nick bob"); a.expect("is now known as bob")
a.send("hello \x1b[2J\xff world"); b.expect("<alice> hello")
a.send("/join #side"); a.expect("members of #side")
b.send("/join side"); a.expect("bob has joined #side")
b.send("/topic valgrind"); a.expect("set the topic")
a.send("/msg bob psst"); b.expect("*alice* psst")
a.send("/me waves"); b.expect("* alice waves")
a.send("/who"); a.expect("members of #side (2)")
a.send("/rooms"); a.expect("#side (2)")
a.send("/help"); a.expect("commands")
a.send("/bogus"); a.expect("unknown command")
a.send("x" * 600); a.expect("line too long")
# a slow consumer: c never reads while a floods the room
c = Client(rcvbuf=4096)
c.send("/nick carol")
c.send("/join side")
b.expect("carol has joined")
for i in range(3000):
    a.send("flood %d %s" % (i, "y" * 200))
    if i % 100 == 0:
        b.expect("flood %d " % i)
b.expect("carol has quit (slow consumer)")
b.expect("flood 2999")
# cut off by RST, then a clean quit
d = Client()
d.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
d.s.close()
b.send("/quit done")
b.expect("* bye")
a.expect("bob has quit (done)")
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
