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
