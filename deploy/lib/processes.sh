# Sourced by deploy/demo/run.sh and deploy/bench/envoy-bench.sh.

# stop_pids GRACE_SECONDS PID...: TERM each process, give them GRACE_SECONDS to exit, KILL the
# rest, and reap them, so a script leaves no process behind.
stop_pids() {
  local grace_tenths=$(($1 * 10)) pid alive
  shift
  (($#)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  for _ in $(seq 1 "$grace_tenths"); do
    alive=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  kill -KILL "$@" 2>/dev/null || true
  wait "$@" 2>/dev/null || true
}

# require_tools TAG HINT TOOL...: exit 1 naming the first TOOL not on PATH, as
# "TAG: TOOL is required (HINT)" (no parentheses when HINT is empty).
require_tools() {
  local tag="$1" hint="$2" tool
  shift 2
  for tool in "$@"; do
    command -v "$tool" >/dev/null || {
      echo "$tag: $tool is required${hint:+ ($hint)}" >&2
      exit 1
    }
  done
}

# wait_until_up TAG NAME LOG PID TRIES INTERVAL CHECK...: run CHECK (output discarded) every
# INTERVAL seconds, up to TRIES times, until it succeeds. When process PID exits first, or
# CHECK never succeeds, print NAME's LOG (indented) and exit 1.
wait_until_up() {
  local tag="$1" name="$2" log="$3" pid="$4" tries="$5" interval="$6" why
  shift 6
  why="not ready after $tries tries $interval s apart"
  for _ in $(seq 1 "$tries"); do
    if ! kill -0 "$pid" 2>/dev/null; then
      why="exited before it was ready"
      break
    fi
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep "$interval"
  done
  echo "$tag: $name did not start ($why); its log:" >&2
  sed 's/^/  /' "$log" >&2 || true
  exit 1
}
