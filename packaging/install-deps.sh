#!/bin/sh
# Installs what nextal-agent needs to build, run and test on Debian 12.
# Idempotent: packages already present are left alone.
set -eu

PACKAGES="build-essential cmake pkg-config clang-format curl ca-certificates
  libuv1-dev libcurl4-gnutls-dev libical-dev libetpan-dev libsqlite3-dev
  libjansson-dev libxml2-dev libhttp-parser-dev libinih-dev libgnutls28-dev
  libicu-dev libcmocka-dev sqlite3 python3 python3-caldav swaks openssl"

missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing="$missing $p"
done
# Node.js runs the nodemailer and tsdav test clients. Some machines carry a
# nodejs build that bundles npm (and conflicts with Debian's npm package).
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
[ -z "$missing" ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing:$missing" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
