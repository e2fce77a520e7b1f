#!/usr/bin/env bash
# Moves a built image to users: push to a registry (prints the digest), sign by digest, verify under a
# policy, and save/load an archive for air-gapped hosts. Uses skopeo (daemonless); docker for save/load
# when skopeo is missing.
#   publish.sh push  IMAGE REGISTRY/REPO:TAG   push; prints REGISTRY/REPO@sha256:... (the digest to deploy)
#   publish.sh sign  REGISTRY/REPO@DIGEST      sign by digest: GPG simple signing (SIGN_BY=fingerprint,
#                                              lookaside from registries.d), or cosign (COSIGN_KEY=...)
#   publish.sh verify REGISTRY/REPO@DIGEST [POLICY]   exit 0 iff the policy (default docker/policy.json) accepts it
#   publish.sh save  IMAGE|REGISTRY/REPO@DIGEST FILE.tar [NAME:TAG]   docker-archive for an air gap
#   publish.sh load  FILE.tar [DEST]            into local storage (default) or a registry (docker://...)
# Env: REGISTRY_USER / REGISTRY_PASSWORD (else existing `login` credentials), TLS_VERIFY=false for a
#      plain-HTTP registry, REGISTRIES_D (signature lookaside config dir, default docker/registries.d).
set -euo pipefail

die() { echo "publish.sh: error: $*" >&2; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"
tls=(); [ "${TLS_VERIFY:-true}" = false ] && tls=(--src-tls-verify=false --dest-tls-verify=false)
creds() {  # $1: src|dest
  if [ -n "${REGISTRY_USER:-}" ]; then echo "--$1-creds=$REGISTRY_USER:${REGISTRY_PASSWORD:-}"; fi
}
local_ref() {  # a bare image name means the local container storage
  case "$1" in *://* | docker-archive:* | containers-storage:*) echo "$1" ;; *) echo "containers-storage:$1" ;; esac
}
need() { command -v "$1" >/dev/null || die "$1 not found (apt-get install -y $1)"; }

cmd="${1:-}"; shift || true
case "$cmd" in
  push)
    [ $# -eq 2 ] || die "usage: publish.sh push IMAGE REGISTRY/REPO:TAG"
    need skopeo
    digestfile="$(mktemp)"; trap 'rm -f "$digestfile"' EXIT
    # shellcheck disable=SC2046  # creds expands to zero or one word
    skopeo copy -q "${tls[@]}" $(creds dest) --digestfile "$digestfile" "$(local_ref "$1")" "docker://$2" >&2 \
      || die "push to $2 failed (credentials? REGISTRY_USER/REGISTRY_PASSWORD)"
    echo "${2%:*}@$(cat "$digestfile")"
    ;;
  sign)
    [ $# -eq 1 ] && [[ "$1" == *@sha256:* ]] || die "usage: publish.sh sign REGISTRY/REPO@sha256:... (sign by digest)"
    if [ -n "${COSIGN_KEY:-}" ]; then
      need cosign; cosign sign --yes --key "$COSIGN_KEY" "$1"
    else
      [ -n "${SIGN_BY:-}" ] || die "set SIGN_BY to a GPG key fingerprint (or COSIGN_KEY to use cosign)"
      need skopeo
      # Copying the digest onto itself re-uploads nothing; skopeo writes the signature of that exact
      # manifest to the registries.d lookaside staging directory.
      # shellcheck disable=SC2046
      skopeo --registries.d "${REGISTRIES_D:-$here/registries.d}" copy -q "${tls[@]}" $(creds src) $(creds dest) \
        --sign-by "$SIGN_BY" "docker://$1" "docker://$1" >&2
    fi
    ;;
  verify)
    [ $# -ge 1 ] || die "usage: publish.sh verify REGISTRY/REPO@DIGEST [POLICY]"
    need skopeo
    tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
    # Policy checks run when an image is pulled; pulling the manifest and config only is enough.
    # shellcheck disable=SC2046
    if skopeo --policy "${2:-$here/policy.json}" --registries.d "${REGISTRIES_D:-$here/registries.d}" \
        copy -q "${tls[@]}" $(creds src) "docker://$1" "dir:$tmp" 2>"$tmp/err"; then
      echo "verified: $1"
    else
      echo "rejected: $1: $(tail -n 1 "$tmp/err")" >&2; exit 1
    fi
    ;;
  save)
    [ $# -ge 2 ] || die "usage: publish.sh save IMAGE FILE.tar [NAME:TAG]"
    if command -v skopeo >/dev/null; then
      # shellcheck disable=SC2046
      skopeo copy -q "${tls[@]}" $(creds src) "$(local_ref "$1")" "docker-archive:$2${3:+:$3}" >&2
    else
      need docker; docker save -o "$2" "$1"
    fi
    echo "$2"
    ;;
  load)
    [ $# -ge 1 ] || die "usage: publish.sh load FILE.tar [DEST]"
    [ -r "$1" ] || die "cannot read $1"
    if command -v skopeo >/dev/null && [ -n "${2:-}" ]; then
      # shellcheck disable=SC2046
      skopeo copy -q "${tls[@]}" $(creds dest) "docker-archive:$1" "$(local_ref "$2")" >&2
    elif command -v podman >/dev/null; then podman load -q -i "$1"
    else need docker; docker load -i "$1"
    fi
    ;;
  *) die "usage: publish.sh push|sign|verify|save|load ... (see the header of docker/publish.sh)" ;;
esac
