//! Timelines built from events: activities and changes per record, accounts holding their
//! contacts' and opportunities' entries, idempotence, order, permissions and field rules.

use chrono::{Duration as Days, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{actions, event, problem, s, spawn};

#[tokio::test]
async fn an_activity_on_a_contact_shows_on_the_contact_and_its_account() {
    let st = spawn().await;
    let admin = st.signup().await;
    let account = st
        .create(&admin, "/accounts", json!({"name": "Northwind"}))
        .await;
    let account_id = s(&account, "id");
    let contact = st
        .create(
            &admin,
            "/contacts",
            json!({"firstName": "Nancy", "lastName": "Davolio", "accountId": account_id}),
        )
        .await;
    let contact_id = s(&contact, "id");
    let activity = st
        .create(
            &admin,
            "/activities",
            json!({"subjectType": "contact", "subjectId": contact_id, "activityType": "call",
                   "body": "Intro call"}),
        )
        .await;
    let activity_id = s(&activity, "id");
    let logged = |entries: &[Value]| {
        entries
            .iter()
            .any(|e| e["entityId"] == activity_id.as_str() && e["action"] == "logged")
    };
    // The contact's own events come through accounts-contacts' relay, the call through this
    // service's: wait until both have landed, then check their order.
    let on_contact = st
        .timeline_until(
            &admin,
            &format!("/contacts/{contact_id}/timeline"),
            "the call and the creation on the contact",
            |e: &[Value]| logged(e) && e.len() >= 2,
        )
        .await;
    assert_eq!(
        actions(&on_contact),
        ["activity.logged", "contact.created"],
        "newest first"
    );
    assert_eq!(on_contact[0]["after"]["body"], "Intro call");
    let on_account = st
        .timeline_until(
            &admin,
            &format!("/accounts/{account_id}/timeline"),
            "the call and both creations on the account",
            |e: &[Value]| logged(e) && e.len() >= 3,
        )
        .await;
    assert_eq!(
        actions(&on_account),
        ["activity.logged", "contact.created", "account.created"]
    );
    assert!(
        on_account
            .iter()
            .all(|e| e["recordType"] == "account" && e["recordId"] == account_id.as_str())
    );
}

#[tokio::test]
async fn an_owner_change_shows_its_before_and_after() {
    let st = spawn().await;
    let admin = st.signup().await;
    let rep = st.user(&admin, "sales_rep").await;
    let contact = st
        .create(
            &admin,
            "/contacts",
            json!({"firstName": "Ada", "lastName": "Lovelace"}),
        )
        .await;
    let id = s(&contact, "id");
    let res = st
        .patch(
            &admin,
            &format!("/contacts/{id}"),
            json!({"ownerUserId": rep.id}),
        )
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status(), 200);
    let entries = st
        .timeline_until(
            &admin,
            &format!("/contacts/{id}/timeline"),
            "the creation and the owner change",
            // The creation's event may arrive after the change's; it lands in place.
            |e| e.len() == 2 && e.iter().any(|e| e["action"] == "updated"),
        )
        .await;
    let change = &entries[0];
    assert_eq!(change["action"], "updated");
    assert_eq!(change["before"]["ownerUserId"], admin.id.as_str());
    assert_eq!(change["after"]["ownerUserId"], rep.id.as_str());
    assert_eq!(change["actorId"], admin.id.as_str());
    // The new owner (scope own) now reads the contact's timeline too.
    let theirs = st.timeline(&rep, &format!("/contacts/{id}/timeline")).await;
    assert_eq!(theirs.len(), entries.len());
}

#[tokio::test]
async fn a_stage_move_shows_before_and_after_on_the_opportunity_and_its_account() {
    let st = spawn().await;
    let admin = st.signup().await;
    let agent = st.user(&admin, "support_agent").await;
    let account = st
        .create(&admin, "/accounts", json!({"name": "Acme"}))
        .await;
    let account_id = s(&account, "id");
    let opp = st
        .create(
            &admin,
            "/opportunities",
            json!({"accountId": account_id, "name": "Big deal", "amountCents": 500000,
                   "currency": "EUR", "stage": "qualification"}),
        )
        .await;
    let opp = s(&opp, "id");
    let moved = st
        .post(
            &admin,
            &format!("/opportunities/{opp}/stage"),
            json!({"stage": "proposal"}),
        )
        .send()
        .await
        .expect("move");
    assert_eq!(moved.status(), 200, "stage move");
    let path = format!("/opportunities/{opp}/timeline");
    let entries = st
        .timeline_until(&admin, &path, "the creation and the stage move", |e| {
            ["opportunity.created", "opportunity.stage_changed"]
                .iter()
                .all(|t| e.iter().any(|e| e["eventType"] == *t))
        })
        .await;
    assert_eq!(
        actions(&entries),
        ["opportunity.stage_changed", "opportunity.created"]
    );
    assert_eq!(entries[0]["before"]["stage"], "qualification");
    assert_eq!(entries[0]["after"]["stage"], "proposal");
    assert_eq!(entries[0]["actorId"], admin.id.as_str());
    assert_eq!(entries[1]["after"]["amountCents"], 500000);
    let on_account = st
        .timeline_until(
            &admin,
            &format!("/accounts/{account_id}/timeline"),
            "the stage move and both creations on the account",
            |e| e.iter().any(|e| e["action"] == "stage_changed") && e.len() >= 3,
        )
        .await;
    assert_eq!(
        actions(&on_account),
        [
            "opportunity.stage_changed",
            "opportunity.created",
            "account.created"
        ]
    );
    // Support agents may not see deal amounts: the field is left out of the entries.
    let theirs = st
        .timeline(&agent, &format!("/accounts/{account_id}/timeline"))
        .await;
    assert_eq!(actions(&theirs), actions(&on_account));
    assert_eq!(theirs[0]["after"]["stage"], "proposal");
    let created = &theirs[1];
    assert_eq!(created["after"]["name"], "Big deal");
    assert!(created["after"].get("amountCents").is_none(), "{created}");
    assert_eq!(
        theirs[2]["action"], "created",
        "account entries keep their own fields"
    );
}

#[tokio::test]
async fn an_event_delivered_twice_shows_once_and_a_late_one_lands_in_place() {
    let st = spawn().await;
    let admin = st.signup().await;
    let lead = st
        .create(
            &admin,
            "/leads",
            json!({"firstName": "Grace", "lastName": "Hopper", "status": "new"}),
        )
        .await;
    let lead = Uuid::parse_str(&s(&lead, "id")).expect("lead id");
    let path = format!("/leads/{lead}/timeline");
    let created = st
        .timeline_until(&admin, &path, "the lead", |e| !e.is_empty())
        .await;
    let created_at: chrono::DateTime<Utc> = s(&created[0], "occurredAt").parse().expect("time");
    // Changes two hours and one hour after the creation, the later one delivered first and
    // twice.
    let mut updated = event(
        &admin,
        "lead.updated",
        lead,
        Some(json!({"status": "new", "version": 1})),
        Some(json!({"status": "working", "version": 2})),
    );
    updated.time = created_at + Days::hours(2);
    st.publish(&updated).await;
    st.publish(&updated).await;
    let path = format!("/leads/{lead}/timeline");
    st.timeline_until(&admin, &path, "both events", |e| e.len() >= 2)
        .await;
    // The earlier change, delivered last, lands between the two.
    let mut late = event(
        &admin,
        "lead.updated",
        lead,
        Some(json!({"company": null, "version": 2})),
        Some(json!({"company": "Navy", "version": 3})),
    );
    late.time = created_at + Days::hours(1);
    st.publish(&late).await;
    // The duplicate once more, after the late one: still nothing new.
    st.publish(&updated).await;
    let entries = st
        .timeline_until(&admin, &path, "the late event", |e| {
            e.iter().any(|e| e["after"]["company"] == "Navy")
        })
        .await;
    let ids: Vec<String> = entries.iter().map(|e| s(e, "id")).collect();
    assert_eq!(entries.len(), 3, "{entries:#?}");
    assert_eq!(entries[0]["after"]["status"], "working");
    assert_eq!(entries[1]["after"]["company"], "Navy");
    assert_eq!(entries[2]["action"], "created");
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique, ids);
    // The audit log holds each event once too.
    let audit = st
        .get_json(&admin, &format!("/audit-log?entityId={lead}"))
        .await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(3), "{audit}");
}

#[tokio::test]
async fn timelines_of_other_tenants_or_unreadable_records_are_not_found() {
    let st = spawn().await;
    let admin = st.signup().await;
    let rep = st.user(&admin, "sales_rep").await;
    let other = st.signup().await;
    let contact = st
        .create(
            &admin,
            "/contacts",
            json!({"firstName": "Ada", "lastName": "Lovelace"}),
        )
        .await;
    let id = s(&contact, "id");
    let path = format!("/contacts/{id}/timeline");
    st.timeline_until(&admin, &path, "the contact", |e| !e.is_empty())
        .await;
    for (who, u) in [
        ("another tenant", &other),
        ("a rep who does not own it", &rep),
    ] {
        let res = st.get(u, &path).send().await.expect("get");
        let b = problem(res, 404, "NOT_FOUND").await;
        assert!(b["detail"].is_string(), "{who}: {b}");
    }
    // A pipeline record, readable only in the tenant it belongs to and by whom its scope
    // reaches.
    let account = st
        .create(&admin, "/accounts", json!({"name": "Acme"}))
        .await;
    let opp = st
        .create(
            &admin,
            "/opportunities",
            json!({"accountId": s(&account, "id"), "name": "Deal", "amountCents": 100,
                   "currency": "USD", "stage": "prospecting"}),
        )
        .await;
    let opp = s(&opp, "id");
    let path = format!("/opportunities/{opp}/timeline");
    st.timeline_until(&admin, &path, "the opportunity", |e| !e.is_empty())
        .await;
    for u in [&other, &rep] {
        let res = st.get(u, &path).send().await.expect("get");
        problem(res, 404, "NOT_FOUND").await;
    }
    let res = st
        .get(&admin, "/opportunities/not-an-id/timeline")
        .send()
        .await
        .expect("get");
    problem(res, 404, "NOT_FOUND").await;
    // Activities of another tenant are not found either.
    let activity = st
        .create(
            &admin,
            "/activities",
            json!({"subjectType": "contact", "subjectId": id, "activityType": "note"}),
        )
        .await;
    let res = st
        .get(&other, &format!("/activities/{}", s(&activity, "id")))
        .send()
        .await
        .expect("get");
    problem(res, 404, "NOT_FOUND").await;
}
