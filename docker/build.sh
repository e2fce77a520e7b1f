#!/usr/bin/env bash
# Builds the image with buildah (daemonless) or docker, whichever exists, and tags VERSION and
# VERSION-gitsha (cpu flavour: VERSION-cpu and VERSION-gitsha-cpu).
#   docker/build.sh [--flavor cuda|cpu] [--base IMAGE] [--image NAME] [-- EXTRA BUILD ARGS]
# Env: IMAGE (default localhost/tessera), FLAVOR, BASE_IMAGE, TORCH_WHEEL (a torch-2.13.0+cpu wheel),
#      BUILD_LAYERS=false (buildah: no layer cache; faster for one-off builds such as CI),
#      CA_BUNDLE (a proxy's CA, passed as the `cacert` build secret; default: the host bundle if present).
# Prints the tags it made, one per line, on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "build.sh: error: $*" >&2; exit 2; }
image="${IMAGE:-localhost/tessera}" flavor="${FLAVOR:-cuda}" base="${BASE_IMAGE:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --flavor) flavor="${2:?}"; shift 2 ;;
    --base) base="${2:?}"; shift 2 ;;
    --image) image="${2:?}"; shift 2 ;;
    --) shift; break ;;
    *) die "unknown argument '$1' (see the header of docker/build.sh)" ;;
  esac
done
case "$flavor" in cpu | cuda) ;; *) die "--flavor must be cpu or cuda, got '$flavor'" ;; esac

version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)"
sha="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD 2>/dev/null || sha="${sha}-dirty"
suffix=""; [ "$flavor" = cpu ] && suffix="-cpu"
tags=("$image:$version$suffix" "$image:$version-$sha$suffix")

# The CPU torch wheel, when the host has one, is hard-linked (or copied) into the build's wheel dir.
if [ "$flavor" = cpu ]; then
  wheel="${TORCH_WHEEL:-}"
  if [ -z "$wheel" ]; then
    for dir in /opt/wheels "$HOME/.cache/tessera/wheels" /work/shared; do
      for w in "$dir"/torch-2.13.0+cpu-*.whl; do [ -f "$w" ] && wheel="$w" && break 2; done
    done
  fi
  if [ -n "$wheel" ]; then
    [ -f "$wheel" ] || die "TORCH_WHEEL '$wheel' does not exist"
    ln -f "$wheel" docker/wheels/ 2>/dev/null || cp -f "$wheel" docker/wheels/
  fi
fi

args=(--build-arg "FLAVOR=$flavor" --build-arg "VERSION=$version" --build-arg "GIT_SHA=$sha")
[ -n "$base" ] && args+=(--build-arg "BASE_IMAGE=$base")
ca="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
[ -f "$ca" ] && args+=(--secret "id=cacert,src=$ca")
for t in "${tags[@]}"; do args+=(-t "$t"); done

if command -v buildah >/dev/null; then
  # --format docker keeps HEALTHCHECK (OCI drops it); chroot isolation runs RUN steps without a daemon.
  buildah bud --isolation chroot --format docker --layers="${BUILD_LAYERS:-true}" "${args[@]}" "$@" . >&2
elif command -v docker >/dev/null; then
  DOCKER_BUILDKIT=1 docker build "${args[@]}" "$@" . >&2
else
  die "neither buildah nor docker found (apt-get install -y buildah)"
fi
printf '%s\n' "${tags[@]}"
