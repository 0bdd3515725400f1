#!/usr/bin/env bash
# Regenerate docs/images/dashboard-run.png: the run page of a real `fedloom federation up`, at 1366x768,
# taken by the Playwright test (needs playwright and /usr/bin/chromium).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python}"
FEDLOOM_DASHBOARD_SCREENSHOT="$root/docs/images/dashboard-run.png" PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" \
  "$python" -m pytest -q -x -p no:cacheprovider "$root/tests/dashboard/test_dashboard_browser.py"
echo "wrote $root/docs/images/dashboard-run.png"
