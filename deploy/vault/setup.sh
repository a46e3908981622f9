#!/usr/bin/env bash
# Sets up Vault for the sluice of one source: the database secrets engine role
# that issues its short-lived database logins, and its policy. Run it once per
# source, as a Vault admin:
#
#   export VAULT_ADDR=https://vault.example:8200 VAULT_TOKEN=<admin token>
#   SOURCE=pg1 TABLES=public.orders,public.customers \
#     PG_HOST=db PG_PORT=5432 PG_DB=shop PG_ADMIN_USER=vault PG_ADMIN_PASSWORD=... ./setup.sh postgres
#   SOURCE=my1 TABLES=shop.orders,shop.customers \
#     MY_HOST=db MY_PORT=3306 MY_DB=shop MY_ADMIN_USER=vault MY_ADMIN_PASSWORD=... ./setup.sh mysql
#
# It writes database role sluice-<source> and policy sluice-<source>, which may
# read only that role's credentials and the KV secrets under sluice/<source>.
#
# Before it, as a database superuser (see deploy/database/*-grants.sql):
#   PostgreSQL: CREATE ROLE sluice_<source> NOLOGIN;     -- the group the dynamic logins join
#               GRANT CONNECT ON DATABASE shop TO sluice_<source>;
#               GRANT USAGE ON SCHEMA public TO sluice_<source>;
#               GRANT SELECT ON public.orders, public.customers TO sluice_<source>;  -- the captured tables only
#               CREATE TABLE public.sluice_signal (source text PRIMARY KEY, kind text NOT NULL,
#                 id text NOT NULL, at timestamptz NOT NULL DEFAULT now());   -- backfill watermarks
#               GRANT SELECT, INSERT, UPDATE ON public.sluice_signal TO sluice_<source>;
#               CREATE PUBLICATION sluice_<source> FOR TABLE public.orders, public.customers, public.sluice_signal;
#               -- owned by an admin, so that dropping a rotated login never drops the publication
#               The Vault admin user needs CREATEROLE and membership in sluice_<source> WITH ADMIN OPTION.
#   MySQL:      the signal table, created once by an admin:
#               CREATE TABLE <db>.sluice_signal (source VARCHAR(255) NOT NULL PRIMARY KEY,
#                 kind VARCHAR(16) NOT NULL, id VARCHAR(255) NOT NULL,
#                 at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6));
#               The Vault admin user needs CREATE USER, and GRANT OPTION with REPLICATION SLAVE,
#               REPLICATION CLIENT (global privileges: MySQL grants them only ON *.*), SELECT on
#               the captured tables and INSERT, UPDATE on the signal table.
#
# Then point sluice at it:
#   source.credentials.vault: {address: ..., auth: {...}, database: {mount: database, role: sluice-<source>}}
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kind=${1:?usage: SOURCE=<name> TABLES=<schema.table,...> setup.sh postgres|mysql}
SOURCE=${SOURCE:?set SOURCE to the source name (source.name)}
TABLES=${TABLES:?set TABLES to the captured tables, schema.table,schema.table}
TTL=${TTL:-1h}
MAX_TTL=${MAX_TTL:-24h}
# The name goes into Vault paths and SQL: letters, digits, _ and - only.
if [[ ! $SOURCE =~ ^[A-Za-z0-9_-]+$ ]]; then
  echo "SOURCE: use letters, digits, _ and - only" >&2
  exit 2
fi
role="sluice-$SOURCE"

vault secrets list -format=json | grep -q '"database/"' || vault secrets enable -path=database database

case "$kind" in
postgres)
  group="sluice_${SOURCE//-/_}"
  vault write "database/config/$role" \
    plugin_name=postgresql-database-plugin \
    connection_url="postgresql://{{username}}:{{password}}@${PG_HOST:?}:${PG_PORT:-5432}/${PG_DB:?}?sslmode=${PG_SSLMODE:-verify-full}" \
    username="${PG_ADMIN_USER:?}" password="${PG_ADMIN_PASSWORD:?}" \
    allowed_roles="$role"
  vault write "database/roles/$role" db_name="$role" \
    creation_statements="CREATE ROLE \"{{name}}\" WITH LOGIN REPLICATION PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE $group;" \
    revocation_statements="REVOKE $group FROM \"{{name}}\"; DROP ROLE IF EXISTS \"{{name}}\";" \
    default_ttl="$TTL" max_ttl="$MAX_TTL"
  ;;
mysql)
  # SELECT on each captured table, never on *.* (which includes mysql.user).
  grants="GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{{name}}'@'%';"
  IFS=, read -ra tables <<<"$TABLES"
  for t in "${tables[@]}"; do
    if [[ ! $t =~ ^[A-Za-z0-9_$]+\.[A-Za-z0-9_$]+$ ]]; then
      echo "TABLES: $t is not db.table" >&2
      exit 2
    fi
    grants+=" GRANT SELECT ON \`${t%%.*}\`.\`${t#*.}\` TO '{{name}}'@'%';"
  done
  grants+=" GRANT SELECT, INSERT, UPDATE ON \`${MY_DB:?}\`.\`sluice_signal\` TO '{{name}}'@'%';"
  vault write "database/config/$role" \
    plugin_name=mysql-database-plugin \
    connection_url="{{username}}:{{password}}@tcp(${MY_HOST:?}:${MY_PORT:-3306})/" \
    username="${MY_ADMIN_USER:?}" password="${MY_ADMIN_PASSWORD:?}" \
    allowed_roles="$role"
  vault write "database/roles/$role" db_name="$role" \
    creation_statements="CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; $grants" \
    revocation_statements="DROP USER IF EXISTS '{{name}}'@'%';" \
    default_ttl="$TTL" max_ttl="$MAX_TTL"
  ;;
*)
  echo "usage: SOURCE=<name> TABLES=<schema.table,...> setup.sh postgres|mysql" >&2
  exit 2
  ;;
esac

sed "s/<source>/$SOURCE/g" "$here/sluice-policy.hcl.tmpl" | vault policy write "sluice-$SOURCE" -
echo "done: give the sluice of $SOURCE a token with only policy sluice-$SOURCE (an AppRole or a Kubernetes auth role bound to it)"
