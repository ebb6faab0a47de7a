#!/bin/sh
# The browser for the real-browser tests (tests/browser.py): Debian's chromium, driven by
# Playwright. Never Playwright's own browser download (`playwright install`): CI reaches
# only the PyPI, Debian and npm registries. Idempotent: a working chromium is kept.
#
#     sh deploy/install_browser.sh        (`make browser`; `make test` runs it)
#
# TAO_CHROMIUM (as in tests/browser.py) names another binary: it is checked, never installed.
set -eu

CHROMIUM=${TAO_CHROMIUM:-/usr/bin/chromium}

if [ -x "$CHROMIUM" ] && "$CHROMIUM" --version 2>/dev/null; then
    exit 0
fi
if [ -n "${TAO_CHROMIUM:-}" ]; then
    echo "install_browser: TAO_CHROMIUM=$TAO_CHROMIUM does not run ('$TAO_CHROMIUM --version' fails);" >&2
    echo "install_browser: unset it to use Debian's chromium (/usr/bin/chromium) instead." >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: installing Debian's chromium with apt-get (a few minutes on first use)"
    # apt and dpkg talk even with -qq (debconf notes, unpacking lines): shown only on failure.
    log=$(mktemp)
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "install_browser: apt-get could not install chromium (output above)" >&2
        exit 1
    fi
    rm -f "$log"
else
    echo "install_browser: $CHROMIUM is missing or does not run, and this is not root with apt-get." >&2
    echo "install_browser: install Debian's chromium package (as root: apt-get install chromium)," >&2
    echo "install_browser: or point TAO_CHROMIUM at a Chromium binary for tests/browser.py." >&2
    exit 1
fi

# Debian's launcher script may warn on stderr (e.g. /etc/chromium.d/dev-shm where /dev/shm is
# mounted twice): the version line alone, unless it fails.
if ! "$CHROMIUM" --version 2>/dev/null; then
    "$CHROMIUM" --version >&2 || true
    echo "install_browser: chromium was installed but '$CHROMIUM --version' fails" >&2
    exit 1
fi
