#!/bin/bash
# Runs once, when the postgres container initialises an empty data directory
# (mounted into /docker-entrypoint-initdb.d). Creates the runtime login role the
# services connect as: it owns nothing and can neither bypass row-level security
# nor act as superuser. Tables are created and owned by the admin role through
# `crm migrate`. Also creates the `test` and `root` databases the test suite expects.
set -euo pipefail
: "${CRM_APP_PASSWORD:?set CRM_APP_PASSWORD for the crm_app role}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
  -v app_password="$CRM_APP_PASSWORD" <<'SQL'
SELECT 'CREATE ROLE crm_app' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'crm_app')\gexec
ALTER ROLE crm_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD :'app_password';
SELECT 'CREATE DATABASE test' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'test')\gexec
SELECT 'CREATE DATABASE root' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'root')\gexec
SQL
