#!/bin/sh
# Print the path of a Python >= 3.12 (mitmproxy 12 needs it), or explain and fail.
# Looks at $PYTHON, then python3.13/python3.12/python3 on PATH, then pyenv's versions.
set -u

suitable() {
    "$1" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1
}

candidates="${PYTHON:-} python3.13 python3.12 python3"
pyenv_root=$( (pyenv root) 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
for version_dir in $(ls -d "$pyenv_root"/versions/3.1[2-9]* 2>/dev/null | sort -rV); do
    candidates="$candidates $version_dir/bin/python3"
done
candidates="$candidates /usr/local/bin/python3.13 /usr/local/bin/python3.12 /usr/bin/python3.13 /usr/bin/python3.12"

for candidate in $candidates; do
    path=$(command -v "$candidate" 2>/dev/null) || continue
    if suitable "$path"; then
        echo "$path"
        exit 0
    fi
done

cat >&2 <<MESSAGE
error: no Python >= 3.12 with the venv module was found (mitmproxy 12 needs it).
Looked at: \$PYTHON, python3.13, python3.12 and python3 on PATH, $pyenv_root/versions/3.12+.
Install one (e.g. 'pyenv install 3.12', or Debian's python3.12 and python3.12-venv)
or point PYTHON at it:  make PYTHON=/path/to/python3.12 test
MESSAGE
exit 1
