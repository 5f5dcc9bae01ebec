#!/bin/bash
# The systemd units: systemd-analyze verify (service with ExecStart= pointing at the binary under
# test, both socket units), systemd-analyze security --offline=yes (exposure <= 2.0), and the
# settings the spec requires.
# Exit 0 pass, 1 fail, 77 skip (no systemd-analyze).
set -u

here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${srcdir:-}" ] && [ -d "$srcdir/systemd" ]; then
    units=$(cd "$srcdir/systemd" && pwd)
else
    units=$(cd "$here/../systemd" 2>/dev/null && pwd) || units=$here/../systemd
fi
bin=${ECHOCHATD:-}
if [ -z "$bin" ]; then
    if [ -x "$here/../src/echochatd" ]; then bin=$here/../src/echochatd; else bin=./src/echochatd; fi
fi

failed=0
passed=0
skipped=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
skip() { echo "ok - $1 # SKIP $2"; skipped=$((skipped + 1)); }
not_ok() {
    echo "not ok - $1: $2"
    if [ -n "${3:-}" ] && [ -s "$3" ]; then sed 's/^/#   | /' "$3" | tail -n 30; fi
    failed=$((failed + 1))
}

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "ok - units # SKIP systemd-analyze not installed"
    exit 77
fi
for f in echochatd.service.in echochatd-echo.socket echochatd-chat.socket; do
    if [ ! -f "$units/$f" ]; then
        echo "not ok - units: $units/$f not found (set srcdir)"
        exit 1
    fi
done
if [ ! -x "$bin" ]; then
    echo "not ok - units: binary $bin not found or not executable (set ECHOCHATD)"
    exit 1
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
if [ "$(basename "$bin")" != echochatd ]; then
    echo "not ok - units: the binary must be called echochatd (ExecStart=@sbindir@/echochatd): $bin"
    exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/echochatd-units.XXXXXX")
# shellcheck disable=SC2317   # called through trap
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# The service as make generates it, with @sbindir@ = the directory of the binary under test.
sbindir=$(dirname "$bin")
mkdir "$tmp/units"
sed -e "s|@sbindir@|$sbindir|g" -e "s|@sysconfdir@|/etc|g" \
    "$units/echochatd.service.in" > "$tmp/units/echochatd.service"
cp "$units/echochatd-echo.socket" "$units/echochatd-chat.socket" "$tmp/units/"
svc=$tmp/units/echochatd.service
esock=$tmp/units/echochatd-echo.socket
csock=$tmp/units/echochatd-chat.socket

# Documentation=man:... is checked against the project's own man pages when man is there.
man_args=(--man=no)
topsrc=$(dirname "$units")
if command -v man >/dev/null 2>&1 && [ -f "$topsrc/doc/echochatd.8" ] && [ -f "$topsrc/doc/echochatd.ini.5" ]; then
    mkdir -p "$tmp/man/man8" "$tmp/man/man5"
    cp "$topsrc/doc/echochatd.8" "$tmp/man/man8/"
    cp "$topsrc/doc/echochatd.ini.5" "$tmp/man/man5/"
    man_args=()
    export MANPATH=$tmp/man
fi

# value KEY FILE: the values of KEY= (one per line, in order), [Section] headers ignored
value() { sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$2"; }

# --- no placeholder left, every command of the service exists
name=no_placeholders
if grep -n '@[A-Za-z_]*@' "$svc" > "$tmp/out"; then
    not_ok $name "placeholders left after substitution" "$tmp/out"
else
    ok $name
fi

name=exec_commands_exist
: > "$tmp/out"
value 'Exec[A-Za-z]*' "$svc" | sed 's/^[-@:+!]*//' | awk '{print $1}' | while read -r cmd; do
    [ -x "$cmd" ] || echo "not executable: $cmd"
done > "$tmp/out"
if [ -s "$tmp/out" ]; then not_ok $name "Exec*= commands missing" "$tmp/out"; else ok $name; fi

# --- systemd-analyze verify
for u in "$svc" "$esock" "$csock"; do
    name="verify_$(basename "$u")"
    if (cd "$tmp/units" && systemd-analyze verify "${man_args[@]}" "$u") > "$tmp/out" 2>&1; then
        # warnings do not change the status: any output about our units is a failure
        if grep -E 'echochatd' "$tmp/out" > "$tmp/out2"; then
            not_ok "$name" "systemd-analyze verify complains" "$tmp/out2"
        else
            ok "$name"
        fi
    else
        not_ok "$name" "systemd-analyze verify failed" "$tmp/out"
    fi
done

# --- systemd-analyze security --offline=yes
name=security_exposure
if (cd "$tmp/units" && systemd-analyze security --offline=yes "$svc") > "$tmp/out" 2>&1; then
    level=$(sed -n 's/.*Overall exposure level for echochatd\.service: \([0-9][0-9]*\.[0-9]\).*/\1/p' "$tmp/out" | head -n 1)
    if [ -z "$level" ]; then
        not_ok $name "no 'Overall exposure level for echochatd.service: X.Y' line" "$tmp/out"
    elif awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }'; then
        echo "# exposure level $level"
        ok $name
    else
        grep -E '^ *✗' "$tmp/out" > "$tmp/out2" || true
        not_ok $name "exposure level $level > 2.0" "$tmp/out2"
    fi
else
    not_ok $name "systemd-analyze security --offline=yes failed" "$tmp/out"
fi

# --- required settings
# expect NAME FILE KEY VALUE: KEY= has exactly VALUE (the last assignment wins, as in systemd)
expect() {
    local got
    got=$(value "$3" "$2" | tail -n 1)
    if [ "$got" != "$4" ]; then
        echo "$(basename "$2"): $3=$got, expected $3=$4"
    fi
}

name=echo_socket_settings
{
    expect $name "$esock" FileDescriptorName echo
    expect $name "$esock" Service echochatd.service
    expect $name "$esock" ListenStream 7007
    value Backlog "$esock" | tail -n 1 | grep -Eq '^[0-9]+$' || echo "echochatd-echo.socket: no numeric Backlog="
    grep -q '^\[Socket\]' "$esock" || echo "echochatd-echo.socket: no [Socket] section"
} > "$tmp/out"
if [ -s "$tmp/out" ]; then not_ok $name "settings" "$tmp/out"; else ok $name; fi

name=chat_socket_settings
{
    expect $name "$csock" FileDescriptorName chat
    expect $name "$csock" Service echochatd.service
    expect $name "$csock" ListenStream 7008
    value Backlog "$csock" | tail -n 1 | grep -Eq '^[0-9]+$' || echo "echochatd-chat.socket: no numeric Backlog="
    grep -q '^\[Socket\]' "$csock" || echo "echochatd-chat.socket: no [Socket] section"
} > "$tmp/out"
if [ -s "$tmp/out" ]; then not_ok $name "settings" "$tmp/out"; else ok $name; fi

name=service_settings
{
    expect $name "$svc" Type notify
    expect $name "$svc" RestartPreventExitStatus 78
    expect $name "$svc" DynamicUser yes
    expect $name "$svc" Restart on-failure
    expect $name "$svc" TimeoutStopSec 30
    expect $name "$svc" WatchdogSec 30
    expect $name "$svc" LimitNOFILE 65536
    expect $name "$svc" ExecStart "$sbindir/echochatd"
} > "$tmp/out"
if [ -s "$tmp/out" ]; then not_ok $name "settings" "$tmp/out"; else ok $name; fi

# ExecReload=: first the configuration check, then the HUP to the main process
name=service_exec_reload
value ExecReload "$svc" > "$tmp/reload"
{
    first_check=$(grep -n -- '--check-config' "$tmp/reload" | head -n 1 | cut -d: -f1)
    # shellcheck disable=SC2016   # a literal $MAINPID
    first_hup=$(grep -nE '(^|/)kill[[:space:]]+(-HUP|-s[[:space:]]*HUP|--signal[= ]HUP)[[:space:]]+\$MAINPID$' "$tmp/reload" | head -n 1 | cut -d: -f1)
    if [ -z "$first_check" ]; then echo "no ExecReload= with --check-config"; fi
    if [ -z "$first_hup" ]; then echo "no ExecReload= sending HUP to \$MAINPID"; fi
    if [ -n "$first_check" ] && [ -n "$first_hup" ] && [ "$first_check" -ge "$first_hup" ]; then
        echo "--check-config (ExecReload= #$first_check) does not come before kill -HUP (#$first_hup)"
    fi
    if [ -n "$first_check" ] && ! sed -n "${first_check}p" "$tmp/reload" | grep -q "^$sbindir/echochatd "; then
        echo "the --check-config ExecReload= does not run $sbindir/echochatd"
    fi
} > "$tmp/out"
if [ -s "$tmp/out" ]; then
    sed 's/^/ExecReload=/' "$tmp/reload" >> "$tmp/out"
    not_ok $name "ExecReload" "$tmp/out"
else
    ok $name
fi

# The service unit make generates (in the build tree next to src/), if it was built: complete.
name=generated_service
gen=$(dirname "$bin")/../systemd/echochatd.service
if [ ! -f "$gen" ]; then
    skip $name "no generated $gen (not built yet)"
elif grep -n '@[A-Za-z_]*@' "$gen" > "$tmp/out"; then
    not_ok $name "placeholders left in $gen" "$tmp/out"
elif ! value ExecStart "$gen" | grep -q '^/.*/echochatd$'; then
    value ExecStart "$gen" > "$tmp/out"
    not_ok $name "ExecStart= of $gen is not an absolute path to echochatd" "$tmp/out"
else
    # it is the .in with @sbindir@ filled in (compared fully while the .in has no other placeholder)
    gen_sbindir=$(value ExecStart "$gen" | tail -n 1 | sed 's|/echochatd$||')
    sed -e "s|@sbindir@|$gen_sbindir|g" "$units/echochatd.service.in" > "$tmp/gen.want"
    if grep -q '@[A-Za-z_]*@' "$tmp/gen.want"; then
        ok $name
    elif diff "$tmp/gen.want" "$gen" > "$tmp/out"; then
        ok $name
    else
        not_ok $name "$gen is not $units/echochatd.service.in with @sbindir@=$gen_sbindir (stale? run make)" "$tmp/out"
    fi
fi

echo "# $passed passed, $failed failed, $skipped skipped"
if [ "$failed" -gt 0 ]; then exit 1; fi
if [ "$passed" -eq 0 ]; then exit 77; fi
exit 0
