#!/usr/bin/env bash
# The vault's PostgreSQL pair: a primary at one site, a standby at the other, synchronous
# streaming replication (docs/multisite.md). PostgreSQL's own replication, configured —
# nothing home-made: an entry's COMMIT returns only once the standby has it (RPO 0).
#
#   replication.sh primary --pgdata DIR --port 5432 --standby-name site_b \
#                          [--listen '*'] [--allow 10.0.0.0/24] [--password-file FILE]
#   replication.sh standby --pgdata DIR --port 5432 --name site_b \
#                          --primary-host 10.0.0.4 --primary-port 5432 [--password-file FILE]
#   replication.sh promote --pgdata DIR
#   replication.sh alone --pgdata DIR
#
# Run as root (each PostgreSQL command runs as the `postgres` user: PostgreSQL refuses to
# run as root) or as `postgres` itself. The primary:
#   - is initialised with data checksums and SCRAM authentication;
#   - keeps `synchronous_commit = on` and `synchronous_standby_names = 'ANY 1 (NAME)'`:
#     a commit waits until the standby NAME has flushed its WAL;
#   - has a role `replicator` (REPLICATION, its password from --password-file, made if
#     absent) and a physical replication slot NAME, so the WAL the standby still needs is
#     kept while it is away;
#   - allows replication connections from --allow (default: loopback only).
# The standby is a pg_basebackup of the primary through that slot, with `standby.signal`
# and `primary_conninfo` (in its postgresql.conf, mode 0600 in the data directory) naming
# it `application_name=NAME` — the name the primary's synchronous_standby_names waits for —
# and hot_standby on, so it serves reads.
# Both are started with pg_ctl and wait until they accept connections.
# `promote` makes a standby the primary (the old primary's site is lost). It keeps the
# synchronous_standby_names it copied from the old primary: its commits wait for a standby
# that is gone, so the vault answers 503 and loses nothing, until a standby of the other
# site is attached again (this script's `standby` against it, or pg_rewind of the old
# primary). `alone` clears it instead: commits stop waiting for another site (the waiting
# ones return) — the vault serves again at once, with an RPO no longer 0 until a standby
# is back. The operator decides (docs/multisite.md, "Failover"). On Debian's
# packaged clusters (pg_createcluster, systemd), apply the same settings; the script is
# what the tests run, on loopback.
set -euo pipefail

die() { echo "replication.sh: $*" >&2; exit 2; }

PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$PG_BIN/initdb" ] || die "no PostgreSQL binaries (set PG_BIN; Debian: apt-get install postgresql)"

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

role=${1:-}; shift || true
case "$role" in
  primary|standby|promote|alone) ;;
  *) die "usage: replication.sh primary|standby|promote|alone --pgdata DIR … (see the script's head)" ;;
esac
pgdata="" port=5432 listen="localhost" allow="127.0.0.1/32" standby_name="" name=""
primary_host="" primary_port=5432 password_file=""
while [ $# -gt 0 ]; do
  case "$1" in
    --pgdata) pgdata=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --listen) listen=$2; shift 2 ;;
    --allow) allow=$2; shift 2 ;;
    --standby-name) standby_name=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --primary-host) primary_host=$2; shift 2 ;;
    --primary-port) primary_port=$2; shift 2 ;;
    --password-file) password_file=$2; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
[ -n "$pgdata" ] || die "--pgdata DIR is required"
valid_name() { [[ $1 =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "$2 '$1': lower-case letters, digits, _"; }

password() {
  [ -n "$password_file" ] || die "--password-file FILE is required (the replicator's password)"
  [ -s "$password_file" ] || die "$password_file is empty or missing"
  head -n1 "$password_file"
}

start() {
  as_postgres "$PG_BIN/pg_ctl" -D "$pgdata" -l "$pgdata/postgresql.log" -w -t 60 start >/dev/null
  echo "PostgreSQL $1 on port $port: started ($pgdata)"
}

new_cluster_dir() {
  [ ! -e "$pgdata/PG_VERSION" ] || die "$pgdata already holds a cluster"
  mkdir -p "$pgdata"
  chown postgres: "$pgdata" 2>/dev/null || true
  chmod 0700 "$pgdata"
}

case "$role" in
  primary)
    valid_name "$standby_name" --standby-name
    pw=$(password)
    new_cluster_dir
    as_postgres "$PG_BIN/initdb" -D "$pgdata" --data-checksums --auth-local=peer \
      --auth-host=scram-sha-256 -U postgres >/dev/null
    cat >>"$pgdata/postgresql.conf" <<EOF

# --- the vault's primary (deploy/postgresql/replication.sh) ---
listen_addresses = '$listen'
port = $port
unix_socket_directories = '$pgdata'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
synchronous_commit = on
synchronous_standby_names = 'ANY 1 ($standby_name)'
hot_standby = on
wal_log_hints = on        # pg_rewind can bring an old primary back as a standby
password_encryption = scram-sha-256
EOF
    cat >>"$pgdata/pg_hba.conf" <<EOF
# --- the vault's pair ---
host replication replicator $allow scram-sha-256
host all         all        $allow scram-sha-256
EOF
    start primary
    # the role and the slot: made here, without waiting for a standby (synchronous_commit
    # would wait for one that does not exist yet)
    as_postgres "$PG_BIN/psql" -h "$pgdata" -p "$port" -U postgres -v ON_ERROR_STOP=1 -qAt \
      -o /dev/null -v pw="$pw" -v slot="$standby_name" <<'SQL'
SET synchronous_commit = local;
SELECT format('CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD %L', :'pw')
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'replicator') \gexec
SELECT 1 FROM pg_create_physical_replication_slot(:'slot')
  WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = :'slot');
SQL
    echo "primary ready: commits wait for standby '$standby_name' (ANY 1)"
    ;;
  standby)
    valid_name "$name" --name
    [ -n "$primary_host" ] || die "--primary-host HOST is required"
    pw=$(password)
    new_cluster_dir
    passfile=$(mktemp)
    chown postgres: "$passfile" 2>/dev/null || true
    chmod 0600 "$passfile"
    trap 'rm -f "$passfile"' EXIT
    echo "$primary_host:$primary_port:replication:replicator:$pw" >"$passfile"
    as_postgres env PGPASSFILE="$passfile" "$PG_BIN/pg_basebackup" -h "$primary_host" \
      -p "$primary_port" -U replicator -D "$pgdata" -X stream -S "$name" --checkpoint=fast
    as_postgres touch "$pgdata/standby.signal"
    # the base backup copied the primary's settings: this one's port, socket, name, primary
    cat >>"$pgdata/postgresql.conf" <<EOF

# --- the vault's standby (deploy/postgresql/replication.sh) ---
port = $port
unix_socket_directories = '$pgdata'
hot_standby = on
primary_slot_name = '$name'
primary_conninfo = 'host=$primary_host port=$primary_port user=replicator password=''$pw'' application_name=$name'
EOF
    start standby
    echo "standby '$name' ready: streaming from $primary_host:$primary_port"
    ;;
  promote)
    [ -e "$pgdata/standby.signal" ] || die "$pgdata is not a standby"
    as_postgres "$PG_BIN/pg_ctl" -D "$pgdata" -w -t 60 promote >/dev/null
    echo "promoted: commits wait for a standby of the other site (attach one, or: replication.sh alone)"
    ;;
  alone)
    [ -e "$pgdata/PG_VERSION" ] || die "$pgdata holds no cluster"
    [ ! -e "$pgdata/standby.signal" ] || die "$pgdata is a standby: promote it first"
    port=$(sed -n 's/^port = \([0-9]*\).*/\1/p' "$pgdata/postgresql.conf" | tail -1)
    as_postgres "$PG_BIN/psql" -h "$pgdata" -p "${port:-5432}" -U postgres -v ON_ERROR_STOP=1 \
      -qAt -o /dev/null -c "ALTER SYSTEM SET synchronous_standby_names = ''" \
      -c "SELECT pg_reload_conf()"
    echo "ALONE: commits no longer wait for another site (RPO > 0 until a standby is attached)"
    ;;
esac
