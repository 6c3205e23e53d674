#!/usr/bin/env bash
# scripts/postgres_test_server.sh start|stop
#
# A throwaway PostgreSQL server on 127.0.0.1 for the sweep tests (Optuna's RDB storage):
# installs Debian's postgresql when it is missing, creates a cluster in $RUNNER_PG_DIR,
# starts it on $RUNNER_PG_PORT and prints its URL. Idempotent; `stop` tears it down.
#   export RUNNER_TEST_POSTGRES_URL=$(scripts/postgres_test_server.sh start)
set -euo pipefail
DIR=${RUNNER_PG_DIR:-/tmp/runner-postgres}
PORT=${RUNNER_PG_PORT:-54329}
URL="postgresql://postgres@127.0.0.1:${PORT}/runner_test"

bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

as_owner() {  # PostgreSQL refuses to run as root: run its programs as the postgres user then
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
  start)
    if [ -z "$(bin_dir)" ]; then
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >&2
    fi
    BIN=$(bin_dir)
    if [ ! -f "$DIR/PG_VERSION" ]; then
      mkdir -p "$DIR"
      [ "$(id -u)" = 0 ] && chown postgres "$DIR"
      as_owner "$BIN/initdb" -D "$DIR" -A trust -U postgres >&2
    fi
    if ! as_owner "$BIN/pg_ctl" -D "$DIR" status >/dev/null 2>&1; then
      as_owner "$BIN/pg_ctl" -D "$DIR" -l "$DIR/server.log" -w \
        -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1" start >&2
    fi
    if ! as_owner "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname='runner_test'" | grep -q 1; then
      as_owner "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres runner_test
    fi
    echo "$URL"
    ;;
  stop)
    BIN=$(bin_dir)
    if [ -n "$BIN" ] && [ -f "$DIR/PG_VERSION" ]; then
      as_owner "$BIN/pg_ctl" -D "$DIR" -m fast stop >&2 || true
    fi
    rm -rf "$DIR"
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
