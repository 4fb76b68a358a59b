#!/usr/bin/env bash
# Create the project's virtualenv and install exactly what requirements.lock pins (hash-checked), then the
# package itself, editable and without dependencies. When the lock or pyproject.toml changes, the virtualenv is
# made anew, so it never holds a package the lock does not name (docs/dependencies.md).
# On a fresh Debian/Ubuntu machine this also installs what Python's venv needs (python3-venv) via apt.
set -euo pipefail
venv=${1:-.venv}
python=${PYTHON:-python3}

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "bootstrap: $python is missing or older than 3.11; install Python 3.11 or set PYTHON=" >&2
  exit 2
fi

apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "bootstrap: need the Debian packages: $* (run as root or install them, then retry)" >&2
    exit 2
  fi
  echo "bootstrap: installing $* with apt-get" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

lock=requirements.lock
stamp="$venv/.installed"
want=$(cat "$lock" pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  rm -rf "$venv"
  if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    ver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    apt_install "python${ver}-venv"
    "$python" -m venv "$venv"
  fi
  echo "bootstrap: installing $lock into $venv" >&2
  # The venv's own pip: hash-checking mode needs nothing newer, and a pip upgrade would be an unpinned download.
  "$venv/bin/python" -m pip install -q --require-hashes --no-deps -r "$lock"
  "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi

# The sync tests start their own Mosquitto from the Debian package's binary (/usr/sbin is not on every PATH).
# The package's own service is not used; if apt starts it, it listens on its own port and does no harm.
if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
  if [ "$(id -u)" = 0 ] || [ -n "${CI:-}" ]; then
    apt_install mosquitto
  else
    echo "bootstrap: mosquitto is not installed; the broker tests will be skipped (as root: apt-get install mosquitto)" >&2
  fi
fi
