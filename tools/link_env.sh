#!/usr/bin/env bash
# Make DEST a tiny venv that uses the packages of the shared environment SHARED and imports
# the project from ROOT: a .pth file in its site-packages adds both to sys.path. Nothing is
# installed into SHARED, so any number of clones can use it at once.
#
#     bash tools/link_env.sh SHARED DEST ROOT
set -euo pipefail
shared=$1 dest=$2 root=$(cd "$3" && pwd)

# An older set-up linked .venv to the shared environment itself: remove the link only.
[ -L "$dest" ] && rm "$dest"
if [ ! -x "$dest/bin/python" ] || ! "$dest/bin/python" -c '' 2>/dev/null; then
  rm -rf "$dest"
  "$shared/bin/python" -m venv --without-pip "$dest"
fi
site=$("$shared/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
own=$("$dest/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# Lines starting with "import" run; addsitedir also reads the shared environment's .pth files.
printf 'import site; site.addsitedir(%s)\n%s\n' "'$site'" "$root" > "$own/ct_lesion_d2_env.pth"
echo "$shared" > "$dest/shared-environment"
echo "[setup_env] environment ready: $dest (packages of $shared, project $root)"
