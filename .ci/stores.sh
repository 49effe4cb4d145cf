#!/usr/bin/env bash
# Makes sure Redis and PostgreSQL answer on localhost (6379, 5432) for the service and the tests:
# starts each one when it is installed but not running, installs it from Debian's packages when
# it is missing, allows passwordless loopback connections for the postgres user, creates the
# database the service runs on (STORES_DATABASE, default `steward`), then waits until both
# answer. Safe to run again and again. (Services made by `cargo steward new` carry a copy.)
set -euo pipefail

DATABASE="${STORES_DATABASE:-steward}"
REDIS_PORT=6379
PG_PORT=5432
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

log() { echo "stores: $*" >&2; }

redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }
pg_up() { pg_isready -h 127.0.0.1 -p "$PG_PORT" -q 2>/dev/null; }
pg_login() { psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc "$1"; }
as_postgres() { $SUDO runuser -u postgres -- "$@"; }
pg_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1; }

missing=()
if ! redis_up && ! command -v redis-server >/dev/null; then missing+=(redis-server); fi
if ! pg_up && ! command -v pg_ctlcluster >/dev/null; then missing+=(postgresql); fi
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

if ! redis_up; then
  log "starting Redis on 127.0.0.1:$REDIS_PORT"
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
    --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/steward-ci.log
fi

if ! pg_up; then
  version="$(pg_version)"
  if [ -z "$version" ] || [ ! -d "/etc/postgresql/$version/main" ]; then
    version="${version:-$(ls /usr/lib/postgresql | sort -V | tail -n 1)}"
    log "creating PostgreSQL $version cluster main"
    $SUDO pg_createcluster "$version" main
  fi
  log "starting PostgreSQL $version on 127.0.0.1:$PG_PORT"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
fi

for _ in $(seq 1 120); do
  if redis_up && pg_up; then break; fi
  sleep 0.5
done
redis_up || { log "Redis does not answer on 127.0.0.1:$REDIS_PORT"; exit 1; }
pg_up || { log "PostgreSQL does not answer on 127.0.0.1:$PG_PORT"; exit 1; }

# A fresh Debian cluster asks for a password on TCP; the tests and the development service
# connect as postgres over loopback without one.
if ! pg_login "select 1" >/dev/null 2>&1; then
  hba="$(as_postgres psql -tAc 'show hba_file')"
  log "allowing passwordless loopback connections in $hba"
  $SUDO sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
  as_postgres psql -qc 'select pg_reload_conf()' >/dev/null
  for _ in $(seq 1 20); do pg_login "select 1" >/dev/null 2>&1 && break; sleep 0.25; done
fi
pg_login "select 1" >/dev/null

if [ "$(pg_login "select 1 from pg_database where datname = '$DATABASE'")" != "1" ]; then
  log "creating database $DATABASE"
  pg_login "create database \"$DATABASE\"" >/dev/null
fi
log "Redis and PostgreSQL answer"
