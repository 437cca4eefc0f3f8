use crm_bus::{BusError, outbox};
use crm_kit::ids::TenantId;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use uuid::Uuid;

use crate::helpers::{RUNTIME_ROLE, SCHEMA, TestEnv, user_created};

async fn visible_outbox_ids(env: &TestEnv, tenant: TenantId) -> Vec<Uuid> {
    let tx = env.db.tenant_tx(tenant).await.expect("tx");
    let rows = tx
        .conn()
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT id FROM {SCHEMA}.outbox ORDER BY created_at"),
        ))
        .await
        .expect("select outbox");
    tx.rollback().await.expect("rollback");
    rows.iter()
        .map(|r| r.try_get("", "id").expect("id"))
        .collect()
}

#[tokio::test]
async fn runtime_role_sees_only_its_own_tenants_outbox() {
    let env = TestEnv::new().await;
    // Migrations run the DDL on every deploy.
    env.admin
        .execute_unprepared(&outbox::ddl(SCHEMA, RUNTIME_ROLE))
        .await
        .expect("ddl is idempotent");

    let (a, b) = (TenantId::new(), TenantId::new());
    let event_a = user_created(a);
    let event_b = user_created(b);
    env.commit_event(&event_a).await;
    env.commit_event(&event_b).await;

    assert_eq!(visible_outbox_ids(&env, a).await, [event_a.id]);
    assert_eq!(visible_outbox_ids(&env, b).await, [event_b.id]);

    // Outside a tenant transaction nothing is visible at all.
    let rows = env
        .db
        .conn()
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT id FROM {SCHEMA}.outbox"),
        ))
        .await
        .expect("select outbox");
    assert!(rows.is_empty());

    // A tenant transaction cannot write another tenant's row, through append or by hand.
    let tx = env.db.tenant_tx(a).await.expect("tx");
    let err = outbox::append(&tx, SCHEMA, &user_created(b))
        .await
        .expect_err("mismatch refused");
    assert!(matches!(err, BusError::TenantMismatch { .. }), "{err}");
    let forged = tx
        .conn()
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "INSERT INTO {SCHEMA}.outbox (id, tenant_id, event_type, subject, payload) \
                 VALUES ($1, $2, 'user.created', 'x', '{{}}')"
            ),
            [Uuid::now_v7().into(), b.uuid().into()],
        ))
        .await;
    assert!(
        forged.is_err(),
        "row-level security refuses another tenant's row"
    );
    tx.rollback().await.expect("rollback");

    // The history is append-only for the runtime role.
    let tx = env.db.tenant_tx(a).await.expect("tx");
    let tampered = tx
        .conn()
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!("UPDATE {SCHEMA}.outbox SET published_at = now() WHERE id = $1"),
            [event_a.id.into()],
        ))
        .await;
    let message = tampered.expect_err("no update grant").to_string();
    assert!(message.contains("permission denied"), "{message}");
    tx.rollback().await.expect("rollback");

    // Processed markers are tenant-confined the same way.
    let tx = env.db.tenant_tx(a).await.expect("tx");
    let marker = tx
        .conn()
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "INSERT INTO {SCHEMA}.processed_events (consumer, event_id, tenant_id) VALUES ('x', $1, $2)"
            ),
            [event_b.id.into(), b.uuid().into()],
        ))
        .await;
    assert!(
        marker.is_err(),
        "row-level security refuses another tenant's marker"
    );
    tx.rollback().await.expect("rollback");

    // Only the relay's definer functions reach across tenants.
    let mut relay = env.relay();
    assert_eq!(relay.run_once().await.expect("relay"), 2);
}

#[tokio::test]
async fn relay_reaches_every_tenant_when_migrations_run_as_a_plain_owner() {
    let env = TestEnv::new().await;
    let owner = env.owner_role().await;
    let schema = "bus_owned";
    // One statement batch runs on one pooled connection, so SET ROLE covers the DDL.
    env.admin
        .execute_unprepared(&format!(
            "SET ROLE {owner}; {ddl} RESET ROLE;",
            ddl = outbox::ddl(schema, RUNTIME_ROLE)
        ))
        .await
        .expect("ddl as a non-superuser owner");

    let (a, b) = (TenantId::new(), TenantId::new());
    for tenant in [a, b] {
        let tx = env.db.tenant_tx(tenant).await.expect("tx");
        outbox::append(&tx, schema, &user_created(tenant))
            .await
            .expect("append");
        tx.commit().await.expect("commit");
    }
    let mut relay = crm_bus::Relay::new(env.db.clone(), schema, env.bus.clone());
    assert_eq!(
        relay.run_once().await.expect("relay"),
        2,
        "both tenants' events"
    );
    assert_eq!(
        relay.run_once().await.expect("relay"),
        0,
        "and they are marked published"
    );
}
