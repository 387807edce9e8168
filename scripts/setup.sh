#!/usr/bin/env bash
# Installs what the build and the tests need beyond the Rust toolchain, on
# Debian/Ubuntu. libsignal's build script runs `protoc`; the browser suite
# (browser-tests/) drives Debian's `chromium` with Node's `playwright-core`.
# Nothing here downloads a browser build: only apt and npm packages.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

# Debian packages whose command is missing ("command:package").
missing=()
for pair in protoc:protobuf-compiler chromium:chromium chromedriver:chromium-driver \
    node:nodejs npm:npm; do
    if ! command -v "${pair%%:*}" >/dev/null 2>&1; then
        missing+=("${pair#*:}")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]} (Debian packages)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
protoc --version >/dev/null
# Debian's launcher script prints a harmless shell warning on some machines
# (its /dev/shm check), so only the exit status counts here.
chromium --version >/dev/null 2>&1 || { echo "setup: /usr/bin/chromium does not start" >&2; exit 1; }

# playwright-core needs Node.js 20 or later (Debian 12's own nodejs is 18).
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
    echo "setup: the browser suite needs Node.js 20 or later, found $(node --version); install a newer nodejs" >&2
    exit 1
fi

# The browser suite's npm packages, pinned by browser-tests/package-lock.json.
# A stamp holding the lock file's hash tells whether node_modules is current.
lock_hash="$(sha256sum browser-tests/package-lock.json | cut -d' ' -f1)"
stamp="browser-tests/node_modules/.sotto-lock-hash"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
    echo "setup: installing the browser suite's npm packages (npm ci)"
    (cd browser-tests && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_hash" >"$stamp"
fi
