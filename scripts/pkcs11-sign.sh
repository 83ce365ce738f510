#!/usr/bin/env bash
# The audit.signer program for an Ed25519 key on a PKCS#11 token (docs/AUDIT.md, "A signing key
# the host cannot copy"), through OpenSC's pkcs11-tool (CKM_EDDSA):
#
#   pkcs11-sign.sh --module LIB (--id HEX | --label NAME) [--token-label L] [--pin-file F | --pin-env V]
#       reads the bytes to sign on stdin, writes the 64-byte Ed25519 signature to stdout
#   pkcs11-sign.sh public-key --module LIB (--id HEX | --label NAME) [--token-label L]
#       prints the key's public half as base64 of the raw 32 bytes (what audit.signer.publicKey takes)
#
# The PIN is never an argument (arguments show in `ps`): it is read from the file --pin-file names
# (at each signature, so a corrected file is used at the gateway's next try), or from the
# environment variable --pin-env names (default PKCS11_PIN). Messages go to stderr; the gateway
# shows their first line when signing fails. Tested with SoftHSM 2.6 (test/integration/audit-signer.test.ts).
set -euo pipefail

mode=sign
if [ "${1:-}" = public-key ]; then mode=public-key; shift; fi
module='' id='' label='' token='' pin_file='' pin_env=PKCS11_PIN
while [ $# -gt 0 ]; do
  case "$1" in
    --module) module=$2; shift 2 ;;
    --id) id=$2; shift 2 ;;
    --label) label=$2; shift 2 ;;
    --token-label) token=$2; shift 2 ;;
    --pin-file) pin_file=$2; shift 2 ;;
    --pin-env) pin_env=$2; shift 2 ;;
    *) echo "pkcs11-sign.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$module" ] || { echo 'pkcs11-sign.sh: --module LIB is required (the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so)' >&2; exit 2; }
[ -n "$id$label" ] || { echo 'pkcs11-sign.sh: --id HEX or --label NAME selects the key' >&2; exit 2; }
command -v pkcs11-tool >/dev/null || { echo 'pkcs11-sign.sh: pkcs11-tool not found (Debian: apt-get install opensc)' >&2; exit 127; }

args=(--module "$module")
[ -n "$token" ] && args+=(--token-label "$token")
[ -n "$id" ] && args+=(--id "$id")
[ -n "$label" ] && args+=(--label "$label")

if [ "$mode" = public-key ]; then
  # An EC_EDWARDS public key object reads as a PEM SubjectPublicKeyInfo: its last 32 bytes are the key.
  pkcs11-tool "${args[@]}" --read-object --type pubkey 2>/dev/null | sed '/^-----/d' | base64 -d | tail -c 32 | base64
  exit 0
fi

if [ -n "$pin_file" ]; then
  PKCS11_SIGN_PIN=$(head -n1 "$pin_file")
else
  PKCS11_SIGN_PIN=${!pin_env:-}
fi
[ -n "$PKCS11_SIGN_PIN" ] || { echo "pkcs11-sign.sh: no PIN (--pin-file, or \$$pin_env)" >&2; exit 2; }
export PKCS11_SIGN_PIN

# The message and the signature go through files of a private temp dir: the gateway's stdin and
# stdout are sockets, which pkcs11-tool cannot open as /dev/stdin or /dev/stdout. pkcs11-tool's
# chatter ("Using slot ...") is dropped from stderr, so a failure's first line is its reason
# (e.g. "error: PKCS11 function C_Login failed: rv = CKR_PIN_INCORRECT").
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/message"
# One signature at a time per token: a gateway signs from more than one thread (checkpoints, the
# shipper's key rows, its enrolment request), and a file-backed token such as SoftHSM's can fail a
# session opened while another process logs in (CKR_GENERAL_ERROR). The lock is released on exit.
if command -v flock >/dev/null; then
  lock="${TMPDIR:-/tmp}/custody-pkcs11-$(id -u)-$(printf '%s' "$module|$token" | cksum | cut -d' ' -f1).lock"
  exec 9>>"$lock"
  flock -w 30 9 || { echo "pkcs11-sign.sh: the token is busy (waited 30 s for $lock)" >&2; exit 75; }
fi
rc=0
pkcs11-tool "${args[@]}" --login --pin env:PKCS11_SIGN_PIN --sign --mechanism EDDSA --input-file "$work/message" --output-file "$work/signature" 2>"$work/err" || rc=$?
if [ "$rc" -ne 0 ]; then
  grep -v -e '^Using ' -e '^Aborting' "$work/err" >&2 || true
  exit "$rc"
fi
cat "$work/signature"
