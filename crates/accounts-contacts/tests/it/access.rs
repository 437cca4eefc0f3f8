//! Tenancy and permissions: another tenant's ids are not found on any route; scopes decide
//! whose records a role reaches; hidden fields can be neither read, written, filtered nor
//! sorted on.

use serde_json::{Value, json};

use crate::helpers::{fields, problem, s, spawn};

#[tokio::test]
async fn every_route_answers_not_found_for_another_tenants_ids() {
    let st = spawn().await;
    let a = st.signup().await;
    let b = st.signup().await;
    let account = s(
        &st.create(&a, "/accounts", json!({"name": "A's"})).await,
        "id",
    );
    let contact = s(
        &st.create(
            &a,
            "/contacts",
            json!({"firstName": "A", "lastName": "A", "accountId": account}),
        )
        .await,
        "id",
    );
    let field = s(
        &st.create(
            &a,
            "/custom-fields",
            json!({"objectType": "contact", "key": "tier", "label": "Tier", "type": "text"}),
        )
        .await,
        "id",
    );
    let b_account = s(
        &st.create(&b, "/accounts", json!({"name": "B's"})).await,
        "id",
    );
    let b_contact = s(
        &st.create(&b, "/contacts", json!({"firstName": "B", "lastName": "B"}))
            .await,
        "id",
    );

    let requests = vec![
        st.get(&b, &format!("/contacts/{contact}")),
        st.patch(
            &b,
            &format!("/contacts/{contact}"),
            json!({"title": "pwned"}),
        ),
        st.delete(&b, &format!("/contacts/{contact}")),
        st.post(&b, &format!("/contacts/{contact}/restore"), json!({})),
        st.get(&b, &format!("/accounts/{account}")),
        st.patch(
            &b,
            &format!("/accounts/{account}"),
            json!({"name": "pwned"}),
        ),
        st.delete(&b, &format!("/accounts/{account}")),
        st.post(&b, &format!("/accounts/{account}/restore"), json!({})),
        st.get(&b, &format!("/accounts/{account}/contacts")),
        st.put(
            &b,
            &format!("/accounts/{account}/contacts/{b_contact}"),
            json!({}),
        ),
        st.put(
            &b,
            &format!("/accounts/{b_account}/contacts/{contact}"),
            json!({}),
        ),
        st.delete(&b, &format!("/accounts/{account}/contacts/{contact}")),
        st.patch(
            &b,
            &format!("/custom-fields/{field}"),
            json!({"label": "pwned"}),
        ),
        st.delete(&b, &format!("/custom-fields/{field}")),
    ];
    for req in requests {
        let req = req.build().unwrap();
        let what = format!("{} {}", req.method(), req.url().path());
        let res = st.http.execute(req).await.unwrap();
        assert_eq!(res.status(), 404, "{what}");
        problem(res, 404, "NOT_FOUND").await;
    }
    // A's contact as B's primary account is refused the same way a missing one is.
    let p = problem(
        st.post(
            &b,
            "/contacts",
            json!({"firstName": "x", "lastName": "y", "accountId": account}),
        )
        .send()
        .await
        .unwrap(),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(fields(&p), ["accountId"]);
    // Lists, search and bulk see only B's own.
    let listed = st.all(&b, "/contacts").await;
    assert_eq!(listed.len(), 1);
    assert!(
        st.all(&b, "/contacts?q=A")
            .await
            .iter()
            .all(|c| c["id"] != contact.as_str())
    );
    assert!(
        st.all(&b, &format!("/contacts?accountId={account}"))
            .await
            .is_empty()
    );
    let bulk: Value = st
        .post(
            &b,
            "/contacts/bulk",
            json!({"action": "delete", "ids": [contact]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bulk["results"][0]["status"], "NOT_FOUND");
    let fields_b: Value = st
        .get(&b, "/custom-fields")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(fields_b["items"].as_array().unwrap().is_empty());
    // A's records are untouched.
    let c: Value = st
        .get(&a, &format!("/contacts/{contact}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c["lastName"], "A");
    assert_eq!(c["version"], 1);
}

#[tokio::test]
async fn scope_own_sees_only_own_records_and_scope_all_sees_every_one() {
    let st = spawn().await;
    let admin = st.signup().await;
    let rep1 = st.user(&admin, "sales_rep").await;
    let rep2 = st.user(&admin, "sales_rep").await;
    let manager = st.user(&admin, "sales_manager").await;
    let mine = s(
        &st.create(
            &rep1,
            "/contacts",
            json!({"firstName": "Mine", "lastName": "One"}),
        )
        .await,
        "id",
    );
    let theirs = s(
        &st.create(
            &rep2,
            "/contacts",
            json!({"firstName": "Theirs", "lastName": "Two"}),
        )
        .await,
        "id",
    );
    st.create(
        &admin,
        "/contacts",
        json!({"firstName": "Admin", "lastName": "Three"}),
    )
    .await;

    let seen: Vec<String> = st
        .all(&rep1, "/contacts")
        .await
        .iter()
        .map(|c| s(c, "id"))
        .collect();
    assert_eq!(seen, std::slice::from_ref(&mine));
    assert_eq!(st.all(&manager, "/contacts").await.len(), 3);
    assert_eq!(st.all(&admin, "/contacts").await.len(), 3);

    // Another rep's contact does not exist for rep1, on every route.
    for req in [
        st.get(&rep1, &format!("/contacts/{theirs}")),
        st.patch(&rep1, &format!("/contacts/{theirs}"), json!({"title": "x"})),
        st.delete(&rep1, &format!("/contacts/{theirs}")),
    ] {
        problem(req.send().await.unwrap(), 404, "NOT_FOUND").await;
    }
    // A rep may not give a record away, nor create one for someone else.
    let p = problem(
        st.patch(
            &rep1,
            &format!("/contacts/{mine}"),
            json!({"ownerUserId": rep2.id}),
        )
        .send()
        .await
        .unwrap(),
        403,
        "PERMISSION_DENIED",
    )
    .await;
    assert_eq!(fields(&p), ["ownerUserId"]);
    problem(
        st.post(
            &rep1,
            "/contacts",
            json!({"firstName": "x", "lastName": "y", "ownerUserId": rep2.id}),
        )
        .send()
        .await
        .unwrap(),
        403,
        "PERMISSION_DENIED",
    )
    .await;
    // The manager may.
    let res = st
        .patch(
            &manager,
            &format!("/contacts/{mine}"),
            json!({"ownerUserId": rep2.id}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(st.all(&rep1, "/contacts").await.is_empty());
    assert_eq!(st.all(&rep2, "/contacts").await.len(), 2);
    // Read-only roles read and change nothing.
    let viewer = st.user(&admin, "read_only").await;
    assert_eq!(st.all(&viewer, "/contacts").await.len(), 3);
    problem(
        st.patch(&viewer, &format!("/contacts/{mine}"), json!({"title": "x"}))
            .send()
            .await
            .unwrap(),
        403,
        "PERMISSION_DENIED",
    )
    .await;
    problem(
        st.post(
            &viewer,
            "/contacts",
            json!({"firstName": "x", "lastName": "y"}),
        )
        .send()
        .await
        .unwrap(),
        403,
        "PERMISSION_DENIED",
    )
    .await;
}

#[tokio::test]
async fn team_scope_reaches_the_teams_records() {
    let st = spawn().await;
    let admin = st.signup().await;
    let res = st
        .post(
            &admin,
            "/roles",
            json!({"key": "team_lead", "name": "Team lead", "permissions": [
                {"objectType": "contact", "action": "read", "scope": "team"},
                {"objectType": "contact", "action": "create", "scope": "own"}
            ]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let lead = st.user(&admin, "team_lead").await;
    let mate = st.user(&admin, "sales_rep").await;
    let stranger = st.user(&admin, "sales_rep").await;
    let team = s(
        &st.create(&admin, "/teams", json!({"name": "North"})).await,
        "id",
    );
    for u in [&lead, &mate] {
        let res = st
            .post(
                &admin,
                &format!("/teams/{team}/members/{}", u.id),
                json!({}),
            )
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "add member");
    }
    let mate_contact = s(
        &st.create(
            &mate,
            "/contacts",
            json!({"firstName": "M", "lastName": "Mate"}),
        )
        .await,
        "id",
    );
    st.create(
        &stranger,
        "/contacts",
        json!({"firstName": "S", "lastName": "Stranger"}),
    )
    .await;
    let own = s(
        &st.create(
            &lead,
            "/contacts",
            json!({"firstName": "L", "lastName": "Lead"}),
        )
        .await,
        "id",
    );
    let mut seen: Vec<String> = st
        .all(&lead, "/contacts")
        .await
        .iter()
        .map(|c| s(c, "id"))
        .collect();
    seen.sort();
    let mut want = vec![mate_contact, own];
    want.sort();
    assert_eq!(seen, want, "the lead's and the mate's, not the stranger's");
}

#[tokio::test]
async fn hidden_fields_can_be_neither_read_written_filtered_nor_sorted() {
    let st = spawn().await;
    let admin = st.signup().await;
    st.create(
        &admin,
        "/custom-fields",
        json!({"objectType": "contact", "key": "salary", "label": "Salary", "type": "number"}),
    )
    .await;
    let res = st
        .post(
            &admin,
            "/roles",
            json!({"key": "temp", "name": "Temp", "permissions": [
                {"objectType": "contact", "action": "read", "scope": "all"},
                {"objectType": "contact", "action": "create", "scope": "all"},
                {"objectType": "contact", "action": "update", "scope": "all"}
            ], "fieldRules": [
                {"objectType": "contact", "field": "email", "access": "hidden"},
                {"objectType": "contact", "field": "lastName", "access": "hidden"},
                {"objectType": "contact", "field": "custom.salary", "access": "hidden"},
                {"objectType": "contact", "field": "title", "access": "read_only"}
            ]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let temp = st.user(&admin, "temp").await;
    let c = st
        .create(
            &admin,
            "/contacts",
            json!({"firstName": "Hid", "lastName": "Den", "email": "secret@example.com", "title": "Boss", "custom": {"salary": 100000}}),
        )
        .await;
    let id = s(&c, "id");

    // Read: the fields are absent, in a record and in a list.
    let got: Value = st
        .get(&temp, &format!("/contacts/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(got.get("email").is_none(), "{got}");
    assert!(got.get("lastName").is_none(), "{got}");
    assert!(got["custom"].get("salary").is_none(), "{got}");
    assert_eq!(got["title"], "Boss", "read-only fields are readable");
    let listed = st.all(&temp, "/contacts").await;
    assert!(listed[0].get("email").is_none(), "{}", listed[0]);
    assert!(!listed[0].to_string().contains("secret@example.com"));

    // Write: refused, naming the field; nothing changes.
    for (body, field) in [
        (json!({"email": "new@example.com"}), "email"),
        (json!({"title": "Intern"}), "title"),
        (json!({"custom": {"salary": 1}}), "custom.salary"),
    ] {
        let p = problem(
            st.patch(&temp, &format!("/contacts/{id}"), body)
                .send()
                .await
                .unwrap(),
            403,
            "PERMISSION_DENIED",
        )
        .await;
        assert_eq!(fields(&p), [field]);
    }
    problem(
        st.post(
            &temp,
            "/contacts",
            json!({"firstName": "a", "lastName": "b"}),
        )
        .send()
        .await
        .unwrap(),
        403,
        "PERMISSION_DENIED",
    )
    .await;
    // Filter and sort: refused.
    for q in [
        "filter=email%20%3D%20%22secret%40example.com%22",
        "filter=custom.salary%20%3E%201",
        "sort=last_name",
        "sort=custom.salary",
    ] {
        let p = problem(
            st.get(&temp, &format!("/contacts?{q}"))
                .send()
                .await
                .unwrap(),
            403,
            "PERMISSION_DENIED",
        )
        .await;
        assert!(!fields(&p).is_empty(), "{q}: {p}");
    }
    // The admin still sees everything, unchanged.
    let full: Value = st
        .get(&admin, &format!("/contacts/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(full["email"], "secret@example.com");
    assert_eq!(full["custom"]["salary"], 100000);
    assert_eq!(full["version"], 1);
}
