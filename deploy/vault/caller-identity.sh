#!/usr/bin/env bash
# caller-identity.sh: let a service that logs in to Vault prove who it is to
# keybroker with a Vault identity token, instead of a keybroker key.
#
#   deploy/vault/caller-identity.sh CALLER
#
# With an admin VAULT_TOKEN and VAULT_ADDR. It makes (idempotent):
#   - the signing key keybroker-callers (RS256, rotated daily, old keys
#     published a day longer), for audience (client_id) keybroker;
#   - the role CALLER, whose tokens carry the claim keybroker_caller=CALLER
#     (Vault's sub is the entity id, which no one knows in advance: the
#     claim is what keybroker matches) and live 15 minutes;
#   - the policy keybroker-identity-CALLER: read identity/oidc/token/CALLER.
# Then add that policy to the service's own Vault login (its AppRole or
# Kubernetes role), and the printed entry to keybroker's callers:. The
# service fetches a token (vault read -field=token identity/oidc/token/CALLER)
# and sends it as Proxy-Authorization: Bearer <token>. keybroker finds
# Vault's keys by OIDC discovery (no Vault policy needed for that).
set -euo pipefail
caller=${1:?usage: caller-identity.sh CALLER}
case "$caller" in
*[!a-z0-9-]*) echo "CALLER must be a keybroker caller name (a-z, 0-9, -)" >&2; exit 2 ;;
esac

vault write identity/oidc/key/keybroker-callers \
  allowed_client_ids=keybroker algorithm=RS256 rotation_period=24h verification_ttl=24h
vault write "identity/oidc/role/$caller" \
  key=keybroker-callers client_id=keybroker ttl=15m \
  template="{\"keybroker_caller\": \"$caller\"}"
vault policy write "keybroker-identity-$caller" - <<POLICY
path "identity/oidc/token/$caller" {
  capabilities = ["read"]
}
POLICY

issuer=$(vault read -field=issuer identity/oidc/config 2>/dev/null || true)
if [ -z "$issuer" ]; then
  echo "identity/oidc/config has no issuer: Vault names itself by its api_addr;" >&2
  echo "set one (vault write identity/oidc/config issuer=https://vault.example:8200) so keybroker can reach it." >&2
  issuer="\$VAULT_ADDR"
fi
cat <<ENTRY
Add the policy keybroker-identity-$caller to $caller's Vault login, then to keybroker's callers:

  - name: $caller
    jwt:
      issuer: $issuer/v1/identity/oidc
      audience: keybroker
      claims: {"/keybroker_caller": $caller}
ENTRY
