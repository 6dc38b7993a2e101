#!/usr/bin/env bash
# The Envoy load benchmark (`make bench-envoy`; a benchmark, not a test).
#
# One Envoy binary, three ways to protect the same route (a direct_response, so no upstream
# cost blurs the comparison), measured in one run, alternating (b) and (c):
#   (a) no auth
#   (b) Envoy's own jwt_authn filter (local JWKS file, jwt_cache_size 100 = its default size)
#   (c) ext_authz over gRPC to portcullis (release build, the same JWKS as a jwks_file), and
#       c-floor: the same call for an anonymous route (no token work: the cost of the hop)
# for one repeated token and for N distinct tokens (default 10,000), RS256 and ES256.
#
# Fairness: Envoy (--concurrency 1) and portcullis share CPU 0 (taskset), the load generator
# (wrk, one thread) runs on CPU 1, so (c) has exactly the CPU budget of (b). Each run is a short
# warm-up and then DURATION seconds measured. Reported per run: requests/s, p50/p99/p99.9
# latency, CPU seconds per 1,000 requests for Envoy and portcullis separately (from
# /proc/PID/stat before and after), portcullis RSS; then the ratios (c)/(b) and (c)/(a), and
# p99 of (b) and (c) at half of (b)'s peak rate (paced load).
#
# Env: PORTCULLIS_ENVOY, PORTCULLIS_BIN (set by make), DURATION (10), WARMUP (2),
#      REPEAT (1; rounds of the throughput cases, then of the paced pair, alternating; ratios
#      and p99s use medians: one run on a shared VM can be 15 % off),
#      CONNECTIONS (64), TOKENS (10000), OUT (target/bench-envoy),
#      ONLY (an extended regex on case names, e.g. 'rs256-many'; default: every case),
#      PORTCULLIS_LOG (portcullis's log filter; default `info`, as shipped: one JSON audit
#      event per decision, written to a file here; `warn` turns the audit log off),
#      DYNAMIC_METADATA (portcullis's `response.dynamic_metadata`; default true, as shipped),
#      TRACE_RATIOS (e.g. "0.01 1": also run (c) ES256 with 10,000 tokens with portcullis's
#      tracing on at each sampling ratio, exporting OTLP/HTTP to a local sink on the load CPU
#      that answers 200; default none: tracing off, as shipped).
# jwt_authn does not check scopes; portcullis does (route requires read:documents), so (c)
# does slightly more work per request than (b).
set -euo pipefail

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ENVOY="${PORTCULLIS_ENVOY:?set PORTCULLIS_ENVOY (make bench-envoy does)}"
DURATION="${DURATION:-10}"
REPEAT="${REPEAT:-1}"
WARMUP="${WARMUP:-2}"
CONNECTIONS="${CONNECTIONS:-64}"
TOKENS="${TOKENS:-10000}"
OUT="${OUT:-$ROOT/target/bench-envoy}"
LISTEN_PORT=10100
ADMIN_PORT=15100
AGENT_GRPC_PORT=9291
AGENT_ADMIN_PORT=9991
AGENT_LOG="${PORTCULLIS_LOG:-info}"

require_tools bench "make bench-envoy installs it" wrk taskset curl node
[[ -x "$ENVOY" ]] || { echo "bench: no Envoy at $ENVOY" >&2; exit 1; }
[[ -x "$PORTCULLIS" ]] || { echo "bench: no portcullis at $PORTCULLIS (cargo build --release)" >&2; exit 1; }
(($(nproc) >= 2)) || { echo "bench: needs 2 CPUs (system under test and load generator apart)" >&2; exit 1; }

mkdir -p "$OUT"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench.XXXXXX")"
PIDS=()
SINK_PID=""
cleanup() {
  trap - EXIT INT TERM
  stop_all
  stop_pids 3 ${SINK_PID:+"$SINK_PID"}
  rm -rf "$WORK"
}
stop_all() {
  stop_pids 3 "${PIDS[@]}"
  PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- tokens and JWKS ------------------------------------------------------------------------
echo "bench: minting $TOKENS RS256 and $TOKENS ES256 tokens"
node "$ROOT/deploy/bench/mint-tokens.mjs" "$WORK/tokens" "$TOKENS" "$ISSUER" "$AUDIENCE" >/dev/null
for alg in rs256 es256; do
  head -n 1 "$WORK/tokens/$alg.txt" >"$WORK/tokens/$alg-1.txt"
  mv "$WORK/tokens/$alg.txt" "$WORK/tokens/$alg-many.txt"
done
JWKS="$WORK/tokens/jwks.json"

# ---- wrk script: pre-built requests cycling through a token file; prints one RESULT line ----
cat >"$WORK/load.lua" <<'EOF'
local requests = {}
local n = 0
local pace_ms = 0
local path = "/documents"
function init(args)
  pace_ms = tonumber(args[2]) or 0
  path = args[3] or "/documents"
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16))
  for line in io.lines(args[1]) do
    if #line > 0 then
      n = n + 1
      requests[n] = wrk.format("GET", path, { ["Authorization"] = "Bearer " .. line })
    end
  end
end
local i = 0
function request()
  i = i % n + 1
  return requests[i]
end
-- Random pauses (mean pace_ms) keep the connections from falling into lockstep, which would
-- turn a paced load into bursts that queue.
function delay()
  if pace_ms <= 0 then return 0 end
  return math.random(0, 2 * pace_ms)
end
function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d seconds=%.3f rps=%.1f p50_us=%d p99_us=%d p999_us=%d errors=%d non2xx=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    e.connect + e.read + e.write + e.timeout, e.status))
end
EOF

# ---- configurations ---------------------------------------------------------------------------
envoy_config() { # mode: none | jwt_authn | jwt_authn_same_job | ext_authz
  local filters="" same_job=""
  # The same job as portcullis's allowed answer: the identity as request headers (subject,
  # issuer, scopes) and in dynamic metadata, the token stripped (forward: false).
  [[ "$1" == jwt_authn_same_job ]] && same_job="
                          claim_to_headers:
                            - {header_name: x-auth-subject, claim_name: sub}
                            - {header_name: x-auth-issuer, claim_name: iss}
                            - {header_name: x-auth-scopes, claim_name: scope}
                          payload_in_metadata: portcullis"
  case "$1" in
    jwt_authn | jwt_authn_same_job)
      filters="
                  - name: envoy.filters.http.jwt_authn
                    typed_config:
                      \"@type\": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
                      providers:
                        bench:
                          issuer: $ISSUER
                          audiences: [$AUDIENCE]
                          local_jwks: {filename: $JWKS}
                          forward: false
                          jwt_cache_config: {jwt_cache_size: 100}$same_job
                      rules:
                        - match: {prefix: /}
                          requires: {provider_name: bench}" ;;
    ext_authz)
      # As deploy/envoy/envoy.yaml.
      filters="
                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      transport_api_version: V3
                      failure_mode_allow: false
                      status_on_error: {code: ServiceUnavailable}
                      grpc_service:
                        envoy_grpc: {cluster_name: portcullis}
                        timeout: 0.5s
                      encode_raw_headers: true
                      include_peer_certificate: true" ;;
  esac
  cat <<EOF
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: $ADMIN_PORT}}
static_resources:
  listeners:
    - name: bench
      address: {socket_address: {address: 127.0.0.1, port_value: $LISTEN_PORT}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: bench
                route_config:
                  virtual_hosts:
                    - name: bench
                      domains: ["*"]
                      routes:
                        - match: {prefix: /}
                          direct_response: {status: 200, body: {inline_string: "ok\n"}}
                http_filters:$filters
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: portcullis
      type: STATIC
      connect_timeout: 0.25s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          common_http_protocol_options: {idle_timeout: 3600s}
          explicit_http_config:
            http2_protocol_options:
              max_concurrent_streams: 1024
              connection_keepalive: {interval: 30s, timeout: 5s}
      circuit_breakers:
        thresholds:
          - {priority: DEFAULT, max_connections: 16, max_pending_requests: 4096, max_requests: 4096}
      load_assignment:
        cluster_name: portcullis
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address: {socket_address: {address: 127.0.0.1, port_value: $AGENT_GRPC_PORT}}
EOF
}

CONFIG="$(write_portcullis_config "$WORK" "$AGENT_GRPC_PORT" "$AGENT_ADMIN_PORT" "$JWKS" "RS256, ES256")"

SINK_PORT=9394
[[ -z "${TRACE_RATIOS:-}" ]] || start_otlp_sink "$SINK_PORT"

for mode in none jwt_authn jwt_authn_same_job ext_authz; do
  envoy_config "$mode" >"$WORK/envoy-$mode.yaml"
  "$ENVOY" --mode validate -c "$WORK/envoy-$mode.yaml" --log-level error >/dev/null
done

# ---- one measured run -----------------------------------------------------------------------
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

wait_http() { # url pid name: up to 10 s
  wait_until_up bench "$3" "$WORK/$3.log" "$2" 200 0.05 curl -sf "$1"
}

RESULTS="$OUT/results.tsv"
printf 'case\tmode\talg\ttokens\tpace_ms\trps\tp50_ms\tp99_ms\tp999_ms\tenvoy_cpu_s_per_1k\tportcullis_cpu_s_per_1k\tportcullis_rss_mib\tnon2xx\terrors\n' >"$RESULTS"

run() { # label mode alg tokens(1|many) pace_ms [connections] [path]
  local label="$1" mode="$2" alg="$3" set="$4" pace="$5" conns="${6:-$CONNECTIONS}" path="${7:-/documents}"
  [[ -z "${ONLY:-}" || "$label" =~ $ONLY ]] || return 0
  local token_file="$WORK/tokens/$alg-$set.txt"
  local agent_pid="" envoy_pid
  if [[ "$mode" == ext_authz ]]; then
    PORTCULLIS_LOG="$AGENT_LOG" taskset -c "$SUT_CPU" "$PORTCULLIS" serve --config "${AGENT_CONFIG:-$CONFIG}" \
      >"$WORK/portcullis.log" 2>&1 &
    agent_pid=$!
    PIDS+=("$agent_pid")
    wait_http "http://127.0.0.1:$AGENT_ADMIN_PORT/readyz" "$agent_pid" portcullis
  fi
  taskset -c "$SUT_CPU" "$ENVOY" -c "$WORK/envoy-$mode.yaml" --concurrency 1 \
    --disable-hot-restart --log-level error >"$WORK/envoy.log" 2>&1 &
  envoy_pid=$!
  PIDS+=("$envoy_pid")
  wait_http "http://127.0.0.1:$ADMIN_PORT/ready" "$envoy_pid" envoy

  local url="http://127.0.0.1:$LISTEN_PORT"
  taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${WARMUP}s" -s "$WORK/load.lua" "$url" \
    -- "$token_file" "$pace" "$path" >/dev/null
  local e0 a0=0 e1 a1=0
  e0=$(cpu_ticks "$envoy_pid")
  [[ -n "$agent_pid" ]] && a0=$(cpu_ticks "$agent_pid")
  local line
  line=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${DURATION}s" --timeout 5s \
    -s "$WORK/load.lua" "$url" -- "$token_file" "$pace" "$path" | grep '^RESULT')
  e1=$(cpu_ticks "$envoy_pid")
  local rss="-"
  if [[ -n "$agent_pid" ]]; then
    a1=$(cpu_ticks "$agent_pid")
    rss=$(awk -v k="$(rss_kib "$agent_pid")" 'BEGIN {printf "%.1f", k / 1024}')
  fi
  stop_all

  local -A r=()
  for kv in ${line#RESULT }; do r[${kv%%=*}]=${kv#*=}; done
  awk -v label="$label" -v mode="$mode" -v alg="$alg" -v set="$set" -v pace="$pace" \
    -v rps="${r[rps]}" -v req="${r[requests]}" -v p50="${r[p50_us]}" -v p99="${r[p99_us]}" \
    -v p999="${r[p999_us]}" -v de="$((e1 - e0))" -v da="$((a1 - a0))" -v tck="$CLK_TCK" \
    -v rss="$rss" -v non2xx="${r[non2xx]}" -v errors="${r[errors]}" -v agent="${agent_pid:-}" '
    BEGIN {
      k = req / 1000
      ecpu = sprintf("%.4f", de / tck / k)
      acpu = agent == "" ? "-" : sprintf("%.4f", da / tck / k)
      printf "%s\t%s\t%s\t%s\t%s\t%.0f\t%.2f\t%.2f\t%.2f\t%s\t%s\t%s\t%s\t%s\n",
        label, mode, alg, set, pace, rps, p50 / 1000, p99 / 1000, p999 / 1000, ecpu, acpu, rss,
        non2xx, errors
    }' >>"$RESULTS"
  tail -n 1 "$RESULTS" | awk -F'\t' '{printf "  %-22s %8s req/s  p50 %6s ms  p99 %6s ms  p99.9 %6s ms  non2xx %s errors %s\n", $1, $6, $7, $8, $9, $13, $14}'
  if [[ "${r[non2xx]}" != 0 || "${r[errors]}" != 0 ]]; then
    echo "bench: WARNING: $label had failed requests (see $WORK logs)" >&2
  fi
}

# (c)/(b) of each round, b and c measured back to back (a slow spell of a shared machine hits
# both); empty for a single round.
round_ratios() {
  ((REPEAT > 1)) || return 0
  awk -F'\t' -v b="$1" -v c="$2" '
    $1 == b {bv[++nb] = $6}
    $1 == c {cv[++nc] = $6}
    END { for (i = 1; i <= nb && i <= nc; i++) printf "%s%.2f", (i > 1 ? ", " : ""), cv[i] / bv[i] }' "$RESULTS"
}

# The median requests/s of a case over its rounds.
rps_of() { median "$RESULTS" "$1" 6; }

echo "bench: $DURATION s per run after a $WARMUP s warm-up, $CONNECTIONS connections, Envoy+portcullis on CPU $SUT_CPU, wrk on CPU $LOAD_CPU"
# REPEAT rounds of every case, alternating; ratios use each case's median.
for round in $(seq 1 "$REPEAT"); do
  ((REPEAT == 1)) || echo "bench: round $round of $REPEAT"
  run a-none none rs256 1 0
  # The floor of (c): the same gRPC hop answered for an anonymous route (no token work). What
  # Envoy and portcullis spend here is the cost of the call itself.
  run c-floor ext_authz rs256 many 0 "$CONNECTIONS" /floor
  for alg in rs256 es256; do
    for set in 1 many; do
      run "b-$alg-$set" jwt_authn "$alg" "$set" 0
      run "c-$alg-$set" ext_authz "$alg" "$set" 0
    done
    # jwt_authn doing the same job as portcullis's answer (identity headers, metadata).
    run "bsame-$alg-many" jwt_authn_same_job "$alg" many 0
  done
  for ratio in ${TRACE_RATIOS:-}; do
    AGENT_CONFIG="$(tracing_config "$CONFIG" "$ratio" "$SINK_PORT")" run "c-es256-many-traced-$ratio" ext_authz es256 many 0
  done
done
# Latency at half of (b)'s peak rate (paced load): every connection waits a random 0..2*PACE_MS
# (mean PACE_MS) between a response and its next request, so C connections offer about C * 1000 / (PACE_MS + latency)
# requests/s; C is chosen for half of (b)'s peak, and (b) and (c) get the same C and pace.
# Tail latency moves by milliseconds between runs on a shared machine, so the pair is measured
# REPEAT times, back to back like the peak rounds.
PACE_MS=20
for round in $(seq 1 "$REPEAT"); do
  ((REPEAT == 1)) || echo "bench: paced round $round of $REPEAT"
  for alg in rs256 es256; do
    peak=$(rps_of "b-$alg-many")
    [[ -n "$peak" ]] || continue
    conns=$(awk -v p="$peak" -v d="$PACE_MS" 'BEGIN {c = p / 2 * (d + 1) / 1000; printf "%d", c < 1 ? 1 : c + 0.5}')
    run "b-$alg-many-half" jwt_authn "$alg" many "$PACE_MS" "$conns"
    run "c-$alg-many-half" ext_authz "$alg" many "$PACE_MS" "$conns"
  done
done

# ---- report -----------------------------------------------------------------------------------
REPORT="$OUT/results.md"
{
  echo "## Envoy load benchmark"
  echo
  echo "portcullis log filter: \`$AGENT_LOG\` (info = an audit event per decision, as shipped)."
  echo
  echo "Envoy $("$ENVOY" --version | sed -n 's/.*version: [^/]*\/\([^/]*\)\/.*/\1/p'), $DURATION s per run, $CONNECTIONS connections (wrk, 1 thread, CPU $LOAD_CPU); Envoy --concurrency 1 and portcullis pinned together to CPU $SUT_CPU; 'many' = $TOKENS distinct tokens. $(date -u +%Y-%m-%d)."
  echo
  echo "| case | filter | alg | tokens | req/s | p50 ms | p99 ms | p99.9 ms | Envoy CPU s/1k req | portcullis CPU s/1k req | portcullis RSS MiB | failed |"
  echo "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  tail -n +2 "$RESULTS" | awk -F'\t' -v many="$TOKENS" '{
    t = $4 == "many" ? many : 1
    if ($5 != 0) t = t " (paced)"
    printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", $1, $2, toupper($3), t, $6, $7, $8, $9, $10, $11, $12, $13 + $14 }'
  echo
  echo "Ratios of throughput$( ((REPEAT == 1)) || echo " (medians of $REPEAT rounds)"):"
  echo
  a=$(rps_of a-none)
  for alg in rs256 es256; do
    for set in 1 many; do
      b=$(rps_of "b-$alg-$set"); c=$(rps_of "c-$alg-$set")
      [[ -n "$a" && -n "$b" && -n "$c" ]] || continue
      awk -v alg="${alg^^}" -v set="$set" -v a="$a" -v b="$b" -v c="$c" -v many="$TOKENS" \
        -v rounds="$(round_ratios "b-$alg-$set" "c-$alg-$set")" 'BEGIN {
        printf "- %s, %s token%s: (c)/(b) = %.2f, (c)/(a) = %.2f%s\n", alg, set == "many" ? many : "1", set == "many" ? "s" : "", c / b, c / a,
          rounds == "" ? "" : "; (c)/(b) per round: " rounds }'
    done
  done
  for alg in rs256 es256; do
    bs=$(rps_of "bsame-$alg-many"); c=$(rps_of "c-$alg-many")
    [[ -n "$bs" && -n "$c" ]] || continue
    awk -v alg="${alg^^}" -v bs="$bs" -v c="$c" -v many="$TOKENS" \
      -v rounds="$(round_ratios "bsame-$alg-many" "c-$alg-many")" 'BEGIN {
      printf "- %s, %s tokens, jwt_authn doing the same job (identity headers, metadata): (c)/(b same job) = %.2f%s\n", alg, many, c / bs,
        rounds == "" ? "" : "; per round: " rounds }'
  done
  floor=$(rps_of c-floor)
  [[ -n "$a" && -n "$floor" ]] && awk -v a="$a" -v f="$floor" 'BEGIN {
    printf "- floor (anonymous route, no token work): %s req/s, (floor)/(a) = %.2f\n", f, f / a }'
  for alg in rs256 es256; do
    b=$(median "$RESULTS" "b-$alg-many-half" 8); c=$(median "$RESULTS" "c-$alg-many-half" 8)
    [[ -n "$b" && -n "$c" ]] || continue
    awk -F'\t' -v alg="$alg" -v b="$b" -v c="$c" -v br="$(rps_of "b-$alg-many-half")" -v cr="$(rps_of "c-$alg-many-half")" '
      $1 == "b-" alg "-many-half" {bv[++nb] = $8}
      $1 == "c-" alg "-many-half" {cv[++nc] = $8}
      END {
        for (i = 1; i <= nb && i <= nc; i++) rounds = rounds sprintf("%s%+.2f", (i > 1 ? ", " : ""), cv[i] - bv[i])
        printf "- %s at half of (b)'"'"'s peak (%s vs %s req/s): p99 (b) %.2f ms, (c) %.2f ms, difference %+.2f ms%s\n", toupper(alg), br, cr, b, c, c - b,
          (nb > 1 ? "; (c) - (b) per round: " rounds " ms" : "") }' "$RESULTS"
  done
  echo
  echo "Reproduce: \`make bench-envoy\` (env DURATION, REPEAT, CONNECTIONS, TOKENS, ONLY)."
} >"$REPORT"
echo
cat "$REPORT"
echo
echo "bench: results in $REPORT and $RESULTS"
