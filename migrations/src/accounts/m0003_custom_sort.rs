//! Lists sorted by a custom field read an index. Values live in each record's JSONB
//! `custom`, and an expression index per key would mean one index per tenant's field, of no
//! use past page 1 anyway: row-level security lets only leakproof comparisons into an index
//! scan, and the jsonb operators are not. So every account and contact gets one row per
//! custom field defined for its type in `accounts.custom_sort`, holding the value as text
//! that sorts byte by byte (`COLLATE "C"`) as the values do. Its index leads with the
//! tenant, the object type and the key, then the value and the record id, the keyset of a
//! page; text and uuid comparisons are leakproof, so a deep page's cursor is an index bound.
//!
//! Triggers keep the rows: a record's insert and every change of its `custom` write them; a
//! new definition adds one row per record of its type, a deleted one removes its rows. A
//! definition's change holds a tenant's and type's lock that record writes share, so a
//! record written beside a new definition is seen by one of the two: the record's trigger
//! waits for the definition to commit and then reads it, or the definition's fill waits for
//! the record to commit and then reads the record.

use sea_orm_migration::prelude::*;

use crate::{RUNTIME_GROUP, tenant_rls};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0003_custom_sort"
    }
}

// The trait's signature elides the lifetime of SchemaManager; matching it needs the elision.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let rls = tenant_rls("accounts", "custom_sort", "tenant_id");
        // Per record table: the triggers of its writes, and the rows of the fields defined
        // so far.
        let (mut per_table, mut fill) = (String::new(), String::new());
        for (table, object) in [("accounts", "account"), ("contacts", "contact")] {
            per_table.push_str(&format!(
                "DROP TRIGGER IF EXISTS custom_sort_insert ON accounts.{table};
CREATE TRIGGER custom_sort_insert AFTER INSERT ON accounts.{table}
    FOR EACH ROW EXECUTE FUNCTION accounts.custom_sort_record('{object}');
DROP TRIGGER IF EXISTS custom_sort_update ON accounts.{table};
CREATE TRIGGER custom_sort_update AFTER UPDATE OF custom ON accounts.{table}
    FOR EACH ROW WHEN (OLD.custom IS DISTINCT FROM NEW.custom)
    EXECUTE FUNCTION accounts.custom_sort_record('{object}');
"
            ));
            fill.push_str(&format!(
                "INSERT INTO accounts.custom_sort (tenant_id, record_id, key, object_type, v)
SELECT t.tenant_id, t.id, f.key, f.object_type, accounts.custom_sort_value(t.custom -> f.key)
  FROM accounts.custom_fields f
  JOIN accounts.{table} t ON t.tenant_id = f.tenant_id
 WHERE f.object_type = '{object}'
ON CONFLICT DO NOTHING;
"
            ));
        }
        let sql = format!(
            r#"
CREATE TABLE IF NOT EXISTS accounts.custom_sort (
    tenant_id    uuid NOT NULL,
    record_id    uuid NOT NULL,
    key          text NOT NULL,
    object_type  text NOT NULL,
    v            text COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant_id, record_id, key)
);
CREATE INDEX IF NOT EXISTS custom_sort_order
    ON accounts.custom_sort (tenant_id, object_type, key, v, record_id);
{rls}
GRANT SELECT, INSERT, UPDATE, DELETE ON accounts.custom_sort TO {RUNTIME_GROUP};
-- The owner fills the rows of the fields defined so far, below, across tenants.
DROP POLICY IF EXISTS definer_access ON accounts.custom_sort;
CREATE POLICY definer_access ON accounts.custom_sort TO CURRENT_USER USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS definer_lookup ON accounts.custom_fields;
CREATE POLICY definer_lookup ON accounts.custom_fields FOR SELECT TO CURRENT_USER USING (true);

-- A finite number as 16 hex digits that sort as the numbers do: the IEEE 754 bits, the
-- sign bit flipped for positives and every bit flipped for negatives.
CREATE OR REPLACE FUNCTION accounts.sortable_float(x float8) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $fn$
    SELECT CASE WHEN b < 0 THEN lpad(to_hex(~b), 16, '0')
                ELSE to_hex(b | (-9223372036854775807 - 1)) END
      FROM (SELECT ('x' || encode(float8send(x), 'hex'))::bit(64)::bigint AS b) f
$fn$;

-- The sort value of a custom field's value: '' when missing or null (first in ascending
-- order), else a type letter and the value: numbers by magnitude, booleans false first,
-- strings (text, select, dates as YYYY-MM-DD) by code point, cut at 200 characters to stay
-- within an index entry (longer values that share those 200 fall back to the record id).
CREATE OR REPLACE FUNCTION accounts.custom_sort_value(v jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT CASE jsonb_typeof(v)
        WHEN 'number' THEN
            'n' || accounts.sortable_float(least(greatest(v::numeric, -1e308), 1e308)::float8)
        WHEN 'boolean' THEN CASE WHEN v::boolean THEN 'b1' ELSE 'b0' END
        WHEN 'string' THEN 's' || left(v #>> '{{}}', 200)
        WHEN 'array' THEN 'a' || left(v::text, 200)
        WHEN 'object' THEN 'o' || left(v::text, 200)
        ELSE '' END
$fn$;

-- The lock of a tenant's definitions of one object type (see the module comment).
CREATE OR REPLACE FUNCTION accounts.custom_sort_lock(tenant uuid, object_type text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$ SELECT hashtextextended('accounts.custom_sort:' || tenant || ':' || object_type, 0) $fn$;

-- A record's sort rows, one per field defined for its type (`TG_ARGV[0]`); on an update,
-- those of the fields whose value changed.
CREATE OR REPLACE FUNCTION accounts.custom_sort_record() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    old_custom jsonb := CASE WHEN TG_OP = 'UPDATE' THEN OLD.custom END;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(accounts.custom_sort_lock(NEW.tenant_id, TG_ARGV[0]));
    INSERT INTO accounts.custom_sort AS s (tenant_id, record_id, key, object_type, v)
    SELECT NEW.tenant_id, NEW.id, f.key, f.object_type, accounts.custom_sort_value(NEW.custom -> f.key)
      FROM accounts.custom_fields f
     WHERE f.tenant_id = NEW.tenant_id AND f.object_type = TG_ARGV[0]
       AND (old_custom IS NULL OR (old_custom -> f.key) IS DISTINCT FROM (NEW.custom -> f.key))
    ON CONFLICT (tenant_id, record_id, key) DO UPDATE SET v = excluded.v;
    RETURN NULL;
END
$fn$;

{per_table}
-- A definition's sort rows: one per record of its type when it is added (opportunities keep
-- their records elsewhere), none once it is deleted.
CREATE OR REPLACE FUNCTION accounts.custom_sort_field() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    records text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_advisory_xact_lock(accounts.custom_sort_lock(OLD.tenant_id, OLD.object_type));
        DELETE FROM accounts.custom_sort s
         WHERE s.tenant_id = OLD.tenant_id AND s.object_type = OLD.object_type AND s.key = OLD.key;
        RETURN NULL;
    END IF;
    records := CASE NEW.object_type WHEN 'contact' THEN 'contacts' WHEN 'account' THEN 'accounts' END;
    IF records IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(accounts.custom_sort_lock(NEW.tenant_id, NEW.object_type));
    EXECUTE format(
        'INSERT INTO accounts.custom_sort AS s (tenant_id, record_id, key, object_type, v)
         SELECT t.tenant_id, t.id, $2, $3, accounts.custom_sort_value(t.custom -> $2)
           FROM accounts.%I t WHERE t.tenant_id = $1
         ON CONFLICT (tenant_id, record_id, key) DO UPDATE SET v = excluded.v', records)
    USING NEW.tenant_id, NEW.key, NEW.object_type;
    RETURN NULL;
END
$fn$;

DROP TRIGGER IF EXISTS custom_sort_field ON accounts.custom_fields;
CREATE TRIGGER custom_sort_field AFTER INSERT OR DELETE ON accounts.custom_fields
    FOR EACH ROW EXECUTE FUNCTION accounts.custom_sort_field();

{fill}"#
        );
        manager.get_connection().execute_unprepared(&sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "DROP POLICY IF EXISTS definer_lookup ON accounts.custom_fields;
                 DROP TRIGGER IF EXISTS custom_sort_field ON accounts.custom_fields;
                 DROP TRIGGER IF EXISTS custom_sort_insert ON accounts.accounts;
                 DROP TRIGGER IF EXISTS custom_sort_update ON accounts.accounts;
                 DROP TRIGGER IF EXISTS custom_sort_insert ON accounts.contacts;
                 DROP TRIGGER IF EXISTS custom_sort_update ON accounts.contacts;
                 DROP FUNCTION IF EXISTS accounts.custom_sort_field();
                 DROP FUNCTION IF EXISTS accounts.custom_sort_record();
                 DROP FUNCTION IF EXISTS accounts.custom_sort_lock(uuid, text);
                 DROP FUNCTION IF EXISTS accounts.custom_sort_value(jsonb);
                 DROP FUNCTION IF EXISTS accounts.sortable_float(float8);
                 DROP TABLE IF EXISTS accounts.custom_sort;",
            )
            .await?;
        Ok(())
    }
}
