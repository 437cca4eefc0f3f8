//! Pipelines, opportunities, tickets and leads as records: defaults, CRUD, versions, soft
//! delete, lists, bad input and events.

use serde_json::{Value, json};

use crate::helpers::{fields, problem, s, spawn};

#[tokio::test]
async fn a_new_tenant_sees_both_default_pipelines() {
    let st = spawn().await;
    let admin = st.signup().await;
    let res = st.get(&admin, "/pipelines").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let b: Value = res.json().await.unwrap();
    let items = b["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{b}");
    let types: Vec<&str> = items
        .iter()
        .map(|p| p["objectType"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"deal") && types.contains(&"ticket"));
    assert!(items.iter().all(|p| p["isDefault"] == true));
    // Asking again creates nothing more.
    let b: Value = st
        .get(&admin, "/pipelines")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b["items"].as_array().unwrap().len(), 2);
    let created = st
        .events()
        .await
        .into_iter()
        .filter(|(t, _)| t == "pipeline.created")
        .count();
    assert_eq!(created, 2);
}

#[tokio::test]
async fn opportunities_are_created_read_changed_deleted_and_restored() {
    let st = spawn().await;
    let admin = st.signup().await;
    let account = st.account(&admin, "Acme Corp").await;
    let o = st
        .opportunity(
            &admin,
            json!({"accountId": account, "name": "Acme renewal", "amountCents": 125000, "currency": "eur", "closeDate": "2026-06-30"}),
        )
        .await;
    let id = s(&o, "id");
    assert_eq!(o["currency"], "EUR");
    assert_eq!(o["stage"], "prospecting");
    assert_eq!(o["accountName"], "Acme Corp");
    assert_eq!(o["ownerUserId"], admin.id.as_str());
    assert_eq!(o["version"], 1);

    let res = st
        .get(&admin, &format!("/opportunities/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "\"1\"");

    // A stale If-Match is refused.
    let res = st
        .patch(
            &admin,
            &format!("/opportunities/{id}"),
            json!({"name": "Acme renewal 2027"}),
        )
        .header("If-Match", "\"7\"")
        .send()
        .await
        .unwrap();
    problem(res, 412, "PRECONDITION_FAILED").await;
    let res = st
        .patch(
            &admin,
            &format!("/opportunities/{id}"),
            json!({"name": "Acme renewal 2027", "amountCents": null}),
        )
        .header("If-Match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["name"], "Acme renewal 2027");
    assert_eq!(b["amountCents"], Value::Null);
    assert_eq!(b["version"], 2);

    // The stage never changes through PATCH.
    let res = st
        .patch(
            &admin,
            &format!("/opportunities/{id}"),
            json!({"stage": "proposal"}),
        )
        .send()
        .await
        .unwrap();
    let p = problem(res, 400, "VALIDATION_FAILED").await;
    assert_eq!(fields(&p), ["stage"]);

    let res = st
        .delete(&admin, &format!("/opportunities/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = st
        .get(&admin, &format!("/opportunities/{id}"))
        .send()
        .await
        .unwrap();
    problem(res, 404, "NOT_FOUND").await;
    assert!(st.all(&admin, "/opportunities").await.is_empty());
    let res = st
        .post(&admin, &format!("/opportunities/{id}/restore"), json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(st.all(&admin, "/opportunities").await.len(), 1);

    let types: Vec<String> = st.events().await.into_iter().map(|(t, _)| t).collect();
    for t in [
        "opportunity.created",
        "opportunity.updated",
        "opportunity.deleted",
        "opportunity.restored",
    ] {
        assert!(types.iter().any(|x| x == t), "{t} in {types:?}");
    }
    let (_, updated) = st
        .events()
        .await
        .into_iter()
        .find(|(t, _)| t == "opportunity.updated")
        .unwrap();
    assert_eq!(updated["data"]["before"]["name"], "Acme renewal");
    assert_eq!(updated["data"]["after"]["name"], "Acme renewal 2027");
    assert!(
        updated["data"]["after"].get("currency").is_none(),
        "only changed fields"
    );
}

#[tokio::test]
async fn lists_filter_and_page() {
    let st = spawn().await;
    let admin = st.signup().await;
    let a1 = st.account(&admin, "Alpha").await;
    let a2 = st.account(&admin, "Beta").await;
    for i in 0..5 {
        let account = if i % 2 == 0 { &a1 } else { &a2 };
        st.opportunity(
            &admin,
            json!({"accountId": account, "name": format!("Deal {i}")}),
        )
        .await;
    }
    let all = st.all(&admin, "/opportunities?limit=2").await;
    assert_eq!(all.len(), 5);
    assert_eq!(
        st.all(&admin, &format!("/opportunities?accountId={a1}"))
            .await
            .len(),
        3
    );
    assert_eq!(st.all(&admin, "/opportunities?q=deal%203").await.len(), 1);
    assert_eq!(
        st.all(&admin, "/opportunities?stage=prospecting")
            .await
            .len(),
        5
    );
    assert_eq!(
        st.all(&admin, "/opportunities?stage=proposal").await.len(),
        0
    );
    let names: Vec<String> = st
        .all(&admin, "/opportunities?sort=name&order=asc")
        .await
        .iter()
        .map(|o| s(o, "name"))
        .collect();
    assert_eq!(names, ["Deal 0", "Deal 1", "Deal 2", "Deal 3", "Deal 4"]);
    assert!(all.iter().all(|o| o["accountName"].is_string()));
    // A cursor belongs to its query.
    let b: Value = st
        .get(&admin, "/opportunities?limit=2")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cursor = s(&b, "nextCursor");
    let res = st
        .get(
            &admin,
            &format!("/opportunities?limit=2&stage=proposal&cursor={cursor}"),
        )
        .send()
        .await
        .unwrap();
    problem(res, 400, "INVALID_CURSOR").await;
}

#[tokio::test]
async fn bad_input_names_the_field() {
    let st = spawn().await;
    let admin = st.signup().await;
    let account = st.account(&admin, "Acme").await;
    let cases = [
        (
            json!({"accountId": account, "name": "x", "stage": "nowhere"}),
            "stage",
        ),
        (
            json!({"accountId": account, "name": "x", "amountCents": -1, "currency": "USD"}),
            "amountCents",
        ),
        (
            json!({"accountId": account, "name": "x", "amountCents": 1, "currency": "XYZ"}),
            "currency",
        ),
        (
            json!({"accountId": account, "name": "x", "closeDate": "next tuesday"}),
            "closeDate",
        ),
        (
            json!({"accountId": account, "name": "x", "closeDate": "2026-02-30"}),
            "closeDate",
        ),
        (
            json!({"accountId": uuid::Uuid::now_v7(), "name": "x"}),
            "accountId",
        ),
        (json!({"accountId": account, "name": ""}), "name"),
        (
            json!({"accountId": account, "name": "x", "amountCents": 1.5}),
            "amountCents",
        ),
    ];
    for (body, field) in cases {
        let res = st
            .post(&admin, "/opportunities", body.clone())
            .send()
            .await
            .unwrap();
        let p = problem(res, 400, "VALIDATION_FAILED").await;
        assert!(fields(&p).iter().any(|f| f == field), "{body}: {p}");
    }
    for limit in [0, 500] {
        let res = st
            .get(&admin, &format!("/opportunities?limit={limit}"))
            .send()
            .await
            .unwrap();
        let p = problem(res, 400, "VALIDATION_FAILED").await;
        assert_eq!(fields(&p), ["limit"]);
    }
    let res = st
        .get(&admin, "/opportunities?sort=secret")
        .send()
        .await
        .unwrap();
    problem(res, 400, "VALIDATION_FAILED").await;
    let res = st
        .post(
            &admin,
            "/tickets",
            json!({"subject": "x", "priority": "asap"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        fields(&problem(res, 400, "VALIDATION_FAILED").await),
        ["priority"]
    );
    let res = st
        .post(
            &admin,
            "/leads",
            json!({"lastName": "x", "status": "converted"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        fields(&problem(res, 400, "VALIDATION_FAILED").await),
        ["status"]
    );
    // Nothing was created.
    assert!(st.all(&admin, "/opportunities").await.is_empty());
    assert!(st.all(&admin, "/tickets").await.is_empty());
    assert!(st.all(&admin, "/leads").await.is_empty());
}

#[tokio::test]
async fn tickets_and_leads_have_their_own_records() {
    let st = spawn().await;
    let admin = st.signup().await;
    let account = st.account(&admin, "Globex").await;
    let t = st
        .create(
            &admin,
            "/tickets",
            json!({"subject": "Cannot log in", "accountId": account, "priority": "high"}),
        )
        .await;
    assert_eq!(t["stage"], "new");
    assert_eq!(t["accountName"], "Globex");
    assert_eq!(t["assigneeUserId"], admin.id.as_str());
    let id = s(&t, "id");
    let res = st
        .post(
            &admin,
            &format!("/tickets/{id}/stage"),
            json!({"stage": "resolved"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Tickets reopen without a manager.
    let rep = st.user(&admin, "support_agent").await;
    let t2 = st
        .create(&rep, "/tickets", json!({"subject": "Printer"}))
        .await;
    let id2 = s(&t2, "id");
    for stage in ["resolved", "in_progress"] {
        let res = st
            .post(
                &rep,
                &format!("/tickets/{id2}/stage"),
                json!({"stage": stage}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let h: Value = st
        .get(&rep, &format!("/tickets/{id2}/stage-history"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["items"].as_array().unwrap().len(), 3);

    let l = st
        .create(
            &admin,
            "/leads",
            json!({"firstName": "Grace", "lastName": "Hopper", "email": "Grace@Navy.example"}),
        )
        .await;
    assert_eq!(l["status"], "new");
    assert_eq!(l["email"], "grace@navy.example");
    let lid = s(&l, "id");
    let res = st
        .patch(
            &admin,
            &format!("/leads/{lid}"),
            json!({"status": "qualified"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(st.all(&admin, "/leads?status=qualified").await.len(), 1);
    let types: Vec<String> = st.events().await.into_iter().map(|(t, _)| t).collect();
    for t in [
        "ticket.created",
        "ticket.stage_changed",
        "lead.created",
        "lead.updated",
    ] {
        assert!(types.iter().any(|x| x == t), "{t} in {types:?}");
    }
}

#[tokio::test]
async fn concurrent_first_uses_create_each_default_once() {
    let st = spawn().await;
    let admin = st.signup().await;
    let calls = (0..8).map(|_| async {
        let res = st.get(&admin, "/pipelines").send().await.unwrap();
        res.status().as_u16()
    });
    let statuses = futures::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let b: Value = st
        .get(&admin, "/pipelines")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b["items"].as_array().unwrap().len(), 2, "{b}");
    let created = st
        .events()
        .await
        .into_iter()
        .filter(|(t, _)| t == "pipeline.created")
        .count();
    assert_eq!(created, 2);
}
