//! Partners authenticate with OAuth2 client credentials, bound to a role, until the client
//! is deleted.

use crm_proto::identity as pb;
use tonic::Code;

use crate::helpers::{authed, refused, spawn_app};

fn credentials(client_id: &str, secret: &str) -> pb::IssueClientTokenRequest {
    pb::IssueClientTokenRequest {
        client_id: client_id.into(),
        client_secret: secret.into(),
        scope: String::new(),
    }
}

#[tokio::test]
async fn client_credentials_work_with_the_bound_role_until_the_client_is_deleted() {
    let app = spawn_app().await;
    let a = app.sign_up().await;
    let mut c = app.client();
    let created = c
        .create_api_client(authed(
            a.token(),
            pb::CreateApiClientRequest {
                name: "Partner sync".into(),
                role: "read_only".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("create api client")
        .into_inner();
    let client = created.api_client.expect("api client");
    let secret = created.client_secret;
    assert!(!secret.is_empty(), "the secret is shown on creation");
    assert_eq!(client.role, "read_only");

    let issued = c
        .issue_client_token(credentials(&client.client_id, &secret))
        .await
        .expect("client credentials grant")
        .into_inner();
    assert_eq!(issued.token_type, "Bearer");
    assert!(issued.expires_in > 0);
    let token = issued.access_token;

    let me = c
        .get_me(authed(&token, pb::GetMeRequest {}))
        .await
        .expect("the client token authenticates")
        .into_inner();
    assert!(me.user.is_none(), "a client is not a user");
    assert_eq!(me.tenant.expect("tenant").id, a.tenant.id);
    let perms = me.permissions.expect("permissions");
    assert_eq!(perms.role, "read_only");
    assert_eq!(perms.user_id, client.id);
    let can = |object: &str, action: &str| {
        perms
            .permissions
            .iter()
            .any(|p| p.object_type == object && p.action == action)
    };
    assert!(can("contact", "read") && can("user", "read"));
    assert!(!can("contact", "update") && !can("user", "create"));

    c.list_users(authed(&token, pb::ListUsersRequest::default()))
        .await
        .expect("read_only may list users");
    refused(
        c.create_user(authed(
            &token,
            pb::CreateUserRequest {
                email: format!("bot@{}.example.com", a.slug()),
                role: "admin".into(),
                ..Default::default()
            },
        ))
        .await,
        Code::PermissionDenied,
    );

    let wrong = refused(
        c.issue_client_token(credentials(&client.client_id, &format!("{secret}x")))
            .await,
        Code::Unauthenticated,
    );
    let unknown = refused(
        c.issue_client_token(credentials("crm_0000000000000000", &secret))
            .await,
        Code::Unauthenticated,
    );
    assert_eq!(wrong.message, unknown.message);

    c.delete_api_client(authed(
        a.token(),
        pb::DeleteApiClientRequest {
            id: client.id.clone(),
        },
    ))
    .await
    .expect("delete api client");
    refused(
        c.issue_client_token(credentials(&client.client_id, &secret))
            .await,
        Code::Unauthenticated,
    );
    refused(
        c.get_me(authed(&token, pb::GetMeRequest {})).await,
        Code::Unauthenticated,
    );
    let listed = c
        .list_api_clients(authed(a.token(), pb::ListApiClientsRequest::default()))
        .await
        .expect("list api clients")
        .into_inner()
        .api_clients;
    assert!(listed.iter().all(|x| x.id != client.id), "{listed:?}");
}
