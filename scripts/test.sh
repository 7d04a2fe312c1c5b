#!/usr/bin/env bash
# The project's test command: lint, type-check, then the test suite. Arguments go to pytest.
# Every step blocks: the code is kept ruff- and mypy-clean.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -f .venv/bin/activate ]]; then
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi

echo "== ruff check tuner api tests"
ruff check tuner api tests
echo "== mypy (packages from pyproject.toml)"
mypy
echo "== pytest"
rc=0
python -m pytest -q --timeout=600 -p no:cacheprovider "$@" || rc=$?
if ((rc == 5)); then
  echo "scripts/test.sh: pytest collected no tests (exit code 5); that is a failure" >&2
fi
exit "$rc"
