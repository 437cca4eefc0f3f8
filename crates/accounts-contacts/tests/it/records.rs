//! Create, read, update, delete and restore through the gateway, with ETags and events.

use serde_json::{Value, json};

use crate::helpers::{fields, problem, s, spawn};

#[tokio::test]
async fn a_contact_lives_through_its_whole_life() {
    let st = spawn().await;
    let admin = st.signup().await;
    let account = st
        .create(
            &admin,
            "/accounts",
            json!({"name": "  Ünïcode Größe GmbH ", "website": "grosse.example", "industry": "Manufacturing"}),
        )
        .await;
    assert_eq!(
        account["name"], "Ünïcode Größe GmbH",
        "names are trimmed, any script"
    );
    assert_eq!(account["website"], "https://grosse.example");
    assert_eq!(account["ownerUserId"], admin.id, "the creator owns it");
    let account_id = s(&account, "id");

    let res = st
        .post(
            &admin,
            "/contacts",
            json!({"firstName": "Анастасия", "lastName": "王", "email": "  Ana.W@Example.COM ",
                   "phone": "+44 20 7946 0958", "title": "CTO", "accountId": account_id}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    let c: Value = res.json().await.unwrap();
    let id = s(&c, "id");
    assert!(location.ends_with(&format!("/contacts/{id}")), "{location}");
    assert_eq!(
        c["email"], "ana.w@example.com",
        "e-mail trimmed and lower-cased"
    );
    assert_eq!(c["phone"], "+44 20 7946 0958", "phone kept as entered");
    assert_eq!(c["phoneE164"], "+442079460958");
    assert_eq!(c["firstName"], "Анастасия");
    assert_eq!(c["version"], 1);
    assert_eq!(c["createdBy"], admin.id);

    // Read it back.
    let res = st
        .get(&admin, &format!("/contacts/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"].to_str().unwrap(), etag);
    let got: Value = res.json().await.unwrap();
    assert_eq!(got["lastName"], "王");
    assert_eq!(got["accountId"], account_id);

    // Update with the current ETag, then a stale one.
    let res = st
        .patch(
            &admin,
            &format!("/contacts/{id}"),
            json!({"title": "CEO", "phone": null}),
        )
        .header("if-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let updated: Value = res.json().await.unwrap();
    assert_eq!(updated["title"], "CEO");
    assert!(updated["phone"].is_null(), "null clears: {updated}");
    assert!(updated["phoneE164"].is_null());
    assert_eq!(updated["version"], 2);
    let stale = st
        .patch(&admin, &format!("/contacts/{id}"), json!({"title": "CFO"}))
        .header("if-match", &etag)
        .send()
        .await
        .unwrap();
    problem(stale, 412, "PRECONDITION_FAILED").await;
    let still: Value = st
        .get(&admin, &format!("/contacts/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(still["title"], "CEO", "a stale update changes nothing");

    // Delete hides it; restore brings it back.
    let res = st
        .delete(&admin, &format!("/contacts/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    problem(
        st.get(&admin, &format!("/contacts/{id}"))
            .send()
            .await
            .unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;
    let listed = st.all(&admin, "/contacts").await;
    assert!(
        listed.iter().all(|c| c["id"] != id.as_str()),
        "deleted contacts are not listed"
    );
    problem(
        st.delete(&admin, &format!("/contacts/{id}"))
            .send()
            .await
            .unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;
    let res = st
        .post(&admin, &format!("/contacts/{id}/restore"), json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let restored: Value = res.json().await.unwrap();
    assert_eq!(restored["title"], "CEO");
    assert_eq!(st.all(&admin, "/contacts").await.len(), 1);

    // Every change is an event in the outbox, committed with it.
    let events = st.events().await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "account.created",
            "contact.created",
            "contact.updated",
            "contact.deleted",
            "contact.restored"
        ]
    );
    let (_, upd) = &events[2];
    assert_eq!(upd["data"]["before"]["title"], "CTO");
    assert_eq!(upd["data"]["after"]["title"], "CEO");
    assert_eq!(upd["data"]["before"]["phone"], "+44 20 7946 0958");
    assert!(upd["data"]["after"]["phone"].is_null());
    assert!(
        upd["data"]["after"].get("firstName").is_none(),
        "only changed fields: {upd}"
    );
    assert_eq!(upd["tenantid"], events[0].1["tenantid"]);
    assert_eq!(upd["actorid"], admin.id);
}

#[tokio::test]
async fn accounts_update_delete_and_restore() {
    let st = spawn().await;
    let admin = st.signup().await;
    let a = st
        .create(
            &admin,
            "/accounts",
            json!({"name": "Acme", "industry": "Retail"}),
        )
        .await;
    let id = s(&a, "id");
    let res = st
        .patch(
            &admin,
            &format!("/accounts/{id}"),
            json!({"industry": "Software"}),
        )
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "\"2\"");
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["industry"], "Software");
    problem(
        st.patch(&admin, &format!("/accounts/{id}"), json!({"name": "x"}))
            .header("if-match", "\"1\"")
            .send()
            .await
            .unwrap(),
        412,
        "PRECONDITION_FAILED",
    )
    .await;
    let listed = st.all(&admin, "/accounts?industry=Software").await;
    assert_eq!(listed.len(), 1);
    assert!(st.all(&admin, "/accounts?industry=Retail").await.is_empty());
    assert_eq!(
        st.delete(&admin, &format!("/accounts/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert!(st.all(&admin, "/accounts").await.is_empty());
    let res = st
        .post(&admin, &format!("/accounts/{id}/restore"), json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(st.all(&admin, "/accounts").await.len(), 1);
    let types: Vec<String> = st.events().await.into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        types,
        [
            "account.created",
            "account.updated",
            "account.deleted",
            "account.restored"
        ]
    );
}

#[tokio::test]
async fn links_between_accounts_and_contacts() {
    let st = spawn().await;
    let admin = st.signup().await;
    let a = s(
        &st.create(&admin, "/accounts", json!({"name": "Acme"}))
            .await,
        "id",
    );
    let other = s(
        &st.create(&admin, "/accounts", json!({"name": "Other"}))
            .await,
        "id",
    );
    let primary = s(
        &st.create(
            &admin,
            "/contacts",
            json!({"firstName": "P", "lastName": "Primary", "accountId": a}),
        )
        .await,
        "id",
    );
    let linked = s(
        &st.create(
            &admin,
            "/contacts",
            json!({"firstName": "L", "lastName": "Linked", "accountId": other}),
        )
        .await,
        "id",
    );
    let res = st
        .put(
            &admin,
            &format!("/accounts/{a}/contacts/{linked}"),
            json!({"role": "billing"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let link: Value = res.json().await.unwrap();
    assert_eq!(link["role"], "billing");

    let items = st.all(&admin, &format!("/accounts/{a}/contacts")).await;
    let mut ids: Vec<String> = items.iter().map(|c| s(c, "id")).collect();
    ids.sort();
    let mut want = vec![primary.clone(), linked.clone()];
    want.sort();
    assert_eq!(ids, want, "primary and linked contacts");
    let l = items.iter().find(|c| c["id"] == linked.as_str()).unwrap();
    assert_eq!(l["role"], "billing");

    assert_eq!(
        st.delete(&admin, &format!("/accounts/{a}/contacts/{linked}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let items = st.all(&admin, &format!("/accounts/{a}/contacts")).await;
    assert_eq!(items.len(), 1);
    problem(
        st.delete(&admin, &format!("/accounts/{a}/contacts/{linked}"))
            .send()
            .await
            .unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;
    let types: Vec<String> = st.events().await.into_iter().map(|(t, _)| t).collect();
    assert!(types.contains(&"contact.linked".to_owned()), "{types:?}");
    assert!(types.contains(&"contact.unlinked".to_owned()), "{types:?}");
}

#[tokio::test]
async fn bad_input_names_the_field_and_changes_nothing() {
    let st = spawn().await;
    let admin = st.signup().await;
    let cases = [
        (
            json!({"firstName": "A", "lastName": "B", "email": "not-an-email"}),
            "email",
        ),
        (json!({"firstName": "", "lastName": "B"}), "firstName"),
        (
            json!({"firstName": "A", "lastName": "B", "phone": "call me"}),
            "phone",
        ),
        (
            json!({"firstName": "A", "lastName": "B", "accountId": "nope"}),
            "accountId",
        ),
        (
            json!({"firstName": "A", "lastName": "B", "accountId": "0190c0de-0000-7000-8000-000000000000"}),
            "accountId",
        ),
        (
            json!({"firstName": "A", "lastName": "B", "ownerUserId": "0190c0de-0000-7000-8000-000000000000"}),
            "ownerUserId",
        ),
        (
            json!({"firstName": "A", "lastName": "B", "custom": {"nope": 1}}),
            "custom.nope",
        ),
        (
            json!({"firstName": "A", "lastName": "B", "shoeSize": 44}),
            "shoeSize",
        ),
    ];
    for (body, field) in cases {
        let p = problem(
            st.post(&admin, "/contacts", body.clone())
                .send()
                .await
                .unwrap(),
            400,
            "VALIDATION_FAILED",
        )
        .await;
        assert!(fields(&p).iter().any(|f| f == field), "{body} → {p}");
    }
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=500", "limit"),
        ("sort=shoe_size", "sort"),
        ("order=sideways", "order"),
        ("accountId=nope", "accountId"),
        ("cursor=abc", "cursor"),
    ] {
        let p = problem(
            st.get(&admin, &format!("/contacts?{q}"))
                .send()
                .await
                .unwrap(),
            400,
            if field == "cursor" {
                "INVALID_CURSOR"
            } else {
                "VALIDATION_FAILED"
            },
        )
        .await;
        assert_eq!(fields(&p), [field], "{q} → {p}");
    }
    let c = st
        .create(
            &admin,
            "/contacts",
            json!({"firstName": "A", "lastName": "B"}),
        )
        .await;
    let p = problem(
        st.patch(
            &admin,
            &format!("/contacts/{}", s(&c, "id")),
            json!({"email": "x@"}),
        )
        .send()
        .await
        .unwrap(),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(fields(&p), ["email"]);
    assert_eq!(
        st.all(&admin, "/contacts").await.len(),
        1,
        "nothing else was written"
    );
    assert_eq!(st.events().await.len(), 1);
}

#[tokio::test]
async fn bulk_assigns_and_deletes_with_a_result_per_id() {
    let st = spawn().await;
    let admin = st.signup().await;
    let rep = st.user(&admin, "sales_rep").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let c = st
            .create(
                &admin,
                "/contacts",
                json!({"firstName": "C", "lastName": format!("N{i}")}),
            )
            .await;
        ids.push(s(&c, "id"));
    }
    let missing = "0190c0de-0000-7000-8000-000000000000";
    let mut with_missing = ids.clone();
    with_missing.push(missing.into());
    let res = st
        .post(
            &admin,
            "/contacts/bulk",
            json!({"action": "assign_owner", "ids": with_missing, "ownerUserId": rep.id}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let b: Value = res.json().await.unwrap();
    let results = b["results"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    assert!(results[..5].iter().all(|r| r["status"] == "ok"), "{b}");
    assert_eq!(results[5]["id"], missing);
    assert_eq!(results[5]["status"], "NOT_FOUND");
    assert_eq!(
        st.all(&rep, "/contacts").await.len(),
        5,
        "the rep owns them now"
    );

    let res = st
        .post(
            &admin,
            "/contacts/bulk",
            json!({"action": "delete", "ids": ids[..2]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(st.all(&admin, "/contacts").await.len(), 3);

    // One security event per call.
    let events: Value = st
        .get(&admin, "/security-events")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .filter(|k| k.starts_with("contact."))
        .collect();
    assert_eq!(kinds, ["contact.bulk_delete", "contact.bulk_assign_owner"]);

    let too_many: Vec<String> = (0..1001)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    let p = problem(
        st.post(
            &admin,
            "/contacts/bulk",
            json!({"action": "delete", "ids": too_many}),
        )
        .send()
        .await
        .unwrap(),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(fields(&p), ["ids"]);
}
