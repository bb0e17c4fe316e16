#!/usr/bin/env bash
# Local PostgreSQL and Redis for development and tests, kept in a project folder.
#
#   scripts/local-services.sh start|stop|status|env
#
# Settings (environment variables):
#   LOCAL_DIR        data folder        (default: <project root>/.local/dev)
#   PG_PORT          PostgreSQL port    (default: 55432)
#   REDIS_PORT       Redis port         (default: 56379)
#   REDIS_DATABASES  Redis logical dbs  (default: 16)
#   WAIT_SECONDS     how long to wait for a service to answer (default: 30)
#
# start   installs what is missing (apt), starts both (or reuses them when already
#         running), creates the `messaging` database and prints two lines on stdout:
#           DATABASE_URL=postgresql://postgres@127.0.0.1:$PG_PORT/messaging
#           REDIS_URL=redis://127.0.0.1:$REDIS_PORT
# stop    stops both (data is kept).
# status  says what runs (exit 0 when both run, 3 otherwise).
# env     prints the two URL lines only.
#
# Both services listen on 127.0.0.1 only; PostgreSQL trusts every local connection
# (development data only). Progress messages go to stderr.
# PostgreSQL refuses to run as root: as root, its server runs as the `postgres` user.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
LOCAL_DIR="$(realpath -m -- "${LOCAL_DIR:-$ROOT/.local/dev}")"
PG_PORT="${PG_PORT:-55432}"
REDIS_PORT="${REDIS_PORT:-56379}"
REDIS_DATABASES="${REDIS_DATABASES:-16}"
WAIT_SECONDS="${WAIT_SECONDS:-30}"

PGDATA_DIR="$LOCAL_DIR/pg"
PG_SOCKET_DIR="$LOCAL_DIR/run"
PG_LOG="$LOCAL_DIR/postgres.log"
REDIS_DIR="$LOCAL_DIR/redis"
REDIS_PIDFILE="$LOCAL_DIR/redis.pid"
REDIS_LOG="$LOCAL_DIR/redis.log"
PG_USER=postgres

log() { printf '[local-services] %s\n' "$*" >&2; }
die() {
  printf '[local-services] error: %s\n' "$*" >&2
  exit 1
}

for setting in PG_PORT REDIS_PORT REDIS_DATABASES WAIT_SECONDS; do
  [[ "${!setting}" =~ ^[0-9]+$ ]] || die "$setting must be a number (got '${!setting}')"
done
((PG_PORT > 0 && PG_PORT < 65536)) || die "PG_PORT out of range: $PG_PORT"
((REDIS_PORT > 0 && REDIS_PORT < 65536)) || die "REDIS_PORT out of range: $REDIS_PORT"
((PG_PORT != REDIS_PORT)) || die "PG_PORT and REDIS_PORT must differ"

is_root() { [[ "$(id -u)" == 0 ]]; }

print_urls() {
  printf 'DATABASE_URL=postgresql://postgres@127.0.0.1:%s/messaging\n' "$PG_PORT"
  printf 'REDIS_URL=redis://127.0.0.1:%s\n' "$REDIS_PORT"
}

# ---------------------------------------------------------------- installation

APT_UPDATED=0
apt_install() {
  local sudo=()
  if ! is_root; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      die "missing packages ($*) and not root: install them with apt-get install $*"
    fi
  fi
  command -v apt-get >/dev/null 2>&1 || die "missing packages ($*) and no apt-get here"
  if ((APT_UPDATED == 0)); then
    log "apt-get update"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    APT_UPDATED=1
  fi
  log "apt-get install -y $*"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

PG_BIN=""
find_pg_bin() {
  local dir
  PG_BIN=""
  while IFS= read -r dir; do
    [[ -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/pg_isready" && -x "$dir/psql" ]] && PG_BIN="$dir"
  done < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -V)
  [[ -n "$PG_BIN" ]]
}

ensure_pg_installed() {
  find_pg_bin && return 0
  log "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: installing"
  apt_install postgresql-15 || apt_install postgresql
  find_pg_bin || die "PostgreSQL installed but no binaries under /usr/lib/postgresql/*/bin"
}

ensure_redis_installed() {
  command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && return 0
  log "redis-server not found: installing"
  apt_install redis-server
  command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after apt-get install"
  command -v redis-cli >/dev/null 2>&1 || apt_install redis-tools
}

# ---------------------------------------------------------------- helpers

# Runs a PostgreSQL server program: as root, as the unprivileged postgres user
# (from /, so that it never needs access to the caller's working directory).
as_pg() {
  if is_root; then
    if command -v runuser >/dev/null 2>&1; then
      (cd / && runuser -u "$PG_USER" -- "$@")
    else
      (cd / && su -s /bin/sh "$PG_USER" -c "$(printf '%q ' "$@")")
    fi
  else
    "$@"
  fi
}

ensure_pg_user() {
  is_root || return 0
  id -u "$PG_USER" >/dev/null 2>&1 && return 0
  log "creating system user $PG_USER"
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$PG_USER"
}

# As root, the postgres user must be able to reach $LOCAL_DIR: grants search (x)
# permission to others on every ancestor that lacks it.
ensure_pg_can_traverse() {
  is_root || return 0
  as_pg test -x "$LOCAL_DIR" 2>/dev/null && return 0
  local dir="" part
  local -a parts
  IFS=/ read -r -a parts <<<"${LOCAL_DIR#/}"
  for part in "${parts[@]}"; do
    dir="$dir/$part"
    if ! as_pg test -x "$dir" 2>/dev/null; then
      log "granting search permission (o+x) on $dir so that the $PG_USER user can reach $LOCAL_DIR"
      chmod o+x "$dir"
    fi
  done
  as_pg test -x "$LOCAL_DIR" || die "the $PG_USER user cannot reach $LOCAL_DIR"
}

tcp_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A zombie (killed, not yet reaped by its parent) counts as gone.
pid_alive() {
  local stat
  [[ "$1" =~ ^[0-9]+$ ]] && kill -0 "$1" 2>/dev/null || return 1
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat%% *}" != Z ]]
}

# Processes running a PostgreSQL binary whose working directory is the data folder
# (the postmaster and its children chdir there): our server, or orphans of a killed one.
pg_processes_of_datadir() {
  local real proc pid comm
  real="$(realpath -e -- "$PGDATA_DIR" 2>/dev/null)" || return 0
  for proc in /proc/[0-9]*; do
    pid="${proc#/proc/}"
    comm=""
    read -r comm 2>/dev/null <"$proc/comm" || continue
    [[ "$comm" == postgres* ]] || continue
    [[ "$(readlink "$proc/cwd" 2>/dev/null)" == "$real" ]] || continue
    printf '%s\n' "$pid"
  done
}

pg_pidfile_field() { # line number of postmaster.pid
  sed -n "${1}p" "$PGDATA_DIR/postmaster.pid" 2>/dev/null | tr -d '[:space:]'
}

# Prints the postmaster pid when the server of this data folder runs.
pg_running_pid() {
  local pid real
  [[ -f "$PGDATA_DIR/postmaster.pid" ]] || return 1
  pid="$(pg_pidfile_field 1)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  pid_alive "$pid" || return 1
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == postgres* ]] || return 1
  real="$(realpath -e -- "$PGDATA_DIR")"
  [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$real" ]] || return 1
  printf '%s\n' "$pid"
}

pg_ready() {
  "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -t 2 >/dev/null 2>&1
}

psql_admin() {
  PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres "$@"
}

wait_until() { # command...: true once it succeeds, false after WAIT_SECONDS
  local deadline
  deadline=$((SECONDS + WAIT_SECONDS))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      return 1
    fi
    sleep 0.2
  done
}

# After a crash (kill -9 of the postmaster) children may still hold the shared memory
# for a moment; they exit by themselves when they notice, else they are told to.
clear_stale_pg() {
  local pids deadline
  pids="$(pg_processes_of_datadir)"
  if [[ -n "$pids" ]]; then
    log "waiting for leftover PostgreSQL processes of a crashed server to exit: $(echo $pids)"
    deadline=$((SECONDS + 5))
    while [[ -n "$(pg_processes_of_datadir)" ]] && ((SECONDS < deadline)); do sleep 0.2; done
    pids="$(pg_processes_of_datadir)"
    if [[ -n "$pids" ]]; then
      log "sending SIGQUIT to leftover PostgreSQL processes: $(echo $pids)"
      kill -QUIT $pids 2>/dev/null || true
      deadline=$((SECONDS + 5))
      while [[ -n "$(pg_processes_of_datadir)" ]] && ((SECONDS < deadline)); do sleep 0.2; done
      pids="$(pg_processes_of_datadir)"
      if [[ -n "$pids" ]]; then
        kill -KILL $pids 2>/dev/null || true
        sleep 0.5
      fi
    fi
  fi
  if [[ -f "$PGDATA_DIR/postmaster.pid" ]]; then
    log "removing stale $PGDATA_DIR/postmaster.pid (pid $(pg_pidfile_field 1) is not running)"
    rm -f "$PGDATA_DIR/postmaster.pid"
  fi
  # The socket folder is ours alone: a crashed server leaves its socket and lock there
  # (PostgreSQL would take the lock's pid, if reused or a zombie, for a live server).
  if compgen -G "$PG_SOCKET_DIR/.s.PGSQL.*" >/dev/null; then
    log "removing stale sockets in $PG_SOCKET_DIR"
    rm -f "$PG_SOCKET_DIR"/.s.PGSQL.*
  fi
}

redis_cli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
redis_ready() { [[ "$(redis_cli ping 2>/dev/null)" == PONG ]]; }
redis_pid_from_file() {
  local pid
  pid="$(tr -d '[:space:]' 2>/dev/null <"$REDIS_PIDFILE")" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && pid_alive "$pid" && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == redis-server* ]] || return 1
  printf '%s\n' "$pid"
}
# True when the Redis answering on REDIS_PORT keeps its data in our folder.
redis_is_ours() {
  local dir real
  dir="$(redis_cli --raw config get dir 2>/dev/null | sed -n 2p)"
  real="$(realpath -m -- "$REDIS_DIR")"
  [[ -n "$dir" && "$(realpath -m -- "$dir")" == "$real" ]]
}

LOCK_FD_OPEN=0
take_lock() {
  mkdir -p "$LOCAL_DIR"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$LOCAL_DIR/.lock"
    flock -w 120 9 || die "another local-services.sh holds $LOCAL_DIR/.lock"
    LOCK_FD_OPEN=1
  fi
}

# ---------------------------------------------------------------- PostgreSQL

init_pg() {
  if [[ -f "$PGDATA_DIR/PG_VERSION" ]]; then
    return 0
  fi
  if [[ -d "$PGDATA_DIR" ]] && [[ -n "$(ls -A "$PGDATA_DIR")" ]]; then
    die "$PGDATA_DIR exists but is not a PostgreSQL data folder (remove it to start afresh)"
  fi
  local locale=C
  if locale -a 2>/dev/null | grep -qix 'c\.utf-\?8'; then locale=C.UTF-8; fi
  mkdir -p "$PGDATA_DIR"
  chmod 700 "$PGDATA_DIR"
  if is_root; then chown "$PG_USER:" "$PGDATA_DIR"; fi
  log "initdb $PGDATA_DIR"
  if ! as_pg "$PG_BIN/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust --encoding=UTF8 --locale="$locale" \
    </dev/null >"$LOCAL_DIR/initdb.log" 2>&1 9>&-; then
    cat "$LOCAL_DIR/initdb.log" >&2 || true
    die "initdb failed (log: $LOCAL_DIR/initdb.log)"
  fi
  # Trust, but only over the loopback interface and the private socket folder.
  cat >"$PGDATA_DIR/pg_hba.conf" <<'EOF'
# Written by scripts/local-services.sh: local development only.
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  trust
host    all       all   127.0.0.1/32   trust
EOF
  printf "\n# Settings written by scripts/local-services.sh at every start.\ninclude_if_exists = 'local-services.conf'\n" \
    >>"$PGDATA_DIR/postgresql.conf"
  if is_root; then chown "$PG_USER:" "$PGDATA_DIR/pg_hba.conf" "$PGDATA_DIR/postgresql.conf"; fi
}

write_pg_settings() {
  local sockets="$PG_SOCKET_DIR"
  mkdir -p "$PG_SOCKET_DIR"
  if is_root; then chown "$PG_USER:" "$PG_SOCKET_DIR"; fi
  # A unix socket path is limited to 107 bytes; TCP is used by everything here anyway.
  if ((${#PG_SOCKET_DIR} + 16 > 107)); then
    log "$PG_SOCKET_DIR is too long for a unix socket: TCP only"
    sockets=""
  fi
  cat >"$PGDATA_DIR/local-services.conf" <<EOF
# Written by scripts/local-services.sh at every start: do not edit.
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '${sockets//\'/\'\'}'
max_connections = 200
EOF
  touch "$PG_LOG"
  if is_root; then
    chown "$PG_USER:" "$PGDATA_DIR/local-services.conf" "$PG_LOG"
    if [[ "$(stat -c %U "$PGDATA_DIR")" != "$PG_USER" ]]; then
      log "giving $PGDATA_DIR to the $PG_USER user"
      chown -R "$PG_USER:" "$PGDATA_DIR"
    fi
  fi
}

start_pg() {
  local pid running_port
  ensure_pg_user
  ensure_pg_can_traverse
  if pid="$(pg_running_pid)"; then
    running_port="$(pg_pidfile_field 4)"
    if [[ "$running_port" != "$PG_PORT" ]]; then
      die "PostgreSQL of $PGDATA_DIR already runs (pid $pid) on port $running_port, not $PG_PORT: run '$0 stop' first (with the same LOCAL_DIR)"
    fi
    log "PostgreSQL already running (pid $pid, port $PG_PORT)"
  else
    init_pg
    clear_stale_pg
    if tcp_port_open "$PG_PORT"; then
      die "port $PG_PORT (PG_PORT) is used by another program"
    fi
    write_pg_settings
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT (data $PGDATA_DIR, log $PG_LOG)"
    if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$PG_LOG" -w -t "$WAIT_SECONDS" start </dev/null >&2 9>&-; then
      tail -n 20 "$PG_LOG" >&2 || true
      die "PostgreSQL did not start (log: $PG_LOG)"
    fi
  fi
  if ! wait_until pg_ready; then
    tail -n 20 "$PG_LOG" >&2 || true
    die "PostgreSQL does not answer on 127.0.0.1:$PG_PORT after ${WAIT_SECONDS}s (log: $PG_LOG)"
  fi
  if [[ "$(psql_admin -tA -c "SELECT 1 FROM pg_database WHERE datname = 'messaging'")" != 1 ]]; then
    log "creating database messaging"
    psql_admin -c 'CREATE DATABASE messaging' >&2
  fi
}

stop_pg() {
  local pid
  if pid="$(pg_running_pid)"; then
    log "stopping PostgreSQL (pid $pid)"
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 60 stop </dev/null >&2 9>&- ||
      die "pg_ctl stop failed (log: $PG_LOG)"
  else
    clear_stale_pg
    log "PostgreSQL not running"
  fi
}

# ---------------------------------------------------------------- Redis

start_redis() {
  local pid
  if redis_ready; then
    redis_is_ours || die "port $REDIS_PORT (REDIS_PORT) is used by another Redis (not keeping its data in $REDIS_DIR)"
    log "Redis already running (port $REDIS_PORT)"
    return 0
  fi
  if pid="$(redis_pid_from_file)"; then
    # Ours, but not (yet) answering: on another port, or still loading its data.
    local cmdline
    cmdline="$(tr -s '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || cmdline=""
    cmdline="${cmdline% }"
    if [[ " $cmdline " != *":$REDIS_PORT "* && " $cmdline " != *"--port $REDIS_PORT "* ]]; then
      die "Redis of $LOCAL_DIR already runs (pid $pid: $cmdline) on another port than $REDIS_PORT: run '$0 stop' first (with the same LOCAL_DIR)"
    fi
    log "Redis of $LOCAL_DIR runs (pid $pid): waiting for it on port $REDIS_PORT"
    wait_until redis_ready ||
      die "Redis of $LOCAL_DIR runs (pid $pid) but does not answer on port $REDIS_PORT: run '$0 stop' first (with the same LOCAL_DIR)"
    return 0
  fi
  rm -f "$REDIS_PIDFILE"
  if tcp_port_open "$REDIS_PORT"; then
    die "port $REDIS_PORT (REDIS_PORT) is used by another program"
  fi
  mkdir -p "$REDIS_DIR"
  log "starting Redis on 127.0.0.1:$REDIS_PORT (data $REDIS_DIR, log $REDIS_LOG)"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --appendonly yes --dir "$REDIS_DIR" \
    --databases "$REDIS_DATABASES" --daemonize yes --pidfile "$REDIS_PIDFILE" --logfile "$REDIS_LOG" \
    </dev/null >&2 9>&- || die "redis-server failed to start (log: $REDIS_LOG)"
  if ! wait_until redis_ready; then
    tail -n 20 "$REDIS_LOG" >&2 || true
    die "Redis does not answer on 127.0.0.1:$REDIS_PORT after ${WAIT_SECONDS}s (log: $REDIS_LOG)"
  fi
}

stop_redis() {
  local pid="" deadline
  pid="$(redis_pid_from_file)" || pid=""
  if redis_ready && redis_is_ours; then
    log "stopping Redis (port $REDIS_PORT)"
    # Plain SHUTDOWN: flushes the append-only file before exiting.
    redis_cli shutdown >/dev/null 2>&1 || true
  elif [[ -n "$pid" ]]; then
    log "stopping Redis (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
  else
    rm -f "$REDIS_PIDFILE"
    log "Redis not running"
    return 0
  fi
  deadline=$((SECONDS + 60))
  while { [[ -n "$pid" ]] && pid_alive "$pid"; } || { redis_ready && redis_is_ours; }; do
    ((SECONDS < deadline)) || die "Redis did not stop within 60s"
    sleep 0.2
  done
  rm -f "$REDIS_PIDFILE"
}

# ---------------------------------------------------------------- commands

cmd_start() {
  ensure_redis_installed
  ensure_pg_installed
  take_lock
  start_pg
  start_redis
  log "ready"
  print_urls
}

cmd_stop() {
  if [[ ! -d "$LOCAL_DIR" ]]; then
    log "nothing to stop ($LOCAL_DIR does not exist)"
    return 0
  fi
  take_lock
  if find_pg_bin; then stop_pg; else log "PostgreSQL not installed"; fi
  if command -v redis-cli >/dev/null 2>&1; then stop_redis; else log "Redis not installed"; fi
}

cmd_status() {
  local pid code=0
  if pid="$(pg_running_pid)"; then
    local state="not answering"
    if find_pg_bin && pg_ready; then state="accepting connections"; fi
    echo "postgresql: running, $state (pid $pid, 127.0.0.1:$(pg_pidfile_field 4), data $PGDATA_DIR)"
  else
    echo "postgresql: stopped (data $PGDATA_DIR)"
    code=3
  fi
  if command -v redis-cli >/dev/null 2>&1 && redis_ready && redis_is_ours; then
    echo "redis: running (pid $(redis_pid_from_file || echo '?'), 127.0.0.1:$REDIS_PORT, data $REDIS_DIR)"
  elif pid="$(redis_pid_from_file)"; then
    echo "redis: running but not answering on port $REDIS_PORT (pid $pid, data $REDIS_DIR)"
    code=3
  else
    echo "redis: stopped (data $REDIS_DIR)"
    code=3
  fi
  return "$code"
}

# Installs what is missing (redis-server; PostgreSQL's server if absent) without starting
# anything: what CI runs first on a clean machine.
cmd_install() {
  find_pg_bin || ensure_pg_installed
  ensure_redis_installed
  log "PostgreSQL binaries: $PG_BIN; redis-server: $(command -v redis-server)"
}

usage() {
  echo "usage: $0 install|start|stop|status|env" >&2
  exit 2
}

(($# == 1)) || usage
case "$1" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) print_urls ;;
  *) usage ;;
esac
