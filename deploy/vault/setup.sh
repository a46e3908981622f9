#!/usr/bin/env bash
# Sets up Vault's database secrets engine so sluice gets short-lived database
# logins, and writes the sluice policy. Run it once, as a Vault admin:
#
#   export VAULT_ADDR=https://vault.example:8200 VAULT_TOKEN=<admin token>
#   PG_HOST=db PG_PORT=5432 PG_DB=shop PG_ADMIN_USER=vault PG_ADMIN_PASSWORD=... ./setup.sh postgres
#   MY_HOST=db MY_PORT=3306 MY_DB=shop MY_ADMIN_USER=vault MY_ADMIN_PASSWORD=... ./setup.sh mysql
#
# Before it, as a database superuser:
#   PostgreSQL: CREATE ROLE sluice NOLOGIN;                  -- the group the dynamic logins join
#               GRANT SELECT ON ALL TABLES IN SCHEMA public TO sluice;
#               CREATE TABLE public.sluice_signal (source text PRIMARY KEY, kind text NOT NULL,
#                 id text NOT NULL, at timestamptz NOT NULL DEFAULT now());   -- backfill watermarks
#               GRANT INSERT, UPDATE ON public.sluice_signal TO sluice;
#               CREATE PUBLICATION sluice_<source> FOR TABLE ..., public.sluice_signal;  -- owned by an admin, so that
#               dropping a rotated login never has to drop the publication with it
#               the Vault admin user needs CREATEROLE and membership in sluice (WITH ADMIN OPTION).
#   MySQL:      the Vault admin user needs CREATE USER and GRANT OPTION with
#               REPLICATION SLAVE, REPLICATION CLIENT, SELECT, and INSERT, UPDATE on
#               the signal table, created once by an admin:
#               CREATE TABLE <db>.sluice_signal (source VARCHAR(255) NOT NULL PRIMARY KEY,
#                 kind VARCHAR(16) NOT NULL, id VARCHAR(255) NOT NULL,
#                 at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6));
#
# Then point sluice at it:
#   source.credentials.vault: {address: ..., auth: {...}, database: {mount: database, role: sluice-pg}}
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kind=${1:?usage: setup.sh postgres|mysql}
TTL=${TTL:-1h}
MAX_TTL=${MAX_TTL:-24h}

vault secrets list -format=json | grep -q '"database/"' || vault secrets enable -path=database database

case "$kind" in
postgres)
  vault write database/config/sluice-pg \
    plugin_name=postgresql-database-plugin \
    connection_url="postgresql://{{username}}:{{password}}@${PG_HOST:?}:${PG_PORT:-5432}/${PG_DB:?}?sslmode=${PG_SSLMODE:-require}" \
    username="${PG_ADMIN_USER:?}" password="${PG_ADMIN_PASSWORD:?}" \
    allowed_roles=sluice-pg
  vault write database/roles/sluice-pg db_name=sluice-pg \
    creation_statements="CREATE ROLE \"{{name}}\" WITH LOGIN REPLICATION PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE sluice;" \
    revocation_statements="REVOKE sluice FROM \"{{name}}\"; DROP ROLE IF EXISTS \"{{name}}\";" \
    default_ttl="$TTL" max_ttl="$MAX_TTL"
  ;;
mysql)
  vault write database/config/sluice-my \
    plugin_name=mysql-database-plugin \
    connection_url="{{username}}:{{password}}@tcp(${MY_HOST:?}:${MY_PORT:-3306})/" \
    username="${MY_ADMIN_USER:?}" password="${MY_ADMIN_PASSWORD:?}" \
    allowed_roles=sluice-my
  vault write database/roles/sluice-my db_name=sluice-my \
    creation_statements="CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO '{{name}}'@'%'; GRANT INSERT, UPDATE ON ${MY_DB:?}.sluice_signal TO '{{name}}'@'%';" \
    revocation_statements="DROP USER IF EXISTS '{{name}}'@'%';" \
    default_ttl="$TTL" max_ttl="$MAX_TTL"
  ;;
*)
  echo "usage: setup.sh postgres|mysql" >&2
  exit 2
  ;;
esac

vault policy write sluice "$here/sluice-policy.hcl"
echo "done: give sluice a token with policy 'sluice' (an AppRole or a Kubernetes auth role bound to it)"
