#!/usr/bin/env bash
# The local demo (`make demo`): a real OpenID Provider, portcullis, Envoy and an echoing
# application on loopback, then ready-to-paste curl commands. Ctrl-C stops everything this
# script started.
#
#   client ─▶ Envoy :10000 ─ext_authz gRPC─▶ portcullis :9191 ─discovery/JWKS─▶ provider :9400
#                 │
#                 └─▶ application :8080 (echoes what it receives)
#
# Needs: PORTCULLIS_ENVOY (the Envoy binary) and PORTCULLIS_BIN (portcullis); `make demo` sets
# both after installing Envoy and the provider and building portcullis.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=../lib/processes.sh
source "$ROOT/deploy/lib/processes.sh"
ENVOY="${PORTCULLIS_ENVOY:?set PORTCULLIS_ENVOY to the Envoy binary (make demo does)}"
PORTCULLIS="${PORTCULLIS_BIN:-$ROOT/target/debug/portcullis}"
IDP_PORT=9400
IDP_ADMIN_PORT=9401
APP_PORT=8080
ENVOY_PORT=10000
ENVOY_ADMIN_PORT=15000
AGENT_GRPC_PORT=9191
AGENT_ADMIN_PORT=9901
AUDIENCE=https://documents.example

require_tools demo "" curl node python3
[[ -x "$ENVOY" ]] || { echo "demo: no Envoy at $ENVOY (run make demo)" >&2; exit 1; }
[[ -x "$PORTCULLIS" ]] || { echo "demo: no portcullis at $PORTCULLIS (cargo build)" >&2; exit 1; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in $IDP_PORT $IDP_ADMIN_PORT $APP_PORT $ENVOY_PORT $ENVOY_ADMIN_PORT \
            $AGENT_GRPC_PORT $AGENT_ADMIN_PORT; do
  if port_in_use "$port"; then
    echo "demo: 127.0.0.1:$port is already in use; stop whatever listens there first" >&2
    exit 1
  fi
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/portcullis-demo.XXXXXX")"
PIDS=()
NAMES=()

# Background jobs of a non-interactive shell ignore SIGINT, so Ctrl-C reaches only this script;
# the trap stops each child it started (TERM, then KILL after a grace period) and reaps it.
cleanup() {
  trap - EXIT INT TERM
  if ((${#PIDS[@]})); then
    echo
    echo "demo: stopping ${NAMES[*]}"
    stop_pids 5 "${PIDS[@]}"
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() { # name logfile command...
  local name="$1" log="$2"
  shift 2
  "$@" >"$log" 2>&1 &
  PIDS+=("$!")
  NAMES+=("$name")
}

wait_for() { # name logfile pid check-command...: up to 30 s
  wait_until_up demo "$1" "$2" "$3" 300 0.1 "${@:4}"
}

echo "demo: starting the OpenID Provider, the application, portcullis and Envoy (logs in $WORK)"

start provider "$WORK/idp.log" node "$ROOT/tests/idp/server.js" \
  --port "$IDP_PORT" --admin-port "$IDP_ADMIN_PORT"
wait_for provider "$WORK/idp.log" "${PIDS[-1]}" grep -q '^idp ready' "$WORK/idp.log"

start app "$WORK/app.log" python3 "$ROOT/deploy/demo/echo.py" "$APP_PORT"
wait_for app "$WORK/app.log" "${PIDS[-1]}" grep -q '^app ready' "$WORK/app.log"

start portcullis "$WORK/portcullis.log" "$PORTCULLIS" serve --config "$ROOT/deploy/demo/portcullis.yaml"
wait_for portcullis "$WORK/portcullis.log" "${PIDS[-1]}" \
  curl -sf "http://127.0.0.1:$AGENT_ADMIN_PORT/readyz"

# The committed sidecar config, with the client listener on loopback for the demo.
sed 's/{address: 0.0.0.0, port_value: 10000}/{address: 127.0.0.1, port_value: 10000}/' \
  "$ROOT/deploy/envoy/envoy.yaml" >"$WORK/envoy.yaml"
start envoy "$WORK/envoy.log" "$ENVOY" -c "$WORK/envoy.yaml" --concurrency 1 \
  --disable-hot-restart --log-level warn
wait_for envoy "$WORK/envoy.log" "${PIDS[-1]}" curl -sf "http://127.0.0.1:$ENVOY_ADMIN_PORT/ready"

cat <<EOF

portcullis demo is up:
  OpenID Provider  http://127.0.0.1:$IDP_PORT  (client portcullis-test / portcullis-test-secret)
  Envoy            http://127.0.0.1:$ENVOY_PORT  (admin http://127.0.0.1:$ENVOY_ADMIN_PORT)
  portcullis       gRPC 127.0.0.1:$AGENT_GRPC_PORT, admin http://127.0.0.1:$AGENT_ADMIN_PORT
  application      http://127.0.0.1:$APP_PORT  (echoes the request it receives)

Paste these into another terminal:

  # 1. A token from the provider (client credentials, RFC 9068 JWT, scope read:documents):
  TOKEN=\$(curl -s -u portcullis-test:portcullis-test-secret \\
    -d grant_type=client_credentials -d scope=read:documents -d resource=$AUDIENCE \\
    http://127.0.0.1:$IDP_PORT/token | sed -E 's/.*"access_token":"([^"]+)".*/\1/')

  # 2. Allowed: the application sees x-auth-subject/-issuer/-method/-scopes/-roles (the roles
  #    claim the provider puts in this client's tokens) and x-client-id (the token's client_id
  #    claim, deploy/demo/portcullis.yaml), no Authorization, and neither the x-auth-subject
  #    nor the x-client-id the client tried to forge:
  curl -s -H "Authorization: Bearer \$TOKEN" -H 'x-auth-subject: forged' \\
    -H 'x-client-id: forged' http://127.0.0.1:$ENVOY_PORT/documents

  # 3. Identity headers spelled with underscores are refused by Envoy (400): applications
  #    built on WSGI or CGI would read x_auth_subject as x-auth-subject:
  curl -si -H 'x_auth_subject: forged' http://127.0.0.1:$ENVOY_PORT/healthz

  # 4. No token: 401 with WWW-Authenticate and a JSON body:
  curl -si http://127.0.0.1:$ENVOY_PORT/documents

  # 5. The token lacks write:documents: 403 insufficient_scope:
  curl -si -X POST -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:$ENVOY_PORT/documents

Envoy's access log (with portcullis's decision metadata): $WORK/envoy.log
Press Ctrl-C to stop everything.
EOF

# Run until Ctrl-C, or until one of the components dies.
set +e
wait -n "${PIDS[@]}"
status=$?
set -e
for i in "${!PIDS[@]}"; do
  if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
    echo "demo: ${NAMES[$i]} exited (status $status); its log:" >&2
    tail -n 20 "$WORK/${NAMES[$i]/provider/idp}.log" >&2 || true
  fi
done
exit 1
