#!/usr/bin/env bash
# Builds the real Kubernetes control-plane components, etcd, kwok and helm from the Go module proxy,
# at pinned versions, into a cache outside the repository:
#   ${TEI_OPERATOR_CACHE:-~/.cache/tei-operator}/bin/<component>-<version>
# Idempotent (a warm cache returns in about a second), safe to run twice at once (one flock per
# component), and it names the module and version when the proxy refuses one.
#
# Usage: hack/build-tools.sh [component ...]   (default: all)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"

CACHE="${TEI_OPERATOR_CACHE:-$HOME/.cache/tei-operator}"
BIN="$CACHE/bin"
WORK="$CACHE/build"
mkdir -p "$BIN" "$WORK"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath" GO111MODULE=on
command -v go >/dev/null || { echo "build-tools: the go command is not on PATH (Go 1.26 or newer is needed)" >&2; exit 1; }

START=$(date +%s)
log() { printf '[build-tools +%4ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }

# go_get MODULE_DIR MODULE@VERSION: resolve a module inside a wrapper, with a clear message on refusal.
go_get() {
  local dir=$1 out; shift
  local target="$*"
  if ! out=$(cd "$dir" && go get "$@" 2>&1); then
    echo "$out" | tail -n 20 >&2
    echo "build-tools: the Go module proxy refused or failed to resolve $target (see the lines above); try another served release by changing hack/versions.env" >&2
    return 1
  fi
}

# with_lock NAME CMD...: one builder per component; a second run waits, then finds the cache.
with_lock() {
  local name=$1; shift
  exec {fd}>"$WORK/$name.lock"
  if ! flock -n "$fd"; then
    log "$name: another build is running; waiting for it"
    flock "$fd"
  fi
  "$@"
  local rc=$?
  exec {fd}>&-
  return $rc
}

have() { # have NAME VERSION...: all binaries present
  local v=$1; shift
  for n in "$@"; do [ -x "$BIN/$n-$v" ] || return 1; done
}

build_kubernetes() {
  local v=$KUBERNETES_VERSION minor
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  have "$v" "${cmds[@]}" && { log "kubernetes $v: cached"; return 0; }
  minor=${v#v1.}; minor=${minor%%.*}
  local staging_v="v0.${v#v1.}"
  local dir="$WORK/kubernetes-$v"
  rm -rf "$dir"; mkdir -p "$dir"
  # k8s.io/kubernetes replaces each staging module by ./staging/src/k8s.io/<name>; read that list from its own
  # go.mod at this tag and point each one at its published v0.N.M twin instead.
  log "kubernetes $v: reading the staging modules from k8s.io/kubernetes@$v's go.mod"
  printf 'module tei-operator.local/tools/kubernetes\ngo 1.26.0\n' > "$dir/go.mod"
  local gomod staging
  if ! gomod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p') \
      || [ -z "$gomod" ] || [ ! -f "$gomod" ]; then
    echo "build-tools: the Go module proxy refused or failed to serve k8s.io/kubernetes@$v's go.mod; try another served release by changing hack/versions.env" >&2
    return 1
  fi
  staging=$(sed -n 's#^[[:space:]]*\(replace[[:space:]]\{1,\}\)\{0,1\}k8s.io/\([a-z0-9-]*\) => ./staging/src/k8s.io/\2[[:space:]]*$#\2#p' "$gomod")
  [ -n "$staging" ] || { echo "build-tools: found no staging replace lines in $gomod" >&2; return 1; }
  log "kubernetes $v: wrapper module maps $(echo "$staging" | wc -l) staging modules -> $staging_v"
  for m in $staging; do echo "replace k8s.io/$m => k8s.io/$m $staging_v" >> "$dir/go.mod"; done
  log "kubernetes $v: resolving k8s.io/kubernetes@$v and its dependencies"
  local c targets=()
  for c in "${cmds[@]}"; do targets+=("k8s.io/kubernetes/cmd/$c@$v"); done
  go_get "$dir" "${targets[@]}"
  local ld
  ld="-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1"
  ld+=" -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  ld+=" -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
  ld+=" -X k8s.io/client-go/pkg/version.gitVersion=$v -X k8s.io/client-go/pkg/version.gitMajor=1"
  ld+=" -X k8s.io/client-go/pkg/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitTreeState=clean"
  mkdir -p "$dir/out"
  local note=" (the first one also compiles the shared packages: minutes)"
  for c in "${cmds[@]}"; do
    [ -x "$BIN/$c-$v" ] && { log "kubernetes $v: $c cached"; continue; }
    log "kubernetes $v: building $c$note"
    note=""
    (cd "$dir" && go build -ldflags "$ld" -o "out/$c" "k8s.io/kubernetes/cmd/$c")
    mv -f "$dir/out/$c" "$BIN/$c-$v"
    log "kubernetes $v: built $c"
  done
}

build_etcd() {
  local v=$ETCD_VERSION
  have "$v" etcd && { log "etcd $v: cached"; return 0; }
  local dir="$WORK/etcd-$v"
  rm -rf "$dir"; mkdir -p "$dir"
  log "etcd $v: writing wrapper module"
  printf 'module tei-operator.local/tools/etcd\ngo 1.26.0\n' > "$dir/go.mod"
  go_get "$dir" "go.etcd.io/etcd/server/v3@$v"
  (cd "$dir" && go build -ldflags "-s -w" -o out/etcd go.etcd.io/etcd/server/v3)
  mv -f "$dir/out/etcd" "$BIN/etcd-$v"
  log "etcd $v: built"
}

build_plain() { # build_plain NAME MODULE PACKAGE VERSION LDFLAGS
  local name=$1 module=$2 pkg=$3 v=$4 ld=$5
  have "$v" "$name" && { log "$name $v: cached"; return 0; }
  local dir="$WORK/$name-$v"
  rm -rf "$dir"; mkdir -p "$dir"
  printf 'module tei-operator.local/tools/%s\ngo 1.26.0\n' "$name" > "$dir/go.mod"
  log "$name $v: resolving $module@$v"
  go_get "$dir" "$pkg@$v"
  log "$name $v: building"
  (cd "$dir" && go build -ldflags "-s -w $ld" -o "out/$name" "$pkg")
  mv -f "$dir/out/$name" "$BIN/$name-$v"
  log "$name $v: built"
}

build_kwok() {
  build_plain kwok sigs.k8s.io/kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION" \
    "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
}

build_helm() {
  build_plain helm helm.sh/helm/v3 helm.sh/helm/v3/cmd/helm "$HELM_VERSION" \
    "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
}

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(etcd kwok helm kubernetes)
for c in "${components[@]}"; do
  case "$c" in
    kubernetes|etcd|kwok|helm) with_lock "$c" "build_$c" ;;
    *) echo "build-tools: unknown component '$c' (allowed: kubernetes etcd kwok helm)" >&2; exit 2 ;;
  esac
done
log "done; binaries in $BIN"
