#!/usr/bin/env bash
# The operator end to end on this machine: builds it, starts a local control plane and the
# is*hosting simulator, installs the CRD, applies examples/, runs the operator and shows the
# example VPS once it is Running. Ctrl-C stops everything the demo started.
# DEMO_EXIT_WHEN_RUNNING=1 ends the demo once the VPS runs, for scripted runs.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dir="$repo/target/demo"
cd "$repo"
mkdir -p "$dir"

pids=()
cleanup() {
  echo "demo: stopping"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  hack/controlplane.sh stop "$dir/controlplane" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

echo "demo: building the operator"
cargo build --locked --quiet
operator="${CARGO_TARGET_DIR:-$repo/target}/debug/ishosting-operator"

echo "demo: starting the control plane (the first run builds it, which takes several minutes)"
eval "$(hack/controlplane.sh start "$dir/controlplane")"

sim_port=$(free_port)
metrics_port=$(free_port)
echo "demo: starting the is*hosting simulator on 127.0.0.1:$sim_port (account demo-key with 500 USD)"
"$operator" simulate --listen "127.0.0.1:$sim_port" --account demo-key=500 --speed 60 \
  --provision-seconds 3 >"$dir/simulator.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  curl -fs "http://127.0.0.1:$sim_port/_admin/stats" >/dev/null && break
  sleep 0.2
done

echo "demo: installing the CRD and applying examples/"
kubectl apply --server-side -f crds/ishostingvps.yaml >/dev/null
kubectl wait --for condition=Established crd/ishostingvpses.ishosting.com --timeout=60s >/dev/null
kubectl apply -f examples/

echo "demo: running the operator (log: $dir/operator.log)"
"$operator" run --api-url "http://127.0.0.1:$sim_port" --metrics-listen "127.0.0.1:$metrics_port" \
  --order-settle-seconds 40 --lease-namespace default >"$dir/operator.log" 2>&1 &
pids+=($!)

echo "demo: waiting for web-1 to reach Running"
if ! kubectl wait isvps/web-1 --for=jsonpath='{.status.phase}'=Running --timeout=180s >/dev/null; then
  echo "demo: web-1 did not reach Running; its status and the operator's log follow" >&2
  kubectl get isvps web-1 -o yaml >&2 || true
  tail -n 40 "$dir/operator.log" >&2
  exit 1
fi

kubectl get isvps -o wide
echo
kubectl get isvps web-1 -o jsonpath='{.status}' | python3 -m json.tool
echo
kubectl get events --field-selector involvedObject.name=web-1 --sort-by=.lastTimestamp 2>/dev/null | tail -n 8 || true

if [[ "${DEMO_EXIT_WHEN_RUNNING:-0}" == 1 ]]; then
  exit 0
fi
echo
echo "demo: the operator keeps running. To use kubectl against the demo, run in another shell:"
cat "$dir/controlplane/env.sh"
echo "demo: Ctrl-C stops everything."
wait
