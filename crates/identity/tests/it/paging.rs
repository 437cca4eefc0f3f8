//! Keyset pages return every record once, and page tokens only work where they were issued.

use std::collections::HashSet;

use crm_kit::ErrorCode;
use crm_proto::identity as pb;
use tonic::Code;

use crate::helpers::{authed, refused, spawn_app};

#[tokio::test]
async fn pages_cover_every_user_once_and_tokens_stay_with_their_tenant() {
    let app = spawn_app().await;
    let a = app.sign_up().await;
    let b = app.sign_up().await;
    let mut c = app.client();
    let mut expected = HashSet::from([a.user.id.clone()]);
    for i in 0..7 {
        let u = app
            .create_user(
                a.token(),
                &format!("user{i}@{}.example.com", a.slug()),
                "sales_rep",
                None,
            )
            .await;
        expected.insert(u.id);
    }

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut first_token = None;
    let mut page_token = String::new();
    for _ in 0..10 {
        let page = c
            .list_users(authed(
                a.token(),
                pb::ListUsersRequest {
                    page_size: 3,
                    page_token: page_token.clone(),
                },
            ))
            .await
            .expect("list users")
            .into_inner();
        sizes.push(page.users.len());
        seen.extend(page.users.into_iter().map(|u| u.id));
        first_token.get_or_insert_with(|| page.next_page_token.clone());
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(sizes, [3, 3, 2]);
    let distinct: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(distinct.len(), seen.len(), "a user came twice: {seen:?}");
    assert_eq!(distinct, expected);

    let token = first_token.expect("a first page");
    let e = refused(
        c.list_users(authed(
            b.token(),
            pb::ListUsersRequest {
                page_size: 3,
                page_token: token.clone(),
            },
        ))
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(e.code, ErrorCode::InvalidCursor, "{e:?}");
    let e = refused(
        c.list_teams(authed(
            a.token(),
            pb::ListTeamsRequest {
                page_size: 3,
                page_token: token,
            },
        ))
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        e.code,
        ErrorCode::InvalidCursor,
        "a users cursor is no teams cursor: {e:?}"
    );
}
