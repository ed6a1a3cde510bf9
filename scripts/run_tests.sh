#!/usr/bin/env bash
# The whole test suite in two lanes run side by side: the fleet test (three KCL daemons on one stream,
# about 10 minutes spent mostly waiting on the KCL's lease timers: failover, lease assignment, the leader
# lock's 120 s) and everything else. `make test` then takes about the longer lane, not the sum.
#
#   scripts/run_tests.sh [pytest arguments for both lanes]
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
FLEET=tests/integration/test_fleet.py
lane="$(mktemp -d -t streamkpi-fleet-lane.XXXXXX)"
"$BIN/pytest" "$FLEET" -p no:cacheprovider --basetemp "$lane/tmp" "$@" >"$lane/pytest.log" 2>&1 &
fleet=$!
"$BIN/pytest" --ignore "$FLEET" "$@"
main=$?
wait "$fleet"
fleet_status=$?
echo "---- fleet lane: $FLEET (log $lane/pytest.log) ----"
if [ "$fleet_status" -eq 0 ]; then tail -n 3 "$lane/pytest.log"; else cat "$lane/pytest.log"; fi
[ "$main" -eq 0 ] && [ "$fleet_status" -eq 0 ]
