#!/usr/bin/env bash
# Create, or reuse, the Python environment of ct-lesion-d2 and make ./.venv use it.
#
# One environment is shared by every clone and CI run on a machine: it lives under
# $CT_LESION_ENV_ROOT (default ~/.cache/ct-lesion-d2), keyed by a hash of the requirements,
# this script, the detectron2._C placeholder and the chosen Detectron2 (an archive by its
# content), and it is rebuilt only when one of those changes. Each clone gets a tiny venv of
# its own at $CT_LESION_VENV (default ./.venv): no packages, only a .pth file that adds the
# shared environment's site-packages and the clone's root to sys.path, so that
# `.venv/bin/python tools/train_net.py ...` imports this clone's ct_lesion_d2 without
# PYTHONPATH, and clones never fight over an install in the shared environment.
#
# Detectron2, in this order:
# 1. $DETECTRON2_REQUIREMENT when set: a source archive or folder (a Detectron2 checkout), built
#    with its C++ operators (pip install --no-build-isolation), or any pip requirement;
#    "pb1-detectron2==0.6" selects route 3.
# 2. the official source from GitHub, built the same way, when GitHub can be reached;
# 3. the PyPI sdist pb1-detectron2==0.6 without its C++ extension, with a placeholder
#    detectron2._C whose functions raise an error naming the missing op, and Pillow<10 (0.6
#    uses Image.LINEAR, removed in Pillow 10).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
official=git+https://github.com/facebookresearch/detectron2.git
fallback=pb1-detectron2==0.6
fallback_pins=("Pillow<10")
placeholder="$repo/ct_lesion_d2/utils/detectron2_placeholder_C.py"
d2_req=${DETECTRON2_REQUIREMENT:-auto}
clone_venv=${CT_LESION_VENV:-$repo/.venv}

# What identifies the Detectron2 requirement in the key: an archive by its content, a folder
# by its path and git commit, anything else by its text.
if [ -f "$d2_req" ]; then
  d2_req=$(cd "$(dirname "$d2_req")" && pwd)/$(basename "$d2_req")
  d2_key=$(sha256sum "$d2_req" | cut -c1-16)
elif [ -d "$d2_req" ]; then
  d2_req=$(cd "$d2_req" && pwd)
  d2_key="$d2_req $(git -C "$d2_req" rev-parse HEAD 2>/dev/null || true)"
else
  d2_key=$d2_req
fi
case "$d2_req" in pb1-detectron2*|pb1_detectron2*) d2_req=$fallback; d2_key=$fallback ;; esac

key=$( (cat "$repo/requirements.txt" "$repo/tools/setup_env.sh" "$placeholder"; \
        echo "$d2_key"; "$python" --version) | sha256sum | cut -c1-16)
root=${CT_LESION_ENV_ROOT:-$HOME/.cache/ct-lesion-d2}
venv="$root/venv-$key"
mkdir -p "$root"

install_d2_fallback() {
  local tmp
  tmp=$(mktemp -d)
  echo "[setup_env] installing $fallback without its C++ extension (no detectron2._C)"
  "$venv/bin/pip" install "${fallback_pins[@]}"
  # The sdist's metadata step imports torch, hence --no-build-isolation.
  "$venv/bin/pip" download --no-deps --no-build-isolation --no-binary :all: "$fallback" -d "$tmp"
  tar -xzf "$tmp"/pb1-detectron2-*.tar.gz -C "$tmp"
  local src
  src=$(find "$tmp" -maxdepth 1 -type d -name 'pb1-detectron2-*' | head -n 1)
  # The sdist lacks the C++ sources: empty the extension list so the pure-Python part installs.
  sed -i 's/ext_modules=get_extensions(),/ext_modules=[],/' "$src/setup.py"
  grep -q 'ext_modules=\[\],' "$src/setup.py" || {
    echo "[setup_env] could not patch $src/setup.py (ext_modules)" >&2; exit 1; }
  "$venv/bin/pip" install --no-build-isolation "$src" "${fallback_pins[@]}"
  local pkg
  pkg=$("$venv/bin/python" -c 'import detectron2, os; print(os.path.dirname(detectron2.__file__))')
  cp "$placeholder" "$pkg/_C.py"
  rm -rf "$tmp"
}

install_d2_source() {
  # A source build: setup.py compiles detectron2._C against the installed torch.
  "$venv/bin/pip" install --no-build-isolation "$1"
  "$venv/bin/python" -c 'import detectron2._C' || {
    echo "[setup_env] $1 installed without its compiled detectron2._C (see the build log" \
         "above); unset DETECTRON2_REQUIREMENT or set it to $fallback for the fallback" >&2
    exit 1; }
}

pins=()
install_d2() {
  if [ "$d2_req" = "$fallback" ]; then
    install_d2_fallback
    pins=("${fallback_pins[@]}")
  elif [ "$d2_req" != auto ]; then
    echo "[setup_env] installing Detectron2 from DETECTRON2_REQUIREMENT=$d2_req"
    install_d2_source "$d2_req"
  elif timeout 20 git ls-remote "${official#git+}" HEAD >/dev/null 2>&1; then
    echo "[setup_env] installing Detectron2 from the official source"
    install_d2_source "$official"
  else
    echo "[setup_env] the official Detectron2 source cannot be reached"
    install_d2_fallback
    pins=("${fallback_pins[@]}")
  fi
}

(
  flock 9
  if [ ! -f "$venv/.complete" ]; then
    echo "[setup_env] building $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -r "$repo/requirements.txt"
    install_d2
    # Detectron2's own requirements must not lift the pins of requirements.txt.
    "$venv/bin/pip" install -r "$repo/requirements.txt" "${pins[@]}"
    "$venv/bin/python" -c 'import detectron2, torch; print("[setup_env] detectron2", detectron2.__version__, "torch", torch.__version__)'
    touch "$venv/.complete"
  fi
) 9>"$venv.lock"

bash "$repo/tools/link_env.sh" "$venv" "$clone_venv" "$repo"
