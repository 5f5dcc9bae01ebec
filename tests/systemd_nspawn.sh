#!/bin/bash
# The real systemd units, under a real systemd: boot Debian bookworm's systemd as PID 1 of a
# systemd-nspawn container, install echochatd and its units (systemd/) in it, and drive it
# with "systemctl" from outside (nsenter) while clients on the host talk to it over
# 127.0.0.1 (the guest shares the host's network). Checks:
#   start_notify_ready      Type=notify: "systemctl start" returns once the daemon serves;
#                           StatusText= carries "N clients (echo A, chat B), R rooms"
#   nc_echo, nc_chat, telnet_echo, telnet_chat    host clients reach both services
#   reload_keeps_clients, reload_new_motd, status_text_tracks_clients, reload_broken_config
#   sandbox_dynamic_user, sandbox_protect_system
#   stop_drains_client      "systemctl stop" with data in flight: echo, then FIN; unit inactive
#   socket_activation       the .socket units start the service on the first connection
#   broken_config_no_restart   exit 78 at start: failed, Result=exit-code, no restart loop
#
# Needs root (exit 77 otherwise), systemd-nspawn and debootstrap (installed with apt-get when
# missing), and, on the first run, a Debian mirror: the guest tree is built with debootstrap
# and cached in $ECHOCHATD_NSPAWN_ROOT (default /var/tmp/echochatd-nspawn-root); each run
# boots it read-only under an overlay whose upper layer is a temporary directory, so runs do
# not change the cache and may run concurrently.
# Environment: ECHOCHATD (the binary), srcdir / abs_top_builddir (automake), PYTHON3,
# ECHOCHATD_NSPAWN_ROOT, ECHOCHATD_DEBIAN_MIRROR (default: the first URIs: of
# /etc/apt/sources.list.d/debian.sources, else the first deb line of /etc/apt/sources.list),
# ECHOCHATD_NSPAWN_VERBOSE=1 (print the guest's journal of the units even when all pass).
# Exit 0 pass, 1 fail, 77 skip.
set -u
umask 022
export LC_ALL=C
unset JOURNAL_STREAM NOTIFY_SOCKET LISTEN_FDS LISTEN_PID LISTEN_FDNAMES

T0=$(date +%s.%N)
lap() { printf '# [%6.1fs] %s\n' "$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')" "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "########################################################################"
    echo "SKIP: systemd_nspawn: not running as root (systemd-nspawn and debootstrap"
    echo "SKIP: need root); the systemd units were NOT tested"
    echo "########################################################################"
    exit 77
fi

here=$(cd "$(dirname "$0")" && pwd)
top_src=$(cd "${srcdir:-$here/..}" && pwd)
bin=${ECHOCHATD:-$here/../src/echochatd}
case $bin in /*) ;; *) bin=$(pwd)/$bin ;; esac
# A sanitizer build needs its runtime, which the guest does not have; the
# release build is the one that runs under systemd.
if nm -a "$bin" 2>/dev/null | grep -q __asan_init; then
    echo "SKIP: systemd_nspawn: $bin is built with sanitizers; the release build runs this test"
    exit 77
fi
top_build=${abs_top_builddir:-$(cd "$(dirname "$bin")/.." && pwd)}
py=${PYTHON3:-python3}
cache=${ECHOCHATD_NSPAWN_ROOT:-/var/tmp/echochatd-nspawn-root}
case $cache in /?*) ;; *) echo "not ok - systemd_nspawn: ECHOCHATD_NSPAWN_ROOT must be absolute"; exit 1 ;; esac
cache=${cache%/}
guest_sbin=/usr/local/sbin

# ---------------------------------------------------------------- state and cleanup
tmp=
tpid=
nspawn=
init=
cgdirs=
nfail=
building=

# shellcheck disable=SC2317   # also called from cleanup
remove_tree() {
    # DIR: unmount whatever an interrupted debootstrap left mounted below it (proc, sys,
    # perhaps a bind of /dev), then delete it without crossing into other file systems
    local m
    findmnt -rn -o TARGET | awk -v p="$1/" 'index($0, p) == 1' | sort -r |
        while read -r m; do umount -l "$m"; done
    rm -rf --one-file-system "$1"
}
# shellcheck disable=SC2317   # called from cleanup
kill_tree_of_cgroups() {
    # every process still in our own cgroups (the container's), by pid
    local d pids
    for d in $cgdirs; do
        [ -d "$d" ] || continue
        pids=$(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null)
        # shellcheck disable=SC2086   # a list of pids
        [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
    done
}

# shellcheck disable=SC2317   # called through trap
cleanup() {
    local d
    trap - EXIT INT TERM HUP
    if [ -n "$nspawn" ] && kill -0 "$nspawn" 2>/dev/null; then
        if [ -n "$init" ] && [ -x "$tmp/guest" ]; then
            GUEST_TIMEOUT=10 "$tmp/guest" systemctl poweroff >/dev/null 2>&1
        fi
        for _ in $(seq 100); do kill -0 "$nspawn" 2>/dev/null || break; sleep 0.2; done
        # nspawn turns SIGTERM into an orderly shutdown of the container
        kill -0 "$nspawn" 2>/dev/null && kill -TERM "$nspawn" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$nspawn" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$nspawn" 2>/dev/null && kill -KILL "$nspawn" 2>/dev/null
    fi
    if [ -n "$tpid" ]; then
        kill -0 "$tpid" 2>/dev/null && kill -KILL "$tpid" 2>/dev/null
        wait "$tpid" 2>/dev/null
    fi
    for _ in 1 2 3 4 5; do
        kill_tree_of_cgroups
        for d in $cgdirs; do
            [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
        done
        local left=
        for d in $cgdirs; do [ -d "$d" ] && left=1; done
        [ -z "$left" ] && break
        sleep 0.5
    done
    for d in $cgdirs; do [ -d "$d" ] && echo "# warning: could not remove cgroup $d"; done
    [ -n "$building" ] && remove_tree "$cache.new"
    # the overlay lived in the container's private mount namespace only: nothing to unmount
    [ -n "$tmp" ] && rm -rf --one-file-system "$tmp"
}
trap cleanup EXIT
trap 'echo "not ok - systemd_nspawn: interrupted"; exit 1' INT TERM HUP

bail() {
    echo "not ok - systemd_nspawn: $*"
    exit 1
}

# ---------------------------------------------------------------- inputs
[ -x "$bin" ] || bail "binary $bin not found (set ECHOCHATD)"
service_unit=$top_build/systemd/echochatd.service
service_from_in=
if [ ! -f "$service_unit" ]; then
    service_unit=$top_src/systemd/echochatd.service.in
    service_from_in=1
fi
[ -f "$service_unit" ] || bail "no systemd/echochatd.service (run make) nor .service.in"
for u in echo chat; do
    [ -f "$top_src/systemd/echochatd-$u.socket" ] || bail "no $top_src/systemd/echochatd-$u.socket"
done
# the file the daemon reads without -c: "default: /usr/local/etc/echochatd.ini if it exists"
conf=$("$bin" --help | sed -n 's/.*(default: \(\/[^ ]*\) if it exists.*/\1/p' | head -n 1)
[ -n "$conf" ] || bail "cannot find the default config path in '$bin --help'"

# ---------------------------------------------------------------- host tools
missing=
command -v systemd-nspawn >/dev/null 2>&1 || missing="$missing systemd-container"
command -v debootstrap >/dev/null 2>&1 || missing="$missing debootstrap"
command -v nc >/dev/null 2>&1 && nc -h 2>&1 | grep -q -- '-N' || missing="$missing netcat-openbsd"
command -v telnet >/dev/null 2>&1 || missing="$missing telnet"
command -v expect >/dev/null 2>&1 || missing="$missing expect"
for t in nsenter unshare flock timeout "$py"; do
    command -v "$t" >/dev/null 2>&1 || bail "$t is not installed"
done
if [ -n "$missing" ]; then
    echo "# installing host packages:$missing"
    command -v apt-get >/dev/null 2>&1 || bail "missing host packages:$missing (and no apt-get)"
    timeout 300 apt-get update -qq >/dev/null 2>&1
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq --no-install-recommends \
        $missing >/dev/null 2>&1 || bail "apt-get install$missing failed"
    lap "host packages installed:$missing"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/echochatd-nspawn.XXXXXX") || bail "mktemp failed"
chmod 755 "$tmp"

# ---------------------------------------------------------------- guest tree (cached)
# Debian packages of the libraries the binary links (ldd), plus what the units need:
# systemd as init, dbus for systemctl, procps for /bin/kill in ExecReload=.
pkgs="systemd systemd-sysv dbus procps"
libs=$(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
# one dpkg -S for all (it is slow); a library may be known under its real path only
# shellcheck disable=SC2046
libpkgs=$(dpkg -S $libs $(readlink -f $libs) 2>/dev/null |
    sed -n 's/^\([a-z0-9][a-z0-9.+-]*\)\(:[a-z0-9]*\)\{0,1\}: .*/\1/p' | sort -u)
[ -n "$libpkgs" ] || libpkgs="libevent-core-2.1-7 libinih1 libsystemd0"
pkgs="$pkgs $(printf '%s ' $libpkgs)"
stamp=$cache/.echochatd-nspawn-packages

cache_ok() {
    local p
    [ -x "$cache/lib/systemd/systemd" ] && [ -f "$stamp" ] || return 1
    for p in $pkgs; do grep -qx -- "$p" "$stamp" || return 1; done
}

mirror=${ECHOCHATD_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' \
        /etc/apt/sources.list.d/debian.sources 2>/dev/null | grep -v security | head -n 1)
fi
if [ -z "$mirror" ]; then
    mirror=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
        /etc/apt/sources.list 2>/dev/null)
fi

# the tree is used under a shared lock and (re)built under an exclusive one
exec 9>"$cache.lock" || bail "cannot open $cache.lock"
flock -w 900 -s 9 || bail "timed out waiting for the lock on $cache"
if ! cache_ok; then
    flock -u 9
    flock -w 900 -x 9 || bail "timed out waiting for the lock on $cache"
fi
if ! cache_ok; then
    [ -n "$mirror" ] || bail "no Debian mirror URI found (/etc/apt/sources.list.d/debian.sources URIs:, /etc/apt/sources.list; or set ECHOCHATD_DEBIAN_MIRROR): cannot build the guest tree"
    echo "# building the guest tree in $cache (debootstrap bookworm from $mirror; takes a minute or two)"
    remove_tree "$cache.new"
    building=1
    include=$(printf '%s\n' $pkgs | paste -sd, -)
    if ! timeout 900 debootstrap --variant=minbase --include="$include" bookworm "$cache.new" "$mirror" \
            >"$tmp/debootstrap.log" 2>&1; then
        sed 's/^/#   | /' "$tmp/debootstrap.log" | tail -n 25
        bail "debootstrap bookworm from $mirror failed (no network access to the mirror?); see the log above"
    fi
    rm -rf "$cache.new"/var/cache/apt/archives/*.deb
    printf '%s\n' $pkgs >"$cache.new/.echochatd-nspawn-packages"
    remove_tree "$cache"
    mv "$cache.new" "$cache" || bail "cannot move $cache.new to $cache"
    building=
    lap "guest tree built ($(du -sh "$cache" | cut -f1))"
fi
flock -s 9    # (from exclusive, if it was built) others may use it too; nobody rebuilds it under us

# ---------------------------------------------------------------- ports, config, units
read -r pecho pchat < <("$py" - <<'EOF'
import random, socket
lo, hi = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
found = []
cands = [p for p in range(20000, 32000) if not lo <= p <= hi]
random.shuffle(cands)
for p in cands:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        found.append(p)
    except OSError:
        pass
    finally:
        s.close()
    if len(found) == 2:
        break
print(*found)
EOF
)
[ -n "${pchat:-}" ] || bail "cannot find two free ports"
echo "# ports: echo $pecho, chat $pchat (config and socket units)"

upper=$tmp/upper
install -d -m 755 "$tmp/work" "$tmp/merged" "$upper$guest_sbin" "$upper/etc/systemd/system" \
    "$upper$(dirname "$conf")"
install -m 755 "$bin" "$upper$guest_sbin/echochatd"

# ExecStart=/ExecReload= name echochatd wherever make put it: point them at our copy
sed -e "s|^\(Exec[A-Za-z]*=[-@:+!]*\)[^ ]*/echochatd\([[:space:]]\|\$\)|\1$guest_sbin/echochatd\2|" \
    -e "s|@sbindir@|$guest_sbin|g" "$service_unit" >"$upper/etc/systemd/system/echochatd.service"
grep -qx "ExecStart=$guest_sbin/echochatd" "$upper/etc/systemd/system/echochatd.service" ||
    bail "cannot point ExecStart= of $service_unit at $guest_sbin/echochatd"
[ -n "$service_from_in" ] && echo "# no generated unit in $top_build/systemd: using $service_unit"
for u in echo:$pecho chat:$pchat; do
    awk -v addr="127.0.0.1:${u#*:}" '
        /^ListenStream=/ { if (!done) print "ListenStream=" addr; done = 1; next }
        { print }' "$top_src/systemd/echochatd-${u%%:*}.socket" \
        >"$upper/etc/systemd/system/echochatd-${u%%:*}.socket"
done

write_conf() {    # MOTD [EXTRA LINE]  -> stdout
    printf '%s\n' "; written by tests/systemd_nspawn.sh" "[server]" "shutdown_timeout = 10" \
        "[log]" "level = info" \
        "[echo]" "bind = 127.0.0.1" "port = $pecho" \
        "[chat]" "bind = 127.0.0.1" "port = $pchat" "motd = $1" ${2:+"$2"}
}
write_conf "first motd" >"$upper$conf"
chmod 644 "$upper$conf"
"$bin" --check-config -c "$upper$conf" >/dev/null || bail "the test's own config is invalid"

# files of tests/systemd_nspawn_guest/ (if any) go into the guest at the same relative path
if [ -d "$top_src/tests/systemd_nspawn_guest" ]; then
    cp -a "$top_src/tests/systemd_nspawn_guest/." "$upper/"
fi

# ---------------------------------------------------------------- boot
machine=echochatd-test-$$
cg=echochatd-nspawn-$$
if [ -e /sys/fs/cgroup/cgroup.controllers ]; then
    cgdirs=/sys/fs/cgroup/$cg                        # unified (v2) host
else
    cgdirs=/sys/fs/cgroup/systemd/$cg                # v1 / hybrid host
    [ -d /sys/fs/cgroup/unified ] && cgdirs="$cgdirs /sys/fs/cgroup/unified/$cg"
fi
for d in $cgdirs; do mkdir -p "$d" || bail "cannot create cgroup $d"; done

# nspawn in a cgroup of its own (it makes payload/ and supervisor/ under it), in a private
# mount namespace with a tmpfs /run (nspawn writes under /run/systemd) and the overlay root
CGD=$cgdirs LOWER=$cache T=$tmp MACHINE=$machine \
    timeout 1200 unshare --mount --propagation private -- sh -c '
        set -e
        for d in $CGD; do echo $$ >"$d/cgroup.procs"; done
        mount -t tmpfs -o mode=755 tmpfs /run
        mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$T/upper,workdir=$T/work" "$T/merged"
        exec systemd-nspawn -q -D "$T/merged" -M "$MACHINE" -b --register=no --keep-unit' \
    </dev/null >"$tmp/console.log" 2>&1 &
tpid=$!

boot_fail() {
    echo "#   console:"
    sed 's/^/#   | /' "$tmp/console.log" | tail -n 30
    bail "$*"
}
for _ in $(seq 150); do
    nspawn=$(ps -o pid= --ppid "$tpid" 2>/dev/null | tr -d ' ' | head -n 1)
    [ -n "$nspawn" ] && [ "$(cat "/proc/$nspawn/comm" 2>/dev/null)" = systemd-nspawn ] && break
    nspawn=
    kill -0 "$tpid" 2>/dev/null || break
    sleep 0.1
done
[ -n "$nspawn" ] || boot_fail "systemd-nspawn did not start"
# the container's init: the child of nspawn that has become systemd
for _ in $(seq 150); do
    for c in $(ps -o pid= --ppid "$nspawn" 2>/dev/null); do
        [ "$(cat "/proc/$c/comm" 2>/dev/null)" = systemd ] && { init=$c; break; }
    done
    [ -n "$init" ] && break
    kill -0 "$nspawn" 2>/dev/null || break
    sleep 0.1
done
[ -n "$init" ] || boot_fail "no systemd inside the container after 15 s"
lap "container started (systemd-nspawn pid $nspawn, init pid $init)"

cat >"$tmp/guest" <<EOF
#!/bin/sh
# run a command in the guest (all its namespaces), bounded by \$GUEST_TIMEOUT seconds
exec timeout "\${GUEST_TIMEOUT:-30}" nsenter -t $init -a env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C \
    SYSTEMD_PAGER= SYSTEMD_COLORS=0 "\$@"
EOF
chmod 755 "$tmp/guest"
G=$tmp/guest

for _ in $(seq 120); do
    $G test -S /run/systemd/private 2>/dev/null && break
    kill -0 "$nspawn" 2>/dev/null || boot_fail "the container exited while booting"
    sleep 0.25
done
$G test -S /run/systemd/private 2>/dev/null || boot_fail "systemd in the container did not come up in 30 s"
state=$(GUEST_TIMEOUT=60 $G systemctl is-system-running --wait 2>/dev/null)
lap "container booted (system $state, systemd $($G systemctl --version | head -n 1 | cut -d' ' -f2))"
[ "$state" = running ] || $G systemctl --failed --no-legend 2>/dev/null | sed 's/^/#   failed unit: /'
$G "$guest_sbin/echochatd" --version >/dev/null 2>"$tmp/version.err" || {
    sed 's/^/#   | /' "$tmp/version.err"
    bail "the binary does not run in the guest (missing libraries?)"
}

# ---------------------------------------------------------------- helpers
ok() { echo "ok - $1"; }
notok() { echo "not ok - $1: $2"; nfail=1; }
show() { $G systemctl show -p "$1" --value "${2:-echochatd.service}" 2>/dev/null; }
is_active() { $G systemctl is-active "${1:-echochatd.service}" 2>/dev/null; }
wait_active() {    # UNIT STATE SECONDS
    local _
    for _ in $(seq $(($3 * 5))); do
        [ "$(is_active "$1")" = "$2" ] && return 0
        sleep 0.2
    done
    [ "$(is_active "$1")" = "$2" ]
}
put_conf() {    # stdin -> the guest's config file (atomically)
    $G sh -c "cat >'$conf.new' && chmod 644 '$conf.new' && mv '$conf.new' '$conf'"
}
echo_once() {    # PORT TEXT -> what comes back
    printf '%s\n' "$2" | timeout 10 nc -N 127.0.0.1 "$1" 2>&1
}
mark() {    # remember the end of the journal: journal() shows what came after it
    jcur=$($G journalctl -n 1 -o cat --show-cursor --no-pager 2>/dev/null | sed -n 's/^-- cursor: //p')
}
journal() {    # messages of echochatd.service (the daemon's and systemd's) since mark()
    $G journalctl --no-pager -o cat -u echochatd.service ${jcur:+"--after-cursor=$jcur"} 2>/dev/null
}
wait_journal() {    # FIXED-STRING SECONDS
    local _
    for _ in $(seq $(($2 * 5))); do
        journal | grep -qF -- "$1" && return 0
        sleep 0.2
    done
    return 1
}
status_re='^[0-9]+ clients? \(echo [0-9]+, chat [0-9]+\), [0-9]+ rooms?$'

# ---------------------------------------------------------------- 1. start (Type=notify)
jcur=
mark
name=start_notify_ready
if ! $G systemctl start echochatd.service 2>"$tmp/err"; then
    notok $name "systemctl start failed: $(cat "$tmp/err")"
else
    out=$(echo_once "$pecho" "ready at once")
    st=$(is_active)
    status=$(show StatusText)
    if [ "$out" != "ready at once" ]; then
        notok $name "echo right after 'systemctl start' returned: got '$out'"
    elif [ "$st" != active ]; then
        notok $name "is-active says '$st'"
    elif ! [[ $status =~ $status_re ]]; then
        notok $name "StatusText='$status'"
    elif [ "$(show Type)" != notify ]; then
        notok $name "Type=$(show Type)"
    else
        ok "$name (StatusText=$status)"
    fi
fi

# ---------------------------------------------------------------- 2. nc and telnet from the host
out=$(echo_once "$pecho" "hello over nc")
if [ "$out" = "hello over nc" ]; then ok nc_echo; else notok nc_echo "got '$out'"; fi

out=$(printf '/quit nc done\n' | timeout 10 nc -N 127.0.0.1 "$pchat" 2>&1 | tr -d '\r')
if printf '%s\n' "$out" | grep -q '^\* welcome to echochatd .*online$' &&
   printf '%s\n' "$out" | grep -qx '\* first motd' &&
   printf '%s\n' "$out" | grep -q '^\* you are guest[0-9]*; type /help' &&
   printf '%s\n' "$out" | grep -qx '\* bye'; then
    ok nc_chat
else
    notok nc_chat "transcript: $(printf '%s' "$out" | tr '\n' '|')"
fi

cat >"$tmp/telnet.exp" <<'EOF'
# args: ECHO_PORT CHAT_PORT MOTD; prints "ok - NAME" / "not ok - NAME: ..."
lassign $argv pecho pchat motd
set timeout 10
log_user 0
set step telnet_echo
proc fail {msg} {
    global step expect_out
    set buf ""
    if {[info exists expect_out(buffer)]} { regsub -all {\r} $expect_out(buffer) {\\r} buf }
    puts "not ok - $step: $msg ([string map {"\n" |} [string range $buf end-300 end]])"
}
proc want {text} {
    expect {
        -ex $text { return 1 }
        timeout { fail "timed out waiting for \"$text\""; return 0 }
        eof { fail "EOF while waiting for \"$text\""; return 0 }
    }
}
proc finish {} {
    catch {close}
    catch {wait}
}

proc want_eof {} {
    global step
    expect {
        eof { puts "ok - $step" }
        timeout { fail "telnet did not exit" }
    }
}

spawn -noecho telnet 127.0.0.1 $pecho
# the line comes twice: the terminal's local echo, then the server's
if {[want "Escape character is"] && ([send "echo over telnet\r"] eq "")
    && [want "echo over telnet\r\n"] && [want "echo over telnet\r\n"]} {
    send "\035"
    if {[want "telnet>"]} {
        send "quit\r"
        want_eof
    }
}
finish

set step telnet_chat
spawn -noecho telnet 127.0.0.1 $pchat
if {[want "Escape character is"] && [want "* welcome to echochatd "] && [want "* $motd\r\n"]
    && [want "; type /help for the commands\r\n"] && [want "has joined #lobby\r\n"]} {
    send "/nick telnetuser\r"
    if {[want " is now known as telnetuser\r\n"]} {
        send "/quit bye from telnet\r"
        if {[want "* bye\r\n"] && [want "Connection closed by foreign host."]} {
            want_eof
        }
    }
}
finish
EOF
timeout 60 expect -f "$tmp/telnet.exp" "$pecho" "$pchat" "first motd" >"$tmp/telnet.out" 2>&1
cat "$tmp/telnet.out"
grep -q '^not ok' "$tmp/telnet.out" && nfail=1
for n in telnet_echo telnet_chat; do
    grep -q "^ok - $n\$" "$tmp/telnet.out" || { grep -q "^not ok - $n" "$tmp/telnet.out" || notok $n "expect gave no result"; }
done

# ---------------------------------------------------------------- 3. reload (and 4. stop) from Python
# The Python part holds connections across "systemctl" calls; it prints ok / not ok lines.
cat >"$tmp/clients.py" <<'EOF'
import os, re, socket, subprocess, sys, time

G = os.environ["G"]
PECHO, PCHAT = int(os.environ["PECHO"]), int(os.environ["PCHAT"])
failed = False


def guest(*args, stdin=None, timeout=30):
    return subprocess.run([G, *args], input=stdin, capture_output=True, text=True,
                          env=dict(os.environ, GUEST_TIMEOUT=str(timeout)))


def show(prop):
    return guest("systemctl", "show", "-p", prop, "--value", "echochatd.service").stdout.strip()


def put_conf(text):
    conf = os.environ["CONF"]
    r = guest("sh", "-c", f"cat >'{conf}.new' && chmod 644 '{conf}.new' && mv '{conf}.new' '{conf}'",
              stdin=text)
    assert r.returncode == 0, f"writing the config failed: {r.stderr}"


class Chat:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.seen = []

    def line(self, timeout=10):
        deadline = time.monotonic() + timeout
        while b"\r\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; lines so far: {self.seen[-8:]}")
            self.sock.settimeout(left)
            data = self.sock.recv(4096)
            if not data:
                raise AssertionError(f"EOF; lines so far: {self.seen[-8:]}")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        line = line.decode("utf-8", "replace")
        self.seen.append(line)
        return line

    def until(self, pred, timeout=10):
        deadline = time.monotonic() + timeout
        got = []
        while True:
            line = self.line(max(0.01, deadline - time.monotonic()))
            got.append(line)
            if pred(line):
                return got

    def send(self, text):
        self.sock.sendall(text.encode() + b"\r\n")

    def welcome(self):
        """Lines up to the members line of the join; returns (nick, lines)."""
        lines = self.until(lambda l: l.startswith("* members of #lobby"))
        nick = next(m.group(1) for m in (re.match(r"\* you are (guest\d+);", l) for l in lines) if m)
        return nick, lines


def check(name, fn):
    global failed
    try:
        extra = fn()
        print(f"ok - {name}" + (f" ({extra})" if extra else ""), flush=True)
    except Exception as e:  # noqa: BLE001 - report anything as a failed check
        failed = True
        print(f"not ok - {name}: {type(e).__name__}: {e}", flush=True)


def echo_once(text):
    with socket.create_connection(("127.0.0.1", PECHO), timeout=10) as s:
        s.sendall(text.encode())
        s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            d = s.recv(4096)
            if not d:
                return got.decode()
            got += d


def conf_text(motd, extra=""):
    return (f"[server]\nshutdown_timeout = 10\n[log]\nlevel = info\n"
            f"[echo]\nbind = 127.0.0.1\nport = {PECHO}\n"
            f"[chat]\nbind = 127.0.0.1\nport = {PCHAT}\nmotd = {motd}\n{extra}")


def reload_checks():
    state = {}

    def keeps_clients():
        a = Chat(PCHAT)
        state["a"] = a
        nick_a, lines = a.welcome()
        state["nick_a"] = nick_a
        assert "* first motd" in lines, f"welcome without the first motd: {lines}"
        pid = show("MainPID")
        put_conf(conf_text("second motd"))
        r = guest("systemctl", "reload", "echochatd.service")
        assert r.returncode == 0, f"systemctl reload failed ({r.returncode}): {r.stderr.strip()}"
        st = show("ActiveState")
        assert st == "active", f"ActiveState={st} after reload"
        assert show("MainPID") == pid, "MainPID changed across the reload"
        a.send("/who")
        a.until(lambda l: l == f"* members of #lobby (1): {nick_a}")
        return f"MainPID {pid} kept"

    def new_motd():
        a, nick_a = state["a"], state["nick_a"]
        b = Chat(PCHAT)
        state["b"] = b
        nick_b, lines = b.welcome()
        assert "* second motd" in lines, f"new connection's welcome: {lines}"
        assert "* first motd" not in lines, f"old motd after the reload: {lines}"
        a.until(lambda l: l == f"* {nick_b} has joined #lobby")
        a.send("hello after the reload")
        b.until(lambda l: l == f"<{nick_a}> hello after the reload")
        b.send("and back")
        a.until(lambda l: l == f"<{nick_b}> and back")

    def status_tracks():
        # two chat clients in one room: refreshed at most once a second, so allow a few
        deadline = time.monotonic() + 5
        while True:
            st = show("StatusText")
            if st.startswith("2 clients (echo 0, chat 2), 1 room"):
                return f"StatusText={st}"
            if time.monotonic() > deadline:
                raise AssertionError(f"StatusText={st!r}, wanted 2 clients (echo 0, chat 2), 1 room(s)")
            time.sleep(0.3)

    def broken_reload():
        a, b = state["a"], state["b"]
        pid = show("MainPID")
        put_conf(conf_text("third motd", "colour = blue\n"))
        r = guest("systemctl", "reload", "echochatd.service")
        assert r.returncode != 0, "systemctl reload succeeded with a broken config"
        time.sleep(0.5)
        st = show("ActiveState")
        assert st == "active", f"ActiveState={st} after the failed reload"
        assert show("MainPID") == pid, "MainPID changed"
        got = echo_once("still serving\n")
        assert got == "still serving\n", f"echo after the failed reload: {got!r}"
        a.send("/who")
        a.until(lambda l: l.startswith("* members of #lobby (2): "))
        c = Chat(PCHAT)
        _, lines = c.welcome()
        assert "* second motd" in lines, f"welcome after the failed reload: {lines}"
        c.send("/quit")
        c.until(lambda l: l == "* bye")
        put_conf(conf_text("second motd"))
        return f"reload exit {r.returncode}"

    check("reload_keeps_clients", keeps_clients)
    check("reload_new_motd", new_motd)
    check("status_text_tracks_clients", status_tracks)
    check("reload_broken_config", broken_reload)
    put_conf(conf_text("second motd"))  # whatever failed above, leave a good config behind
    for k in ("a", "b"):
        if k in state:
            state[k].send("/quit")
            try:
                state[k].until(lambda l: l == "* bye", 5)
            except AssertionError:
                pass
            state[k].sock.close()


def stop_check():
    def drains():
        # 216000 bytes: under the 256 KiB at which the daemon would stop reading, so it
        # has read all of it; with a small receive buffer here most of the echo is
        # still queued in the daemon when the stop comes
        data = b"".join(b"%07d in flight\n" % i for i in range(12000))
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        s.settimeout(10)
        s.connect(("127.0.0.1", PECHO))
        s.sendall(data)
        time.sleep(0.5)
        stop = subprocess.Popen([G, "systemctl", "stop", "echochatd.service"],
                                env=dict(os.environ, GUEST_TIMEOUT="45"),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(0.5)  # SIGTERM delivered before we read anything
        got = b""
        s.settimeout(15)
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                got += d
        except ConnectionResetError:
            raise AssertionError(f"connection reset after {len(got)} of {len(data)} bytes")
        assert got == data, f"echo differs: {len(got)} of {len(data)} bytes"
        s.close()
        out, _ = stop.communicate(timeout=50)
        assert stop.returncode == 0, f"systemctl stop exit {stop.returncode}: {out.strip()}"
        st, res, code = show("ActiveState"), show("Result"), show("ExecMainStatus")
        assert st == "inactive", f"ActiveState={st} Result={res} ExecMainStatus={code}"
        assert res == "success" and code == "0", f"Result={res} ExecMainStatus={code}"
        return f"{len(data)} bytes echoed then FIN; ActiveState={st}, Result={res}"

    check("stop_drains_client", drains)


globals()[sys.argv[1]]()
sys.exit(1 if failed else 0)
EOF
export G PECHO=$pecho PCHAT=$pchat CONF=$conf
timeout 120 "$py" "$tmp/clients.py" reload_checks || nfail=1

# ---------------------------------------------------------------- 5. sandbox
name=sandbox_dynamic_user
pid=$(show MainPID)
if [ -z "$pid" ] || [ "$pid" = 0 ]; then
    notok $name "no MainPID (ActiveState=$(show ActiveState))"
    notok sandbox_protect_system "no MainPID"
else
    uid=$($G awk '/^Uid:/ { print $2, $3, $4, $5 }' "/proc/$pid/status")
    props=$($G systemctl show -p DynamicUser -p ProtectSystem echochatd.service | sort | paste -sd' ' -)
    case " ${uid:-0} " in
    *" 0 "*) notok $name "MainPID $pid has Uid: '$uid'" ;;
    *)
        if [ "$props" != "DynamicUser=yes ProtectSystem=strict" ]; then
            notok $name "systemctl show: $props"
        elif [ "${uid%% *}" -lt 61184 ] || [ "${uid%% *}" -gt 65519 ]; then
            notok $name "uid ${uid%% *} is outside the DynamicUser= range 61184-65519"
        else
            ok "$name (uid ${uid%% *}, $props)"
        fi ;;
    esac

    name=sandbox_protect_system
    # the mount that holds /usr in the service's own mount namespace: the longest mount
    # point that is a prefix of /usr (the last one mounted on it wins)
    usr_opts=$($G cat "/proc/$pid/mountinfo" | awk '
        ($5 == "/" || $5 == "/usr" || index("/usr/", $5 "/") == 1) && length($5) >= best {
            best = length($5); opts = $6 }
        END { print opts }')
    probe=/usr/.echochatd-nspawn-write-probe
    werr=$($G nsenter -t "$pid" -m sh -c "touch $probe" 2>&1) && {
        $G nsenter -t "$pid" -m rm -f "$probe"; werr="touch $probe succeeded"; }
    case ",$usr_opts," in
    *,ro,*)
        case $werr in
        *"Read-only file system"*) ok "$name (/usr mounted $usr_opts; write: Read-only file system)" ;;
        *) notok $name "/usr is mounted ro but writing in the service's namespace: $werr" ;;
        esac ;;
    *) notok $name "/usr options in /proc/$pid/mountinfo: '$usr_opts'" ;;
    esac
fi

# ---------------------------------------------------------------- 4. stop with a client
if [ "$(is_active)" = active ]; then
    mark
    timeout 120 "$py" "$tmp/clients.py" stop_check || nfail=1
    if wait_journal "shutting down on SIGTERM: 1 client" 3; then
        ok stop_logs_drain
    else
        notok stop_logs_drain "no 'shutting down on SIGTERM: 1 client...' line in the journal"
    fi
else
    notok stop_drains_client "the service is not active before the stop: $(is_active)"
fi

# ---------------------------------------------------------------- 6. socket activation
name=socket_activation
$G systemctl stop echochatd.service >/dev/null 2>&1
write_conf "second motd" | put_conf
mark
if ! $G systemctl start echochatd-echo.socket echochatd-chat.socket 2>"$tmp/err"; then
    notok $name "starting the socket units failed: $(cat "$tmp/err")"
elif [ "$(is_active echochatd-echo.socket)/$(is_active echochatd-chat.socket)" != active/active ]; then
    notok $name "socket units: $(is_active echochatd-echo.socket)/$(is_active echochatd-chat.socket)"
elif [ "$(is_active)" != inactive ]; then
    notok $name "echochatd.service is '$(is_active)' before the first connection"
else
    out=$(echo_once "$pecho" "activated")
    if [ "$out" != activated ]; then
        notok $name "first connection to the echo socket: got '$out'"
    elif ! wait_active echochatd.service active 5; then
        notok $name "service is '$(is_active)' after the first connection"
    elif ! wait_journal "echo: listening on 127.0.0.1:$pecho (socket from systemd)" 5; then
        notok $name "no 'echo: listening on 127.0.0.1:$pecho (socket from systemd)' in the journal"
    elif ! journal | grep -qF "chat: listening on 127.0.0.1:$pchat (socket from systemd)"; then
        notok $name "no 'chat: listening on 127.0.0.1:$pchat (socket from systemd)' in the journal"
    else
        out=$(printf '/quit\n' | timeout 10 nc -N 127.0.0.1 "$pchat" 2>&1 | tr -d '\r')
        if ! printf '%s\n' "$out" | grep -q '^\* welcome to echochatd'; then
            notok $name "chat over the inherited socket: $(printf '%s' "$out" | tr '\n' '|')"
        else
            ok "$name (TriggeredBy=$(show TriggeredBy))"
        fi
    fi
fi
# stopping the service leaves the sockets with systemd; stopping them closes the ports
$G systemctl stop echochatd.service >/dev/null 2>&1
out=$(echo_once "$pecho" "again")
if [ "$out" = again ] && wait_active echochatd.service active 5; then
    ok socket_reactivation
else
    notok socket_reactivation "after 'systemctl stop echochatd' a connection got '$out', service $(is_active)"
fi
$G systemctl stop echochatd.service echochatd-echo.socket echochatd-chat.socket >/dev/null 2>&1
if (exec 3<>"/dev/tcp/127.0.0.1/$pecho") 2>/dev/null; then
    notok sockets_closed "port $pecho still accepts after stopping the socket units"
else
    ok sockets_closed
fi

# ---------------------------------------------------------------- 7. broken config at start
name=broken_config_no_restart
$G systemctl reset-failed echochatd.service >/dev/null 2>&1
mark
write_conf "broken" "colour = blue" | put_conf
if $G systemctl start echochatd.service 2>"$tmp/err"; then
    notok $name "systemctl start succeeded with a broken config"
else
    sleep 3    # Restart= would have struck by now (RestartSec= 100 ms by default)
    st=$(show ActiveState) res=$(show Result) code=$(show ExecMainStatus) nr=$(show NRestarts)
    if [ "$st/$res/$code/$nr" != failed/exit-code/78/0 ]; then
        notok $name "ActiveState=$st Result=$res ExecMainStatus=$code NRestarts=$nr"
    elif ! journal | grep -q 'colour: unknown key'; then
        notok $name "the journal does not name the error ('[chat] colour: unknown key')"
    else
        ok "$name (ActiveState=$st Result=$res ExecMainStatus=$code NRestarts=$nr)"
    fi
fi

# ---------------------------------------------------------------- result
# what systemd itself had to say about the units (unknown settings, sandboxing it could
# not set up, ...): notes, not failures
$G journalctl --no-pager -o cat -p warning _PID=1 2>/dev/null | grep -i echochatd |
    grep -v -e 'Failed with result' -e 'Failed to start' -e 'status=78/CONFIG' \
        -e 'Control process exited' -e 'Reload failed' | sort -u | sed 's/^/# note: systemd: /'
if [ -n "$nfail" ] || [ -n "${ECHOCHATD_NSPAWN_VERBOSE:-}" ]; then
    echo "# journal of echochatd in the guest:"
    $G journalctl --no-pager -o short-monotonic -u echochatd.service \
        -u echochatd-echo.socket -u echochatd-chat.socket 2>&1 | tail -n 150 | sed 's/^/#   | /'
fi
lap "tests done"
[ -z "$nfail" ] || exit 1
exit 0
