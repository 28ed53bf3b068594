#!/usr/bin/env bash
# Installs what the build, the tests and the demo need on a Debian machine that has Go and a
# Rust toolchain: a few apt packages, the rustfmt and clippy components, helm, and the
# control-plane binaries (kube-apiserver, etcd, kubectl). Safe to run again: every step checks
# first and does nothing when its tool is there.
#
# helm goes to `go env GOBIN`, or `$(go env GOPATH)/bin` when GOBIN is unset; put that
# directory on PATH (.ci/run does).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
helm_module=helm.sh/helm/v4
helm_version=v4.3.2

say() { echo "install-tools: $*"; }
die() {
  echo "install-tools: error: $*" >&2
  exit 1
}

# Go and Rust live outside the default PATH on these machines.
for dir in /usr/local/go/bin "$HOME/.cargo/bin"; do
  [[ -d "$dir" && ":$PATH:" != *":$dir:"* ]] && PATH="$dir:$PATH"
done
export PATH

# --- apt packages -------------------------------------------------------------------------
# Command name -> Debian package.
declare -A apt_for=(
  [openssl]=openssl
  [curl]=curl
  [make]=make
  [jq]=jq
  [git]=git
)
missing=()
for command_name in "${!apt_for[@]}"; do
  command -v "$command_name" >/dev/null 2>&1 || missing+=("${apt_for[$command_name]}")
done
[[ -f /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
# cc links Rust binaries and the cgo parts of the control-plane build.
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
if ((${#missing[@]} > 0)); then
  command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]}, and apt-get is not available to install them"
  sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null 2>&1 || die "missing packages ${missing[*]}: run as root (or install sudo) to install them"
    sudo=(sudo)
  fi
  say "installing apt packages: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  say "apt packages: all present"
fi

# --- Go -------------------------------------------------------------------------------------
command -v go >/dev/null 2>&1 ||
  die "go is not installed (expected in /usr/local/go/bin); install Go 1.26 or newer and run again"
say "go: $(go version)"

# --- Rust components ------------------------------------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo is not installed (expected in ~/.cargo/bin)"
components=()
cargo fmt --version >/dev/null 2>&1 || components+=(rustfmt)
cargo clippy --version >/dev/null 2>&1 || components+=(clippy)
if ((${#components[@]} > 0)); then
  command -v rustup >/dev/null 2>&1 || die "missing rust components ${components[*]}, and rustup is not available to add them"
  say "adding rustup components: ${components[*]}"
  rustup component add "${components[@]}"
fi
say "rust: $(rustc --version)"

# --- helm -----------------------------------------------------------------------------------
gobin=$(go env GOBIN)
[[ -n "$gobin" ]] || gobin="$(go env GOPATH)/bin"
# `go version -m` reads the module version that `go install` recorded in the binary; helm's
# own `version` prints only major.minor when built this way.
installed=""
if [[ -x "$gobin/helm" ]]; then
  installed=$(go version -m "$gobin/helm" | awk -v m="$helm_module" '$1 == "mod" && $2 == m { print $3 }')
fi
if [[ "$installed" != "$helm_version" ]]; then
  say "building helm $helm_version into $gobin (takes a few minutes the first time)"
  (cd / && go install "$helm_module/cmd/helm@$helm_version")
fi
say "helm: $helm_version in $gobin"

# --- control plane --------------------------------------------------------------------------
say "control plane binaries: checking (the first build takes several minutes)"
cp_bin=$("$repo/hack/controlplane-build.sh")
say "control plane binaries: $cp_bin"
say "done"
