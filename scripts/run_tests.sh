#!/usr/bin/env bash
# The whole test suite in two lanes run side by side: the fleet lane (the fleet test: three KCL daemons on
# one stream, about 10 minutes spent mostly waiting on the KCL's lease timers: failover, lease assignment,
# the leader lock's 120 s; then the image test: build the worker image with podman and run it, a few
# minutes) and everything else. `make test` then takes about the longer lane, not the sum.
#
#   scripts/run_tests.sh [pytest arguments for both lanes]
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
FLEET=tests/integration/test_fleet.py
IMAGE=tests/integration/test_image.py
lane="$(mktemp -d -t streamkpi-fleet-lane.XXXXXX)"
# One pytest run, so the two run one after the other (and share one local stack).
"$BIN/pytest" "$FLEET" "$IMAGE" -p no:cacheprovider --basetemp "$lane/tmp" "$@" >"$lane/pytest.log" 2>&1 &
fleet=$!
"$BIN/pytest" --ignore "$FLEET" --ignore "$IMAGE" "$@"
main=$?
wait "$fleet"
fleet_status=$?
echo "---- fleet lane: $FLEET $IMAGE (log $lane/pytest.log) ----"
if [ "$fleet_status" -eq 0 ]; then tail -n 3 "$lane/pytest.log"; else cat "$lane/pytest.log"; fi
[ "$main" -eq 0 ] && [ "$fleet_status" -eq 0 ]
