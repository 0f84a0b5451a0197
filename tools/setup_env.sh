#!/usr/bin/env bash
# Create, or reuse, the Python environment of ct-lesion-d2 and link it at ./.venv.
#
# One environment is shared by every clone and CI run on a machine: it lives under
# $CT_LESION_ENV_ROOT (default ~/.cache/ct-lesion-d2), keyed by a hash of the requirements,
# this script, the detectron2._C placeholder and the chosen Detectron2 requirement, and it is
# rebuilt only when one of those changes. The project itself is not installed into it (the
# Makefile puts the checkout on PYTHONPATH), so clones never fight over an editable install.
#
# Detectron2: $DETECTRON2_REQUIREMENT (a pip requirement or a local source path) is installed
# when set; otherwise the official GitHub source is tried, and where it cannot be reached the
# PyPI sdist pb1-detectron2==0.6 is installed without its C++ extension, with a placeholder
# detectron2._C whose functions raise an error naming the missing op.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
official=git+https://github.com/facebookresearch/detectron2.git
fallback=pb1-detectron2==0.6
placeholder="$repo/ct_lesion_d2/utils/detectron2_placeholder_C.py"
d2_req=${DETECTRON2_REQUIREMENT:-auto}

key=$( (cat "$repo/requirements.txt" "$repo/tools/setup_env.sh" "$placeholder"; \
        echo "$d2_req"; "$python" --version) | sha256sum | cut -c1-16)
root=${CT_LESION_ENV_ROOT:-$HOME/.cache/ct-lesion-d2}
venv="$root/venv-$key"
mkdir -p "$root"

install_d2_fallback() {
  local tmp
  tmp=$(mktemp -d)
  echo "[setup_env] installing $fallback without its C++ extension (no detectron2._C)"
  # The sdist's metadata step imports torch, hence --no-build-isolation.
  "$venv/bin/pip" download --no-deps --no-build-isolation --no-binary :all: "$fallback" -d "$tmp"
  tar -xzf "$tmp"/pb1-detectron2-*.tar.gz -C "$tmp"
  local src
  src=$(find "$tmp" -maxdepth 1 -type d -name 'pb1-detectron2-*' | head -n 1)
  # The sdist lacks the C++ sources: empty the extension list so the pure-Python part installs.
  sed -i 's/ext_modules=get_extensions(),/ext_modules=[],/' "$src/setup.py"
  grep -q 'ext_modules=\[\],' "$src/setup.py" || {
    echo "[setup_env] could not patch $src/setup.py (ext_modules)" >&2; exit 1; }
  "$venv/bin/pip" install --no-build-isolation "$src"
  local pkg
  pkg=$("$venv/bin/python" -c 'import detectron2, os; print(os.path.dirname(detectron2.__file__))')
  cp "$placeholder" "$pkg/_C.py"
  rm -rf "$tmp"
}

install_d2() {
  if [ "$d2_req" != auto ]; then
    echo "[setup_env] installing Detectron2 from DETECTRON2_REQUIREMENT=$d2_req"
    "$venv/bin/pip" install --no-build-isolation "$d2_req"
  elif timeout 20 git ls-remote "${official#git+}" HEAD >/dev/null 2>&1; then
    echo "[setup_env] installing Detectron2 from the official source"
    "$venv/bin/pip" install --no-build-isolation "$official"
  else
    echo "[setup_env] the official Detectron2 source cannot be reached"
    install_d2_fallback
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
    "$venv/bin/pip" install -r "$repo/requirements.txt"
    "$venv/bin/python" -c 'import detectron2, torch; print("[setup_env] detectron2", detectron2.__version__, "torch", torch.__version__)'
    touch "$venv/.complete"
  fi
) 9>"$venv.lock"

ln -sfn "$venv" "$repo/.venv"
echo "[setup_env] environment ready: $repo/.venv -> $venv"
