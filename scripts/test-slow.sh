#!/usr/bin/env bash
# `make test-slow` (or `scripts/test-slow.sh [PATHS]`): every test file with slow tests runs in its own pytest process.
#
# The slow tests start servers, DDP process groups, MuJoCo renderers and torch.compile; sharing one process
# let a CI run hang once with no traceback (a thread stuck in native code never sees pytest-timeout's
# signal). Separate processes keep one file's threads and native state away from the next, and the
# thread-method timeout (pyproject.toml) prints every thread's stack and ends a hung file instead of the whole CI budget.
set -uo pipefail
PY="${PY:-.venv/bin/python}"
TIMEOUT_S="${SLOW_TEST_TIMEOUT_S:-900}"  # per test; the slowest (the quick demo, the MT10 expert) take about a minute

collected=$("$PY" -m pytest -m slow --collect-only -q -p no:cacheprovider "$@")
rc=$?
if [ $rc -eq 5 ]; then
  echo "no slow tests collected"
  exit 0
elif [ $rc -ne 0 ]; then  # an import or collection error must fail the target, not look like "no tests"
  echo "$collected"
  echo "collecting the slow tests failed (exit $rc)"
  exit $rc
fi
files=$(echo "$collected" | grep '::' | cut -d: -f1 | sort -u)
failed=()
for file in $files; do
  echo "== $file"
  "$PY" -m pytest -m slow -q -p no:cacheprovider --timeout "$TIMEOUT_S" "$file" \
    || failed+=("$file")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "slow tests failed in: ${failed[*]}"
  exit 1
fi
echo "all slow test files passed"
