//! Custom fields of opportunities: defined through /custom-fields (kept by
//! accounts-contacts), checked on every write here, shown, filtered and sorted; field rules
//! apply to them; a tenant's definitions bind only its own records.

use serde_json::{Value, json};

use crate::helpers::{TestStack, User, fields, problem, s, spawn};

/// Defines a custom field and returns its id.
async fn define(st: &TestStack, u: &User, body: Value) -> String {
    s(&st.create(u, "/custom-fields", body).await, "id")
}

async fn get(st: &TestStack, u: &User, path: &str) -> Value {
    let res = st.get(u, path).send().await.expect("get");
    assert_eq!(res.status(), 200, "GET {path}");
    res.json().await.expect("json")
}

/// The ids of a list, in order.
async fn ids(st: &TestStack, u: &User, path: &str) -> Vec<String> {
    st.all(u, path).await.iter().map(|o| s(o, "id")).collect()
}

#[tokio::test]
async fn opportunity_custom_fields_are_checked_on_every_write() {
    let st = spawn().await;
    let admin = st.signup().await;
    define(
        &st,
        &admin,
        json!({"objectType": "opportunity", "key": "region", "label": "Region", "type": "select",
               "options": ["emea", "amer"], "required": true}),
    )
    .await;
    define(
        &st,
        &admin,
        json!({"objectType": "opportunity", "key": "seats", "label": "Seats", "type": "number"}),
    )
    .await;
    define(
        &st,
        &admin,
        json!({"objectType": "opportunity", "key": "renewal", "label": "Renewal", "type": "date"}),
    )
    .await;
    let listed = get(&st, &admin, "/custom-fields?objectType=opportunity").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 3, "{listed}");
    let account = st.account(&admin, "Acme Corp").await;

    // A valid value is stored and read back.
    let o = st
        .opportunity(
            &admin,
            json!({"accountId": account, "name": "Acme renewal", "custom": {"region": "emea", "seats": 25}}),
        )
        .await;
    assert_eq!(o["custom"], json!({"region": "emea", "seats": 25}));
    let id = s(&o, "id");
    let got = get(&st, &admin, &format!("/opportunities/{id}")).await;
    assert_eq!(got["custom"], json!({"region": "emea", "seats": 25}));

    // Unknown key, wrong type, missing required value: 400 naming the field, nothing made.
    for (custom, field) in [
        (json!({"region": "emea", "nope": 1}), "custom.nope"),
        (json!({"region": "emea", "seats": "many"}), "custom.seats"),
        (json!({"region": "apac"}), "custom.region"),
        (
            json!({"region": "emea", "renewal": "31/01/2027"}),
            "custom.renewal",
        ),
        (json!({"seats": 3}), "custom.region"),
    ] {
        let p = problem(
            st.post(
                &admin,
                "/opportunities",
                json!({"accountId": account, "name": "Bad", "custom": custom}),
            )
            .send()
            .await
            .unwrap(),
            400,
            "VALIDATION_FAILED",
        )
        .await;
        assert_eq!(fields(&p), [field], "{custom}");
    }
    let p = problem(
        st.post(
            &admin,
            "/opportunities",
            json!({"accountId": account, "name": "No custom"}),
        )
        .send()
        .await
        .unwrap(),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(fields(&p), ["custom.region"]);
    assert_eq!(st.all(&admin, "/opportunities").await.len(), 1);

    // Changes are checked the same way; a refused one changes nothing.
    for (custom, field) in [
        (json!({"seats": "x"}), "custom.seats"),
        (json!({"region": null}), "custom.region"),
        (json!({"nope": true}), "custom.nope"),
    ] {
        let p = problem(
            st.patch(
                &admin,
                &format!("/opportunities/{id}"),
                json!({"custom": custom}),
            )
            .send()
            .await
            .unwrap(),
            400,
            "VALIDATION_FAILED",
        )
        .await;
        assert_eq!(fields(&p), [field], "{custom}");
    }
    let res = st
        .patch(
            &admin,
            &format!("/opportunities/{id}"),
            json!({"custom": {"seats": 30, "renewal": "2027-01-31"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let changed: Value = res.json().await.unwrap();
    assert_eq!(changed["version"], 2, "only the accepted change counts");
    assert_eq!(
        changed["custom"],
        json!({"region": "emea", "seats": 30, "renewal": "2027-01-31"})
    );
    // Other fields change without naming custom values; they keep theirs.
    let res = st
        .patch(
            &admin,
            &format!("/opportunities/{id}"),
            json!({"name": "Acme renewal 2027", "custom": {"renewal": null}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let changed: Value = res.json().await.unwrap();
    assert_eq!(changed["name"], "Acme renewal 2027");
    assert_eq!(changed["custom"], json!({"region": "emea", "seats": 30}));

    // Events carry the values: all of them on create, the changed ones on update.
    let events = st.events().await;
    let (_, created) = events
        .iter()
        .find(|(t, e)| t == "opportunity.created" && e["data"]["entityId"] == id.as_str())
        .unwrap();
    assert_eq!(
        created["data"]["after"]["custom"],
        json!({"region": "emea", "seats": 25})
    );
    let (_, updated) = events
        .iter()
        .find(|(t, _)| t == "opportunity.updated")
        .unwrap();
    assert_eq!(updated["data"]["before"]["custom.seats"], 25);
    assert_eq!(updated["data"]["after"]["custom.seats"], 30);
    assert_eq!(updated["data"]["before"]["custom.renewal"], Value::Null);
    assert_eq!(updated["data"]["after"]["custom.renewal"], "2027-01-31");
    assert!(
        updated["data"]["after"].get("custom.region").is_none(),
        "only changed values: {updated}"
    );

    // Lists filter and sort by custom values.
    let other = st
        .opportunity(
            &admin,
            json!({"accountId": account, "name": "Globex", "custom": {"region": "amer", "seats": 80}}),
        )
        .await;
    let other = s(&other, "id");
    assert_eq!(
        ids(
            &st,
            &admin,
            "/opportunities?filter=custom.region%20%3D%20%22emea%22"
        )
        .await,
        [id.as_str()]
    );
    assert_eq!(
        ids(&st, &admin, "/opportunities?filter=custom.seats%20%3E%2050").await,
        [other.as_str()]
    );
    assert_eq!(
        ids(&st, &admin, "/opportunities?sort=custom.seats&order=desc").await,
        [other.as_str(), id.as_str()]
    );
    assert_eq!(
        ids(&st, &admin, "/opportunities?sort=custom.seats&limit=1").await,
        [id.as_str(), other.as_str()],
        "cursors follow a custom sort"
    );
    for q in ["filter=custom.nope%20%3D%201", "sort=custom.nope"] {
        let p = problem(
            st.get(&admin, &format!("/opportunities?{q}"))
                .send()
                .await
                .unwrap(),
            400,
            "VALIDATION_FAILED",
        )
        .await;
        assert!(!fields(&p).is_empty(), "{q}: {p}");
    }

    // A lead converted into an opportunity needs the required values too: refused, nothing
    // made, the lead unchanged.
    let lead = st
        .create(
            &admin,
            "/leads",
            json!({"lastName": "Lovelace", "company": "Engines"}),
        )
        .await;
    let lid = s(&lead, "id");
    let p = problem(
        st.post(
            &admin,
            &format!("/leads/{lid}/convert"),
            json!({"createOpportunity": true}),
        )
        .send()
        .await
        .unwrap(),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(fields(&p), ["custom.region"]);
    assert_eq!(
        get(&st, &admin, &format!("/leads/{lid}")).await["status"],
        "new"
    );
    assert_eq!(st.all(&admin, "/opportunities").await.len(), 2);
}

#[tokio::test]
async fn another_tenants_definitions_do_not_apply() {
    let st = spawn().await;
    let a = st.signup().await;
    let b = st.signup().await;
    define(
        &st,
        &a,
        json!({"objectType": "opportunity", "key": "region", "label": "Region", "type": "select",
               "options": ["emea"], "required": true}),
    )
    .await;
    let b_account = st.account(&b, "B's").await;
    // A's required field binds nothing of B's, and A's key is unknown to B.
    let o = st
        .opportunity(&b, json!({"accountId": b_account, "name": "B deal"}))
        .await;
    assert_eq!(o["custom"], json!({}));
    let p = problem(
        st.post(
            &b,
            "/opportunities",
            json!({"accountId": b_account, "name": "B deal", "custom": {"region": "emea"}}),
        )
        .send()
        .await
        .unwrap(),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(fields(&p), ["custom.region"]);
    // B's own definition of the same key is the one B's records follow.
    define(
        &st,
        &b,
        json!({"objectType": "opportunity", "key": "region", "label": "Region", "type": "text"}),
    )
    .await;
    let o = st
        .opportunity(
            &b,
            json!({"accountId": b_account, "name": "B deal 2", "custom": {"region": "anywhere"}}),
        )
        .await;
    assert_eq!(o["custom"], json!({"region": "anywhere"}));
    // And A's still follow A's.
    let a_account = st.account(&a, "A's").await;
    let p = problem(
        st.post(
            &a,
            "/opportunities",
            json!({"accountId": a_account, "name": "A deal", "custom": {"region": "anywhere"}}),
        )
        .send()
        .await
        .unwrap(),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(fields(&p), ["custom.region"]);
}

#[tokio::test]
async fn hidden_custom_fields_are_neither_shown_written_filtered_nor_sorted() {
    let st = spawn().await;
    let admin = st.signup().await;
    define(
        &st,
        &admin,
        json!({"objectType": "opportunity", "key": "margin", "label": "Margin", "type": "number"}),
    )
    .await;
    define(
        &st,
        &admin,
        json!({"objectType": "opportunity", "key": "region", "label": "Region", "type": "text"}),
    )
    .await;
    // No grant on custom_field: the role reads the definitions through its opportunity grant.
    let res = st
        .post(
            &admin,
            "/roles",
            json!({"key": "deals", "name": "Deals", "permissions": [
                {"objectType": "account", "action": "read", "scope": "all"},
                {"objectType": "opportunity", "action": "read", "scope": "all"},
                {"objectType": "opportunity", "action": "create", "scope": "all"},
                {"objectType": "opportunity", "action": "update", "scope": "all"}
            ], "fieldRules": [
                {"objectType": "opportunity", "field": "custom.margin", "access": "hidden"}
            ]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let deals = st.user(&admin, "deals").await;
    let account = st.account(&admin, "Acme Corp").await;
    let o = st
        .opportunity(
            &admin,
            json!({"accountId": account, "name": "Acme", "custom": {"margin": 12.5, "region": "emea"}}),
        )
        .await;
    let id = s(&o, "id");

    // Read: the value is absent, in the record and in lists.
    let got = get(&st, &deals, &format!("/opportunities/{id}")).await;
    assert_eq!(got["custom"], json!({"region": "emea"}), "{got}");
    let listed = st.all(&deals, "/opportunities").await;
    assert_eq!(listed[0]["custom"], json!({"region": "emea"}));
    assert!(!listed[0].to_string().contains("12.5"));

    // Write: refused naming the field; nothing changes.
    let p = problem(
        st.patch(
            &deals,
            &format!("/opportunities/{id}"),
            json!({"custom": {"margin": 1}}),
        )
        .send()
        .await
        .unwrap(),
        403,
        "PERMISSION_DENIED",
    )
    .await;
    assert_eq!(fields(&p), ["custom.margin"]);
    let p = problem(
        st.post(
            &deals,
            "/opportunities",
            json!({"accountId": account, "name": "Mine", "custom": {"margin": 3}}),
        )
        .send()
        .await
        .unwrap(),
        403,
        "PERMISSION_DENIED",
    )
    .await;
    assert_eq!(fields(&p), ["custom.margin"]);
    // Filter and sort: refused.
    for q in ["filter=custom.margin%20%3E%201", "sort=custom.margin"] {
        let res = st
            .get(&deals, &format!("/opportunities?{q}"))
            .send()
            .await
            .unwrap();
        assert!(
            matches!(res.status().as_u16(), 400 | 403),
            "{q}: {}",
            res.status()
        );
        let p: Value = res.json().await.unwrap();
        assert!(!fields(&p).is_empty(), "{q}: {p}");
    }

    // What the role may see it may change, and its change keeps the hidden value.
    let res = st
        .patch(
            &deals,
            &format!("/opportunities/{id}"),
            json!({"custom": {"region": "amer"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mine = st
        .opportunity(
            &deals,
            json!({"accountId": account, "name": "Mine", "custom": {"region": "apac"}}),
        )
        .await;
    assert_eq!(mine["custom"], json!({"region": "apac"}));
    let full = get(&st, &admin, &format!("/opportunities/{id}")).await;
    assert_eq!(full["custom"], json!({"margin": 12.5, "region": "amer"}));
}

#[tokio::test]
async fn deleting_a_definition_removes_only_its_opportunities_values() {
    let st = spawn().await;
    let admin = st.signup().await;
    define(
        &st,
        &admin,
        json!({"objectType": "contact", "key": "tier", "label": "Tier", "type": "text"}),
    )
    .await;
    let field = define(
        &st,
        &admin,
        json!({"objectType": "opportunity", "key": "tier", "label": "Tier", "type": "text"}),
    )
    .await;
    let contact = st
        .create(
            &admin,
            "/contacts",
            json!({"firstName": "Ada", "lastName": "Lovelace", "custom": {"tier": "gold"}}),
        )
        .await;
    let account = st.account(&admin, "Acme Corp").await;
    let o = st
        .opportunity(
            &admin,
            json!({"accountId": account, "name": "Acme", "custom": {"tier": "big"}}),
        )
        .await;
    let id = s(&o, "id");
    let res = st
        .delete(&admin, &format!("/custom-fields/{field}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let got = st
        .eventually("the opportunity's value removed", || async {
            let o = get(&st, &admin, &format!("/opportunities/{id}")).await;
            (o["custom"] == json!({})).then_some(o)
        })
        .await;
    assert_eq!(got["version"], 1, "the record itself did not change");
    // The contact field with the same key keeps its values.
    let c = get(&st, &admin, &format!("/contacts/{}", s(&contact, "id"))).await;
    assert_eq!(c["custom"], json!({"tier": "gold"}));
}

#[tokio::test]
async fn the_api_document_describes_opportunity_custom_values() {
    let st = spawn().await;
    let doc: Value = st
        .http
        .get(st.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemas = &doc["components"]["schemas"];
    for schema in [
        "Opportunity",
        "CreateOpportunityRequest",
        "UpdateOpportunityRequest",
    ] {
        let custom = &schemas[schema]["properties"]["custom"];
        assert!(
            custom.to_string().contains("object"),
            "{schema}.custom: {custom}"
        );
    }
    let kinds = schemas["ObjectType"].to_string();
    assert!(kinds.contains("opportunity"), "{kinds}");
    let params = doc["paths"]["/api/v1/opportunities"]["get"]["parameters"].to_string();
    assert!(params.contains("\"filter\""), "{params}");
    assert!(
        params.contains("custom\\\\."),
        "sort names custom.<key>: {params}"
    );
}
