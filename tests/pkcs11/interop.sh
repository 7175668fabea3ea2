#!/usr/bin/env bash
# The PKCS#11 interop harness: real PKCS#11 consumers against one module.
#
#   MODULE=/path/to/module.so TOKEN_LABEL=label PIN=pin WORK_DIR=dir \
#     bash tests/pkcs11/interop.sh
#
# Consumers: OpenSC pkcs11-tool, OpenSSL through libengine-pkcs11-openssl,
# GnuTLS p11tool, Java's SunPKCS11 (keytool and tests/pkcs11/SignVerify.java).
# Every artefact a consumer produces (signature, CSR, certificate, wrapped
# key) is checked by an independent party: plain openssl with the public key
# read from the token, or Java's default providers.
#
# Environment:
#   MODULE, TOKEN_LABEL, PIN, WORK_DIR   required
#   RESULTS                 the results file (default WORK_DIR/results.tsv):
#                           one line per step, `step<TAB>pass|fail<TAB>detail`
#   CMD_TIMEOUT             seconds any one command may take (default 60)
#   TOKEN_KEYS_EXTRACTABLE  yes (default) | no: whether the token lets a
#                           token key be generated extractable and wrapped.
#                           With `no` (hsm-ha: token keys are never
#                           extractable), step wrap-token-key passes only when
#                           the wrap is refused (CKR_KEY_UNEXTRACTABLE, or the
#                           extractable key is refused at generation).
#   Anything the module itself reads (SOFTHSM2_CONF, HSM_PKCS11_CONF,
#   HSM_PKCS11_LOG...) is inherited by every consumer.
#
# Each step's commands and output are in WORK_DIR/logs/STEP.log. The script
# continues after a failed step; it exits 0 when every step passed, 1
# otherwise, 2 on bad usage. Key labels are valid Key Vault key names
# (p11-ec-SUFFIX...) with a fresh random suffix per run, so reruns against a
# persistent token do not collide; the objects are deleted at the end.
set -uo pipefail

for v in MODULE TOKEN_LABEL PIN WORK_DIR; do
  if [ -z "${!v:-}" ]; then
    echo "interop.sh: $v is not set" >&2
    exit 2
  fi
done
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CMD_TIMEOUT="${CMD_TIMEOUT:-60}"
TOKEN_KEYS_EXTRACTABLE="${TOKEN_KEYS_EXTRACTABLE:-yes}"
ENGINE_SO=/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so
mkdir -p "$WORK_DIR"
WORK_DIR="$(cd "$WORK_DIR" && pwd)"
RESULTS="${RESULTS:-$WORK_DIR/results.tsv}"
LOGS="$WORK_DIR/logs"
F="$WORK_DIR/files"
mkdir -p "$LOGS" "$F"
: >"$RESULTS"

SUFFIX="$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
L_EC="p11-ec-$SUFFIX" L_RSA="p11-rsa-$SUFFIX" L_AES="p11-aes-$SUFFIX"
L_KEK="p11-kek-$SUFFIX" L_GEN="p11-gen-$SUFFIX" L_UNW="p11-unw-$SUFFIX"
ID_EC="${SUFFIX}01" ID_RSA="${SUFFIX}02" ID_AES="${SUFFIX}03"
ID_KEK="${SUFFIX}04" ID_GEN="${SUFFIX}05" ID_UNW="${SUFFIX}06"
# pkcs11-tool's user-session invocation, without the operation.
P11=(pkcs11-tool --module "$MODULE" --token-label "$TOKEN_LABEL" --login --pin "$PIN")

# --- the step machinery -----------------------------------------------------

FAILED=0
DETAIL_FILE=""
# Runs a command bounded by CMD_TIMEOUT, echoing it first (into the log).
t() {
  echo "+ $*"
  timeout -k 5 "$CMD_TIMEOUT" "$@"
}
# Adds words to the step's detail.
note() { printf '%s ' "$*" >>"$DETAIL_FILE"; }
# The first PKCS#11 failure a log shows (`C_X failed: rv = CKR_Y`), else
# its first line naming an error, else its last non-empty line.
why() {
  local m
  m="$(grep -oE '(C_[A-Za-z]+[^:]*failed: rv = )?CKR_[A-Z0-9_]+' "$1" | head -1)"
  if [ -z "$m" ]; then
    m="$(grep -vE '^\+ ' "$1" | grep -iE -m1 'error|fail|exception' || true)"
  fi
  if [ -z "$m" ]; then
    m="$(grep -vE '^\+ |^\s*$' "$1" | tail -1)"
  fi
  printf '%s' "${m:0:200}"
}
# step NAME FUNCTION: runs FUNCTION in a subshell under `set -e`, its output
# into logs/NAME.log; records pass/fail and the detail.
step() {
  local name=$1 fn=$2 log="$LOGS/$1.log" rc status detail
  DETAIL_FILE="$LOGS/$name.detail"
  : >"$DETAIL_FILE"
  (
    set -eo pipefail
    "$fn"
  ) >"$log" 2>&1 </dev/null
  rc=$?
  detail="$(cat "$DETAIL_FILE")"
  if [ "$rc" -eq 0 ]; then
    status=pass
  elif [ "$rc" -eq 3 ]; then
    status=fail
    FAILED=1
  else
    status=fail
    FAILED=1
    # The command that failed (`set -e` stopped there), shortened.
    local cmd
    cmd="$(grep '^+ ' "$log" | tail -1 | sed -e 's/^+ //' \
      -e "s|pkcs11-tool --module [^ ]* --token-label [^ ]* --login --pin [^ ]*|pkcs11-tool -l|" \
      -e "s|$F/||g" | cut -c1-160)"
    detail="${detail}exit $rc at \`$cmd\`: $(why "$log")"
  fi
  detail="$(printf '%s' "$detail" | tr '\t\n' '  ' | sed 's/ *$//')"
  printf '%s\t%s\t%s\n' "$name" "$status" "$detail" | tee -a "$RESULTS"
}
# Fails the step unless each FILE, made by an earlier step, exists:
# need STEP FILE...
need() {
  local from=$1 f
  shift
  for f in "$@"; do
    [ -s "$f" ] || die "no ${f#"$F/"}: step $from did not make it"
  done
}
# Fails the step with a message (exit 3: the detail says why).
die() {
  echo "FAILED: $*"
  note "$*"
  exit 3
}

# --- the steps -------------------------------------------------------------

s_tools() {
  local missing=()
  for c in pkcs11-tool openssl p11tool java javac keytool od xxd timeout; do
    command -v "$c" >/dev/null 2>&1 || missing+=("$c")
  done
  [ -f "$ENGINE_SO" ] || missing+=("$ENGINE_SO (libengine-pkcs11-openssl)")
  [ -f "$MODULE" ] || missing+=("module $MODULE")
  [ ${#missing[@]} -eq 0 ] || die "missing: ${missing[*]} -- run \`bash .ci/run\`"
  note "suffix $SUFFIX"
}

s_list_slots() {
  t pkcs11-tool --module "$MODULE" --list-slots | tee "$F/slots.txt"
  # The slot whose token has our label: its decimal id, for SunPKCS11.
  local hex
  hex="$(awk -v want="$TOKEN_LABEL" '
    /^Slot [0-9]+ \(0x[0-9a-fA-F]+\)/ { s = $3; gsub(/[():]/, "", s) }
    /token label/ { l = $0; sub(/^[^:]*: /, "", l); if (l == want) { print s; exit } }
  ' "$F/slots.txt")"
  [ -n "$hex" ] || die "no slot with token label $TOKEN_LABEL"
  echo $((hex)) >"$F/slot.id"
  note "token $TOKEN_LABEL in slot $((hex)) of $(grep -c '^Slot ' "$F/slots.txt")"
}

s_list_mechanisms() {
  t "${P11[@]}" --list-mechanisms | tee "$F/mechanisms.txt"
  note "$(grep -c '^  ' "$F/mechanisms.txt") mechanisms"
}

s_keygen_ec() {
  t "${P11[@]}" --keypairgen --key-type EC:prime256v1 --label "$L_EC" --id "$ID_EC" \
    --usage-sign
  t "${P11[@]}" --read-object --type pubkey --id "$ID_EC" -o "$F/ec.pub.der"
  t openssl pkey -pubin -inform DER -in "$F/ec.pub.der" -out "$F/ec.pub.pem"
  openssl pkey -pubin -in "$F/ec.pub.pem" -noout -text | grep -q 'NIST CURVE: P-256' ||
    die "public key read back is not P-256"
  note "$L_EC, public key read back (P-256)"
}

s_keygen_rsa() {
  t "${P11[@]}" --keypairgen --key-type rsa:2048 --label "$L_RSA" --id "$ID_RSA" \
    --usage-sign --usage-decrypt
  t "${P11[@]}" --read-object --type pubkey --id "$ID_RSA" -o "$F/rsa.pub.der"
  t openssl pkey -pubin -inform DER -in "$F/rsa.pub.der" -out "$F/rsa.pub.pem"
  openssl pkey -pubin -in "$F/rsa.pub.pem" -noout -text | grep -q 'Public-Key: (2048 bit)' ||
    die "public key read back is not RSA-2048"
  openssl pkey -pubin -in "$F/rsa.pub.pem" -noout -text | grep -q 'Exponent: 65537' ||
    die "public exponent is not 65537"
  note "$L_RSA, public key read back (2048 bit, e=65537)"
}

# Secret keys are made with --sensitive: without it pkcs11-tool 0.23 puts
# CKA_SENSITIVE=FALSE in the template, which SoftHSM2 takes and hsm-ha
# refuses (CKR_TEMPLATE_INCONSISTENT: its keys are always sensitive).
s_keygen_aes() {
  t "${P11[@]}" --keygen --key-type AES:32 --label "$L_AES" --id "$ID_AES" --usage-wrap \
    --sensitive
  t "${P11[@]}" --list-objects --type secrkey --id "$ID_AES" | tee "$F/aes.txt"
  grep -q 'AES length 32' "$F/aes.txt" || die "no 32-byte AES key listed"
  note "$L_AES (AES-256)"
}

# sign_and_check NAME MECH KEYID INPUT PUBPEM OPENSSL-VERIFY-ARGS...
# Signs INPUT on the token, verifies on the token (pkcs11-tool --verify) and
# with plain openssl against the public key read from the token (over the
# message file $F/data).
sign_and_check() {
  local name=$1 mech=$2 id=$3 input=$4 pub=$5
  shift 5
  local extra=()
  case "$mech" in ECDSA*) extra=(-f openssl) ;; esac
  case "$mech" in
    RSA-PKCS-PSS) extra=(--hash-algorithm SHA256 --mgf MGF1-SHA256) ;;
  esac
  t "${P11[@]}" --sign -m "$mech" --id "$id" -i "$input" -o "$F/$name.sig" "${extra[@]}"
  t "${P11[@]}" --verify -m "$mech" --id "$id" -i "$input" --signature-file "$F/$name.sig" \
    "${extra[@]}" | tee "$F/$name.verify"
  grep -q 'Signature is valid' "$F/$name.verify" || die "token verify: not valid"
  t openssl dgst -sha256 -verify "$pub" "$@" -signature "$F/$name.sig" "$F/data"
  note "signed on the token ($mech), verified by the token and by openssl"
}

s_sign_ecdsa() {
  need keygen-ec-p256 "$F/ec.pub.pem"
  sign_and_check ecdsa ECDSA "$ID_EC" "$F/data.sha256" "$F/ec.pub.pem"
}
s_sign_ecdsa_sha256() {
  need keygen-ec-p256 "$F/ec.pub.pem"
  sign_and_check ecdsa-sha256 ECDSA-SHA256 "$ID_EC" "$F/data" "$F/ec.pub.pem"
}
s_sign_sha256_rsa_pkcs() {
  need keygen-rsa-2048 "$F/rsa.pub.pem"
  sign_and_check sha256-rsa-pkcs SHA256-RSA-PKCS "$ID_RSA" "$F/data" "$F/rsa.pub.pem"
}
PSS_OPTS=(-sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 -sigopt rsa_mgf1_md:sha256)
s_sign_sha256_rsa_pkcs_pss() {
  need keygen-rsa-2048 "$F/rsa.pub.pem"
  sign_and_check sha256-rsa-pkcs-pss SHA256-RSA-PKCS-PSS "$ID_RSA" "$F/data" "$F/rsa.pub.pem" \
    "${PSS_OPTS[@]}"
}
s_sign_rsa_pkcs_pss() {
  need keygen-rsa-2048 "$F/rsa.pub.pem"
  sign_and_check rsa-pkcs-pss RSA-PKCS-PSS "$ID_RSA" "$F/data.sha256" "$F/rsa.pub.pem" \
    "${PSS_OPTS[@]}"
}

# decrypt_oaep MD: openssl encrypts a secret to the token's RSA public key
# (OAEP, MD and MGF1-MD, no label); the token decrypts it.
# (pkcs11-tool 0.23 encrypts with secret keys only.)
decrypt_oaep() {
  local md=$1 p11md=$2 mgf=$3
  need keygen-rsa-2048 "$F/rsa.pub.pem"
  head -c 32 /dev/urandom >"$F/oaep-$md.plain"
  t openssl pkeyutl -encrypt -pubin -inkey "$F/rsa.pub.pem" -pkeyopt rsa_padding_mode:oaep \
    -pkeyopt "rsa_oaep_md:$md" -pkeyopt "rsa_mgf1_md:$md" \
    -in "$F/oaep-$md.plain" -out "$F/oaep-$md.enc"
  t "${P11[@]}" --decrypt -m RSA-PKCS-OAEP --hash-algorithm "$p11md" --mgf "$mgf" \
    --id "$ID_RSA" -i "$F/oaep-$md.enc" -o "$F/oaep-$md.dec"
  cmp "$F/oaep-$md.plain" "$F/oaep-$md.dec" || die "decrypted text differs"
  note "openssl encrypted (OAEP $md), the token decrypted it"
}
s_decrypt_oaep_sha1() { decrypt_oaep sha1 SHA-1 MGF1-SHA1; }
s_decrypt_oaep_sha256() { decrypt_oaep sha256 SHA256 MGF1-SHA256; }

# A known AES-256 key-encryption key written into the token (C_CreateObject
# of a secret key with CKA_VALUE), so that openssl can wrap and unwrap
# against it.
s_import_kek() {
  head -c 32 /dev/urandom >"$F/kek.new"
  t "${P11[@]}" --write-object "$F/kek.new" --type secrkey --key-type AES:32 \
    --label "$L_KEK" --id "$ID_KEK" --usage-wrap --sensitive
  mv "$F/kek.new" "$F/kek.bin"
  note "$L_KEK (AES-256, CKA_VALUE given)"
}

# openssl wraps a random generic secret under the KEK (AES key wrap, RFC
# 3394); the token unwraps it into a token key; HMAC-SHA256 with that key on
# the token equals openssl's HMAC with the secret.
s_unwrap_aes_kw() {
  need import-aes-kek "$F/kek.bin"
  head -c 32 /dev/urandom >"$F/secret.bin"
  t openssl enc -id-aes256-wrap -K "$(xxd -p -c 256 "$F/kek.bin")" -iv A6A6A6A6A6A6A6A6 \
    -in "$F/secret.bin" -out "$F/secret.wrapped"
  t "${P11[@]}" --unwrap -m AES-KEY-WRAP --id "$ID_KEK" -i "$F/secret.wrapped" \
    --key-type GENERIC: --application-id "$ID_UNW" --application-label "$L_UNW" --sensitive
  printf 'interop hmac %s' "$SUFFIX" >"$F/msg"
  t "${P11[@]}" --sign -m SHA256-HMAC --id "$ID_UNW" -i "$F/msg" -o "$F/unw.hmac"
  openssl dgst -sha256 -mac HMAC -macopt "hexkey:$(xxd -p -c 256 "$F/secret.bin")" -binary \
    "$F/msg" >"$F/unw.hmac.openssl"
  cmp "$F/unw.hmac" "$F/unw.hmac.openssl" || die "HMAC with the unwrapped key differs"
  note "openssl-wrapped secret unwrapped (AES-KEY-WRAP) as $L_UNW; its HMAC-SHA256 matches openssl's"
}

# A token generic secret generated with --extractable, wrapped under the KEK
# by the token (pkcs11-tool --wrap), unwrapped by openssl, checked by HMAC.
# With TOKEN_KEYS_EXTRACTABLE=no the wrap must be refused.
s_wrap_token_key() {
  local gen_ok=yes
  need import-aes-kek "$F/kek.bin"
  t "${P11[@]}" --keygen --key-type GENERIC:32 --label "$L_GEN" --id "$ID_GEN" --sensitive \
    --extractable || gen_ok=no
  if [ "$TOKEN_KEYS_EXTRACTABLE" = no ]; then
    if [ "$gen_ok" = no ]; then
      note "extractable token key refused at generation: $(why "$LOGS/wrap-token-key.log");"
      return 0
    fi
    if t "${P11[@]}" --wrap -m AES-KEY-WRAP --id "$ID_KEK" --application-id "$ID_GEN" \
      -o "$F/gen.wrapped" >"$F/wrap.out" 2>&1; then
      cat "$F/wrap.out"
      die "the token wrapped a token key generated with --extractable"
    fi
    cat "$F/wrap.out"
    grep -q CKR_KEY_UNEXTRACTABLE "$F/wrap.out" ||
      die "wrap refused, but not with CKR_KEY_UNEXTRACTABLE: $(why "$F/wrap.out")"
    note "generated with --extractable; C_WrapKey refused: CKR_KEY_UNEXTRACTABLE (as documented)"
    return 0
  fi
  [ "$gen_ok" = yes ] || die "keygen GENERIC:32 --extractable failed"
  t "${P11[@]}" --wrap -m AES-KEY-WRAP --id "$ID_KEK" --application-id "$ID_GEN" \
    -o "$F/gen.wrapped"
  t openssl enc -d -id-aes256-wrap -K "$(xxd -p -c 256 "$F/kek.bin")" -iv A6A6A6A6A6A6A6A6 \
    -in "$F/gen.wrapped" -out "$F/gen.bin"
  printf 'interop wrap %s' "$SUFFIX" >"$F/msg2"
  t "${P11[@]}" --sign -m SHA256-HMAC --id "$ID_GEN" -i "$F/msg2" -o "$F/gen.hmac"
  openssl dgst -sha256 -mac HMAC -macopt "hexkey:$(xxd -p -c 256 "$F/gen.bin")" -binary \
    "$F/msg2" >"$F/gen.hmac.openssl"
  cmp "$F/gen.hmac" "$F/gen.hmac.openssl" || die "HMAC with the wrapped key differs"
  note "token key wrapped (AES-KEY-WRAP), openssl unwrapped it; HMAC-SHA256 matches"
}

s_list_objects() {
  t "${P11[@]}" --list-objects | tee "$F/objects.txt"
  local missing=()
  for l in "$L_EC" "$L_RSA" "$L_AES" "$L_KEK" "$L_UNW"; do
    grep -qE "label: +$l\$" "$F/objects.txt" || missing+=("$l")
  done
  [ ${#missing[@]} -eq 0 ] || die "not listed: ${missing[*]}"
  note "$(grep -cE '^(Private|Public|Secret) Key Object' "$F/objects.txt") key objects," \
    "this run's all listed"
}

# pkcs11-tool --test: before this run makes keys (random, digests, and the
# key tests of whatever keys the token already holds: none on a fresh one),
# and again with this run's keys, where its RSA checks apply (raw
# CKM_RSA_PKCS signatures over arbitrary data, OAEP with SHA-256).
pkcs11_tool_test() {
  t "${P11[@]}" --test | tee "$F/test-$1.txt"
  note "$(grep -cE ': OK|seem to work|seems to be OK' "$F/test-$1.txt") checks OK"
}
s_pkcs11_tool_test() { pkcs11_tool_test empty; }
s_pkcs11_tool_test_keys() { pkcs11_tool_test keys; }

# --- OpenSSL through libengine-pkcs11-openssl ------------------------------

engine_conf() {
  cat >"$F/openssl-engine.cnf" <<EOF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = $ENGINE_SO
MODULE_PATH = $MODULE
PIN = $PIN
init = 0
[req]
distinguished_name = dn
[dn]
EOF
}

# engine_req NAME LABEL PUBPEM [openssl req options...]: a CSR and a
# self-signed certificate signed through the engine, each verified by plain
# openssl (no engine), and carrying the token's public key.
engine_req() {
  local name=$1 label=$2 pub=$3
  shift 3
  local uri="pkcs11:token=$TOKEN_LABEL;object=$label;type=private"
  need "keygen (public key of $label)" "$pub"
  engine_conf
  OPENSSL_CONF="$F/openssl-engine.cnf" t openssl req -new -engine pkcs11 -keyform engine \
    -key "$uri" -subj "/CN=$label" -sha256 "$@" -out "$F/$name.csr"
  OPENSSL_CONF="$F/openssl-engine.cnf" t openssl req -new -x509 -days 2 -engine pkcs11 \
    -keyform engine -key "$uri" -subj "/CN=$label" -sha256 "$@" -out "$F/$name.crt"
  t openssl req -in "$F/$name.csr" -noout -verify
  openssl req -in "$F/$name.csr" -noout -pubkey | cmp - "$pub" ||
    die "the CSR's public key is not the token's"
  t openssl verify -CAfile "$F/$name.crt" "$F/$name.crt"
  openssl x509 -in "$F/$name.crt" -noout -pubkey | cmp - "$pub" ||
    die "the certificate's public key is not the token's"
  note "CSR and self-signed cert ($(openssl x509 -in "$F/$name.crt" -noout -text |
    grep -m1 'Signature Algorithm' | sed 's/.*: //; s/ *$//')) verified by plain openssl"
}
s_engine_ec() { engine_req engine-ec "$L_EC" "$F/ec.pub.pem"; }
s_engine_rsa() { engine_req engine-rsa "$L_RSA" "$F/rsa.pub.pem"; }
s_engine_rsa_pss() {
  engine_req engine-rsa-pss "$L_RSA" "$F/rsa.pub.pem" -sigopt rsa_padding_mode:pss \
    -sigopt rsa_pss_saltlen:digest
}

# The engine's self-signed EC certificate stored on the token next to its
# key (same CKA_ID and label): what SunPKCS11 needs to list a private key.
s_write_cert() {
  need openssl-engine-ec "$F/engine-ec.crt"
  t openssl x509 -in "$F/engine-ec.crt" -outform DER -out "$F/engine-ec.crt.der"
  t "${P11[@]}" --write-object "$F/engine-ec.crt.der" --type cert --id "$ID_EC" --label "$L_EC"
  note "certificate object $L_EC written"
}

# --- GnuTLS p11tool --------------------------------------------------------

s_p11tool_list_tokens() {
  t p11tool --provider "$MODULE" --list-tokens | tee "$F/p11tool-tokens.txt"
  grep -qE "^\s+Label: $TOKEN_LABEL\$" "$F/p11tool-tokens.txt" || die "token $TOKEN_LABEL not listed"
  note "$(grep -c '^Token ' "$F/p11tool-tokens.txt") token(s), $TOKEN_LABEL listed"
}

s_p11tool_list_all() {
  GNUTLS_PIN="$PIN" t p11tool --provider "$MODULE" --login --list-all \
    "pkcs11:token=$TOKEN_LABEL" | tee "$F/p11tool-all.txt"
  local missing=()
  for l in "$L_EC" "$L_RSA" "$L_AES"; do
    grep -qE "^\s+Label: $l\$" "$F/p11tool-all.txt" || missing+=("$l")
  done
  [ ${#missing[@]} -eq 0 ] || die "not listed: ${missing[*]}"
  note "$(grep -c '^Object ' "$F/p11tool-all.txt") objects, this run's keys listed"
}

p11tool_test_sign() {
  local label=$1
  shift
  GNUTLS_PIN="$PIN" t p11tool --provider "$MODULE" --login --test-sign "$@" \
    "pkcs11:token=$TOKEN_LABEL;object=$label;type=private" 2>&1 | tee "$F/p11tool-sign.txt"
  [ "$(grep -c '\.\.\. ok' "$F/p11tool-sign.txt")" -eq 3 ] || die "not 3 x ok"
  note "$(grep -m1 '^Signing using' "$F/p11tool-sign.txt" | sed 's/\.\.\. ok//'):" \
    "verified against the key's parameters and the token's public key"
}
s_p11tool_sign_ec() { p11tool_test_sign "$L_EC"; }
s_p11tool_sign_rsa() { p11tool_test_sign "$L_RSA"; }
s_p11tool_sign_rsa_pss() { p11tool_test_sign "$L_RSA" --sign-params rsa-pss; }

# --- Java SunPKCS11 --------------------------------------------------------

java_conf() {
  cat >"$F/sunpkcs11.cfg" <<EOF
name = interop
library = $MODULE
slot = $(cat "$F/slot.id")
EOF
}

s_keytool_list() {
  java_conf
  t keytool -list -keystore NONE -storetype PKCS11 -addprovider SunPKCS11 \
    -providerArg "$F/sunpkcs11.cfg" -storepass "$PIN" | tee "$F/keytool.txt"
  grep -qE "^$L_AES, SecretKeyEntry" "$F/keytool.txt" || die "$L_AES not listed as SecretKeyEntry"
  note "$(grep -m1 'Your keystore contains' "$F/keytool.txt" | sed 's/Your keystore contains //')," \
    "$L_AES as SecretKeyEntry"
}

# SunPKCS11 lists a private key only with a certificate of the same CKA_ID
# (step write-cert).
s_keytool_list_private_key() {
  need keytool-list "$F/keytool.txt"
  grep -qE "^$L_EC, PrivateKeyEntry" "$F/keytool.txt" ||
    die "$L_EC not listed as PrivateKeyEntry (SunPKCS11 needs its certificate on the token)"
  note "$L_EC as PrivateKeyEntry"
}

s_java_compile() {
  java_conf
  mkdir -p "$F/java"
  t javac -d "$F/java" "$HERE/SignVerify.java"
  note "SignVerify.java compiled"
}

# SignVerify prints `RESULT<TAB>step<TAB>pass|fail<TAB>detail` lines: one
# step each.
java_results() {
  local log="$LOGS/java.log"
  t java -cp "$F/java" SignVerify "$F/sunpkcs11.cfg" "$PIN" "$L_EC" "$L_AES" \
    >"$log" 2>&1
  echo "java exited with $?" >>"$log"
  if ! grep -q '^RESULT' "$log"; then
    printf '%s\t%s\t%s\n' java fail "no results: $(why "$log")" | tee -a "$RESULTS"
    FAILED=1
    return
  fi
  grep '^RESULT' "$log" | cut -f2- | tee -a "$RESULTS"
  grep -q $'^RESULT\t[^\t]*\tfail' "$log" && FAILED=1
  return 0
}

# --- clean-up --------------------------------------------------------------

s_delete_objects() {
  # Private keys first: on hsm-ha that deletes the pair. Objects may already
  # be gone, so each delete may fail; what counts is the listing after.
  local spec
  for spec in "cert $ID_EC" "privkey $ID_EC" "pubkey $ID_EC" "privkey $ID_RSA" \
    "pubkey $ID_RSA" "secrkey $ID_AES" "secrkey $ID_KEK" "secrkey $ID_GEN" "secrkey $ID_UNW"; do
    set -- $spec
    t "${P11[@]}" --delete-object --type "$1" --id "$2" || true
  done
  t "${P11[@]}" --list-objects | tee "$F/objects-after.txt"
  if grep -q -- "-$SUFFIX" "$F/objects-after.txt"; then
    die "left on the token: $(grep -- "-$SUFFIX" "$F/objects-after.txt" | tr -s ' ' | tr '\n' ' ')"
  fi
  note "this run's objects deleted"
}

# --- the run ---------------------------------------------------------------

head -c 1000 /dev/urandom >"$F/data"
openssl dgst -sha256 -binary "$F/data" >"$F/data.sha256"

step tools s_tools
step list-slots s_list_slots
step list-mechanisms s_list_mechanisms
step pkcs11-tool-test s_pkcs11_tool_test
step keygen-ec-p256 s_keygen_ec
step keygen-rsa-2048 s_keygen_rsa
step keygen-aes-256 s_keygen_aes
step sign-ecdsa s_sign_ecdsa
step sign-ecdsa-sha256 s_sign_ecdsa_sha256
step sign-sha256-rsa-pkcs s_sign_sha256_rsa_pkcs
step sign-sha256-rsa-pkcs-pss s_sign_sha256_rsa_pkcs_pss
step sign-rsa-pkcs-pss s_sign_rsa_pkcs_pss
step decrypt-rsa-oaep-sha1 s_decrypt_oaep_sha1
step decrypt-rsa-oaep-sha256 s_decrypt_oaep_sha256
step import-aes-kek s_import_kek
step unwrap-aes-kw s_unwrap_aes_kw
step wrap-token-key s_wrap_token_key
step list-objects s_list_objects
step pkcs11-tool-test-keys s_pkcs11_tool_test_keys
step openssl-engine-ec s_engine_ec
step openssl-engine-rsa s_engine_rsa
step openssl-engine-rsa-pss s_engine_rsa_pss
step write-cert s_write_cert
step p11tool-list-tokens s_p11tool_list_tokens
step p11tool-list-all s_p11tool_list_all
step p11tool-test-sign-ec s_p11tool_sign_ec
step p11tool-test-sign-rsa s_p11tool_sign_rsa
step p11tool-test-sign-rsa-pss s_p11tool_sign_rsa_pss
step keytool-list s_keytool_list
step keytool-list-private-key s_keytool_list_private_key
step java-compile s_java_compile
java_results
step delete-objects s_delete_objects

exit "$FAILED"
