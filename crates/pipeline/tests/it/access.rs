//! Permissions: another tenant's records are not found on every route, scopes reach only
//! their records, and hidden amounts never show.

use serde_json::{Value, json};

use crate::helpers::{fields, problem, s, spawn};

#[tokio::test]
async fn another_tenants_records_are_not_found_on_every_route() {
    let st = spawn().await;
    let a = st.signup().await;
    let b = st.signup().await;
    let account = st.account(&a, "Tenant A").await;
    let o = st
        .opportunity(&a, json!({"accountId": account, "name": "A deal"}))
        .await;
    let t = st
        .create(&a, "/tickets", json!({"subject": "A ticket"}))
        .await;
    let l = st.create(&a, "/leads", json!({"lastName": "A lead"})).await;
    let p = st.default_pipeline(&a, "deal").await;
    let (oid, tid, lid, pid) = (s(&o, "id"), s(&t, "id"), s(&l, "id"), s(&p, "id"));
    let calls: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/pipelines/{pid}"), None),
        (
            "PATCH",
            format!("/pipelines/{pid}"),
            Some(json!({"name": "x"})),
        ),
        ("GET", format!("/opportunities/{oid}"), None),
        (
            "PATCH",
            format!("/opportunities/{oid}"),
            Some(json!({"name": "x"})),
        ),
        ("DELETE", format!("/opportunities/{oid}"), None),
        (
            "POST",
            format!("/opportunities/{oid}/restore"),
            Some(json!({})),
        ),
        (
            "POST",
            format!("/opportunities/{oid}/stage"),
            Some(json!({"stage": "proposal"})),
        ),
        ("GET", format!("/opportunities/{oid}/stage-history"), None),
        ("GET", format!("/tickets/{tid}"), None),
        (
            "PATCH",
            format!("/tickets/{tid}"),
            Some(json!({"subject": "x"})),
        ),
        ("DELETE", format!("/tickets/{tid}"), None),
        ("POST", format!("/tickets/{tid}/restore"), Some(json!({}))),
        (
            "POST",
            format!("/tickets/{tid}/stage"),
            Some(json!({"stage": "resolved"})),
        ),
        ("GET", format!("/tickets/{tid}/stage-history"), None),
        ("GET", format!("/leads/{lid}"), None),
        (
            "PATCH",
            format!("/leads/{lid}"),
            Some(json!({"company": "x"})),
        ),
        ("DELETE", format!("/leads/{lid}"), None),
        ("POST", format!("/leads/{lid}/restore"), Some(json!({}))),
        ("POST", format!("/leads/{lid}/convert"), Some(json!({}))),
    ];
    for (method, path, body) in calls {
        let req = match method {
            "GET" => st.get(&b, &path),
            "PATCH" => st.patch(&b, &path, body.unwrap_or(json!({}))),
            "POST" => st.post(&b, &path, body.unwrap_or(json!({}))),
            _ => st.delete(&b, &path),
        };
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 404, "{method} {path}");
        problem(res, 404, "NOT_FOUND").await;
    }
    // Lists and reports of the other tenant show nothing of A.
    assert!(st.all(&b, "/opportunities").await.is_empty());
    assert!(st.all(&b, "/tickets").await.is_empty());
    assert!(st.all(&b, "/leads").await.is_empty());
    let res = st
        .get(
            &b,
            &format!("/reports/pipeline?pipelineId={pid}&from=2000-01-01&to=2100-01-01"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        fields(&problem(res, 400, "VALIDATION_FAILED").await),
        ["pipelineId"]
    );
    // An opportunity on another tenant's account is refused.
    let res = st
        .post(
            &b,
            "/opportunities",
            json!({"accountId": account, "name": "steal"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        fields(&problem(res, 400, "VALIDATION_FAILED").await),
        ["accountId"]
    );
    // A is untouched.
    let res = st
        .get(&a, &format!("/opportunities/{oid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["version"], 1);
}

#[tokio::test]
async fn scope_own_reaches_only_own_records() {
    let st = spawn().await;
    let admin = st.signup().await;
    let rep = st.user(&admin, "sales_rep").await;
    let other = st.user(&admin, "sales_rep").await;
    // Scope own reaches only one's own accounts too.
    let account = st.account(&rep, "Mine").await;
    let res = st
        .post(
            &other,
            "/opportunities",
            json!({"accountId": account, "name": "Theirs"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        fields(&problem(res, 400, "VALIDATION_FAILED").await),
        ["accountId"]
    );
    let theirs = st.account(&other, "Theirs").await;
    let mine = st
        .opportunity(&rep, json!({"accountId": account, "name": "Mine"}))
        .await;
    st.opportunity(&other, json!({"accountId": theirs, "name": "Theirs"}))
        .await;
    let listed = st.all(&rep, "/opportunities").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], mine["id"]);
    assert_eq!(st.all(&admin, "/opportunities").await.len(), 2);
    // A rep may not give a deal away to someone outside their scope.
    let res = st
        .patch(
            &rep,
            &format!("/opportunities/{}", s(&mine, "id")),
            json!({"ownerUserId": other.id}),
        )
        .send()
        .await
        .unwrap();
    problem(res, 403, "PERMISSION_DENIED").await;
}

#[tokio::test]
async fn support_agents_never_see_amounts() {
    let st = spawn().await;
    let admin = st.signup().await;
    let agent = st.user(&admin, "support_agent").await;
    let account = st.account(&admin, "Secretive").await;
    // Owned by the agent so the team scope reaches it.
    let o = st
        .opportunity(
            &admin,
            json!({"accountId": account, "name": "Big one", "amountCents": 9_900_000, "currency": "USD", "ownerUserId": agent.id}),
        )
        .await;
    let id = s(&o, "id");
    let res = st
        .get(&agent, &format!("/opportunities/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let b: Value = res.json().await.unwrap();
    assert!(b.get("amountCents").is_none(), "{b}");
    let listed = st.all(&agent, "/opportunities").await;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].get("amountCents").is_none());
    assert!(!serde_json::to_string(&listed).unwrap().contains("9900000"));
    let res = st
        .get(&agent, "/opportunities?sort=amount_cents")
        .send()
        .await
        .unwrap();
    assert_eq!(
        fields(&problem(res, 400, "VALIDATION_FAILED").await),
        ["sort"]
    );
    let res = st
        .patch(
            &agent,
            &format!("/opportunities/{id}"),
            json!({"amountCents": 1}),
        )
        .send()
        .await
        .unwrap();
    problem(res, 403, "PERMISSION_DENIED").await;
    // Reports are not theirs either.
    let res = st
        .get(&agent, "/reports/pipeline?from=2000-01-01&to=2100-01-01")
        .send()
        .await
        .unwrap();
    problem(res, 403, "PERMISSION_DENIED").await;
}

#[tokio::test]
async fn reports_hide_amounts_from_roles_that_hide_them() {
    let st = spawn().await;
    let admin = st.signup().await;
    let res = st
        .post(
            &admin,
            "/roles",
            json!({
                "key": "analyst", "name": "Analyst",
                "permissions": [
                    {"objectType": "report", "action": "read", "scope": "all"},
                    {"objectType": "opportunity", "action": "read", "scope": "all"},
                    {"objectType": "pipeline", "action": "read", "scope": "all"}
                ],
                "fieldRules": [{"objectType": "opportunity", "field": "amountCents", "access": "hidden"}]
            }),
        )
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    let analyst = st.user(&admin, "analyst").await;
    let account = st.account(&admin, "Numbers").await;
    st.opportunity(
        &admin,
        json!({"accountId": account, "name": "n", "amountCents": 777_777, "currency": "EUR", "closeDate": "2026-05-01"}),
    )
    .await;
    let res = st
        .get(&analyst, "/reports/pipeline?from=2026-01-01&to=2026-12-31")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["amountsHidden"], true);
    assert_eq!(b["stages"][0]["count"], 1);
    assert!(!b.to_string().contains("777777"), "{b}");
}
