#!/usr/bin/env bash
# The layering rule of docs (style.md, "Where the next capabilities land"): every `crate::`
# path in non-test code must point down this list, never up or sideways, so the module graph
# stays a DAG.
#
#   main → app → admin → app::state → {grpc, http, listener, envoy_filter} → service
#        → tools (the offline explain/test tools, used by main only)
#        → {engine, telemetry} → config → {authn, authz, revocation}
#        → {input, decision, error, fetch, watch, proto} → identity
#
# (`config` compiles into the settings types of authn and authz, so it sits just above them.)
# The decision core (engine, authn, authz, revocation, decision, input, identity) also never
# names tonic, prost or the generated protos.
#
# Test code is exempt from the order (a test may start the whole agent): `#[cfg(test)]` modules
# written at the top level of a file, and files named tests.rs or testing.rs. The tonic rule
# holds for the core's tests too.
#
# Usage: deploy/ci/layers.sh [source dir, default src]. Prints each wrong-way import as
# file:line, exits 1 when there is one.
set -euo pipefail

src=${1:-src}

awk '
BEGIN {
    n = split("app=90 admin=80 app::state=70 grpc=60 http=60 listener=60 envoy_filter=60 " \
              "service=50 tools=45 engine=40 telemetry=40 config=35 authn=30 authz=30 revocation=30 " \
              "input=10 decision=10 error=10 fetch=10 watch=10 proto=10 identity=5", pairs, " ")
    for (i = 1; i <= n; i++) { split(pairs[i], kv, "="); rank[kv[1]] = kv[2] }
    n = split("engine authn authz revocation decision input identity", names, " ")
    for (i = 1; i <= n; i++) core[names[i]] = 1
    failed = 0
}
# The module a file belongs to: src/engine.rs → engine, src/authn/jwt.rs → authn,
# src/app/state.rs → app::state.
FNR == 1 {
    path = FILENAME
    sub("^.*/src/", "", path); sub("^src/", "", path)
    if (path ~ /^app\/state(\.rs|\/)/) module = "app::state"
    else { module = path; sub(/\/.*$/, "", module); sub(/\.rs$/, "", module) }
    skip_file = (path ~ /(^|\/)(tests|testing)\.rs$/ || module == "lib" || module == "main")
    pending_test = 0; in_test = 0
}
# A top-level `#[cfg(test)] mod name {` ... `}` block (rustfmt closes it at column 0).
/^#\[cfg\(test\)\]/ { pending_test = 1; next }
pending_test && /^(pub(\([a-z]+\))? )?mod [a-z_]+ \{/ { in_test = 1; pending_test = 0; next }
{ pending_test = 0 }
/^[[:space:]]*\/\// { next }
{
    line = $0
    sub(/[[:space:]]\/\/.*$/, "", line)
    # Tests of the core included: they never need tonic either.
    if (core[module] && line ~ /(^|[^[:alnum:]_])(tonic|prost)::|use (tonic|prost)|crate::proto/) {
        printf "%s:%d: %s must not use tonic, prost or the generated protos: %s\n", FILENAME, FNR, module, $0
        failed = 1
    }
}
skip_file { next }
in_test { if ($0 ~ /^\}/) in_test = 0; next }
{
    if (line ~ /crate::\{/) {
        printf "%s:%d: write one `use crate::module::...` per module (the layer check reads them): %s\n", FILENAME, FNR, $0
        failed = 1
    }
    rest = line
    while (match(rest, /crate::[a-z_]+(::[A-Za-z_]+)?/)) {
        found = substr(rest, RSTART, RLENGTH)
        target = substr(rest, RSTART + 7, RLENGTH - 7)
        rest = substr(rest, RSTART + RLENGTH)
        if (target != "app::state") sub(/::.*$/, "", target)
        if (target == module || (module == "app" && target == "app::state")) continue
        if ((module " " found) in tolerated) continue
        if (!(module in rank) || !(target in rank)) {
            printf "%s:%d: %s or %s is missing from the layer list of deploy/ci/layers.sh\n", FILENAME, FNR, module, target
            failed = 1
        } else if (rank[target] >= rank[module]) {
            printf "%s:%d: %s must not import %s (wrong way, style.md layering): %s\n", FILENAME, FNR, module, target, $0
            failed = 1
        }
    }
}
END { exit failed }
' $(find "$src" -name '*.rs' | sort)
