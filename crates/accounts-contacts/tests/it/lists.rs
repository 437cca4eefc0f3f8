//! Lists: keyset pages that return every row exactly once while rows are inserted, sorts,
//! filters, partial text, cursors bound to the tenant and the query; custom fields.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::helpers::{fields, problem, s, spawn};

#[tokio::test]
async fn paging_returns_every_row_once_while_rows_are_inserted() {
    let st = spawn().await;
    let admin = st.signup().await;
    let mut expected = HashSet::new();
    for i in 0..45 {
        let c = st
            .create(
                &admin,
                "/contacts",
                json!({"firstName": "F", "lastName": format!("L{:02}", i % 7)}),
            )
            .await;
        expected.insert(s(&c, "id"));
    }
    for (sort, order) in [
        ("created_at", "asc"),
        ("last_name", "asc"),
        ("updated_at", "desc"),
        ("last_name", "desc"),
    ] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut inserted = 0;
        loop {
            let mut url = format!("/contacts?limit=7&sort={sort}&order={order}");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let b: Value = st
                .get(&admin, &url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let items = b["items"].as_array().unwrap();
            assert!(items.len() <= 7);
            seen.extend(items.iter().map(|c| s(c, "id")));
            // Rows arrive between pages; they may or may not show, but nothing shows twice
            // and nothing that existed before is skipped.
            if inserted < 3 {
                st.create(
                    &admin,
                    "/contacts",
                    json!({"firstName": "New", "lastName": "L03"}),
                )
                .await;
                inserted += 1;
            }
            match b["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "{sort} {order}: a row came twice");
        for id in &expected {
            assert!(unique.contains(id), "{sort} {order}: {id} was skipped");
        }
        let page: Value = st
            .get(
                &admin,
                &format!("/contacts?limit=200&sort={sort}&order={order}"),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let keys: Vec<String> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                if sort == "last_name" {
                    s(c, "lastName")
                } else {
                    s(c, "updatedAt")
                }
            })
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        if order == "desc" {
            sorted.reverse();
        }
        assert_eq!(keys, sorted, "{sort} {order}");
        for c in page["items"].as_array().unwrap() {
            expected.insert(s(c, "id"));
        }
    }
}

#[tokio::test]
async fn cursors_are_bound_to_tenant_and_query() {
    let st = spawn().await;
    let a = st.signup().await;
    let b = st.signup().await;
    for i in 0..3 {
        st.create(
            &a,
            "/contacts",
            json!({"firstName": "A", "lastName": format!("{i}")}),
        )
        .await;
    }
    let page: Value = st
        .get(&a, "/contacts?limit=1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cursor = s(&page, "nextCursor");
    assert_eq!(
        st.get(&a, &format!("/contacts?limit=1&cursor={cursor}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let p = problem(
        st.get(
            &a,
            &format!("/contacts?limit=1&sort=last_name&cursor={cursor}"),
        )
        .send()
        .await
        .unwrap(),
        400,
        "INVALID_CURSOR",
    )
    .await;
    assert_eq!(fields(&p), ["cursor"], "another query");
    problem(
        st.get(&b, &format!("/contacts?limit=1&cursor={cursor}"))
            .send()
            .await
            .unwrap(),
        400,
        "INVALID_CURSOR",
    )
    .await;
    let mut tampered = cursor.clone().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    problem(
        st.get(&a, &format!("/contacts?limit=1&cursor={tampered}"))
            .send()
            .await
            .unwrap(),
        400,
        "INVALID_CURSOR",
    )
    .await;
}

#[tokio::test]
async fn filters_and_partial_text() {
    let st = spawn().await;
    let admin = st.signup().await;
    let rep = st.user(&admin, "sales_rep").await;
    let acme = s(
        &st.create(&admin, "/accounts", json!({"name": "Acme Rockets"}))
            .await,
        "id",
    );
    st.create(&admin, "/contacts", json!({"firstName": "Anastasia", "lastName": "Romanova", "email": "ana@acme.example", "accountId": acme})).await;
    st.create(
        &admin,
        "/contacts",
        json!({"firstName": "John", "lastName": "Smith", "email": "john@smith.example"}),
    )
    .await;
    st.create(
        &admin,
        "/contacts",
        json!({"firstName": "Zoë", "lastName": "Ångström", "ownerUserId": rep.id}),
    )
    .await;
    let names = |items: Vec<Value>| -> Vec<String> {
        let mut v: Vec<String> = items.iter().map(|c| s(c, "firstName")).collect();
        v.sort();
        v
    };
    assert_eq!(
        names(st.all(&admin, "/contacts?q=nast").await),
        ["Anastasia"]
    );
    assert_eq!(
        names(st.all(&admin, "/contacts?q=SMITH.EX").await),
        ["John"],
        "e-mail, any case"
    );
    assert_eq!(names(st.all(&admin, "/contacts?q=ångs").await), ["Zoë"]);
    assert_eq!(
        names(st.all(&admin, "/contacts?q=100%25").await),
        Vec::<String>::new(),
        "% is literal"
    );
    assert_eq!(
        names(st.all(&admin, &format!("/contacts?accountId={acme}")).await),
        ["Anastasia"]
    );
    assert_eq!(
        names(
            st.all(&admin, &format!("/contacts?ownerUserId={}", rep.id))
                .await
        ),
        ["Zoë"]
    );
    assert_eq!(
        names(
            st.all(
                &admin,
                "/contacts?filter=last_name%20%3E%3D%20%22R%22%20AND%20last_name%20%3C%20%22T%22%20AND%20NOT%20email%3A%22acme%22"
            )
            .await
        ),
        ["John"]
    );
    assert_eq!(
        names(
            st.all(&admin, "/accounts?q=rocket")
                .await
                .into_iter()
                .map(|a| json!({"firstName": a["name"]}))
                .collect()
        ),
        ["Acme Rockets"]
    );
    let p = problem(
        st.get(&admin, "/contacts?filter=last_name%20%3D")
            .send()
            .await
            .unwrap(),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(fields(&p), ["filter"]);
    let long = "x".repeat(201);
    let p = problem(
        st.get(&admin, &format!("/contacts?q={long}"))
            .send()
            .await
            .unwrap(),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(fields(&p), ["q"]);
}

#[tokio::test]
async fn custom_fields_are_validated_filtered_and_sorted() {
    let st = spawn().await;
    let admin = st.signup().await;
    let tier = st
        .create(
            &admin,
            "/custom-fields",
            json!({"objectType": "contact", "key": "tier", "label": "Tier", "type": "select", "options": ["gold", "silver"]}),
        )
        .await;
    assert_eq!(tier["type"], "select");
    st.create(
        &admin,
        "/custom-fields",
        json!({"objectType": "contact", "key": "score", "label": "Score", "type": "number"}),
    )
    .await;
    st.create(
        &admin,
        "/custom-fields",
        json!({"objectType": "contact", "key": "renewal", "label": "Renewal", "type": "date", "required": false}),
    )
    .await;
    for (body, field) in [
        (
            json!({"objectType": "contact", "key": "tier", "label": "Again", "type": "text"}),
            "key",
        ),
        (
            json!({"objectType": "lamp", "key": "x", "label": "X", "type": "text"}),
            "objectType",
        ),
        (
            json!({"objectType": "contact", "key": "Bad-Key", "label": "X", "type": "text"}),
            "key",
        ),
        (
            json!({"objectType": "contact", "key": "opts", "label": "X", "type": "select"}),
            "options",
        ),
        (
            json!({"objectType": "contact", "key": "t", "label": "X", "type": "colour"}),
            "type",
        ),
    ] {
        let res = st
            .post(&admin, "/custom-fields", body.clone())
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let p: Value = res.json().await.unwrap();
        assert!(status == 400 || status == 409, "{body}: {status} {p}");
        assert!(fields(&p).iter().any(|f| f == field), "{body} → {p}");
    }

    let mk =
        |first: &str, custom: Value| json!({"firstName": first, "lastName": "X", "custom": custom});
    st.create(
        &admin,
        "/contacts",
        mk(
            "Gold",
            json!({"tier": "gold", "score": 90, "renewal": "2027-01-31"}),
        ),
    )
    .await;
    st.create(
        &admin,
        "/contacts",
        mk("Silver", json!({"tier": "silver", "score": 40.5})),
    )
    .await;
    st.create(&admin, "/contacts", mk("None", json!({}))).await;
    for (custom, field) in [
        (json!({"tier": "bronze"}), "custom.tier"),
        (json!({"score": "high"}), "custom.score"),
        (json!({"renewal": "31/01/2027"}), "custom.renewal"),
        (json!({"color": "red"}), "custom.color"),
    ] {
        let p = problem(
            st.post(&admin, "/contacts", mk("Bad", custom.clone()))
                .send()
                .await
                .unwrap(),
            400,
            "VALIDATION_FAILED",
        )
        .await;
        assert_eq!(fields(&p), [field], "{custom}");
    }
    let names =
        |items: Vec<Value>| -> Vec<String> { items.iter().map(|c| s(c, "firstName")).collect() };
    assert_eq!(
        names(
            st.all(&admin, "/contacts?filter=custom.tier%20%3D%20%22gold%22")
                .await
        ),
        ["Gold"]
    );
    assert_eq!(
        names(
            st.all(&admin, "/contacts?filter=custom.score%20%3E%2050")
                .await
        ),
        ["Gold"]
    );
    assert_eq!(
        names(
            st.all(&admin, "/contacts?sort=custom.score&order=desc&limit=1")
                .await
                .into_iter()
                .take(3)
                .collect()
        ),
        ["Gold", "Silver", "None"]
    );
    assert_eq!(
        names(
            st.all(&admin, "/contacts?sort=custom.score&order=asc&limit=2")
                .await
        ),
        ["None", "Silver", "Gold"]
    );

    // A required field is enforced on the next write; deleting a definition drops its values.
    let id = s(&tier, "id");
    let res = st
        .patch(
            &admin,
            &format!("/custom-fields/{id}"),
            json!({"required": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let p = problem(
        st.post(&admin, "/contacts", mk("NoTier", json!({})))
            .send()
            .await
            .unwrap(),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(fields(&p), ["custom.tier"]);
    assert_eq!(
        st.delete(&admin, &format!("/custom-fields/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let gold = st
        .all(&admin, "/contacts?filter=custom.score%20%3E%2050")
        .await;
    assert!(gold[0]["custom"].get("tier").is_none(), "{}", gold[0]);
    let p = problem(
        st.get(&admin, "/contacts?filter=custom.tier%20%3D%20%22gold%22")
            .send()
            .await
            .unwrap(),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(fields(&p), ["filter"]);
    let rep = st.user(&admin, "sales_rep").await;
    problem(
        st.post(
            &rep,
            "/custom-fields",
            json!({"objectType": "contact", "key": "x", "label": "X", "type": "text"}),
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
async fn partial_text_finds_every_match_of_rare_and_common_terms() {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};

    let st = spawn().await;
    let admin = st.signup().await;
    let rep = st.user(&admin, "sales_rep").await;
    let other = st.signup().await;
    let seed = s(
        &st.create(
            &admin,
            "/contacts",
            json!({"firstName": "Common", "lastName": "Seed"}),
        )
        .await,
        "id",
    );
    st.create(
        &rep,
        "/contacts",
        json!({"firstName": "Common", "lastName": "Owned", "email": "needle@rare.example"}),
    )
    .await;
    st.create(
        &other,
        "/contacts",
        json!({"firstName": "Common", "lastName": "Elsewhere", "email": "needle@rare.example"}),
    )
    .await;
    // More matches than the partial-text lookup keeps by id: lists fall back to scanning.
    st.admin
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO accounts.contacts (tenant_id, id, first_name, last_name)
             SELECT c.tenant_id, gen_random_uuid(), 'Common', 'Person ' || g
               FROM accounts.contacts c, generate_series(1, 5001) g
              WHERE c.id = $1",
            [uuid::Uuid::parse_str(&seed).unwrap().into()],
        ))
        .await
        .expect("bulk insert");

    let common = st.all(&admin, "/contacts?q=common&limit=200").await;
    assert_eq!(common.len(), 5003, "every match once, own tenant only");
    let ids: HashSet<String> = common.iter().map(|c| s(c, "id")).collect();
    assert_eq!(ids.len(), 5003);
    assert!(common.iter().all(|c| s(c, "lastName") != "Elsewhere"));

    let rare = st.all(&admin, "/contacts?q=needle@rare").await;
    assert_eq!(
        rare.iter().map(|c| s(c, "lastName")).collect::<Vec<_>>(),
        ["Owned"],
        "a rare term: this tenant's single match"
    );
    let mine = st.all(&rep, "/contacts?q=common").await;
    assert_eq!(
        mine.iter().map(|c| s(c, "lastName")).collect::<Vec<_>>(),
        ["Owned"],
        "scope own applies to partial text"
    );
    let theirs = st.all(&other, "/contacts?q=common").await;
    assert_eq!(
        theirs.iter().map(|c| s(c, "lastName")).collect::<Vec<_>>(),
        ["Elsewhere"]
    );
    // Deleted records are not matched.
    let owned = s(&rare[0], "id");
    let res = st
        .delete(&admin, &format!("/contacts/{owned}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(st.all(&admin, "/contacts?q=needle@rare").await.is_empty());
}

#[tokio::test]
async fn custom_field_sorts_page_through_every_row_in_value_order() {
    let st = spawn().await;
    let admin = st.signup().await;
    // Records that exist before their field is defined sort as missing once it is.
    let early = st
        .create(
            &admin,
            "/contacts",
            json!({"firstName": "Early", "lastName": "X"}),
        )
        .await;
    for (key, kind) in [("score", "number"), ("code", "text"), ("renewal", "date")] {
        st.create(
            &admin,
            "/custom-fields",
            json!({"objectType": "contact", "key": key, "label": key, "type": kind}),
        )
        .await;
    }
    // Numbers in an order that neither their text nor their length gives.
    let scores = [
        ("Ten", json!(10)),
        ("MinusTwelveHalf", json!(-12.5)),
        ("Nine", json!(9)),
        ("Zero", json!(0)),
        ("Million", json!(1_000_000)),
        ("MinusThree", json!(-3)),
        ("Hundred", json!(100.25)),
        ("Small", json!(0.001)),
        ("TenAgain", json!(10)),
    ];
    let mut ids = std::collections::HashMap::new();
    for (name, score) in &scores {
        let c = st
            .create(
                &admin,
                "/contacts",
                json!({"firstName": name, "lastName": "X", "custom": {"score": score, "code": name.to_lowercase()}}),
            )
            .await;
        ids.insert(name.to_string(), s(&c, "id"));
    }
    let none = st
        .create(
            &admin,
            "/contacts",
            json!({"firstName": "None", "lastName": "X"}),
        )
        .await;
    // Another tenant's contacts with the same field never show.
    let other = st.signup().await;
    st.create(
        &other,
        "/custom-fields",
        json!({"objectType": "contact", "key": "score", "label": "S", "type": "number"}),
    )
    .await;
    st.create(
        &other,
        "/contacts",
        json!({"firstName": "Foreign", "lastName": "X", "custom": {"score": 5}}),
    )
    .await;

    let names =
        |items: Vec<Value>| -> Vec<String> { items.iter().map(|c| s(c, "firstName")).collect() };
    // Ties (Ten, TenAgain; Early, None) go by id, which follows creation here.
    let ascending = [
        "Early",
        "None",
        "MinusTwelveHalf",
        "MinusThree",
        "Zero",
        "Small",
        "Nine",
        "Ten",
        "TenAgain",
        "Hundred",
        "Million",
    ];
    for limit in [1, 3, 200] {
        assert_eq!(
            names(
                st.all(
                    &admin,
                    &format!("/contacts?sort=custom.score&limit={limit}")
                )
                .await
            ),
            ascending,
            "ascending, pages of {limit}"
        );
        let mut descending = ascending.to_vec();
        descending.reverse();
        assert_eq!(
            names(
                st.all(
                    &admin,
                    &format!("/contacts?sort=custom.score&order=desc&limit={limit}")
                )
                .await
            ),
            descending,
            "descending, pages of {limit}"
        );
    }
    // Filters on custom fields, narrowed through the same rows, hold for exactly the records
    // they name.
    for (filter, expected) in [
        ("custom.score = 10", vec!["Ten", "TenAgain"]),
        (
            "custom.score > 0 AND custom.score <= 100.25",
            vec!["Small", "Nine", "Ten", "TenAgain", "Hundred"],
        ),
        ("custom.score < 0", vec!["MinusTwelveHalf", "MinusThree"]),
        (
            "NOT custom.score >= 0",
            vec!["Early", "None", "MinusTwelveHalf", "MinusThree"],
        ),
        ("custom.code = \"nine\"", vec!["Nine"]),
        (
            "custom.score = 10 OR custom.code = \"zero\"",
            vec!["Zero", "Ten", "TenAgain"],
        ),
        ("custom.score = 11", vec![]),
    ] {
        let encoded: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
        assert_eq!(
            names(
                st.all(
                    &admin,
                    &format!("/contacts?sort=custom.score&limit=2&filter={encoded}")
                )
                .await
            ),
            expected,
            "{filter}"
        );
    }
    let mut by_code: Vec<&str> = scores.iter().map(|(n, _)| *n).collect();
    by_code.sort_by_key(|n| n.to_lowercase());
    let mut expected = vec!["Early", "None"];
    expected.extend(by_code);
    assert_eq!(
        names(st.all(&admin, "/contacts?sort=custom.code&limit=4").await),
        expected
    );

    // Changing a value moves the record; clearing it makes it missing; a deleted record
    // leaves the list and a restored one comes back.
    let res = st
        .patch(
            &admin,
            &format!("/contacts/{}", ids["Zero"]),
            json!({"custom": {"score": 500, "code": "zero"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = st
        .patch(
            &admin,
            &format!("/contacts/{}", s(&early, "id")),
            json!({"custom": {"score": 50, "renewal": "2027-03-01"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = st
        .patch(
            &admin,
            &format!("/contacts/{}", ids["Million"]),
            json!({"custom": {"score": null}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = st
        .delete(&admin, &format!("/contacts/{}", s(&none, "id")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        names(st.all(&admin, "/contacts?sort=custom.score&limit=2").await),
        [
            "Million",
            "MinusTwelveHalf",
            "MinusThree",
            "Small",
            "Nine",
            "Ten",
            "TenAgain",
            "Early",
            "Hundred",
            "Zero"
        ]
    );
    let res = st
        .post(
            &admin,
            &format!("/contacts/{}/restore", s(&none, "id")),
            json!({}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        names(
            st.all(&admin, "/contacts?sort=custom.renewal&order=desc&limit=5")
                .await
        )[0],
        "Early"
    );
    assert_eq!(
        st.all(&admin, "/contacts?sort=custom.score&limit=5")
            .await
            .len(),
        ascending.len()
    );

    // Paging returns every row once while rows with values are inserted between pages.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut inserted = 0;
    loop {
        let mut url = "/contacts?sort=custom.score&limit=3".to_owned();
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let b: Value = st
            .get(&admin, &url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen.extend(b["items"].as_array().unwrap().iter().map(|c| s(c, "id")));
        if inserted < 4 {
            st.create(
                &admin,
                "/contacts",
                json!({"firstName": "New", "lastName": "X", "custom": {"score": inserted * 40 - 20}}),
            )
            .await;
            inserted += 1;
        }
        match b["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a row came twice");
    for id in ids.values().chain([&s(&early, "id"), &s(&none, "id")]) {
        assert!(unique.contains(id), "{id} was skipped");
    }

    // Accounts sort by their own fields; a deleted field is no longer a sort key.
    let size = st
        .create(
            &admin,
            "/custom-fields",
            json!({"objectType": "account", "key": "size", "label": "Size", "type": "number"}),
        )
        .await;
    for (name, n) in [("Big", 900), ("Tiny", 2), ("Mid", 40)] {
        st.create(
            &admin,
            "/accounts",
            json!({"name": name, "custom": {"size": n}}),
        )
        .await;
    }
    assert_eq!(
        st.all(&admin, "/accounts?sort=custom.size&limit=2")
            .await
            .iter()
            .map(|a| s(a, "name"))
            .collect::<Vec<_>>(),
        ["Tiny", "Mid", "Big"]
    );
    let res = st
        .delete(&admin, &format!("/custom-fields/{}", s(&size, "id")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let p = problem(
        st.get(&admin, "/accounts?sort=custom.size")
            .send()
            .await
            .unwrap(),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(fields(&p), ["sort"]);
}

#[tokio::test]
async fn the_custom_sort_migration_rolls_back_and_rebuilds_the_rows_of_existing_fields() {
    use crm_migrations::{MigratorTrait, accounts::Migrator};
    use sea_orm::ConnectionTrait;

    let st = spawn().await;
    let admin = st.signup().await;
    st.create(
        &admin,
        "/custom-fields",
        json!({"objectType": "contact", "key": "rank", "label": "Rank", "type": "number"}),
    )
    .await;
    for (name, rank) in [("Second", 2), ("Third", 3), ("First", 1)] {
        st.create(
            &admin,
            "/contacts",
            json!({"firstName": name, "lastName": "X", "custom": {"rank": rank}}),
        )
        .await;
    }
    let table_exists = || async {
        st.admin
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DatabaseBackend::Postgres,
                "SELECT to_regclass('accounts.custom_sort') IS NOT NULL AS present",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get::<bool>("", "present")
            .unwrap()
    };
    Migrator::down(&st.admin, Some(1)).await.expect("down");
    assert!(!table_exists().await, "the rollback drops the sort rows");
    // Written while the triggers are gone: the migration's own fill covers it.
    st.create(
        &admin,
        "/contacts",
        json!({"firstName": "Zeroth", "lastName": "X", "custom": {"rank": 0}}),
    )
    .await;
    Migrator::up(&st.admin, None).await.expect("up again");
    assert!(table_exists().await);
    let names: Vec<String> = st
        .all(&admin, "/contacts?sort=custom.rank&limit=2")
        .await
        .iter()
        .map(|c| s(c, "firstName"))
        .collect();
    assert_eq!(names, ["Zeroth", "First", "Second", "Third"]);
}
