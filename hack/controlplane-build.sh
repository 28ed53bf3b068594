#!/usr/bin/env bash
# Builds kube-apiserver, etcd and kubectl from tests/controlplane/go.mod into a cache
# directory and prints that directory. A second run with the same go.mod reuses the binaries.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
module="$repo/tests/controlplane"
k8s_version=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$module/go.mod")
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2 }' "$module/go.mod")
key=$(cat "$module/go.mod" "$module/go.sum" "$0" | sha256sum | cut -c1-12)
out="${ISHOSTING_CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ishosting-operator/controlplane}/$k8s_version-$key"

if [[ -x "$out/kube-apiserver" && -x "$out/etcd" && -x "$out/kubectl" ]]; then
  echo "$out"
  exit 0
fi

mkdir -p "$out.partial"
major_minor=${k8s_version#v}
major=${major_minor%%.*}
minor=${major_minor#*.}
minor=${minor%%.*}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
# An unstamped apiserver reports v0.0.0, which breaks version-gated features and
# `kubectl version`; the same variables are set by the Kubernetes release build.
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

cd "$module"
echo "building kube-apiserver and kubectl $k8s_version, etcd $etcd_version (first run takes several minutes)" >&2
go build -trimpath -ldflags "-s -w $ldflags" -o "$out.partial/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
go build -trimpath -ldflags "-s -w $ldflags" -o "$out.partial/kubectl" k8s.io/kubernetes/cmd/kubectl
go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=release-$etcd_version" \
  -o "$out.partial/etcd" ./etcd
rm -rf "$out"
mv "$out.partial" "$out"
echo "$out"
