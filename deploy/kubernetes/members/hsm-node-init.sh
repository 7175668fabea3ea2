#!/bin/sh
# First start of a member: initialise the node directory and the group's
# partition, and register the proxy's client certificate to it. Later
# starts find both and change nothing. Run by the StatefulSet's init
# container; every input comes from the environment:
#   HSM_NODE_DIR      the node directory (on the member's volume)
#   HSM_NODE_LISTEN   the address the node serves on
#   HSM_NODE_SECRETS  directory with server.pem, server.key, client-ca.pem,
#                     proxy-client.pem and domain.secret
#   HSM_PARTITION     the group's partition (group.partition of the proxy)
#   HSM_SO_PASSWORD, HSM_CO_PASSWORD, HSM_CU_PASSWORD,
#   HSM_REPLICATION_PASSWORD  the partition's role passwords
#   HSM_ADMIN_PASSWORD (optional) enables the node's admin API
set -eu
dir="${HSM_NODE_DIR:?}"
secrets="${HSM_NODE_SECRETS:?}"
partition="${HSM_PARTITION:?}"

if [ ! -f "$dir/node.json" ]; then
  hsm-node init --dir "$dir" --listen "${HSM_NODE_LISTEN:?}" \
    --server-cert "$secrets/server.pem" --server-key "$secrets/server.key" \
    --client-ca "$secrets/client-ca.pem"
fi

if ! hsm-node partition list --dir "$dir" | cut -f1 | grep -qx "$partition"; then
  hsm-node partition create --dir "$dir" --name "$partition" \
    --domain-file "$secrets/domain.secret"
  hsm-node partition register-client --dir "$dir" --name "$partition" \
    --cert "$secrets/proxy-client.pem"
fi
echo "member ready: $dir, partition $partition"
