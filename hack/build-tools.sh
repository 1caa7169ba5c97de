#!/usr/bin/env bash
# Builds the real Kubernetes control-plane components, etcd, kwok and helm, plus crane (an OCI registry for the
# chart tests) and actionlint (lints .github/workflows), from the Go module proxy, at pinned versions, into a cache
# outside the repository:
#   ${TEI_OPERATOR_CACHE:-~/.cache/tei-operator}/bin/<component>-<version>   (helm: <version>-<HELM_BUILD>)
# Each is stamped with the ldflags its own release build uses, so `--version` prints what a release prints.
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

# wrapper NAME VERSION PACKAGE: a throwaway module in $WORK/NAME-VERSION that requires PACKAGE@VERSION; prints its dir.
wrapper() {
  local name=$1 v=$2 pkg=$3 dir="$WORK/$1-$2"
  rm -rf "$dir"; mkdir -p "$dir/out"
  printf 'module tei-operator.local/tools/%s\ngo 1.26.0\n' "$name" > "$dir/go.mod"
  log "$name $v: resolving ${pkg}@$v" >&2
  go_get "$dir" "$pkg@$v" || return 1
  echo "$dir"
}

# build_in DIR NAME PACKAGE LDFLAGS CACHED_NAME: go build, then move the binary into the cache under its final name.
build_in() {
  local dir=$1 name=$2 pkg=$3 ld=$4 cached=$5
  log "$name: building $cached"
  (cd "$dir" && go build -ldflags "-s -w $ld" -o "out/$name" "$pkg")
  mv -f "$dir/out/$name" "$BIN/$cached"
  log "$name: built $cached"
}

build_plain() { # build_plain NAME PACKAGE VERSION LDFLAGS
  local name=$1 pkg=$2 v=$3 ld=$4 dir
  have "$v" "$name" && { log "$name $v: cached"; return 0; }
  dir=$(wrapper "$name" "$v" "$pkg") || return 1
  build_in "$dir" "$name" "$pkg" "$ld" "$name-$v"
}

build_kwok() {
  build_plain kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION" \
    "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
}

# helm with the ldflags of helm's own Makefile: version, metadata (empty for a tag), git commit and tree state, and
# the default Kubernetes version of `helm template`/`helm lint` (v1.N.0 for the k8s.io/client-go v0.N it builds
# against), without which helm assumes v1.20.0 and refuses any chart with a newer kubeVersion. The commit comes from
# HELM_GIT_COMMIT: the Go module proxy serves no VCS origin for helm.sh/helm/v3 (see hack/versions.env).
# The cached name carries HELM_BUILD, so a binary built with other flags is never taken for this one.
build_helm() {
  local v=$HELM_VERSION cached="helm-$HELM_VERSION-$HELM_BUILD" dir client_go major minor
  [ -x "$BIN/$cached" ] && { log "helm $v ($HELM_BUILD): cached"; return 0; }
  dir=$(wrapper helm "$v" helm.sh/helm/v3/cmd/helm) || return 1
  client_go=$(cd "$dir" && go list -m -f '{{.Version}}' k8s.io/client-go)   # v0.N.M, as the Makefile reads it
  [[ $client_go =~ ^v0\.([0-9]+)\.[0-9]+ ]] \
    || { echo "build-tools: cannot read k8s.io/client-go's version for helm $v (got '$client_go')" >&2; return 1; }
  major=1 minor=${BASH_REMATCH[1]}
  log "helm $v: k8s.io/client-go $client_go -> default Kubernetes version v$major.$minor.0"
  local ld="-X helm.sh/helm/v3/internal/version.version=$v -X helm.sh/helm/v3/internal/version.metadata="
  ld+=" -X helm.sh/helm/v3/internal/version.gitCommit=$HELM_GIT_COMMIT"
  ld+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  local p
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ld+=" -X $p.k8sVersionMajor=$major -X $p.k8sVersionMinor=$minor"
  done
  build_in "$dir" helm helm.sh/helm/v3/cmd/helm "$ld" "$cached"
}

# crane (go-containerregistry): `crane registry serve` is the OCI registry the chart's push/install test uses.
build_crane() {
  build_plain crane github.com/google/go-containerregistry/cmd/crane "$CRANE_VERSION" \
    "-X github.com/google/go-containerregistry/cmd/crane/cmd.Version=$CRANE_VERSION"
}

# actionlint: lints the release workflow, which cannot run here.
build_actionlint() {
  build_plain actionlint github.com/rhysd/actionlint/cmd/actionlint "$ACTIONLINT_VERSION" \
    "-X github.com/rhysd/actionlint.version=$ACTIONLINT_VERSION"
}

components=("$@")
ALL=(etcd kwok helm kubernetes crane actionlint)
[ ${#components[@]} -gt 0 ] || components=("${ALL[@]}")
for c in "${components[@]}"; do
  case " ${ALL[*]} " in
    *" $c "*) with_lock "$c" "build_$c" ;;
    *) echo "build-tools: unknown component '$c' (allowed: ${ALL[*]})" >&2; exit 2 ;;
  esac
done
log "done; binaries in $BIN"
