#!/usr/bin/env bash
# Builds a local base image equivalent to the Dockerfile's public default (Debian bookworm + Python 3.11)
# with mmdebstrap, for hosts that reach a Debian mirror but no public image registry.
#   docker/base.sh [IMAGE]          (default IMAGE: localhost/tessera-base:bookworm)
# Then: docker/build.sh --base IMAGE   (or BASE_IMAGE=IMAGE docker/build.sh)
set -euo pipefail

image="${1:-localhost/tessera-base:bookworm}"
suite="${DEBIAN_SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-}"  # empty: mmdebstrap uses the host's apt sources for the suite
command -v mmdebstrap >/dev/null || { echo "base.sh: error: mmdebstrap not found (apt-get install -y mmdebstrap)" >&2; exit 1; }
if command -v podman >/dev/null; then importer=podman
elif command -v docker >/dev/null; then importer=docker
else echo "base.sh: error: neither podman nor docker found to import the base image" >&2; exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# minbase + the interpreter and CA roots; the apt lists are dropped so the layer stays small.
# shellcheck disable=SC2086,SC2016  # $mirror is empty or one word; the hook's $1 is mmdebstrap's
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
  --aptopt='Acquire::Retries "3"' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  "$suite" "$tmp/rootfs.tar" $mirror
"$importer" import -q --change 'CMD ["/bin/bash"]' "$tmp/rootfs.tar" "$image" >/dev/null
echo "$image"
