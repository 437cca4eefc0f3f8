//! The audit log: every event once, admin only, CSV export with neutralised cells recorded
//! as a security event, and append-only for the runtime role.

use std::time::{Duration, Instant};

use crm_bus::Event;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestStack, User, problem, s, spawn};

async fn audit_until(st: &TestStack, u: &User, query: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = st.get_json(u, &format!("/audit-log?{query}")).await;
        let items = b["items"].as_array().cloned().unwrap_or_default();
        if items.len() >= n {
            return items;
        }
        assert!(Instant::now() < deadline, "timed out: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_audit_log_lists_changes_for_admins_and_exports_safe_csv() {
    let st = spawn().await;
    let admin = st.signup().await;
    let rep = st.user(&admin, "sales_rep").await;
    let contact = st
        .create(
            &admin,
            "/contacts",
            json!({"firstName": "=HYPERLINK(\"http://evil\")", "lastName": "Lovelace"}),
        )
        .await;
    let id = s(&contact, "id");
    let res = st
        .patch(&admin, &format!("/contacts/{id}"), json!({"title": "CFO"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status(), 200);
    // An envelope whose plain cells start with formula characters.
    let evil = Event::new(
        "pipeline",
        "ticket.created",
        admin.tenant(),
        Some(admin.uuid()),
        "@ticket",
        "-1+2",
        None,
        Some(json!({"subject": "=cmd|' /C calc'!A0"})),
    );
    st.publish(&evil).await;

    let items = audit_until(&st, &admin, &format!("entityId={id}"), 2).await;
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["action"], "updated");
    assert_eq!(items[0]["before"]["title"], Value::Null);
    assert_eq!(items[0]["after"]["title"], "CFO");
    assert_eq!(items[0]["actorId"], admin.id.as_str());
    assert_eq!(items[0]["entityType"], "contact");
    assert_eq!(items[1]["action"], "created");
    audit_until(&st, &admin, "entityType=%40ticket", 1).await;
    // Paging: one per page, both pages, newest first.
    let first = st
        .get_json(&admin, &format!("/audit-log?entityId={id}&limit=1"))
        .await;
    let second = st
        .get_json(
            &admin,
            &format!(
                "/audit-log?entityId={id}&limit=1&cursor={}",
                s(&first, "nextCursor")
            ),
        )
        .await;
    assert_eq!(first["items"][0]["action"], "updated");
    assert_eq!(second["items"][0]["action"], "created");
    // A cursor belongs to its query.
    let res = st
        .get(
            &admin,
            &format!("/audit-log?limit=1&cursor={}", s(&first, "nextCursor")),
        )
        .send()
        .await
        .expect("get");
    problem(res, 400, "INVALID_CURSOR").await;

    // Not for a sales rep.
    let res = st.get(&rep, "/audit-log").send().await.expect("get");
    problem(res, 403, "PERMISSION_DENIED").await;
    let res = st.get(&rep, "/audit-log/export").send().await.expect("get");
    problem(res, 403, "PERMISSION_DENIED").await;

    let res = st
        .get(&admin, "/audit-log/export")
        .send()
        .await
        .expect("export");
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/csv")
    );
    let csv = res.text().await.expect("csv");
    let mut lines = csv.split("\r\n");
    assert_eq!(
        lines.next(),
        Some("id,occurredAt,actorId,entityType,entityId,action,before,after")
    );
    let evil_line = csv
        .split("\r\n")
        .find(|l| l.starts_with(&evil.id.to_string()))
        .expect("the ticket event is exported");
    assert!(
        evil_line.contains(",'@ticket,'-1+2,created,"),
        "{evil_line}"
    );
    let contact_line = csv
        .split("\r\n")
        .find(|l| l.contains(&id) && l.contains(",created,"))
        .expect("the contact is exported");
    // JSON cells start with `{`; quotes inside are doubled.
    assert!(contact_line.contains(r#""{""#), "{contact_line}");
    // Every line starts with an id, never with a formula character.
    for line in csv.split("\r\n").skip(1).filter(|l| !l.is_empty()) {
        assert!(
            Uuid::parse_str(&line[..36]).is_ok(),
            "a record per line: {line}"
        );
    }
    // The export is a security event.
    let events = st.get_json(&admin, "/security-events").await;
    assert!(
        events["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|e| e["kind"] == "audit_log.exported"),
        "{events}"
    );
}

#[tokio::test]
async fn the_runtime_role_cannot_change_or_remove_audit_records() {
    let st = spawn().await;
    let admin = st.signup().await;
    st.create(&admin, "/accounts", json!({"name": "Acme"}))
        .await;
    audit_until(&st, &admin, "entityType=account", 1).await;
    let tx = st.db.tenant_tx(admin.tenant()).await.expect("tx");
    let count = |sql: &str| Statement::from_string(DbBackend::Postgres, sql.to_owned());
    let rows = tx
        .conn()
        .query_all_raw(count("SELECT id FROM timeline.audit_log"))
        .await
        .expect("the runtime role reads the audit log");
    assert!(!rows.is_empty());
    tx.rollback().await.expect("rollback");
    for sql in [
        "UPDATE timeline.audit_log SET action = 'tampered'",
        "DELETE FROM timeline.audit_log",
        "TRUNCATE timeline.audit_log",
    ] {
        let tx = st.db.tenant_tx(admin.tenant()).await.expect("tx");
        let err = tx
            .conn()
            .execute_raw(count(sql))
            .await
            .expect_err("refused");
        assert!(
            err.to_string().contains("permission denied"),
            "{sql}: {err}"
        );
        tx.rollback().await.expect("rollback");
    }
    let items = audit_until(&st, &admin, "entityType=account", 1).await;
    assert_eq!(items[0]["action"], "created");
}
