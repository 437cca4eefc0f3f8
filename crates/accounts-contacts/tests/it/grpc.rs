//! The gRPC API as internal services use it: AIP-160 filters, order_by, page tokens,
//! idempotent creates and error details.

use crm_proto::accounts as pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{as_user, grpc, spawn};

fn contact(first: &str, last: &str, email: &str) -> pb::CreateContactRequest {
    pb::CreateContactRequest {
        first_name: first.into(),
        last_name: last.into(),
        email: email.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn filters_order_and_pages_over_grpc() {
    let st = spawn().await;
    let admin = st.signup().await;
    let mut c = grpc(&st).await;
    for (f, l, e) in [
        ("Ada", "Lovelace", "ada@math.example"),
        ("Alan", "Turing", "alan@bletchley.example"),
        ("Grace", "Hopper", "grace@navy.example"),
        ("Edsger", "Dijkstra", ""),
    ] {
        c.create_contact(as_user(&admin, contact(f, l, e)))
            .await
            .unwrap();
    }
    let list = |filter: &str, order_by: &str, token: &str, size: i32| pb::ListContactsRequest {
        filter: filter.into(),
        order_by: order_by.into(),
        page_token: token.into(),
        page_size: size,
        query: String::new(),
    };
    let names = |r: &pb::ListContactsResponse| -> Vec<String> {
        r.contacts.iter().map(|c| c.last_name.clone()).collect()
    };
    let r = c
        .list_contacts(as_user(
            &admin,
            list(
                r#"(last_name = "Turing" OR last_name >= "L") AND NOT email:"navy""#,
                "last_name desc",
                "",
                0,
            ),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&r), ["Turing", "Lovelace"]);
    let r = c
        .list_contacts(as_user(&admin, list("email = null", "", "", 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&r), ["Dijkstra"]);

    // Pages of one, in last-name order, every contact once.
    let mut token = String::new();
    let mut seen = Vec::new();
    loop {
        let r = c
            .list_contacts(as_user(&admin, list("", "last_name", &token, 1)))
            .await
            .unwrap()
            .into_inner();
        seen.extend(names(&r));
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(seen, ["Dijkstra", "Hopper", "Lovelace", "Turing"]);

    // Errors carry the field in google.rpc.BadRequest.
    let e = c
        .list_contacts(as_user(&admin, list("shoe_size > 3", "", "", 0)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let details = e.get_error_details();
    let bad = details.bad_request().expect("bad request details");
    assert_eq!(bad.field_violations[0].field, "filter");
    let e = c
        .list_contacts(as_user(&admin, list("", "email", "", 0)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "order_by"
    );
    let e = c
        .list_contacts(tonic::Request::new(list("", "", "", 0)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "no token, no answer");
}

#[tokio::test]
async fn creates_with_a_request_id_happen_once() {
    let st = spawn().await;
    let admin = st.signup().await;
    let mut c = grpc(&st).await;
    let mut req = contact("Once", "Only", "once@example.com");
    req.request_id = "import-42".into();
    let first = c
        .create_contact(as_user(&admin, req.clone()))
        .await
        .unwrap()
        .into_inner()
        .contact
        .unwrap();
    let again = c
        .create_contact(as_user(&admin, req.clone()))
        .await
        .unwrap()
        .into_inner()
        .contact
        .unwrap();
    assert_eq!(first.id, again.id, "a retry returns the first result");
    req.last_name = "Other".into();
    let e = c.create_contact(as_user(&admin, req)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.get_error_details().error_info().unwrap().reason,
        "IDEMPOTENCY_KEY_REUSED"
    );
    let all = c
        .list_contacts(as_user(&admin, pb::ListContactsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.contacts.len(), 1);
    let got = c
        .batch_get_accounts(as_user(
            &admin,
            pb::BatchGetAccountsRequest {
                ids: vec![first.id.clone()],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(got.accounts.is_empty(), "a contact id names no account");
}
