//! Events of one record arriving out of order or twice: the highest version wins, a late
//! event fills only what is still unknown, and a deletion is not undone by an older event.

use crm_bus::{Event, Handler};
use crm_kit::TenantId;
use crm_search::consumer::IndexHandler;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestStack, spawn};

fn event(
    tenant: TenantId,
    id: Uuid,
    t: &str,
    before: Option<Value>,
    after: Option<Value>,
) -> Event {
    Event::new(
        "accounts-contacts",
        t,
        tenant,
        None,
        "contact",
        id,
        before,
        after,
    )
}

async fn handle(st: &TestStack, e: &Event) {
    let tx = st.db.tenant_tx(e.tenantid).await.expect("tx");
    IndexHandler.handle(&tx, e).await.expect("handled");
    tx.commit().await.expect("commit");
}

/// (version, deleted, name, email) of the document.
async fn doc(st: &TestStack, tenant: TenantId, id: Uuid) -> (i64, bool, String, String) {
    let row = st
        .admin
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT version, deleted, coalesce(fields->>'name', '') AS name, \
             coalesce(fields->>'email', '') AS email FROM search.documents \
             WHERE tenant_id = $1 AND entity_type = 'contact' AND entity_id = $2",
            [tenant.uuid().into(), id.into()],
        ))
        .await
        .expect("query")
        .expect("document");
    (
        row.try_get("", "version").expect("version"),
        row.try_get("", "deleted").expect("deleted"),
        row.try_get("", "name").expect("name"),
        row.try_get("", "email").expect("email"),
    )
}

#[tokio::test]
async fn the_highest_version_wins_whatever_the_order() {
    let st = spawn().await;
    let tenant = TenantId::new();
    let id = Uuid::now_v7();
    let full = |last: &str, v: i64| {
        json!({"id": id, "firstName": "Olga", "lastName": last, "email": "olga@example.com",
               "ownerUserId": null, "version": v})
    };
    let update = event(
        tenant,
        id,
        "contact.updated",
        Some(json!({"lastName": "Old", "version": 1})),
        Some(json!({"lastName": "Newer", "version": 2})),
    );
    let created = event(tenant, id, "contact.created", None, Some(full("Old", 1)));
    // The update overtakes the creation: the creation only fills what the update lacks.
    handle(&st, &update).await;
    handle(&st, &created).await;
    assert_eq!(
        doc(&st, tenant, id).await,
        (2, false, "Olga Newer".into(), "olga@example.com".into())
    );
    // Twice the same, and a deletion followed by a late update: still deleted.
    handle(&st, &created).await;
    let deleted = event(tenant, id, "contact.deleted", Some(full("Newer", 2)), None);
    handle(&st, &deleted).await;
    handle(&st, &update).await;
    assert!(doc(&st, tenant, id).await.1, "the deletion stands");
    assert_eq!(doc(&st, tenant, id).await.0, 3);
    let restored = event(tenant, id, "contact.restored", None, Some(full("Newer", 4)));
    handle(&st, &restored).await;
    assert_eq!(
        doc(&st, tenant, id).await,
        (4, false, "Olga Newer".into(), "olga@example.com".into())
    );
    // Another tenant's transaction cannot touch this tenant's document.
    let other = event(
        TenantId::new(),
        id,
        "contact.deleted",
        Some(full("Newer", 9)),
        None,
    );
    handle(&st, &other).await;
    assert!(!doc(&st, tenant, id).await.1);
}
