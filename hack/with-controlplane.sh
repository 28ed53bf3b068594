#!/usr/bin/env bash
# Runs a command with a local control plane for the end-to-end tests:
#   hack/with-controlplane.sh COMMAND [ARGS...]
# It starts etcd and kube-apiserver on loopback (hack/controlplane.sh) and installs the CRD
# and the operator's RBAC from deploy/. It writes a kubeconfig for the operator's
# ServiceAccount and exports ISHOSTING_E2E_KUBECONFIG (admin) and
# ISHOSTING_E2E_OPERATOR_KUBECONFIG (ServiceAccount). Then it runs the command and stops the
# control plane whatever the outcome. When the control plane cannot start, the command
# still runs without those variables, so the end-to-end tests skip locally and fail under
# CI=true.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dir="$repo/target/e2e-controlplane"

stop() { "$repo/hack/controlplane.sh" stop "$dir" >/dev/null 2>&1 || true; }
trap stop EXIT

start_controlplane() {
  local env_lines
  env_lines=$("$repo/hack/controlplane.sh" start "$dir") || return 1
  eval "$env_lines"
  kubectl apply --server-side -k "$repo/deploy" >/dev/null || return 1
  kubectl wait --for condition=Established crd/ishostingvpses.ishosting.com --timeout=60s >/dev/null || return 1
  "$repo/hack/controlplane.sh" sa-kubeconfig "$dir" ishosting-system ishosting-operator \
    "$dir/operator.kubeconfig" || return 1
  export ISHOSTING_E2E_KUBECONFIG="$KUBECONFIG"
  export ISHOSTING_E2E_OPERATOR_KUBECONFIG="$dir/operator.kubeconfig"
  # The tests must never reach a cluster from the caller's environment.
  unset KUBECONFIG
}

if ! start_controlplane; then
  echo "with-controlplane: the control plane did not start; end-to-end tests will skip (or fail under CI=true)" >&2
fi
"$@"
