#!/usr/bin/env bash
# Build the Go interop peers from Debian packages only: Debian's Go and
# golang-github-vmware-govmomi-dev, in GOPATH mode, with the network closed to the Go tool
# (GOPROXY=off), so they are exactly what Debian ships:
#   vcsim    tests/interop/vcsim/main.go     govmomi's vCenter simulator (the default)
#   battery  tests/interop/govmomi/main.go   a govmomi client doing what backup tools do
#   peer     scripts/bench_peers/govmomi/main.go  the bench's govmomi download/export peer
# A binary goes to <dir>/build/<name> and is rebuilt only when the sources, the govmomi
# package or Go changed (a stamp beside it). Prints the binary's path.
# Run it (`build-vcsim.sh [vcsim|battery|peer]`), or source it and call build_vcsim,
# build_battery or build_peer.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

# build_go_peer NAME DIR: build DIR/*.go (DIR relative to the checkout) into DIR/build/NAME.
build_go_peer() {
    apt_need golang-go golang-github-vmware-govmomi-dev
    local name="$1" src="$ROOT/$2"
    local out="$src/build"
    local bin="$out/$name"
    local stamp
    stamp="$( { cat "$src"/*.go; go version;
                dpkg-query -W -f='${Version}' golang-github-vmware-govmomi-dev; } | sha1sum | cut -c1-16)"
    if [ -x "$bin" ] && [ "$(cat "$out/.stamp" 2>/dev/null)" = "$stamp" ]; then
        echo "$bin"
        return 0
    fi
    mkdir -p "$out"
    log "go build $name (GOPATH=/usr/share/gocode, offline)"
    # GOPATH's first entry is ours (writable); Debian's packaged sources come second.
    (cd "$src" && env GOPATH="$out/gopath:/usr/share/gocode" GO111MODULE=off GOFLAGS= \
        GOPROXY=off GOSUMDB=off GOTOOLCHAIN=local GOCACHE="$out/gocache" \
        go build -o "$bin.$$.tmp" .) >&2
    mv "$bin.$$.tmp" "$bin"    # atomic: a concurrent run sees the old or the new binary
    echo "$stamp" > "$out/.stamp"
    echo "$bin"
}

build_vcsim() { build_go_peer vcsim tests/interop/vcsim; }
build_battery() { build_go_peer battery tests/interop/govmomi; }
build_peer() { build_go_peer govmomi-peer scripts/bench_peers/govmomi; }

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    case "${1:-vcsim}" in
        vcsim) build_vcsim ;;
        battery) build_battery ;;
        peer) build_peer ;;
        *) echo "usage: $0 [vcsim|battery|peer]" >&2; exit 2 ;;
    esac
fi
