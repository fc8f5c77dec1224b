#!/usr/bin/env bash
# Inkframe Studio, one click: make .venv on the first run, install what is missing, start the studio.
#   ./launch.sh [app.py arguments]     e.g. ./launch.sh --port 7861 --no-browser, ./launch.sh doctor
#   ./launch.sh test [pytest arguments] installs the test extras too and runs the test suite
# Environment: INKFRAME_TORCH_INDEX=<url> installs torch from that index instead (e.g. the CPU-only
# https://download.pytorch.org/whl/cpu); changing it later reinstalls torch.
set -euo pipefail

# Torch is installed before requirements.txt, and pinned here so that launch.sh and launch.bat agree.
TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"
# PyPI's Linux torch 2.14 is a CUDA 13 build: it runs on the CPU too, and on Turing or newer GPUs with driver
# 580+. Only PyTorch's CUDA 12.6 build still has kernels for older cards such as the GTX 1060, so those get it.
TORCH_LEGACY_GPU_INDEX="https://download.pytorch.org/whl/cu126"

cd -- "$(dirname -- "${BASH_SOURCE[0]}")"
ROOT="$PWD"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
TORCH_STAMP="$VENV/.inkframe-torch"
RUNTIME_STAMP="$VENV/.inkframe-requirements"
DEV_STAMP="$VENV/.inkframe-requirements-dev"

say() { printf 'launch.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

SUPPORTED_CHECK='import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)'

python_fits() { "$1" -c "$SUPPORTED_CHECK" >/dev/null 2>&1; }

find_base_python() {
    local candidate
    for candidate in python3.12 python3.11 python3.10 python3; do
        # A name on PATH may still fail to run (pyenv shims for versions that are not active do).
        if command -v "$candidate" >/dev/null 2>&1 && python_fits "$candidate"; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

unsupported_python_message() {
    local found=""
    if command -v python3 >/dev/null 2>&1; then
        found="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)"
    fi
    if [ -n "$found" ]; then
        echo "Inkframe Studio needs Python 3.10, 3.11 or 3.12 but python3 here is $found; install one of those (python.org or your package manager) and run ./launch.sh again."
    else
        echo "Inkframe Studio needs Python 3.10, 3.11 or 3.12 and none was found on PATH; install one of those (python.org or your package manager) and run ./launch.sh again."
    fi
}

# 0: the venv is usable; 3: its python works but a needed package is missing; anything else: broken.
venv_state() {
    "$PY" - "$@" >/dev/null 2>&1 <<'EOF'
import importlib.util, sys
if not (3, 10) <= sys.version_info[:2] <= (3, 12) or importlib.util.find_spec("pip") is None:
    sys.exit(2)
sys.exit(3 if any(importlib.util.find_spec(name) is None for name in sys.argv[1:]) else 0)
EOF
}

create_venv() {
    local base
    base="$(find_base_python)" || die "$(unsupported_python_message)"
    say "creating .venv with $base ($("$base" -c 'import sys; print(sys.version.split()[0])'))"
    if ! "$base" -m venv "$VENV"; then
        rm -rf -- "$VENV"
        die "could not create .venv with $base; on Debian or Ubuntu install the venv package for it (e.g. sudo apt install python3-venv) and run ./launch.sh again."
    fi
}

# The machine's pip config may name index locations that do not exist, and pip warns about each one on
# every run; drop exactly those lines. pip's stdout stays on stdout, its stderr on stderr, and its exit
# status is the function's (pipefail; grep's own status is ignored).
pip_quiet() {
    { "$PY" -m pip "$@" 2>&1 1>&3 3>&- | { grep -v "^WARNING: Location '.*' is ignored" || true; } >&2 3>&-; } 3>&1
}
pip_install() { pip_quiet install -q --disable-pip-version-check "$@"; }

stamp_matches() { [ -f "$1" ] && [ "$(cat -- "$1")" = "$2" ]; }
write_stamp() { printf '%s\n' "$2" >"$1.tmp" && mv -f -- "$1.tmp" "$1"; }
files_key() { cat -- "$@" | cksum; }

# Exit 0 when every name==version in TORCH_SPEC is installed (ignoring a +cu130-style local tag) and imports.
torch_pinned_ok() {
    # shellcheck disable=SC2086  # TORCH_SPEC is a list of requirement words
    "$PY" - $TORCH_SPEC >/dev/null 2>&1 <<'EOF'
import importlib, importlib.metadata as metadata, sys
for requirement in sys.argv[1:]:
    name, _, wanted = requirement.partition("==")
    if metadata.version(name).split("+")[0] != wanted:
        sys.exit(1)
    importlib.import_module(name)
EOF
}

torch_index() {
    if [ -n "${INKFRAME_TORCH_INDEX:-}" ]; then
        printf '%s\n' "$INKFRAME_TORCH_INDEX"
        return 0
    fi
    command -v nvidia-smi >/dev/null 2>&1 || return 0
    local gpu capability driver major minor
    gpu="$(nvidia-smi --query-gpu=compute_cap,driver_version --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' \r')" || true
    capability="${gpu%%,*}"
    driver="${gpu#*,}"
    driver="${driver%%.*}"
    major="${capability%%.*}"
    minor="${capability#*.}"
    case "$major.$minor" in
        *[!0-9.]* | .* | *.) return 0 ;;  # no GPU, or a driver too old to report it
    esac
    if [ $((major * 10 + minor)) -lt 75 ]; then
        say "found a GPU with compute capability $capability; using PyTorch's CUDA 12.6 build, the last one that supports it"
        printf '%s\n' "$TORCH_LEGACY_GPU_INDEX"
    elif [ -n "$driver" ] && [ "$driver" -eq "$driver" ] 2>/dev/null && [ "$driver" -lt 580 ]; then
        say "note: PyPI's torch needs NVIDIA driver 580 or newer to use the GPU and this one is $driver; update the driver, or run INKFRAME_TORCH_INDEX=$TORCH_LEGACY_GPU_INDEX ./launch.sh"
    fi
}

install_torch() {
    local index key previous_index
    index="$(torch_index 2>/dev/null)"
    key="$TORCH_SPEC|$index"
    if [ "$REPAIR" = no ] && stamp_matches "$TORCH_STAMP" "$key"; then
        return 0
    fi
    previous_index=""
    [ -f "$TORCH_STAMP" ] && previous_index="$(cut -d '|' -f 2- <"$TORCH_STAMP")"
    if [ "$previous_index" = "$index" ] && torch_pinned_ok; then
        write_stamp "$TORCH_STAMP" "$key"
        return 0
    fi
    # The same version from another index is another build (CPU, CUDA 12.6, ...), and a broken install
    # still counts as installed: pip would keep either as "already satisfied", so remove it first.
    pip_quiet uninstall -y -q torch torchvision >/dev/null 2>&1 || true
    local index_args=()
    [ -n "$index" ] && index_args=(--index-url "$index")
    torch_index >/dev/null  # again, for its notes about the GPU
    say "installing $TORCH_SPEC${index:+ from $index} (this can take several minutes and download a few GB)"
    # shellcheck disable=SC2086  # TORCH_SPEC is a list of requirement words
    pip_install ${index_args[@]+"${index_args[@]}"} $TORCH_SPEC || die "pip could not install $TORCH_SPEC; see pip's message above."
    write_stamp "$TORCH_STAMP" "$key"
}

install_requirements() {
    local stamp="$1" file="$2" key
    shift 2
    key="$(files_key "$@")"
    stamp_matches "$stamp" "$key" && return 0
    say "installing $file"
    pip_install -r "$file" || die "pip could not install $file; see pip's message above."
    write_stamp "$stamp" "$key"
}

MODE="run"
if [ "${1:-}" = "test" ]; then
    MODE="test"
    shift
fi
NEEDED_MODULES=(torch torchvision gradio)
[ "$MODE" = test ] && NEEDED_MODULES+=(pytest playwright)

REPAIR=no
state=missing
[ -e "$PY" ] && { state=0; venv_state "${NEEDED_MODULES[@]}" || state=$?; }
case "$state" in
    0) ;;
    3)
        say "a package is missing from .venv; reinstalling"
        REPAIR=yes
        rm -f -- "$RUNTIME_STAMP" "$DEV_STAMP"
        ;;
    *)
        [ -e "$VENV" ] && say ".venv is broken or uses an unsupported Python; recreating it"
        rm -rf -- "$VENV"
        create_venv
        ;;
esac

install_torch
install_requirements "$RUNTIME_STAMP" requirements.txt requirements.txt
if [ "$MODE" = test ]; then
    install_requirements "$DEV_STAMP" requirements-dev.txt requirements.txt requirements-dev.txt
fi

# Children (tests that start the studio, pip, playwright) see the venv as the active environment.
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"

if [ "$MODE" = test ]; then
    exec "$PY" -m pytest "$@"
fi
exec "$PY" app.py "$@"
