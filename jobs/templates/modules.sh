
# --- software: environment modules -----------------------------------------------------------
# {{modules_source}}
if ! command -v module >/dev/null 2>&1 && [ -f /etc/profile.d/modules.sh ]; then
    # shellcheck disable=SC1091
    source /etc/profile.d/modules.sh
fi
command -v module >/dev/null 2>&1 || die "no environment modules here (no \`module\` command) to load {{modules}}; render with --modules '' and put CUDA and MPI on PATH yourself"
module load {{modules}}
