//! Lead conversion end to end (and its retry after a failure part-way), web-to-lead
//! submissions arriving over the bus, and the account names kept from account events.

use crm_bus::{Event, Handler};
use crm_kit::TenantId;
use serde_json::{Value, json};

use crate::helpers::{fields, problem, s, spawn};

#[tokio::test]
async fn converting_a_lead_retries_without_duplicates() {
    let st = spawn().await;
    let admin = st.signup().await;
    let l = st
        .create(
            &admin,
            "/leads",
            json!({"firstName": "Ada", "lastName": "Lovelace", "email": "ada@engines.example", "company": "Analytical Engines"}),
        )
        .await;
    let id = s(&l, "id");

    // The first attempt fails after the account was made (the named contact does not exist).
    let res = st
        .post(
            &admin,
            &format!("/leads/{id}/convert"),
            json!({"contactId": uuid::Uuid::now_v7(), "createOpportunity": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        fields(&problem(res, 400, "VALIDATION_FAILED").await),
        ["contactId"]
    );
    assert_eq!(st.all(&admin, "/accounts?q=Analytical").await.len(), 1);
    let lead: Value = st
        .get(&admin, &format!("/leads/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(lead["status"], "new");
    assert!(st.all(&admin, "/opportunities").await.is_empty());

    // The retry reuses the account and completes.
    let res = st
        .post(
            &admin,
            &format!("/leads/{id}/convert"),
            json!({"createOpportunity": true, "opportunityName": "Engines deal"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let c: Value = res.json().await.unwrap();
    let accounts = st.all(&admin, "/accounts?q=Analytical").await;
    assert_eq!(accounts.len(), 1, "no duplicate account");
    assert_eq!(accounts[0]["id"], c["accountId"]);
    let contacts = st
        .all(
            &admin,
            &format!("/contacts?accountId={}", s(&c, "accountId")),
        )
        .await;
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0]["id"], c["contactId"]);
    assert_eq!(contacts[0]["email"], "ada@engines.example");
    let opps = st.all(&admin, "/opportunities").await;
    assert_eq!(opps.len(), 1);
    assert_eq!(opps[0]["id"], c["opportunityId"]);
    assert_eq!(opps[0]["name"], "Engines deal");
    assert_eq!(opps[0]["accountId"], c["accountId"]);
    assert_eq!(opps[0]["accountName"], "Analytical Engines");

    let lead: Value = st
        .get(&admin, &format!("/leads/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(lead["status"], "converted");
    assert_eq!(lead["convertedAccountId"], c["accountId"]);
    assert_eq!(lead["convertedContactId"], c["contactId"]);
    assert_eq!(lead["convertedOpportunityId"], c["opportunityId"]);

    // Converting twice is a conflict.
    let res = st
        .post(&admin, &format!("/leads/{id}/convert"), json!({}))
        .send()
        .await
        .unwrap();
    problem(res, 409, "CONFLICT").await;
    assert!(st.events().await.iter().any(|(t, _)| t == "lead.converted"));

    // A lead converts onto an existing account and contact without creating any.
    let l2 = st
        .create(&admin, "/leads", json!({"lastName": "Babbage"}))
        .await;
    let res = st
        .post(
            &admin,
            &format!("/leads/{}/convert", s(&l2, "id")),
            json!({"accountId": c["accountId"], "contactId": c["contactId"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let c2: Value = res.json().await.unwrap();
    assert_eq!(c2["accountId"], c["accountId"]);
    assert_eq!(c2["opportunityId"], Value::Null);
    assert_eq!(st.all(&admin, "/accounts").await.len(), 1);
}

async fn tenant_of(st: &crate::helpers::TestStack, u: &crate::helpers::User) -> TenantId {
    let me: Value = st
        .get(u, "/me")
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    s(&me["tenant"], "id").parse().expect("tenant id")
}

#[tokio::test]
async fn web_to_lead_submissions_become_leads_once() {
    let st = spawn().await;
    let admin = st.signup().await;
    let tenant = tenant_of(&st, &admin).await;
    let event = Event::new(
        "webhook-delivery",
        "lead.submitted",
        tenant,
        None,
        "lead_submission",
        uuid::Uuid::now_v7(),
        None,
        Some(json!({
            "sourceId": uuid::Uuid::now_v7(), "sourceName": "Website form", "webhookId": "msg_1",
            "lead": {"firstName": "Web", "lastName": "Visitor", "email": "Visitor@Example.com", "company": "Curious Ltd"},
        })),
    );
    // Published through the bus: the outbox relay sends it to the exchange, the consumer
    // of the pipeline queue turns it into a lead.
    let tx = st.db.tenant_tx(tenant).await.unwrap();
    crm_bus::outbox::append(&tx, "pipeline", &event)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let leads = st
        .eventually("the submitted lead", || async {
            let l = st.all(&admin, "/leads?source=web").await;
            (!l.is_empty()).then_some(l)
        })
        .await;
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0]["lastName"], "Visitor");
    assert_eq!(leads[0]["email"], "visitor@example.com");
    assert_eq!(leads[0]["status"], "new");
    assert_eq!(leads[0]["company"], "Curious Ltd");
    // The same event again changes nothing.
    let tx = st.db.tenant_tx(tenant).await.unwrap();
    crm_pipeline::consumer::PipelineHandler
        .handle(&tx, &event)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(st.all(&admin, "/leads").await.len(), 1);
}

#[tokio::test]
async fn account_names_follow_account_events() {
    let st = spawn().await;
    let admin = st.signup().await;
    let account = st.account(&admin, "Old name").await;
    let o = st
        .opportunity(&admin, json!({"accountId": account, "name": "Deal"}))
        .await;
    assert_eq!(o["accountName"], "Old name");
    let res = st
        .patch(
            &admin,
            &format!("/accounts/{account}"),
            json!({"name": "New name"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let id = s(&o, "id");
    st.eventually("the renamed account", || async {
        let b: Value = st
            .get(&admin, &format!("/opportunities/{id}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (b["accountName"] == "New name").then_some(())
    })
    .await;
    let listed = st.all(&admin, "/opportunities").await;
    assert_eq!(listed[0]["accountName"], "New name");
}
