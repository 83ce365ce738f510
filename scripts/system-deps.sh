#!/usr/bin/env bash
# The system components the project needs, checked before they are needed:
#   build  what `npm ci` needs to compile native modules (make, g++, python3)
#   test   what the test suite uses: PostgreSQL running on 127.0.0.1:5432 (trust auth for postgres over
#          TCP), psql and pgbench, PgBouncer, Debian's Chromium, python3, rsyslog with its TLS driver (the syslog sink's receiver),
#          OpenSSH's server and clients (the tests start their own sshd as the SSH upstream), sshpass, rsync and
#          sudo (the SSH tests type a password at a real sudo prompt), SoftHSM and OpenSC's pkcs11-tool (a
#          PKCS#11 token holding the checkpoint signing key, scripts/pkcs11-sign.sh)
# Missing packages are installed through apt-get when this runs as root (or with passwordless sudo),
# as on CI; otherwise it stops with one line giving the exact command to run. PostgreSQL is started
# if it is installed but down. `npm test` runs `test` first (the pretest script).
set -euo pipefail
mode=${1:-test}
export DEBIAN_FRONTEND=noninteractive

need=()
want() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
want make make
want g++ g++
want python3 python3
if [ "$mode" = test ]; then
  want chromium chromium
  want psql postgresql-client
  want pgbench postgresql-contrib
  want pg_ctlcluster postgresql
  want pgbouncer pgbouncer
  want rsyslogd rsyslog
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  want ssh openssh-client
  want sshpass sshpass
  want rsync rsync
  want sudo sudo
  want softhsm2-util softhsm2
  want pkcs11-tool opensc
  compgen -G '/usr/lib/*/rsyslog/lmnsd_gtls.so' >/dev/null || compgen -G '/usr/lib/rsyslog/lmnsd_gtls.so' >/dev/null || need+=(rsyslog-gnutls)
fi

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo"
  else
    echo "custody: missing system packages; run: sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "custody: installing ${need[*]} (apt-get)" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ "$mode" = test ] || exit 0

if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  echo "custody: starting PostgreSQL on 127.0.0.1:5432" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "custody: PostgreSQL is not running on 127.0.0.1:5432; start it with: sudo pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql | tail -1) main start" >&2
    exit 1
  fi
  for v in $(ls /etc/postgresql 2>/dev/null); do
    pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
  done
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    v=$(ls /usr/lib/postgresql | sort -n | tail -1)
    pg_createcluster "$v" main --start -- --auth-local=trust --auth-host=trust
  fi
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
# The tests connect as postgres over TCP with trust auth.
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
  echo "custody: PostgreSQL on 127.0.0.1:5432 does not let postgres in over TCP without a password; the tests need trust auth for 127.0.0.1 in pg_hba.conf" >&2
  exit 1
fi
