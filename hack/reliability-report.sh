#!/usr/bin/env bash
# Runs the crash matrix (tests/crash.rs) and the fault scenarios (tests/faults.rs) on a
# throwaway control plane and writes what they measured to docs/reliability.md:
#   hack/reliability-report.sh [OUTPUT]
#   hack/reliability-report.sh --render ROWS [OUTPUT]   # render saved rows, run nothing
# The tests append one JSON row per run to the file named by ISHOSTING_RELIABILITY_REPORT;
# this script renders those rows as markdown tables with jq. It fails, and leaves the
# document as it was, when a test fails or the control plane cannot start.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
command -v jq >/dev/null 2>&1 || { echo "reliability-report: jq is missing; run hack/install-tools.sh" >&2; exit 1; }

rendered=$(mktemp)
if [[ "${1:-}" == "--render" ]]; then
  rows=${2:?"reliability-report: --render needs the file of JSON rows"}
  output=${3:-"$repo/docs/reliability.md"}
  trap 'rm -f "$rendered"' EXIT
else
  output=${1:-"$repo/docs/reliability.md"}
  rows=$(mktemp)
  trap 'rm -f "$rows" "$rendered"' EXIT
  # CI=true makes the end-to-end tests fail instead of skipping without a control plane.
  (
    cd "$repo"
    ISHOSTING_RELIABILITY_REPORT="$rows" CI=true \
      hack/with-controlplane.sh cargo test --locked --test crash --test faults
  )
fi

started=$(date -u +%Y-%m-%d)
commit=$(git -C "$repo" rev-parse --short HEAD)

jq -r -s --arg date "$started" --arg commit "$commit" '
  def join_values: map(tostring) | join(" / ");
  def span: (min | tostring) + (if max != min then "–" + (max | tostring) else "" end);
  def crash: map(select(.table == "crash"));
  def faults: map(select(.table == "faults"));
  def load($id): map(select(.table == "load" and .id == $id)) | first;
  def backoff: map(select(.table == "backoff")) | first;
  . as $all
  | "# Reliability: crashes, faults and request budgets",
    "",
    "Measured on \($date) at commit `\($commit)` by `hack/reliability-report.sh`, which runs",
    "`tests/crash.rs` and `tests/faults.rs` against the provider simulator and a local",
    "control plane and renders this file from the rows they record. Reproduce with:",
    "",
    "```sh",
    "hack/reliability-report.sh   # needs what `make test` needs, plus jq",
    "```",
    "",
    "The operator runs with the test timings of the end-to-end harness (request timeout 3 s,",
    "order settle window 5 s, poll 1 s). It keeps the default request budgets of 100 requests",
    "per 10 s and 250 per 60 s per API key. \"Orders\" and \"payments\" are the simulator'"'"'s counts",
    "of orders placed and successful payments; \"requests\" is every provider API request the",
    "simulator received for the run, failed ones included.",
    "",
    "## Crash matrix",
    "",
    "The operator process is killed with SIGKILL at each boundary of the money flow and",
    "started again. Points inside the operator are reached through its test-only pause hook",
    "(`ISHOSTING_TEST_PAUSE_AT`). For points where a request is in flight, the simulator",
    "commits the call and delays its response, and the operator is killed once the simulator",
    "shows the commit. Each run uses a fresh resource.",
    "",
    "| kill point | runs | status at the kill | provider at the kill (orders / payments) | orders | payments | unpaid invoices | final phase | requests used |",
    "|---|---|---|---|---|---|---|---|---|",
    ( $all | crash | group_by(.id) | sort_by(.[0].id | split("-")[0] | tonumber)[] | sort_by(.run)
      | "| \(.[0].scenario) | \(length) | \(.[0].status_at_kill) | \(.[0].provider_at_kill.orders) / \(.[0].provider_at_kill.payments) | \(map(.tally.orders) | join_values) | \(map(.tally.payments) | join_values) | \(map(.tally.unpaid_invoices) | add) | \(map(.final_phase) | unique | join(", ")) | \(map(.tally.requests) | span) |" ),
    "",
    "## Fault scenarios",
    "",
    "The simulator'"'"'s fault switches disturb the provider API from the start of the run (the",
    "5xx burst is switched off after 12 such responses). The operator'"'"'s backoff cap is 4 s",
    "here so that unlucky passes do not wait minutes. \"Bound\" is the test'"'"'s limit on the",
    "requests used; a run without faults uses about 9.",
    "",
    "| scenario | runs | orders | payments | unpaid invoices | final phase | requests used | bound | requests not served |",
    "|---|---|---|---|---|---|---|---|---|",
    ( $all | faults | sort_by(.id | split("-")[0] | tonumber)[]
      | "| \(.scenario) | \(.run) | \(.tally.orders) | \(.tally.payments) | \(.tally.unpaid_invoices) | \(.final_phase) | \(.tally.requests) | \(.max_requests) | \(.failed_requests) |" ),
    "",
    "## Backoff of a failing resource",
    "",
    ( $all | backoff
      | "With every provider call answered 5xx, the operator'"'"'s waits between passes were \(.waits | map(tostring + " s") | join(", ")) (`retry_in_seconds` in its log, jitter truncated). They double from `--poll-seconds` up to `--max-backoff-seconds` (default 300 s, so a resource that keeps failing is retried every 5 minutes). The first two passes retry each read 3 times; later passes send one request each: the five passes used \(.requests) requests, and the last gap between requests at the simulator was \(.last_gap_ms / 1000) s." ),
    "",
    "## Load",
    "",
    ( $all | load("100-failing")
      | "**100 failing resources.** Every call answered with the challenge page, the operator'"'"'s timing sped up 25 times (backoff cap 300 / 25 = 12 s, budgets 25 times larger). In a steady-state window of \(.window_s) s the simulator received \(.measured_requests) requests: \(.per_resource_per_cap * 100 | round / 100) per resource per backoff cap, which is \(.per_minute_in_production_time * 10 | round / 10) requests a minute in production time, \(.budget_share * 1000 | round / 10)% of the 250-a-minute budget (limit 10%)." ),
    "",
    ( $all | load("200-burst")
      | "**200 resources applied at once.** No faults, default budgets, 30 s observed: at most \(.tally.max_per_10s) requests in any 10 s (budget 100) and \(.tally.max_per_60s) in any 60 s (budget 250). The provider'"'"'s rate limits rejected \(.tally.rate_limit_refusals). Meanwhile \(.orders) servers were ordered and paid once each and \(.running) were running." ),
    "",
    "## Rate-limit windows",
    "",
    "The simulator records, per API key, the maximum requests that arrived in any 10 s and",
    "any 60 s window. Over every crash run and fault scenario above (each its own key) and",
    "the 200-resource burst:",
    "",
    "| runs | max in 10 s | budget per 10 s | max in 60 s | budget per 60 s | provider rate-limit rejections |",
    "|---|---|---|---|---|---|",
    ( [ ($all | crash[]), ($all | faults[]), ($all | load("200-burst")) ] as $runs
      | "| \($runs | length) | \($runs | map(.tally.max_per_10s) | max) | 100 | \($runs | map(.tally.max_per_60s) | max) | 250 | \($runs | map(.tally.rate_limit_refusals) | add) |" ),
    "",
    "The 100-failing-resources run is left out of this table: its budgets were scaled up 25",
    "times with its timing.",
    "",
    "## Not covered",
    "",
    "The 10% figure is measured for temporary errors, which back off to",
    "`--max-backoff-seconds`. A resource stalled until a person acts (rejected key,",
    "insufficient balance, missing Secret) waits `--recheck-seconds` (120 s) first, then",
    "twice as long each time up to 8 times that (16 min), with one or two requests a pass.",
    "By that arithmetic, 100 such resources on one key settle at about 12 requests a",
    "minute, 5% of the budget; that case is not measured here."
' "$rows" >"$rendered"

mkdir -p "$(dirname "$output")"
cp "$rendered" "$output"
echo "reliability-report: wrote $output ($(jq -s length "$rows") rows)"
