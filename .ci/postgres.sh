#!/usr/bin/env bash
# A throwaway PostgreSQL server for the description-store tests, from Debian's packages.
#   source .ci/postgres.sh      # installs if missing, starts (or reuses) it, exports PVLM_TEST_PG_URL
# Loopback only, trust auth, data in $PVLM_PG_DIR (default /tmp/pvlm-pg), port $PVLM_PG_PORT (default 55432).
# Safe to source from a `set -e` script: failures print a warning and leave PVLM_TEST_PG_URL unset
# (the PostgreSQL tests then skip, saying the server could not be reached).

_pvlm_pg_start() {
  local dir="${PVLM_PG_DIR:-/tmp/pvlm-pg}" port="${PVLM_PG_PORT:-55432}" db=pvlm_test bin as=()
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    if [ "$(id -u)" = 0 ]; then
      echo "postgres.sh: installing postgresql (apt-get)" >&2
      DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null || {
        echo "postgres.sh: warning: apt-get install postgresql failed" >&2; return 0; }
      bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
    else
      echo "postgres.sh: warning: PostgreSQL is not installed and we are not root to install it" >&2
      return 0
    fi
  fi
  # initdb and postgres refuse to run as root: run them as the postgres user the package created.
  if [ "$(id -u)" = 0 ]; then as=(runuser -u postgres --); fi
  if [ ! -s "$dir/PG_VERSION" ]; then
    if [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
      echo "postgres.sh: warning: $dir is not empty and holds no cluster; set PVLM_PG_DIR" >&2; return 0
    fi
    mkdir -p "$dir" || return 0
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    "${as[@]}" "$bin/initdb" -D "$dir" -U postgres -A trust -E UTF8 >"$dir.initdb.log" 2>&1 || {
      echo "postgres.sh: warning: initdb failed (see $dir.initdb.log)" >&2; return 0; }
  fi
  if ! "${as[@]}" "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    "${as[@]}" "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null || {
      echo "postgres.sh: warning: server did not start (see $dir/server.log)" >&2; return 0; }
  fi
  if ! "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -Atc "SELECT 1 FROM pg_database WHERE datname='$db'" \
      postgres 2>/dev/null | grep -q 1; then
    "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$db" || {
      echo "postgres.sh: warning: createdb $db failed" >&2; return 0; }
  fi
  export PVLM_TEST_PG_URL="postgresql://postgres@127.0.0.1:$port/$db"
  echo "postgres.sh: PVLM_TEST_PG_URL=$PVLM_TEST_PG_URL" >&2
}
_pvlm_pg_start
unset -f _pvlm_pg_start
