//! What a partner notices about search: what matches and in which order, who sees what,
//! deletes and restores, rebuilds, and refused input.

use crm_proto::search as pb;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::json;

use crate::helpers::{Hit, TestStack, User, bad_request, grpc, s, spawn};

/// Three contacts and an account; returns (anastasia, john, joan, anaheim) ids once indexed.
async fn seed(st: &TestStack, admin: &User) -> (String, String, String, String) {
    let anaheim = s(
        &st.create(
            admin,
            "/accounts",
            json!({"name": "Anaheim Widgets", "website": "anaheim-widgets.example", "industry": "Manufacturing"}),
        )
        .await,
        "id",
    );
    let anastasia = s(
        &st.create(
            admin,
            "/contacts",
            json!({"firstName": "Anastasia", "lastName": "Petrova", "email": "a.petrova@northwind.example",
                   "phone": "+1 (555) 010-2030", "title": "Buyer"}),
        )
        .await,
        "id",
    );
    let john = s(
        &st.create(
            admin,
            "/contacts",
            json!({"firstName": "John", "lastName": "Smith", "email": "john.smith@contoso.example", "title": "CTO"}),
        )
        .await,
        "id",
    );
    let joan = s(
        &st.create(
            admin,
            "/contacts",
            json!({"firstName": "Joan", "lastName": "Smithers", "email": "joan@fabrikam.example"}),
        )
        .await,
        "id",
    );
    st.search_until(admin, "q=smith&limit=100", "every record indexed", |h| {
        h.len() >= 2
    })
    .await;
    st.search_until(admin, "q=anaheim", "the account indexed", |h| !h.is_empty())
        .await;
    st.search_until(admin, "q=anastasia", "anastasia indexed", |h| !h.is_empty())
        .await;
    st.create(
        admin,
        "/contacts",
        json!({"firstName": "Zoë", "lastName": "Müller", "title": "Geschäftsführerin"}),
    )
    .await;
    st.search_until(admin, "q=zo", "zoë indexed", |h| !h.is_empty())
        .await;
    (anastasia, john, joan, anaheim)
}

fn ids(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.1.as_str()).collect()
}

#[tokio::test]
async fn prefix_typo_email_and_phone_find_the_right_record_first() {
    let st = spawn().await;
    let admin = st.signup().await;
    let (anastasia, john, joan, anaheim) = seed(&st, &admin).await;

    let hits = st.search(&admin, "q=ana&types=contact").await;
    assert_eq!(ids(&hits), [anastasia.as_str()], "prefix: {hits:?}");
    assert_eq!(hits[0].2, "Anastasia Petrova");
    assert_eq!(hits[0].3, "a.petrova@northwind.example");
    let hits = st.search(&admin, "q=ana").await;
    assert!(
        ids(&hits).contains(&anaheim.as_str()),
        "across types: {hits:?}"
    );
    let account = hits.iter().find(|h| h.1 == anaheim).expect("account hit");
    assert_eq!(
        (account.0.as_str(), account.2.as_str(), account.3.as_str()),
        ("account", "Anaheim Widgets", "anaheim-widgets.example")
    );
    let hits = st.search(&admin, "q=ana&types=account").await;
    assert_eq!(ids(&hits), [anaheim.as_str()], "a chosen type: {hits:?}");

    let hits = st.search(&admin, "q=jonh").await;
    assert_eq!(
        hits.first().map(|h| h.1.as_str()),
        Some(john.as_str()),
        "typo: {hits:?}"
    );

    // Exact beats fuzzy: "joan" is one letter from "john".
    let hits = st.search(&admin, "q=joan").await;
    assert_eq!(ids(&hits)[0], joan, "exact first: {hits:?}");
    let hits = st.search(&admin, "q=John%20Smith").await;
    assert_eq!(ids(&hits)[0], john, "{hits:?}");
    // Prefix beats fuzzy too: "smith" is a word of John Smith and a prefix of Smithers.
    let hits = st.search(&admin, "q=smith").await;
    assert_eq!(ids(&hits), [john.as_str(), joan.as_str()], "{hits:?}");

    for q in ["contoso", "john.smith%40contoso", "%40contoso.example"] {
        let hits = st.search(&admin, &format!("q={q}")).await;
        assert_eq!(ids(&hits), [john.as_str()], "e-mail fragment {q}: {hits:?}");
    }
    for q in ["010-2030", "5550102", "555%20010"] {
        let hits = st.search(&admin, &format!("q={q}")).await;
        assert_eq!(
            ids(&hits),
            [anastasia.as_str()],
            "phone fragment {q}: {hits:?}"
        );
    }
    assert!(st.search(&admin, "q=zebra").await.is_empty());
    // Diacritics do not matter either way, and an exact word stays exact.
    for q in ["muller", "M%C3%BCller", "zoe%20muller", "geschaftsfuhrerin"] {
        let hits = st.search(&admin, &format!("q={q}")).await;
        assert_eq!(hits.len(), 1, "{q}: {hits:?}");
        assert_eq!(hits[0].2, "Zoë Müller");
    }
    let exact: f64 = {
        let res = st
            .get(&admin, "/search?q=muller")
            .send()
            .await
            .expect("search");
        let b: serde_json::Value = res.json().await.expect("json");
        b["items"][0]["score"].as_f64().expect("score")
    };
    assert!(exact > 0.9, "{exact}");
    let hits = st.search(&admin, "q=a&limit=1").await;
    assert!(hits.len() <= 1);
}

#[tokio::test]
async fn scope_own_hides_other_reps_records_and_hidden_fields_do_not_match() {
    let st = spawn().await;
    let admin = st.signup().await;
    let rep = st.user(&admin, "sales_rep").await;
    let other = st.user(&admin, "sales_rep").await;
    let mine = s(
        &st.create(
            &admin,
            "/contacts",
            json!({"firstName": "Marta", "lastName": "Mine", "ownerUserId": rep.id}),
        )
        .await,
        "id",
    );
    let theirs = s(
        &st.create(
            &admin,
            "/contacts",
            json!({"firstName": "Marta", "lastName": "Theirs", "ownerUserId": other.id,
                   "email": "marta@secret.example"}),
        )
        .await,
        "id",
    );
    st.search_until(&admin, "q=marta", "both indexed", |h| h.len() == 2)
        .await;
    let hits = st.search(&rep, "q=marta").await;
    assert_eq!(ids(&hits), [mine.as_str()], "{hits:?}");
    assert!(st.search(&rep, "q=theirs").await.is_empty());
    let hits = st.search(&other, "q=mart").await;
    assert_eq!(ids(&hits), [theirs.as_str()], "{hits:?}");

    // A role that hides e-mail: the e-mail neither matches nor shows.
    let res = st
        .post(
            &admin,
            "/roles",
            json!({"key": "no_email", "name": "No e-mail", "permissions": [
                {"objectType": "contact", "action": "read", "scope": "all"}],
                "fieldRules": [{"objectType": "contact", "field": "email", "access": "hidden"}]}),
        )
        .send()
        .await
        .expect("role");
    assert_eq!(
        res.status(),
        201,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let viewer = st.user(&admin, "no_email").await;
    assert!(st.search(&viewer, "q=secret.example").await.is_empty());
    let hits = st.search(&viewer, "q=theirs").await;
    assert_eq!(ids(&hits), [theirs.as_str()]);
    assert_eq!(hits[0].3, "", "the hidden e-mail is not the subtitle");
    assert_eq!(st.search(&admin, "q=secret.example").await.len(), 1);
}

#[tokio::test]
async fn another_tenants_records_never_appear() {
    let st = spawn().await;
    let a = st.signup().await;
    let b = st.signup().await;
    let theirs = s(
        &st.create(
            &b,
            "/contacts",
            json!({"firstName": "Ophelia", "lastName": "Other"}),
        )
        .await,
        "id",
    );
    st.search_until(&b, "q=ophelia", "b's contact indexed", |h| !h.is_empty())
        .await;
    let mine = s(
        &st.create(
            &a,
            "/contacts",
            json!({"firstName": "Ophelia", "lastName": "Own"}),
        )
        .await,
        "id",
    );
    let hits = st
        .search_until(&a, "q=ophelia", "a's contact indexed", |h| !h.is_empty())
        .await;
    assert_eq!(ids(&hits), [mine.as_str()]);
    for q in ["ophelia", "other", "ophelia%20other", "ophe"] {
        let hits = st.search(&a, &format!("q={q}")).await;
        assert!(!ids(&hits).contains(&theirs.as_str()), "{q}: {hits:?}");
    }
    // The candidate lookup runs past row-level security (as the schema owner); it still
    // reaches only the transaction's tenant, and nothing without one.
    let candidates = "SELECT entity_id::text AS id FROM search.candidates(ARRAY['contact'], \
                      '{}'::jsonb, 'ophelia', '%ophelia%', 'ophelia:*', NULL, 100)";
    let stmt = || Statement::from_string(DbBackend::Postgres, candidates);
    let tenant: crm_kit::TenantId = a.tenant_id.parse().expect("tenant id");
    let tx = st.db.tenant_tx(tenant).await.expect("tenant tx");
    let found: Vec<String> = tx
        .conn()
        .query_all_raw(stmt())
        .await
        .expect("candidates")
        .iter()
        .map(|r| r.try_get("", "id").expect("id"))
        .collect();
    tx.rollback().await.expect("rollback");
    assert_eq!(found, [mine.as_str()], "as tenant a");
    let none = st
        .db
        .conn()
        .query_all_raw(stmt())
        .await
        .expect("candidates without a tenant");
    assert!(none.is_empty(), "without a tenant: {} rows", none.len());
}

#[tokio::test]
async fn a_deleted_contact_disappears_and_a_restored_one_returns() {
    let st = spawn().await;
    let admin = st.signup().await;
    let id = s(
        &st.create(
            &admin,
            "/contacts",
            json!({"firstName": "Delia", "lastName": "Gone", "email": "delia@example.com"}),
        )
        .await,
        "id",
    );
    st.search_until(&admin, "q=delia", "indexed", |h| h.len() == 1)
        .await;
    // An update is indexed too: the old name no longer matches.
    let res = st
        .http
        .patch(st.url(&format!("/contacts/{id}")))
        .bearer_auth(&admin.token)
        .json(&json!({"lastName": "Renamed"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status(), 200);
    st.search_until(&admin, "q=renamed", "the update indexed", |h| h.len() == 1)
        .await;
    assert!(st.search(&admin, "q=gone").await.is_empty());
    let res = st
        .http
        .delete(st.url(&format!("/contacts/{id}")))
        .bearer_auth(&admin.token)
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 204);
    st.search_until(&admin, "q=delia", "the delete indexed", |h| h.is_empty())
        .await;
    let res = st
        .post(&admin, &format!("/contacts/{id}/restore"), json!({}))
        .send()
        .await
        .expect("restore");
    assert_eq!(res.status(), 200);
    let hits = st
        .search_until(&admin, "q=delia", "the restore indexed", |h| h.len() == 1)
        .await;
    assert_eq!(hits[0].2, "Delia Renamed");
}

#[tokio::test]
async fn an_index_wiped_and_rebuilt_gives_the_same_answers() {
    let st = spawn().await;
    let admin = st.signup().await;
    seed(&st, &admin).await;
    let gone = s(
        &st.create(
            &admin,
            "/contacts",
            json!({"firstName": "Zed", "lastName": "Deleted"}),
        )
        .await,
        "id",
    );
    st.search_until(&admin, "q=zed", "indexed", |h| h.len() == 1)
        .await;
    let res = st
        .http
        .delete(st.url(&format!("/contacts/{gone}")))
        .bearer_auth(&admin.token)
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 204);
    st.search_until(&admin, "q=zed", "the delete indexed", |h| h.is_empty())
        .await;
    let queries = [
        "q=ana",
        "q=jonh",
        "q=smith",
        "q=contoso",
        "q=010-2030",
        "q=widgets",
        "q=zed",
    ];
    let mut before = Vec::new();
    for q in queries {
        before.push(st.search(&admin, q).await);
    }

    st.admin
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "DELETE FROM search.documents WHERE tenant_id = $1::uuid",
            [admin.tenant_id.clone().into()],
        ))
        .await
        .expect("wipe");
    assert!(st.search(&admin, "q=ana").await.is_empty(), "wiped");

    let mut client = st.search_client().await;
    let counts = client
        .reindex(grpc(&admin, pb::ReindexRequest::default()))
        .await
        .expect("reindex")
        .into_inner()
        .counts;
    let count = |t: &str| counts.iter().find(|c| c.r#type == t).map(|c| c.count);
    assert_eq!((count("contact"), count("account")), (Some(4), Some(1)));
    for (q, expected) in queries.iter().zip(&before) {
        assert_eq!(&st.search(&admin, q).await, expected, "{q}");
    }
    let drifts = client
        .check_drift(grpc(&admin, pb::CheckDriftRequest {}))
        .await
        .expect("drift")
        .into_inner()
        .drifts;
    assert!(drifts.iter().all(|d| d.indexed == d.source), "{drifts:?}");

    // Only an admin may rebuild.
    let rep = st.user(&admin, "sales_rep").await;
    let err = client
        .reindex(grpc(&rep, pb::ReindexRequest::default()))
        .await
        .expect_err("a rep may not rebuild");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field() {
    let st = spawn().await;
    let admin = st.signup().await;
    let long = "a".repeat(201);
    for (query, field) in [
        ("", "q"),
        ("q=", "q"),
        ("q=%20%20", "q"),
        (&*format!("q={long}"), "q"),
        ("q=ana&types=contact,planet", "types"),
        ("q=ana&limit=0", "limit"),
        ("q=ana&limit=101", "limit"),
        ("q=ana&limit=ten", "limit"),
    ] {
        let res = st
            .get(&admin, &format!("/search?{query}"))
            .send()
            .await
            .expect("search");
        bad_request(res, field).await;
    }
    let exactly = "a".repeat(200);
    assert!(st.search(&admin, &format!("q={exactly}")).await.is_empty());
    assert!(
        st.search(&admin, "q=ana&types=opportunity,lead,ticket&limit=100")
            .await
            .is_empty()
    );
    for odd in ["%25%5F%5C", "%27%3A*%26!", "(a|b)", "%F0%9F%98%80"] {
        st.search(&admin, &format!("q={odd}")).await;
    }
}

#[tokio::test]
async fn scope_team_reaches_the_teams_records_only() {
    let st = spawn().await;
    let admin = st.signup().await;
    let res = st
        .post(
            &admin,
            "/roles",
            json!({"key": "team_lead", "name": "Team lead", "permissions": [
                {"objectType": "contact", "action": "read", "scope": "team"}]}),
        )
        .send()
        .await
        .expect("role");
    assert_eq!(
        res.status(),
        201,
        "{}",
        res.text().await.unwrap_or_default()
    );
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
            .expect("member");
        assert!(res.status().is_success(), "add member");
    }
    let mates = s(
        &st.create(
            &admin,
            "/contacts",
            json!({"firstName": "Tamsin", "lastName": "Mate", "ownerUserId": mate.id}),
        )
        .await,
        "id",
    );
    st.create(
        &admin,
        "/contacts",
        json!({"firstName": "Tamsin", "lastName": "Stranger", "ownerUserId": stranger.id}),
    )
    .await;
    st.create(&admin, "/accounts", json!({"name": "Tamsin Holdings"}))
        .await;
    st.search_until(&admin, "q=tamsin", "all indexed", |h| h.len() == 3)
        .await;
    // The lead reads the team's contacts and may not read accounts at all.
    let hits = st.search(&lead, "q=tamsin").await;
    assert_eq!(ids(&hits), [mates.as_str()], "{hits:?}");
}

#[tokio::test]
async fn opportunities_leads_and_tickets_are_found_scoped_and_rebuilt() {
    let st = spawn().await;
    let admin = st.signup().await;
    let rep = st.user(&admin, "sales_rep").await;
    let account = s(
        &st.create(&admin, "/accounts", json!({"name": "Globex"}))
            .await,
        "id",
    );
    let deal = s(
        &st.create(
            &admin,
            "/opportunities",
            json!({"accountId": account, "name": "Globex renewal 2027", "amountCents": 120000,
                   "currency": "EUR", "stage": "proposal"}),
        )
        .await,
        "id",
    );
    let grace = s(
        &st.create(
            &admin,
            "/leads",
            json!({"firstName": "Grace", "lastName": "Hopper", "email": "grace@navylabs.example",
                   "company": "Navy Labs", "status": "new"}),
        )
        .await,
        "id",
    );
    let rosalind = s(
        &st.create(
            &rep,
            "/leads",
            json!({"firstName": "Rosalind", "lastName": "Franklin", "company": "King's College",
                   "status": "working"}),
        )
        .await,
        "id",
    );
    let ticket = s(
        &st.create(
            &admin,
            "/tickets",
            json!({"subject": "Printer jammed on floor three", "priority": "high",
                   "stage": "new", "accountId": account}),
        )
        .await,
        "id",
    );
    st.search_until(&admin, "q=printer", "the ticket indexed", |h| h.len() == 1)
        .await;
    st.search_until(&admin, "q=rosalind", "the rep's lead indexed", |h| {
        h.len() == 1
    })
    .await;

    let hits = st
        .search_until(&admin, "q=globex&types=opportunity", "the deal", |h| {
            !h.is_empty()
        })
        .await;
    assert_eq!(
        hits,
        [(
            "opportunity".to_owned(),
            deal.clone(),
            "Globex renewal 2027".to_owned(),
            "proposal".to_owned()
        )]
    );
    let hits = st.search(&admin, "q=grac").await;
    assert_eq!(ids(&hits), [grace.as_str()], "prefix: {hits:?}");
    assert_eq!(
        (hits[0].0.as_str(), hits[0].3.as_str()),
        ("lead", "Navy Labs")
    );
    let hits = st.search(&admin, "q=printr").await;
    assert_eq!(ids(&hits), [ticket.as_str()], "typo: {hits:?}");
    assert_eq!(hits[0].2, "Printer jammed on floor three");
    let hits = st.search(&admin, "q=globex").await;
    let mut types: Vec<&str> = hits.iter().map(|h| h.0.as_str()).collect();
    types.sort();
    assert_eq!(types, ["account", "opportunity"], "one box over every type");

    // A rep with scope own on leads sees their own lead only.
    assert!(st.search(&rep, "q=grace").await.is_empty());
    assert_eq!(
        ids(&st.search(&rep, "q=rosalind").await),
        [rosalind.as_str()]
    );

    // A deleted lead disappears.
    let res = st
        .http
        .delete(st.url(&format!("/leads/{grace}")))
        .bearer_auth(&admin.token)
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 204);
    st.search_until(&admin, "q=grace", "the delete indexed", |h| h.is_empty())
        .await;

    // Wiped and rebuilt from pipeline: the same answers.
    let queries = ["q=globex", "q=printr", "q=rosalind", "q=grace"];
    let mut before = Vec::new();
    for q in queries {
        before.push(st.search(&admin, q).await);
    }
    st.admin
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "DELETE FROM search.documents WHERE tenant_id = $1::uuid",
            [admin.tenant_id.clone().into()],
        ))
        .await
        .expect("wipe");
    let counts = st
        .search_client()
        .await
        .reindex(grpc(
            &admin,
            pb::ReindexRequest {
                types: vec!["opportunity".into(), "lead".into(), "ticket".into()],
            },
        ))
        .await
        .expect("reindex")
        .into_inner()
        .counts;
    let count = |t: &str| counts.iter().find(|c| c.r#type == t).map(|c| c.count);
    assert_eq!(
        (count("opportunity"), count("lead"), count("ticket")),
        (Some(1), Some(1), Some(1))
    );
    let mut after = Vec::new();
    for q in queries {
        after.push(st.search(&admin, q).await);
    }
    // The account is not rebuilt by this call: it is gone from the wiped index.
    before[0].retain(|h| h.0 != "account");
    assert_eq!(after, before);
}
