#!/usr/bin/env bash
# Installs the Debian packages the test suite drives for real, when missing: podman (container images),
# prometheus (promtool and a real scraping server), wrk (benchmarks), shellcheck (actionlint), and
# builds the local python:3.11-slim stand-in base image (no registry is reachable here).
set -euo pipefail
needed=()
command -v podman >/dev/null || needed+=(podman buildah runc slirp4netns fuse-overlayfs uidmap containernetworking-plugins conmon)
command -v debootstrap >/dev/null || needed+=(debootstrap)
command -v prometheus >/dev/null || needed+=(prometheus)
command -v wrk >/dev/null || needed+=(wrk)
command -v shellcheck >/dev/null || needed+=(shellcheck)
if ((${#needed[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "missing system packages: ${needed[*]} (install them, or run as root)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
fi
tools=../shared/tools/containers
if [ -x "$tools/make-base-image.sh" ]; then
  CONTAINERS_CONF=${CONTAINERS_CONF:-$tools/containers.conf} "$tools/make-base-image.sh" >/dev/null
fi
