#!/usr/bin/env bash
# setup.sh: create keybroker's Vault policy and its login (AppRole for VMs,
# Kubernetes auth for pods). Run with a Vault admin token in VAULT_TOKEN and
# VAULT_ADDR set. Idempotent.
#
#   deploy/vault/setup.sh approle                 # prints role_id, writes secret-id to ./secret-id
#   deploy/vault/setup.sh kubernetes NAMESPACE    # role "keybroker" for service account keybroker
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
method=${1:?usage: setup.sh approle | kubernetes NAMESPACE}

vault policy write keybroker "$here/keybroker-policy.hcl"

case "$method" in
approle)
  vault auth list -format=json | grep -q '"approle/"' || vault auth enable approle
  # Short tokens, renewed by keybroker; a fresh login after token_max_ttl.
  vault write auth/approle/role/keybroker \
    token_policies=keybroker token_ttl=1h token_max_ttl=24h \
    secret_id_ttl=0 secret_id_num_uses=0 token_no_default_policy=true
  echo "role_id (put in KEYBROKER_ROLE_ID): $(vault read -field=role_id auth/approle/role/keybroker/role-id)"
  umask 077
  vault write -f -field=secret_id auth/approle/role/keybroker/secret-id > secret-id
  echo "secret_id written to ./secret-id: install it as /etc/keybroker/secret-id (mode 0400, owner root; the unit hands it to keybroker)"
  ;;
kubernetes)
  ns=${2:?usage: setup.sh kubernetes NAMESPACE}
  vault auth list -format=json | grep -q '"kubernetes/"' || vault auth enable kubernetes
  # Run inside the cluster, or set kubernetes_host and kubernetes_ca_cert yourself.
  vault write auth/kubernetes/config kubernetes_host="https://${KUBERNETES_SERVICE_HOST:-kubernetes.default.svc}:${KUBERNETES_SERVICE_PORT:-443}"
  vault write auth/kubernetes/role/keybroker \
    bound_service_account_names=keybroker bound_service_account_namespaces="$ns" \
    token_policies=keybroker token_ttl=1h token_max_ttl=24h token_no_default_policy=true
  echo "kubernetes role keybroker bound to $ns/keybroker"
  ;;
*)
  echo "unknown method $method" >&2; exit 2 ;;
esac
