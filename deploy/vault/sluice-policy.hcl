# What sluice needs from Vault, and nothing more.

# Static logins: read the KV v2 secrets under secret/sluice/ (kv: {mount: secret, path: sluice/<source>}).
path "secret/data/sluice/*" {
  capabilities = ["read"]
}

# Dynamic logins: issue credentials from the sluice roles of the database secrets engine.
path "database/creds/sluice-*" {
  capabilities = ["read"]
}

# Renew the leases of those credentials (Vault's lifetime watcher).
path "sys/leases/renew" {
  capabilities = ["update"]
}

# Keep its own token alive and know its TTL.
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
