#!/bin/sh
# Installs the Debian packages sluice needs to build, test and benchmark.
# As root it runs apt-get; otherwise it prints the command to run.
set -e
PKGS="g++ make autoconf automake pkg-config libevent-dev libssl-dev libinih-dev libcmocka-dev \
libpam0g-dev libpam-modules \
postgresql postgresql-client postgresql-contrib util-linux procps iproute2 openssl \
python3 python3-psycopg python3-pytest python3-asyncpg python3-prometheus-client \
pgbouncer nodejs npm \
default-jdk-headless libpostgresql-jdbc-java golang-go golang-github-jackc-pgx-v4-dev \
php-cli php-pgsql"
missing=""
for p in $PKGS; do
    # NodeSource's nodejs bundles npm (and conflicts with Debian's npm package)
    if [ "$p" = npm ] && command -v npm >/dev/null 2>&1; then
        continue
    fi
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    echo "deps: all packages present"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing packages:$missing"
    echo "deps: run as root: apt-get install -y$missing"
    exit 1
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
# The Debian postgresql package starts a cluster of its own; the tests never use it.
