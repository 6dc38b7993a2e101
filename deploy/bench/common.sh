# Shared by the benchmark scripts (sourced): paths, the CPU split, the tokens' issuer, CPU
# accounting and medians.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=../lib/processes.sh
source "$ROOT/deploy/lib/processes.sh"
PORTCULLIS="${PORTCULLIS_BIN:-$ROOT/target/release/portcullis}"
# mint-tokens.mjs's tokens are for this issuer and audience.
ISSUER=https://bench.portcullis.test
AUDIENCE=bench
# The system under test on CPU 0, the load generator on CPU 1.
SUT_CPU=0
LOAD_CPU=1
CLK_TCK="$(getconf CLK_TCK)"

# User + system CPU ticks of a process so far.
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# median <tsv> <case> <column>: the median of a case's column over its rounds (the lower middle
# value for an even count); empty when the case did not run.
median() {
  awk -F'\t' -v c="$2" -v col="$3" '$1 == c {print $col}' "$1" | sort -n |
    awk '{v[NR] = $1} END {if (NR) print v[int((NR + 1) / 2)]}'
}

# write_portcullis_config WORK GRPC_PORT ADMIN_PORT JWKS ALGORITHMS: portcullis's benchmark
# configuration, written to WORK/config/portcullis.yaml (its path printed). `/documents` needs a
# token with `read:documents`; `/floor` is anonymous (no token work at all). The configuration
# has a directory of its own: portcullis watches the configuration's directory, and a log file
# written there would wake the watcher at every flush (a ConfigMap mount never holds logs).
# DYNAMIC_METADATA sets `response.dynamic_metadata` (default true, as shipped).
write_portcullis_config() {
  local work="$1" grpc_port="$2" admin_port="$3" jwks="$4" algorithms="$5"
  mkdir -p "$work/config"
  cat >"$work/config/portcullis.yaml" <<EOF
server:
  grpc_listen: 127.0.0.1:$grpc_port
  admin_listen: 127.0.0.1:$admin_port
issuers:
  - name: bench
    issuer: $ISSUER
    audiences: [$AUDIENCE]
    jwks_file: $jwks
    algorithms: [$algorithms]
    types: [at+jwt]
response:
  dynamic_metadata: ${DYNAMIC_METADATA:-true}
routes:
  - name: documents
    match: {methods: [GET], path: /documents}
    require: {scopes: ["read:documents"]}
  - name: floor
    match: {methods: [GET], path: /floor}
    allow: anonymous
EOF
  echo "$work/config/portcullis.yaml"
}

# tracing_config CONFIG RATIO SINK_PORT: a copy of CONFIG beside it (its directory holds no log
# file: portcullis watches it) with `telemetry.tracing` exporting OTLP/HTTP to the local sink on
# SINK_PORT, sampling RATIO of the checks; prints the copy's path.
tracing_config() {
  local config="$1" ratio="$2" port="$3" path
  path="$(dirname "$config")/portcullis-trace-$ratio.yaml"
  cp "$config" "$path"
  printf 'telemetry:\n  tracing:\n    endpoint: http://127.0.0.1:%s\n    protocol: http/protobuf\n    sampler: traceidratio\n    ratio: %s\n' \
    "$port" "$ratio" >>"$path"
  echo "$path"
}

# start_otlp_sink PORT: the collector stand-in on the load CPU, which reads each export and
# answers 200 with an empty (valid) response; sets SINK_PID.
start_otlp_sink() {
  taskset -c "$LOAD_CPU" node -e '
    require("http").createServer((q, s) => { q.resume(); q.on("end", () => {
      s.writeHead(200, {"content-type": "application/x-protobuf"}); s.end(); }); })
      .listen(Number(process.argv[1]), "127.0.0.1");' "$1" &
  SINK_PID=$!
}
