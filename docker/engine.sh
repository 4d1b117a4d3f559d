#!/usr/bin/env bash
# Make the docker test cluster buildable on a machine that can pull no image:
# install Debian's engine if missing, start dockerd if none answers, build a
# Debian base image offline (debootstrap from the machine's own apt mirror +
# `docker import`) and the node image from docker/Dockerfile on top of it.
#
# Idempotent: every step is skipped when its result is already there.
# Exit 0 when the image is ready, or when this machine cannot run an engine
# (not root, no cgroups, ...): the docker tests then skip and say why.
# Exit 1 when something that should have worked failed (a build error).
#
# Environment: FABEXEC_BASE_IMAGE=<image> builds on that image instead of the
# offline base (for machines that can pull, e.g. debian:bookworm-slim).
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
STATE="$HERE/.build"               # client key and dockerd log; ignored by git
KEY="$STATE/id_ed25519"            # tests/fixtures_docker.py reads the same path
SUITE=bookworm
BASE_TAG="fabexec/debian-base:$SUITE"
NODE_TAG="fabexec/node:$SUITE"     # docker/docker-compose.yml runs this tag
ENGINE_WAIT=60                     # seconds for a new dockerd to answer

say() { echo "engine.sh: $*"; }
unavailable() { say "SKIP: $*; the docker tests will be skipped."; exit 0; }
timed() { # timed <label> <log> <command...>: run it into <log>, say how long it took
    local label=$1 log=$2 start=$SECONDS; shift 2
    if "$@" >"$log" 2>&1; then
        say "$label took $((SECONDS - start)) s"
    else
        tail -n 20 "$log" | sed "s/^/  $label: /"
        say "$label failed after $((SECONDS - start)) s (log: $log)"
        return 1
    fi
}

install_packages() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v ssh-keygen >/dev/null || missing+=(openssh-client)  # the tests' client key
    [ ${#missing[@]} -eq 0 ] && return
    [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null \
        || unavailable "missing ${missing[*]} and cannot apt-get install them (not root or not Debian)"
    timed "apt-get install ${missing[*]}" "$STATE/apt.log" sh -c \
        'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"' sh "${missing[@]}" \
        || unavailable "cannot apt-get install ${missing[*]}"
}

engine_answers() { docker info >/dev/null 2>&1; }

start_engine() {
    engine_answers && return
    [ "$(id -u)" -eq 0 ] || unavailable "no docker engine answers and only root can start dockerd"
    say "starting dockerd (log: $STATE/dockerd.log)"
    # --iptables=false --ip-forward=false: leave the machine's firewall and
    # forwarding alone. Published ports still work (docker-proxy on 127.0.0.1);
    # image builds reach the apt mirror through --network host instead of NAT.
    setsid dockerd --iptables=false --ip-forward=false >"$STATE/dockerd.log" 2>&1 </dev/null &
    local pid=$! i
    for ((i = 0; i < ENGINE_WAIT; i++)); do
        engine_answers && { say "dockerd (pid $pid) answers"; return; }
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    tail -n 15 "$STATE/dockerd.log" | sed 's/^/  dockerd: /'
    kill "$pid" 2>/dev/null
    unavailable "dockerd did not answer within ${ENGINE_WAIT} s (no privileges or no cgroups?)"
}

debian_mirror() { # the first apt source of $SUITE (one-line and deb822 formats)
    {
        cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk -v s="$SUITE" '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                                              if ($(i + 1) == s) print $i }'
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -r "$f" ] && awk -v s="$SUITE" 'BEGIN { RS = ""; FS = "\n" }
                { t = u = x = ""; on = 1
                  for (i = 1; i <= NF; i++) {
                      l = $i; gsub(/[ \t]+/, " ", l); k = tolower(substr(l, 1, index(l, ":")))
                      v = " " substr(l, index(l, ":") + 1) " "
                      if (k == "types:") t = v; else if (k == "uris:") u = v
                      else if (k == "suites:") x = v; else if (k == "enabled:" && v ~ / no /) on = 0 }
                  if (on && t ~ / deb / && x ~ (" " s " ")) { split(u, a, " "); print a[1] } }' "$f"
        done
    } | head -n 1
}

build_base() {
    docker image inspect "$BASE_TAG" >/dev/null 2>&1 && { say "$BASE_TAG exists"; return; }
    local mirror proxy rootfs include=()
    mirror=$(debian_mirror)
    [ -n "$mirror" ] || unavailable "no apt source for Debian $SUITE in /etc/apt to debootstrap from"
    eval "$(apt-config shell proxy Acquire::http::Proxy 2>/dev/null)"
    [ -n "${proxy:-}" ] && export http_proxy="$proxy"
    [[ $mirror == https:* ]] && include=(--include=ca-certificates)
    rootfs=$(mktemp -d /var/tmp/fabexec-rootfs.XXXXXX) || return
    say "debootstrap $SUITE from $mirror"
    timed debootstrap "$STATE/debootstrap.log" \
        debootstrap --variant=minbase "${include[@]}" "$SUITE" "$rootfs" "$mirror" \
        || { rm -rf "$rootfs"; unavailable "cannot debootstrap Debian $SUITE from $mirror"; }
    timed "docker import" "$STATE/import.log" \
        sh -c 'tar -C "$1" -c . | docker import - "$2"' sh "$rootfs" "$BASE_TAG"
    local status=$?
    rm -rf "$rootfs"
    return $status
}

build_node() {
    [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C fabexec-docker-tests -f "$KEY" || return
    # --network host: the build's apt-get reaches the mirror without the NAT
    # rules that dockerd was told not to add. Layers are cached: a rebuild with
    # nothing changed takes seconds.
    DOCKER_BUILDKIT=0 timed "docker build" "$STATE/build.log" docker build --network host \
        --build-arg BASE_IMAGE="${FABEXEC_BASE_IMAGE:-$BASE_TAG}" \
        --build-arg AUTHORIZED_KEY="$(cat "$KEY.pub")" \
        -t "$NODE_TAG" "$HERE" || return
    # The node images this one replaced (an older key or Dockerfile), and only those.
    docker image prune -f --filter label=org.fabexec.authorized-key >/dev/null
}

mkdir -p "$STATE"
install_packages
start_engine
if [ -z "${FABEXEC_BASE_IMAGE:-}" ]; then
    build_base || { say "FAILED to build $BASE_TAG"; exit 1; }
fi
build_node || { say "FAILED to build $NODE_TAG"; exit 1; }
say "ready: $NODE_TAG; run the cluster with docker-compose -f $HERE/docker-compose.yml up -d"
