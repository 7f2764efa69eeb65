#!/usr/bin/env bash
# The GPU check as one command for a lent GPU machine (docs/gpu.md):
#   bash bench/checks/gpu_check.sh OUT_DIR [gpu_check.py options]
# Unbuffered; after LIMIT_S seconds (default 540, inside a 10-minute call) SIGTERM stops it and
# it still writes the table and report of the rows so far (killed 30 s later if it hangs); the
# whole log is kept beside the folder as OUT_DIR.log.
set -o pipefail
out="${1:?usage: gpu_check.sh OUT_DIR [options]}"
shift
mkdir -p "$(dirname "$out")"
PYTHONUNBUFFERED=1 timeout -k 30 "${LIMIT_S:-540}" python3 "$(dirname "$0")/gpu_check.py" "$out" "$@" \
  2>&1 | tee "$out.log"
