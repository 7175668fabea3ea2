#!/bin/sh
# Makes the dev overlay's secrets in ./secrets (or $1): a development CA
# (`hsm-node pki`), the members' server certificate for the StatefulSet's
# names, the proxy's client certificate, the proxy's listener certificate
# for 127.0.0.1, a cloning-domain secret and random role passwords. Keeps
# files that already exist, so the group keeps its identity. Needs hsm-node
# on PATH (cargo build; export PATH=$PWD/target/debug:$PATH).
set -eu
out="${1:-$(dirname "$0")/secrets}"
members="${HSM_DEV_MEMBERS:-3}"
umask 077
mkdir -p "$out"
pki="$out/pki"

[ -f "$pki/ca.pem" ] || hsm-node pki init-ca --dir "$pki" --cn "hsm-ha dev CA"
[ -f "$pki/proxy-client.pem" ] || hsm-node pki issue --dir "$pki" --name proxy-client
[ -f "$pki/listener.pem" ] ||
  hsm-node pki issue --dir "$pki" --name listener --server --san 127.0.0.1 --san localhost
if [ ! -f "$pki/member.pem" ]; then
  sans=""
  i=0
  while [ "$i" -lt "$members" ]; do
    sans="$sans --san hsm-node-$i.hsm-node"
    i=$((i + 1))
  done
  # shellcheck disable=SC2086 # one --san per member
  hsm-node pki issue --dir "$pki" --name member --server $sans
fi

# The proxy's Secret (hsm-proxy-secrets).
cp "$pki/listener.pem" "$out/listener.pem"
cp "$pki/listener.key" "$out/listener.key"
cp "$pki/ca.pem" "$out/listener-ca.pem"
cp "$pki/proxy-client.pem" "$out/client.pem"
cp "$pki/proxy-client.key" "$out/client.key"
cp "$pki/ca.pem" "$out/ca.pem"
# The members' Secret (hsm-node-secrets).
cp "$pki/member.pem" "$out/server.pem"
cp "$pki/member.key" "$out/server.key"
cp "$pki/ca.pem" "$out/client-ca.pem"
cp "$pki/proxy-client.pem" "$out/proxy-client.pem"
[ -f "$out/domain.secret" ] || head -c 32 /dev/urandom > "$out/domain.secret"
for role in so co cu replication admin; do
  f="$out/$role-password"
  [ -f "$f" ] || { LC_ALL=C tr -dc 'A-Za-z0-9' < /dev/urandom | head -c 32 > "$f"; }
done
printf 'role = "replication"\npassword = "%s"\n' "$(cat "$out/replication-password")" \
  > "$out/credential.toml"
# The operator token of /admin/... and /status (metrics.admin_token_file).
[ -f "$out/admin-token" ] || { LC_ALL=C tr -dc 'a-f0-9' < /dev/urandom | head -c 64 > "$out/admin-token"; }
echo "secrets in $out"
