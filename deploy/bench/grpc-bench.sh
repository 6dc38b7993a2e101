#!/usr/bin/env bash
# portcullis alone on its gRPC port (`make bench-grpc`; a benchmark, not a test).
#
# The Envoy benchmark (envoy-bench.sh) measures the whole sidecar, and on a shared machine one
# run moves 15-25 %: too much to see a change of 1 µs in portcullis. This one takes Envoy out:
# h2load (one HTTP/2 connection, 64 streams in flight, like Envoy's one connection) sends the
# same Check request over and over to portcullis pinned to CPU 0, from CPU 1, and reports
# portcullis's CPU time per check (from /proc/PID/stat), which is stable to a few percent.
# The request carries the headers Envoy's gRPC client sends, `grpc-timeout` included (tonic arms
# a timer for it).
#
# Cases: an allowed check with a cached RS256 token, as shipped (audit event per decision), the
# same with the audit log off, an anonymous route (no token work), and a request without a token
# (401). One repeated token: the cached path, which is what 10,000 distinct cached tokens cost
# too, minus CPU-cache misses.
#
# With COUNT=instructions (`make bench-grpc-instructions`), portcullis runs under valgrind's
# callgrind instead and the report gives the instructions it executes per check, counted from
# after the warm-up to the end of the run. Slower (~50x) and blind to CPU-cache and SIMD
# differences (valgrind hides SHA-NI, so token hashing counts more than it costs), but exact:
# the same binary gives the same count on any day, so two builds compared this way show a
# change of a few hundred instructions that CPU time on a shared VM cannot.
#
# Env: PORTCULLIS_BIN (set by make), REQUESTS (300000 per run; 5000 when counting
#      instructions), REPEAT (3; median reported; 1 when counting), OUT (target/bench-grpc),
#      PROTOC (default: protoc on PATH, else the vendored one), DYNAMIC_METADATA (portcullis's
#      `response.dynamic_metadata`; default true, as shipped), COUNT (cpu or instructions),
#      TRACE_RATIOS (e.g. "0.01 1": also run the allowed case with tracing on at each sampling
#      ratio, exporting OTLP/HTTP to a local sink on the load CPU that answers 200; default
#      none, i.e. tracing off as shipped), ONLY (an extended regex on case names, e.g.
#      'rs256|revoked'; default: every case), PAIRS (e.g. 20: then each feature and tracing case
#      also runs paired against allowed-cached-rs256, see run_paired; PAIR_REQUESTS checks per
#      burst, 100000; REPEAT=0 skips the separate runs), PROFILES (a directory: with
#      COUNT=instructions, keep each case's callgrind profile there as <case>.callgrind, for
#      callgrind_annotate).
set -euo pipefail

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
COUNT="${COUNT:-cpu}"
case "$COUNT" in
  cpu) REQUESTS="${REQUESTS:-300000}" REPEAT="${REPEAT:-3}" UNIT="µs CPU per check" ;;
  instructions) REQUESTS="${REQUESTS:-5000}" REPEAT="${REPEAT:-1}" UNIT="instructions per check" ;;
  *) echo "bench-grpc: COUNT is cpu or instructions, not $COUNT" >&2; exit 1 ;;
esac
OUT="${OUT:-$ROOT/target/bench-grpc}"
GRPC_PORT=9391
ADMIN_PORT=9392
PAIRS="${PAIRS:-0}"
PAIR_REQUESTS="${PAIR_REQUESTS:-100000}"
PAIR_GRPC_PORT=9394
PAIR_ADMIN_PORT=9395
[[ "$PAIRS" == 0 || "$COUNT" == cpu ]] || { echo "bench-grpc: PAIRS is for CPU time (instruction counts need no pairing)" >&2; exit 1; }

require_tools bench-grpc "make bench-grpc installs it" h2load taskset curl node python3
[[ "$COUNT" == cpu ]] || require_tools bench-grpc "make bench-grpc-instructions installs it" valgrind callgrind_control
[[ -x "$PORTCULLIS" ]] || { echo "bench-grpc: no portcullis at $PORTCULLIS (cargo build --release)" >&2; exit 1; }
(($(nproc) >= 2)) || { echo "bench-grpc: needs 2 CPUs (portcullis and h2load apart)" >&2; exit 1; }

# protoc turns a text-format CheckRequest into the wire bytes h2load sends.
find_protoc() {
  if [[ -n "${PROTOC:-}" ]]; then echo "$PROTOC"; return; fi
  if command -v protoc >/dev/null; then command -v protoc; return; fi
  local arch
  case "$(uname -m)" in
    x86_64) arch=x86_64 ;;
    aarch64) arch=aarch_64 ;;
    *) arch="$(uname -m)" ;;
  esac
  local found
  found=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/protoc-bin-vendored-linux-"$arch"-*/bin/protoc 2>/dev/null | tail -n 1)
  [[ -n "$found" ]] || { echo "bench-grpc: no protoc (set PROTOC, or build once so cargo fetches the vendored one)" >&2; exit 1; }
  echo "$found"
}
PROTOC_BIN="$(find_protoc)"
PROTOC_INCLUDE="$(dirname "$(dirname "$PROTOC_BIN")")/include"

mkdir -p "$OUT"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench-grpc.XXXXXX")"
PIDS=()
cleanup() {
  trap - EXIT INT TERM
  stop_pids 3 "${PIDS[@]}"
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

node "$ROOT/deploy/bench/mint-tokens.mjs" "$WORK/tokens" 1 "$ISSUER" "$AUDIENCE" >/dev/null
TOKEN="$(head -n 1 "$WORK/tokens/rs256.txt")"

# body <name> <path> [authorization] [x-api-key]: a gRPC-framed CheckRequest as Envoy sends it
# (encode_raw_headers), written to $WORK/<name>.bin.
body() {
  local name="$1" path="$2" authorization="${3:-}" api_key="${4:-}"
  {
    echo 'attributes {'
    echo '  source { address { socket_address { address: "127.0.0.1" port_value: 40000 } } }'
    echo '  request { http {'
    echo "    id: \"1\" method: \"GET\" path: \"$path\" host: \"127.0.0.1:10100\" scheme: \"http\" protocol: \"HTTP/1.1\""
    echo '    header_map {'
    echo '      headers { key: ":authority" raw_value: "127.0.0.1:10100" }'
    echo "      headers { key: \":path\" raw_value: \"$path\" }"
    echo '      headers { key: ":method" raw_value: "GET" }'
    [[ -z "$authorization" ]] || echo "      headers { key: \"authorization\" raw_value: \"$authorization\" }"
    [[ -z "$api_key" ]] || echo "      headers { key: \"x-api-key\" raw_value: \"$api_key\" }"
    echo '      headers { key: "x-request-id" raw_value: "9f0c3a52-6c0e-4e0b-8a55-1d2f4e5a6b7c" }'
    echo '    }'
    echo '  } }'
    echo '}'
  } | "$PROTOC_BIN" -I "$ROOT/proto" -I "$PROTOC_INCLUDE" --encode=envoy.service.auth.v3.CheckRequest \
    "$ROOT/proto/envoy/service/auth/v3/external_auth.proto" >"$WORK/$name.msg"
  # gRPC framing: uncompressed flag, 4-byte big-endian length, message.
  python3 -c 'import struct, sys; m = open(sys.argv[1], "rb").read(); open(sys.argv[2], "wb").write(b"\0" + struct.pack(">I", len(m)) + m)' \
    "$WORK/$name.msg" "$WORK/$name.bin"
}
body allowed /documents "Bearer $TOKEN"
body anonymous /floor
body no-token /documents
body full-policy /users/bench-user-0/documents "Bearer $(head -n 1 "$WORK/tokens/rs256-roles.txt")"

CONFIG="$(write_portcullis_config "$WORK" "$GRPC_PORT" "$ADMIN_PORT" "$WORK/tokens/jwks.json" RS256)"

# The feature cases' configurations: $CONFIG plus one section each, in the configuration's own
# directory (portcullis watches that directory; portcullis.log in $WORK would wake the watcher).
# `routes:` is $CONFIG's last section, so a route appended there joins its list.
POLICY_CONFIG="$WORK/config/portcullis-policy.yaml"
cp "$CONFIG" "$POLICY_CONFIG"
cat >>"$POLICY_CONFIG" <<'YAML'
  - name: user-documents
    match: {methods: [GET], path: "/users/{owner_id}/documents"}
    require:
      scopes: ["read:documents"]
      roles: [editor]
      permissions: [read]
      when: resource.owner_id == subject.sub
roles:
  editor: {permissions: [write], includes: [viewer]}
  viewer: [read]
YAML

# The key's entry goes to the keys file, the key itself (printed once, on stderr) to the request.
mkdir -p "$WORK/keys"
{
  echo 'keys:'
  "$PORTCULLIS" keys generate --env live --subject bench-batch --scopes read:documents \
    2>"$WORK/keys/key.txt" || true # an older build (BASE_BIN) has no keys command: case skipped
} >"$WORK/keys/keys.yaml"
API_KEY="$(grep -o -m 1 'pk_live_[A-Za-z0-9_]*' "$WORK/keys/key.txt" || true)"
body api-key /documents "" "$API_KEY"
API_KEY_CONFIG="$WORK/config/portcullis-api-key.yaml"
cp "$CONFIG" "$API_KEY_CONFIG"
printf 'api_keys:\n  file: %s\n  env: live\n' "$WORK/keys/keys.yaml" >>"$API_KEY_CONFIG"

# 100,000 revoked jtis (random UUIDs, like the tokens' own), in force for a day.
mkdir -p "$WORK/revocation"
python3 -c 'import datetime, sys, uuid
expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
expires = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
with open(sys.argv[1], "w") as out:
    out.write("jtis:\n")
    for _ in range(100_000):
        out.write(f"  - {{jti: {uuid.uuid4()}, expires: {expires}}}\n")' "$WORK/revocation/revoked.yaml"
REVOCATION_CONFIG="$WORK/config/portcullis-revocation.yaml"
cp "$CONFIG" "$REVOCATION_CONFIG"
printf 'revocation:\n  file: %s\n' "$WORK/revocation/revoked.yaml" >>"$REVOCATION_CONFIG"

SINK_PORT=9393
if [[ -n "${TRACE_RATIOS:-}" ]]; then
  start_otlp_sink "$SINK_PORT"
  PIDS=("$SINK_PID")
fi

# feature <case> <body> <config>: run the case only when this build accepts its configuration
# (BASE_BIN may predate the feature).
FEATURES=()
feature() {
  if "$PORTCULLIS" check-config "$3" >"$WORK/check-config.log" 2>&1; then
    FEATURES+=("$1 $2 $3")
  else
    echo "bench-grpc: $1 skipped: this portcullis refuses its configuration: $(head -n 1 "$WORK/check-config.log")" >&2
  fi
}
feature allowed-full-policy full-policy "$POLICY_CONFIG"
feature allowed-api-key api-key "$API_KEY_CONFIG"
feature allowed-revoked-list allowed "$REVOCATION_CONFIG"

RESULTS="$OUT/results.tsv"
PAIRED="$OUT/paired.tsv"
printf 'case\tround\trps\tper_check\n' >"$RESULTS"

# wait_idle <pid>: until portcullis spends no CPU of its own (at most ~10 s; 120 s under
# callgrind). Ready is not idle: work the agent still does in the background after ready must
# not land in the measured window (until 2026-12-02 the revocation file was read a second time
# after ready, ~0.5 s of CPU for 100,000 entries).
wait_idle() {
  local pid="$1" pause=0.5 tries=20 t0 t1
  [[ "$COUNT" == cpu ]] || pause=2 tries=60
  t1=$(cpu_ticks "$pid")
  while ((tries-- > 0)); do
    sleep "$pause"
    t0="$t1" t1=$(cpu_ticks "$pid")
    ((t1 - t0 > 1)) || return 0
  done
  echo "bench-grpc: portcullis still busy before the run; measuring anyway" >&2
}

# start_sut <config> <log_filter> <log> [under...]: portcullis serving <config>, ready and idle;
# sets SUT_PID.
start_sut() {
  local config="$1" filter="$2" log="$3" tries=200
  shift 3
  (($#)) || set -- taskset -c "$SUT_CPU"
  [[ "$COUNT" == cpu ]] || tries=1200
  PORTCULLIS_LOG="$filter" "$@" "$PORTCULLIS" serve --config "$config" >"$log" 2>&1 &
  SUT_PID=$!
  PIDS+=("$SUT_PID")
  local admin
  admin=$(sed -n 's/^ *admin_listen: *//p' "$config")
  wait_until_up bench-grpc portcullis "$log" "$SUT_PID" "$tries" 0.05 curl -sf "http://$admin/readyz"
  wait_idle "$SUT_PID"
}

# load <body> <config> <checks>: h2load from the load CPU, <checks> Check calls with <body> to
# the gRPC port of <config>; prints h2load's report and fails unless every call was answered.
load() {
  local body="$1" config="$2" checks="$3" timeout=500m grpc out
  [[ "$COUNT" == cpu ]] || timeout=20S # valgrind is slow
  grpc=$(sed -n 's/^ *grpc_listen: *//p' "$config")
  out=$(taskset -c "$LOAD_CPU" h2load -c 1 -m 64 -d "$WORK/$body.bin" -n "$checks" \
    -H content-type:application/grpc -H te:trailers -H "grpc-timeout:$timeout" \
    "http://$grpc/envoy.service.auth.v3.Authorization/Check")
  grep -q "status codes: $checks 2xx" <<<"$out" || { echo "bench-grpc: not every request answered:" >&2; echo "$out" >&2; return 1; }
  echo "$out"
}

# expect_allowed <case> <log>: gRPC answers a denial with HTTP 200 too, so the audit log (every
# decision at `info`) says whether an allowed-* case was allowed.
expect_allowed() {
  local name="$1" log="$2"
  if grep -q '"authz.outcome": *"deny"' "$log" || ! grep -q '"authz.outcome": *"allow"' "$log"; then
    echo "bench-grpc: $name: not allowed:" >&2
    grep -m 3 '"authz.outcome"' "$log" >&2 || tail -n 5 "$log" >&2
    exit 1
  fi
}

run() { # case body log_filter round [config]
  local name="$1" body="$2" filter="$3" round="$4" config="${5:-$CONFIG}"
  [[ -z "${ONLY:-}" || "$name" =~ $ONLY ]] || return 0
  local under=() warm=50000
  if [[ "$COUNT" == instructions ]]; then
    under=(valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.$name.%p")
    warm=2000
  fi
  start_sut "$config" "$filter" "$WORK/portcullis.log" "${under[@]}"
  local pid="$SUT_PID"
  load "$body" "$config" "$warm" >/dev/null # warm-up
  local t0 t1 out per_check
  if [[ "$COUNT" == cpu ]]; then
    t0=$(cpu_ticks "$pid")
    out=$(load "$body" "$config" "$REQUESTS")
    t1=$(cpu_ticks "$pid")
    per_check=$(awk -v d="$((t1 - t0))" -v tck="$CLK_TCK" -v req="$REQUESTS" 'BEGIN {printf "%.2f", d / tck * 1e6 / req}')
  else
    callgrind_control --zero "$pid" >/dev/null
    out=$(load "$body" "$config" "$REQUESTS")
    callgrind_control --dump="$name" "$pid" >/dev/null
    # The dump's `totals:` line: instructions executed since the zeroing, every thread.
    per_check=$(awk -v req="$REQUESTS" '/^totals:/ {printf "%.0f", $2 / req; exit}' "$WORK"/callgrind."$name".*.1)
  fi
  stop_pids 3 "$pid"
  PIDS=(${SINK_PID:+"$SINK_PID"})
  [[ "$name" != allowed-* || "$filter" != info ]] || expect_allowed "$name" "$WORK/portcullis.log"
  local rps
  rps=$(sed -n 's/^finished in [0-9.]*m\?s, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
  printf '%s\t%s\t%.0f\t%s\n' "$name" "$round" "$rps" "$per_check" >>"$RESULTS"
  tail -n 1 "$RESULTS" | awk -F'\t' -v unit="$UNIT" '{printf "  %-26s %8s checks/s  %8s %s\n", $1, $3, $4, unit}'
  if [[ -n "${PROFILES:-}" && "$COUNT" == instructions ]]; then
    mkdir -p "$PROFILES" && cp "$WORK"/callgrind."$name".*.1 "$PROFILES/$name.callgrind"
  fi
  rm -f "$WORK"/callgrind."$name".*
}

# run_paired <case> <body> <config>: the case against allowed-cached-rs256 with both agents up
# at once, on the same CPU, loaded in turn (PAIRS pairs of PAIR_REQUESTS checks; the order
# alternates, ABBA, so a steady drift cancels). Each side's CPU is read from the start of its
# burst to the start of its next one, so work it does after a burst (the exporter's last batch)
# is counted too. Seconds apart instead of minutes, the two sides see the same machine: the
# per-pair differences show a 0.5 µs change that separate runs on a drifting VM cannot.
run_paired() {
  local name="$1" body="$2" config="$3"
  [[ -z "${ONLY:-}" || "$name" =~ $ONLY ]] || return 0
  local other="${config%.yaml}-paired.yaml"
  sed -e "s/^\( *grpc_listen: *127.0.0.1:\)$GRPC_PORT\$/\1$PAIR_GRPC_PORT/" \
    -e "s/^\( *admin_listen: *127.0.0.1:\)$ADMIN_PORT\$/\1$PAIR_ADMIN_PORT/" "$config" >"$other"
  start_sut "$CONFIG" info "$WORK/base.log"
  local base_pid="$SUT_PID"
  start_sut "$other" info "$WORK/case.log"
  local case_pid="$SUT_PID"
  load allowed "$CONFIG" 50000 >/dev/null
  load "$body" "$other" 50000 >/dev/null
  # starts[side][i]: the side's CPU ticks at the start of its burst i (PAIRS + 1 bursts each).
  local -a base_starts=() case_starts=()
  local i first
  for i in $(seq 0 "$PAIRS"); do
    for first in $( ((i % 2)) && echo "case base" || echo "base case"); do
      if [[ "$first" == base ]]; then
        base_starts+=("$(cpu_ticks "$base_pid")")
        ((i == PAIRS)) || load allowed "$CONFIG" "$PAIR_REQUESTS" >/dev/null
      else
        case_starts+=("$(cpu_ticks "$case_pid")")
        ((i == PAIRS)) || load "$body" "$other" "$PAIR_REQUESTS" >/dev/null
      fi
    done
  done
  # A run that dropped spans did less work than one that exported them all: say so.
  local dropped
  dropped=$(curl -sf "http://127.0.0.1:$PAIR_ADMIN_PORT/metrics" |
    awk '/^portcullis_trace_spans_dropped_total / {print $2}')
  [[ "${dropped:-0}" == 0 ]] || echo "bench-grpc: $name: $dropped spans dropped (queue full): not every span was exported" >&2
  stop_pids 3 "$base_pid" "$case_pid"
  PIDS=(${SINK_PID:+"$SINK_PID"})
  expect_allowed allowed-cached-rs256 "$WORK/base.log"
  [[ "$name" != allowed-* ]] || expect_allowed "$name" "$WORK/case.log"
  for i in $(seq 1 "$PAIRS"); do
    awk -v c="$name" -v i="$i" -v tck="$CLK_TCK" -v req="$PAIR_REQUESTS" \
      -v b="$((base_starts[i] - base_starts[i - 1]))" -v x="$((case_starts[i] - case_starts[i - 1]))" \
      'BEGIN {b = b / tck * 1e6 / req; x = x / tck * 1e6 / req; printf "%s\t%s\t%.2f\t%.2f\t%.2f\n", c, i, b, x, x - b}'
  done >>"$PAIRED"
  local pairs mid q1 q3
  read -r pairs mid q1 q3 <<<"$(paired_summary "$name")"
  printf '  %-26s %s µs CPU per check vs allowed-cached-rs256 (median of %s pairs; quartiles %s, %s)\n' \
    "$name" "$mid" "$pairs" "$q1" "$q3"
}

# paired_summary <case>: the number of pairs, then the median, lower and upper quartile of the
# case's per-pair differences.
paired_summary() {
  awk -F'\t' -v c="$1" '$1 == c {print $5}' "$PAIRED" | sort -n |
    awk '{v[NR] = $1} END {printf "%d %+.2f %+.2f %+.2f\n", NR, v[int((NR + 1) / 2)], v[int((NR + 3) / 4)], v[int((3 * NR + 3) / 4)]}'
}

echo "bench-grpc: $REQUESTS checks per run, $REPEAT rounds; portcullis on CPU $SUT_CPU, h2load on CPU $LOAD_CPU (1 connection, 64 streams)"
for round in $(seq 1 "$REPEAT"); do
  run allowed-cached-rs256 allowed info "$round"
  run allowed-audit-off allowed warn "$round"
  run anonymous-route anonymous info "$round"
  run denied-no-token no-token info "$round"
  for f in "${FEATURES[@]}"; do
    read -r name request config <<<"$f"
    run "$name" "$request" info "$round" "$config"
  done
  for ratio in ${TRACE_RATIOS:-}; do
    run "allowed-traced-$ratio" allowed info "$round" "$(tracing_config "$CONFIG" "$ratio" "$SINK_PORT")"
  done
done
if ((PAIRS > 0)); then
  echo "bench-grpc: $PAIRS pairs of $PAIR_REQUESTS checks per case against allowed-cached-rs256, both agents up at once"
  printf 'case\tpair\tbase\tcase\tdelta\n' >"$PAIRED"
  for f in "${FEATURES[@]}"; do
    read -r name request config <<<"$f"
    run_paired "$name" "$request" "$config"
  done
  for ratio in ${TRACE_RATIOS:-}; do
    run_paired "allowed-traced-$ratio" allowed "$(tracing_config "$CONFIG" "$ratio" "$SINK_PORT")"
  done
fi

REPORT="$OUT/results.md"
{
  echo "## portcullis alone: $UNIT (h2load, one connection, 64 streams)"
  echo
  where="portcullis pinned to one CPU"
  [[ "$COUNT" == cpu ]] || where="portcullis under callgrind (checks/s is valgrind's, not a speed)"
  echo "$(date -u +%Y-%m-%d), $REQUESTS checks per run, median of $REPEAT rounds; $where."
  echo
  echo "| case | checks/s | $UNIT |"
  echo "|---|---:|---:|"
  for c in allowed-cached-rs256 allowed-audit-off anonymous-route denied-no-token \
    allowed-full-policy allowed-api-key allowed-revoked-list \
    $(for ratio in ${TRACE_RATIOS:-}; do echo "allowed-traced-$ratio"; done); do
    grep -q "^$c	" "$RESULTS" || continue # skipped
    echo "| $c | $(median "$RESULTS" "$c" 3) | $(median "$RESULTS" "$c" 4) |"
  done
  if ((PAIRS > 0)); then
    echo
    echo "Paired against allowed-cached-rs256 (both up at once, loaded in turn; $PAIRS pairs of $PAIR_REQUESTS checks):"
    echo
    echo "| case | Δ µs CPU per check, median | quartiles |"
    echo "|---|---:|---:|"
    for c in $(awk -F'\t' 'NR > 1 {print $1}' "$PAIRED" | uniq); do
      read -r _ mid q1 q3 <<<"$(paired_summary "$c")"
      echo "| $c | $mid | $q1 to $q3 |"
    done
  fi
  echo
  echo "Reproduce: \`make bench-grpc\` or \`make bench-grpc-instructions\` (env REQUESTS, REPEAT, TRACE_RATIOS, PAIRS)."
} >"$REPORT"
echo
cat "$REPORT"
