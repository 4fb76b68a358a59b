#!/usr/bin/env bash
# Put the body-camera software in place on a device (a Pi) or a station: `make install ROLE=device|station`.
#
#   scripts/install.sh device|station [--destdir DIR] [--no-venv]
#
# What it does (every step is safe to repeat; nothing that exists is overwritten except the program files):
#   - copies the project to /opt/bodycam and makes its virtualenv there (on a Pi with --system-site-packages
#     and the [pi] extra, so picamera2 and libcamera's bindings from the OS are visible);
#   - device: the `bodycam` user (groups video, gpio; the groups are created when the OS has none),
#     /etc/bodycam, the agent and uploader units;
#   - station: Mosquitto (apt) when absent, the `bodycam-station` user, /etc/bodycam-station, the receiver and
#     broker units;
#   - systemctl daemon-reload. Units are NOT enabled here: provisioning comes first (docs/provisioning.md).
#
# --destdir DIR installs below DIR instead of / and skips users, apt and systemctl (packaging and the tests);
# --no-venv skips the virtualenv.
set -euo pipefail

usage() { echo "usage: scripts/install.sh device|station [--destdir DIR] [--no-venv]" >&2; exit 2; }

role=${1:-}
[ "$role" = device ] || [ "$role" = station ] || usage
shift
destdir=""
venv=1
while [ $# -gt 0 ]; do
  case "$1" in
    --destdir) [ $# -ge 2 ] || usage; destdir=$(realpath -m "$2"); shift 2 ;;
    --no-venv) venv=0; shift ;;
    *) echo "install: unknown option $1" >&2; usage ;;
  esac
done

here=$(cd "$(dirname "$0")/.." && pwd)
prefix="$destdir/opt/bodycam"
say() { echo "install: $*"; }

if [ -z "$destdir" ] && [ "$(id -u)" != 0 ]; then
  echo "install: run as root (sudo make install ROLE=$role), or give --destdir" >&2
  exit 2
fi

# The program: the tracked files of this checkout (no virtualenv, caches or demo output).
install -d -m 0755 "$prefix"
if git -C "$here" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$here" && git ls-files -z | xargs -0 cp --parents -t "$prefix")
else
  (cd "$here" && tar --exclude=.venv --exclude=.demo --exclude='*_cache' --exclude=.git -cf - .) | tar -xf - -C "$prefix"
fi
say "program in $prefix"

# The services run as their own users: the virtualenv must sit on the system's Python, not one in a home folder.
python=${PYTHON:-/usr/bin/python3}
[ -x "$python" ] || python=python3
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "install: $python is missing or older than 3.11 (set PYTHON=)" >&2
  exit 2
fi

on_pi=0
if grep -qs "Raspberry Pi" /proc/device-tree/model; then on_pi=1; fi
# The exact, hash-checked versions of the lock files (docs/dependencies.md), then the program without
# dependencies. On a Pi, picamera2 and libcamera come from Raspberry Pi OS (python3-picamera2, matched to
# its libcamera), seen through --system-site-packages; requirements-pi.lock keeps NumPy on the OS's 1.x line.
if [ "$venv" = 1 ]; then
  if [ "$on_pi" = 1 ]; then
    "$python" -m venv --clear --system-site-packages "$prefix/.venv"
    lock="$prefix/requirements-pi.lock"
  else
    "$python" -m venv --clear "$prefix/.venv"
    lock="$prefix/requirements-station.lock"
  fi
  "$prefix/.venv/bin/python" -m pip install -q --require-hashes --no-deps -r "$lock"
  "$prefix/.venv/bin/python" -m pip install -q --no-deps --no-build-isolation "$prefix"
  if [ "$on_pi" = 1 ] && ! "$prefix/.venv/bin/python" -c 'import picamera2' 2>/dev/null; then
    echo "install: picamera2 cannot be imported: apt-get install python3-picamera2 (Raspberry Pi OS Bookworm)" >&2
  fi
  say "virtualenv in $prefix/.venv (from $(basename "$lock"))"
fi

units="$destdir/etc/systemd/system"
install -d -m 0755 "$units"
if [ "$role" = device ]; then
  wanted="bodycam-agent.service bodycam-sync.service"
  install -d -m 0755 "$destdir/etc/bodycam"
else
  wanted="bodycam-station.service bodycam-broker.service"
  install -d -m 0755 "$destdir/etc/bodycam-station"
fi
for unit in $wanted; do
  install -m 0644 "$here/systemd/$unit" "$units/$unit"
done
say "units: $wanted"

if [ -n "$destdir" ]; then
  say "--destdir: no users, packages or systemctl"
  exit 0
fi

group_exists() { getent group "$1" >/dev/null; }
if [ "$role" = device ]; then
  for group in video gpio bodycam; do
    group_exists "$group" || groupadd --system "$group"
  done
  if ! id bodycam >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/bodycam --no-create-home --shell /usr/sbin/nologin \
      --gid bodycam --groups video,gpio bodycam
  fi
  next="sudo $prefix/.venv/bin/bodycam-provision init --dir /etc/bodycam ... (docs/provisioning.md)"
else
  if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
  fi
  # The package's own broker would hold port 1883 with no TLS: the station's broker replaces it.
  if [ -d /run/systemd/system ]; then systemctl disable --now mosquitto.service 2>/dev/null || true; fi
  if ! id bodycam-station >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/bodycam-station --no-create-home --shell /usr/sbin/nologin \
      --user-group bodycam-station
  fi
  next="sudo $prefix/.venv/bin/bodycam-station init --dir /etc/bodycam-station ... (docs/provisioning.md)"
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
else
  say "systemd is not running here: run 'systemctl daemon-reload' once it is"
fi
say "done; next: $next"
