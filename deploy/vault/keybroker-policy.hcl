# keybroker's Vault policy: read the vendor credentials it serves, and their
# KV v2 metadata (versions), nothing else. One pair of paths per upstream's
# credential.vault entry; add a pair when you add a vendor.

path "secret/data/vendors/huntress" {
  capabilities = ["read"]
}
path "secret/metadata/vendors/huntress" {
  capabilities = ["read"]
}

path "secret/data/vendors/infocyte" {
  capabilities = ["read"]
}
path "secret/metadata/vendors/infocyte" {
  capabilities = ["read"]
}

path "secret/data/vendors/huntress-sat" {
  capabilities = ["read"]
}
path "secret/metadata/vendors/huntress-sat" {
  capabilities = ["read"]
}

# The signing key of keybroker's own OAuth tokens (oauth.token_signing), when
# replicas run.
path "secret/data/keybroker/token-signing" {
  capabilities = ["read"]
}
path "secret/metadata/keybroker/token-signing" {
  capabilities = ["read"]
}

# The audit signing key (audit.signing.credential; README "For auditors").
path "secret/data/keybroker/audit-signing" {
  capabilities = ["read"]
}
path "secret/metadata/keybroker/audit-signing" {
  capabilities = ["read"]
}

# Or, preferred, a transit key that never leaves Vault
# (audit.signing.vault_transit: {mount: transit, key: keybroker-audit}):
# signatures and the public keys only; no export, no backup.
path "transit/sign/keybroker-audit" {
  capabilities = ["update"]
}
path "transit/keys/keybroker-audit" {
  capabilities = ["read"]
}

# keybroker renews and looks up its own token (granted by Vault's default
# policy too; listed so the intent is explicit if default is not attached).
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
