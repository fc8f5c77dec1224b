#!/usr/bin/env bash
# Inkframe Studio, one click: make .venv on the first run, install what is missing, start the studio.
#   ./launch.sh [app.py arguments]     e.g. ./launch.sh --port 7861 --no-browser, ./launch.sh doctor
#   ./launch.sh test [pytest arguments] installs the test extras too and runs the test suite
#   ./launch.sh which-python            which Python a new .venv would use (64-bit 3.10 to 3.14, the newest found)
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

# Python 3.10 to 3.14, 64-bit: every dependency publishes wheels for these. 3.15 is refused until checked.
PY_MINOR_MIN=10
PY_MINOR_MAX=14
SUPPORTED_TEXT="64-bit Python 3.$PY_MINOR_MIN to 3.$PY_MINOR_MAX"
# What the launcher asks each interpreter; the rule itself is decided here, in python_fits.
PROBE='import struct, sys; print(sys.version_info[0], sys.version_info[1], struct.calcsize("P") * 8)'
# The names looked for on PATH; among those that fit, the newest version wins.
PYTHON_NAMES="python3.14 python3.13 python3.12 python3.11 python3.10 python3 python"

# "MAJOR MINOR BITS" of an interpreter, or nothing when it does not run (pyenv shims for versions
# that are not active fail, and so do broken links).
python_probe() { "$1" -c "$PROBE" </dev/null 2>/dev/null | head -n 1; }

# 0 when "MAJOR MINOR BITS" is a supported Python; otherwise prints why not.
python_fits() {
    local major="${1:-}" minor="${2:-}" bits="${3:-}"
    case "$major.$minor.$bits" in
        *[!0-9.]* | .* | *..* | *.) echo "does not report a version"; return 1 ;;
    esac
    if [ "$major" -ne 3 ] || [ "$minor" -lt "$PY_MINOR_MIN" ]; then
        echo "$major.$minor is too old"
    elif [ "$minor" -gt "$PY_MINOR_MAX" ]; then
        echo "$major.$minor is newer than the studio has been checked with"
    elif [ "$bits" -ne 64 ]; then
        echo "$major.$minor is a 32-bit build"
    else
        return 0
    fi
    return 1
}

# Sets BASE_PY and BASE_VERSION to the newest supported Python on PATH, and REJECTED to what was
# found but does not fit ("python3 (3.9 is too old)"); returns 1 when none fits.
find_base_python() {
    local name probe why best_minor=-1 seen=" "
    BASE_PY=""
    BASE_VERSION=""
    REJECTED=""
    for name in $PYTHON_NAMES; do
        command -v "$name" >/dev/null 2>&1 || continue
        probe="$(python_probe "$name")"
        [ -n "$probe" ] || continue
        # shellcheck disable=SC2086  # three words: major, minor, bits
        if why="$(python_fits $probe)"; then
            set -- $probe
            if [ "$2" -gt "$best_minor" ]; then
                best_minor="$2"
                BASE_PY="$name"
                BASE_VERSION="$1.$2"
            fi
        else
            case "$seen" in *" $why "*) continue ;; esac
            seen="$seen$why "
            REJECTED="${REJECTED:+$REJECTED, }$name ($why)"
        fi
    done
    [ -n "$BASE_PY" ]
}

# The command that installs a supported Python on this system.
python_install_hint() {
    if [ "$(uname -s 2>/dev/null)" = Darwin ]; then
        if command -v brew >/dev/null 2>&1; then
            echo "brew install python@3.13"
        else
            echo "the macOS installer from https://www.python.org/downloads/ (or Homebrew, then: brew install python@3.13)"
        fi
    elif command -v apt-get >/dev/null 2>&1; then
        echo "sudo apt install python3 python3-venv (where that Python is older than 3.10, as on Ubuntu 20.04: sudo add-apt-repository ppa:deadsnakes/ppa && sudo apt install python3.12 python3.12-venv)"
    elif command -v dnf >/dev/null 2>&1; then
        echo "sudo dnf install python3.12"
    elif command -v pacman >/dev/null 2>&1; then
        echo "sudo pacman -S python"
    elif command -v zypper >/dev/null 2>&1; then
        echo "sudo zypper install python312"
    else
        echo "your system's package manager, or the installer from https://www.python.org/downloads/"
    fi
}

unsupported_python_message() {
    local found="none was found on PATH"
    [ -n "$REJECTED" ] && found="found only $REJECTED"
    echo "Inkframe Studio needs $SUPPORTED_TEXT and $found; install one with: $(python_install_hint); then run ./launch.sh again."
}

# 0: the venv is usable; 3: its python works but a needed package is missing; anything else: broken.
venv_state() {
    "$PY" - "$PY_MINOR_MIN" "$PY_MINOR_MAX" "$@" >/dev/null 2>&1 <<'EOF'
import importlib.util, sys
low, high, *modules = sys.argv[1:]
if not (3, int(low)) <= sys.version_info[:2] <= (3, int(high)) or importlib.util.find_spec("pip") is None:
    sys.exit(2)
sys.exit(3 if any(importlib.util.find_spec(name) is None for name in modules) else 0)
EOF
}

create_venv() {
    find_base_python || die "$(unsupported_python_message)"
    say "creating .venv with $BASE_PY (Python $BASE_VERSION)"
    if ! "$BASE_PY" -m venv "$VENV"; then
        rm -rf -- "$VENV"
        die "could not create .venv with $BASE_PY; on Debian or Ubuntu install the venv package for it (sudo apt install python$BASE_VERSION-venv) and run ./launch.sh again."
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
if [ "${1:-}" = "which-python" ]; then
    # Which Python a new .venv would be made with, and what else was found; changes nothing.
    if find_base_python; then
        echo "$BASE_PY (Python $BASE_VERSION)${REJECTED:+; not used: $REJECTED}"
        exit 0
    fi
    die "$(unsupported_python_message)"
fi
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
