#!/usr/bin/env bash
# Runs a throwaway Kubernetes control plane (etcd + kube-apiserver, no controllers, no nodes)
# on loopback for the end-to-end tests and the demo.
#
#   hack/controlplane.sh start DIR
#   hack/controlplane.sh stop DIR
#   hack/controlplane.sh status DIR
#   hack/controlplane.sh sa-kubeconfig DIR NAMESPACE SERVICEACCOUNT OUT
#
# Output contract of `start` (callers `eval` it or parse it): progress goes to stderr; stdout
# carries exactly two lines,
#   export KUBECONFIG=<DIR>/admin.kubeconfig
#   export PATH=<bin dir>:$PATH
# where the paths are absolute and printed with bash `printf %q` quoting (a plain path prints
# unchanged) and `$PATH` is literal. The same lines are written to DIR/env.sh.
# Exit status is 0 only once /readyz returns "ok" and the `default` namespace exists.
#
# Every process listens on 127.0.0.1 only, on ports picked at random among free ones, so
# several control planes can run side by side in different DIRs. A start after a stop reuses
# the certificates but begins with an empty etcd.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)

# Seconds to wait for /readyz, and for a process to exit after SIGTERM.
ready_timeout=${ISHOSTING_CONTROLPLANE_READY_TIMEOUT:-120}
stop_timeout=20
# Service cluster IPs are allocated from this range. Nothing routes to them here.
service_cidr=10.0.0.0/24

log() { echo "controlplane: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

usage() {
  cat >&2 <<'EOF'
usage: hack/controlplane.sh start DIR
       hack/controlplane.sh stop DIR
       hack/controlplane.sh status DIR
       hack/controlplane.sh sa-kubeconfig DIR NAMESPACE SERVICEACCOUNT OUT
EOF
  exit 2
}

abspath() {
  mkdir -p "$1"
  (cd "$1" && pwd)
}

# Prints the pid in DIR/NAME.pid if that process is alive and is the NAME binary started for
# this DIR (a recycled pid belonging to something else does not count).
live_pid() {
  local dir=$1 name=$2 pid cmdline
  [[ -f "$dir/$name.pid" ]] || return 1
  pid=$(<"$dir/$name.pid")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ "$cmdline" == *"/$name "* && "$cmdline" == *"$dir/"* ]] || return 1
  echo "$pid"
}

# Ports in use on any local address, from /proc (any state: a bound but idle socket counts).
used_ports() {
  local table
  for table in /proc/net/tcp /proc/net/tcp6; do
    [[ -r "$table" ]] || continue
    while read -r _ local_addr _; do
      [[ "$local_addr" == *:* ]] || continue
      echo $((16#${local_addr##*:}))
    done <"$table"
  done
}

# Picks COUNT distinct free ports from 20000 up to the kernel's ephemeral range, so that
# outgoing connections do not take them between the pick and the bind.
pick_ports() {
  local count=$1 used picked=" " port ephemeral_low=32768
  if [[ -r /proc/sys/net/ipv4/ip_local_port_range ]]; then
    read -r ephemeral_low _ </proc/sys/net/ipv4/ip_local_port_range
  fi
  ((ephemeral_low > 21000)) || ephemeral_low=32768
  used=" $(used_ports | sort -un | tr '\n' ' ') "
  while ((count > 0)); do
    port=$((20000 + SRANDOM % (ephemeral_low - 20000)))
    [[ "$used" == *" $port "* || "$picked" == *" $port "* ]] && continue
    picked+="$port "
    count=$((count - 1))
  done
  echo "$picked"
}

# Writes the CA, the apiserver serving cert, the admin client cert and the service-account
# signing key pair into DIR/pki, unless they are there from an earlier start.
make_pki() {
  local pki=$1/pki
  [[ -f "$pki/admin.crt" && -f "$pki/sa.pub" ]] && return 0
  log "generating certificates in $pki"
  mkdir -p "$pki"
  chmod 700 "$pki"
  (
    cd "$pki"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
      -keyout ca.key -out ca.crt -subj "/CN=ishosting-operator-test-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

    cat >apiserver.ext <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1
EOF
    openssl req -new -newkey rsa:2048 -nodes -sha256 -keyout apiserver.key -out apiserver.csr \
      -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -sha256 -days 3650 -in apiserver.csr -CA ca.crt -CAkey ca.key \
      -CAcreateserial -CAserial ca.srl -extfile apiserver.ext -out apiserver.crt 2>/dev/null

    cat >client.ext <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EOF
    # O=system:masters is bound to cluster-admin by the bootstrap RBAC policy.
    openssl req -new -newkey rsa:2048 -nodes -sha256 -keyout admin.key -out admin.csr \
      -subj "/O=system:masters/CN=admin" 2>/dev/null
    openssl x509 -req -sha256 -days 3650 -in admin.csr -CA ca.crt -CAkey ca.key \
      -CAserial ca.srl -extfile client.ext -out admin.crt 2>/dev/null

    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
    openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr
  ) || die "openssl failed to generate the certificates in $pki"
}

# Writes a kubeconfig for SERVER with the CA from DIR/pki and the given user stanza.
write_kubeconfig() {
  local out=$1 server=$2 ca_file=$3 namespace=$4 user_yaml=$5
  local tmp
  tmp=$(mktemp "$out.XXXXXX")
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 <"$ca_file")
users:
- name: user
  user:
$user_yaml
contexts:
- name: local
  context:
    cluster: local
    user: user
    namespace: $namespace
current-context: local
EOF
  chmod 600 "$tmp"
  mv "$tmp" "$out"
}

# Shows the last lines of a log so a failure can be diagnosed from CI output alone.
show_tail() {
  local file=$1
  [[ -f "$file" ]] || return 0
  log "last lines of $file:"
  tail -n 40 "$file" >&2 || true
}

api_url() { echo "https://127.0.0.1:$(<"$1/apiserver.port")"; }

# Returns 0 when /readyz, requested with the admin client cert, returns "ok".
readyz_ok() {
  local dir=$1 body
  body=$(curl -sS --max-time 5 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" \
    --key "$dir/pki/admin.key" "$(api_url "$dir")/readyz" 2>/dev/null) || return 1
  [[ "$body" == "ok" ]]
}

# Starts etcd, returning non-zero if it did not come up (for example, a port was taken).
start_etcd() {
  local dir=$1 bin=$2 client_port=$3 peer_port=$4 pid i
  mkdir -p "$dir/etcd-data"
  chmod 700 "$dir/etcd-data"
  # --unsafe-no-fsync: the data is thrown away after the run, so writes skip the fsync cost.
  "$bin/etcd" \
    --name=controlplane \
    --data-dir="$dir/etcd-data" \
    --listen-client-urls="http://127.0.0.1:$client_port" \
    --advertise-client-urls="http://127.0.0.1:$client_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="controlplane=http://127.0.0.1:$peer_port" \
    --initial-cluster-state=new \
    --unsafe-no-fsync \
    --log-level=warn \
    </dev/null >"$dir/etcd.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/etcd.pid"
  echo "$client_port" >"$dir/etcd.port"
  # kill -0 rather than live_pid: right after the fork the child may not have exec'd etcd yet.
  for ((i = 0; i < 30 * 5; i++)); do
    kill -0 "$pid" 2>/dev/null || return 1
    if curl -sf --max-time 2 "http://127.0.0.1:$client_port/health" 2>/dev/null | grep -q '"health":"true"'; then
      return 0
    fi
    sleep 0.2
  done
  return 1
}

start_apiserver() {
  local dir=$1 bin=$2 etcd_port=$3 port=$4
  echo "$port" >"$dir/apiserver.port"
  # No controller-manager runs here, so the ServiceAccount admission plugin (which waits for
  # the controller-made `default` service account before admitting pods) is disabled. The
  # endpoint reconciler is off because the API rejects the loopback advertise address in
  # the `kubernetes` Endpoints.
  "$bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$port" \
    --tls-cert-file="$dir/pki/apiserver.crt" \
    --tls-private-key-file="$dir/pki/apiserver.key" \
    --client-ca-file="$dir/pki/ca.crt" \
    --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$dir/pki/sa.pub" \
    --service-account-signing-key-file="$dir/pki/sa.key" \
    --service-cluster-ip-range="$service_cidr" \
    --disable-admission-plugins=ServiceAccount \
    --endpoint-reconciler-type=none \
    --profiling=false \
    </dev/null >"$dir/kube-apiserver.log" 2>&1 &
  echo $! >"$dir/kube-apiserver.pid"
}

print_env() {
  local dir=$1 bin=$2
  {
    printf 'export KUBECONFIG=%q\n' "$dir/admin.kubeconfig"
    # shellcheck disable=SC2016 # $PATH stays literal, for the caller's shell to expand.
    printf 'export PATH=%q:$PATH\n' "$bin"
  } | tee "$dir/env.sh.tmp"
  mv "$dir/env.sh.tmp" "$dir/env.sh"
}

# Waits for the default namespace, which the apiserver creates itself shortly after readyz.
wait_default_namespace() {
  local dir=$1 bin=$2 deadline=$3
  while ((SECONDS < deadline)); do
    if "$bin/kubectl" --kubeconfig "$dir/admin.kubeconfig" get namespace default \
      --request-timeout=5s >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.5
  done
  return 1
}

cmd_start() {
  local dir bin etcd_client etcd_peer api_port api_pid attempt deadline
  dir=$(abspath "$1")
  bin=$("$repo/hack/controlplane-build.sh") || die "building the control-plane binaries failed"

  if live_pid "$dir" kube-apiserver >/dev/null && live_pid "$dir" etcd >/dev/null && readyz_ok "$dir"; then
    log "a control plane is already running in $dir at $(api_url "$dir"); reusing it"
    print_env "$dir" "$bin"
    return 0
  fi
  # Leftovers from a crashed run would hold the data dir lock or a port.
  cmd_stop "$dir" >/dev/null 2>&1 || true

  make_pki "$dir"

  # A port can be taken between the pick and the bind (another control plane starting at the
  # same moment), so each start is retried with new ports.
  for attempt in 1 2 3; do
    read -r etcd_client etcd_peer api_port <<<"$(pick_ports 3)"
    log "starting etcd on 127.0.0.1:$etcd_client (peer $etcd_peer)"
    rm -rf "$dir/etcd-data"
    if start_etcd "$dir" "$bin" "$etcd_client" "$etcd_peer"; then
      break
    fi
    show_tail "$dir/etcd.log"
    stop_one "$dir" etcd
    ((attempt < 3)) || die "etcd failed to start 3 times; see $dir/etcd.log"
    log "retrying etcd with other ports"
  done

  for attempt in 1 2 3; do
    log "starting kube-apiserver on https://127.0.0.1:$api_port"
    start_apiserver "$dir" "$bin" "$etcd_client" "$api_port"
    api_pid=$(<"$dir/kube-apiserver.pid")
    write_kubeconfig "$dir/admin.kubeconfig" "$(api_url "$dir")" "$dir/pki/ca.crt" default \
      "    client-certificate-data: $(base64 -w0 <"$dir/pki/admin.crt")
    client-key-data: $(base64 -w0 <"$dir/pki/admin.key")"

    deadline=$((SECONDS + ready_timeout))
    while ((SECONDS < deadline)); do
      kill -0 "$api_pid" 2>/dev/null || break
      readyz_ok "$dir" && break
      sleep 0.5
    done
    if readyz_ok "$dir"; then
      break
    fi
    if ! kill -0 "$api_pid" 2>/dev/null && grep -q 'address already in use' "$dir/kube-apiserver.log" &&
      ((attempt < 3)); then
      log "port $api_port was taken; retrying kube-apiserver with another port"
      read -r api_port <<<"$(pick_ports 1)"
      continue
    fi
    show_tail "$dir/kube-apiserver.log"
    cmd_stop "$dir" >/dev/null 2>&1 || true
    die "kube-apiserver was not ready within ${ready_timeout}s; see $dir/kube-apiserver.log"
  done

  if ! wait_default_namespace "$dir" "$bin" "$deadline"; then
    show_tail "$dir/kube-apiserver.log"
    cmd_stop "$dir" >/dev/null 2>&1 || true
    die "the default namespace was not created within ${ready_timeout}s; see $dir/kube-apiserver.log"
  fi
  log "ready: $(api_url "$dir") (logs and pids in $dir)"
  print_env "$dir" "$bin"
}

# Sends TERM to one component, waits up to stop_timeout seconds, then KILLs it.
stop_one() {
  local dir=$1 name=$2 pid i
  if pid=$(live_pid "$dir" "$name"); then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < stop_timeout * 5; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not exit after ${stop_timeout}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
  fi
  rm -f "$dir/$name.pid"
}

cmd_stop() {
  local dir
  [[ -d "$1" ]] || {
    log "$1 does not exist; nothing to stop"
    return 0
  }
  dir=$(cd "$1" && pwd)
  # The apiserver goes first so that it does not spend its shutdown retrying a dead etcd.
  stop_one "$dir" kube-apiserver
  stop_one "$dir" etcd
  log "stopped (files left in $dir)"
}

cmd_status() {
  local dir api_pid etcd_pid
  [[ -d "$1" ]] || {
    echo "stopped: $1 does not exist"
    return 1
  }
  dir=$(cd "$1" && pwd)
  api_pid=$(live_pid "$dir" kube-apiserver) || api_pid=""
  etcd_pid=$(live_pid "$dir" etcd) || etcd_pid=""
  if [[ -n "$api_pid" && -n "$etcd_pid" ]] && readyz_ok "$dir"; then
    echo "running: $(api_url "$dir") (kube-apiserver pid $api_pid, etcd pid $etcd_pid)"
    return 0
  fi
  echo "stopped: kube-apiserver pid ${api_pid:-none}, etcd pid ${etcd_pid:-none}, readyz not ok"
  return 1
}

cmd_sa_kubeconfig() {
  local dir=$1 namespace=$2 sa=$3 out=$4 bin token
  [[ -f "$dir/admin.kubeconfig" ]] || die "no control plane found in $dir; run '$0 start $dir' first"
  dir=$(cd "$dir" && pwd)
  bin=$("$repo/hack/controlplane-build.sh") || die "building the control-plane binaries failed"
  # One year, so that no test run or demo outlives its token. The CA that trusts it is
  # thrown away with DIR.
  token=$("$bin/kubectl" --kubeconfig "$dir/admin.kubeconfig" -n "$namespace" \
    create token "$sa" --duration=8760h) || die "kubectl create token failed for $namespace/$sa"
  mkdir -p "$(dirname "$out")"
  write_kubeconfig "$out" "$(api_url "$dir")" "$dir/pki/ca.crt" "$namespace" "    token: $token"
  log "wrote $out for service account $namespace/$sa"
}

[[ $# -ge 1 ]] || usage
command=$1
shift
case "$command" in
start)
  [[ $# -eq 1 ]] || usage
  cmd_start "$1"
  ;;
stop)
  [[ $# -eq 1 ]] || usage
  cmd_stop "$1"
  ;;
status)
  [[ $# -eq 1 ]] || usage
  cmd_status "$1"
  ;;
sa-kubeconfig)
  [[ $# -eq 4 ]] || usage
  cmd_sa_kubeconfig "$@"
  ;;
*) usage ;;
esac
