# Sourced by scripts/demo and scripts/test: make sure .venv exists and holds this checkout's vitune.
# Reinstalls when pyproject.toml or the constraints file is newer than the last install.
# VITUNE_CONSTRAINTS= (empty) lets pip choose torch/torchvision freely, for machines other than this project's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${VITUNE_VENV:-.venv}
CONSTRAINTS=${VITUNE_CONSTRAINTS-constraints.txt}
stamp="$VENV/.vitune-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || { [ -n "$CONSTRAINTS" ] && [ "$CONSTRAINTS" -nt "$stamp" ]; }; then
    echo "setting up $VENV (first time: about 4 minutes and 6.5 GB with torch and the quickstart extra)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet ${CONSTRAINTS:+-c "$CONSTRAINTS"} -e '.[test,quickstart]'
    touch "$stamp"
fi
