#!/usr/bin/env bash
# Build govmomi's vCenter simulator (tests/interop/vcsim/main.go) from Debian packages only:
# Debian's Go and golang-github-vmware-govmomi-dev, in GOPATH mode, with the network closed
# to the Go tool (GOPROXY=off), so the interop peer is exactly what Debian ships.
# The binary goes to tests/interop/vcsim/build/vcsim and is rebuilt only when the sources,
# the govmomi package or Go changed (a stamp beside it). Prints the binary's path.
# Run it, or source it and call build_vcsim.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

build_vcsim() {
    apt_need golang-go golang-github-vmware-govmomi-dev
    local src="$ROOT/tests/interop/vcsim"
    local out="$src/build"
    local bin="$out/vcsim"
    local stamp
    stamp="$( { cat "$src"/*.go; go version;
                dpkg-query -W -f='${Version}' golang-github-vmware-govmomi-dev; } | sha1sum | cut -c1-16)"
    if [ -x "$bin" ] && [ "$(cat "$out/.stamp" 2>/dev/null)" = "$stamp" ]; then
        echo "$bin"
        return 0
    fi
    mkdir -p "$out"
    log "go build vcsim (GOPATH=/usr/share/gocode, offline)"
    # GOPATH's first entry is ours (writable); Debian's packaged sources come second.
    (cd "$src" && env GOPATH="$out/gopath:/usr/share/gocode" GO111MODULE=off GOFLAGS= \
        GOPROXY=off GOSUMDB=off GOTOOLCHAIN=local GOCACHE="$out/gocache" \
        go build -o "$bin.$$.tmp" .) >&2
    mv "$bin.$$.tmp" "$bin"    # atomic: a concurrent run sees the old or the new binary
    echo "$stamp" > "$out/.stamp"
    echo "$bin"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    build_vcsim
fi
