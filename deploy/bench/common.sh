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
