//! Bad input is refused with INVALID_ARGUMENT naming the field, and leaves no trace.

use crm_kit::ErrorCode;
use crm_proto::identity as pb;
use prost_types::FieldMask;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{
    PASSWORD, SignedUp, TestApp, authed, fields, refused, spawn_app, unique_slug,
};

fn sign_up_request(slug: &str) -> pb::SignUpRequest {
    pb::SignUpRequest {
        tenant_name: "Acme".into(),
        tenant_slug: slug.into(),
        email: format!("owner@{slug}.example.com"),
        password: PASSWORD.into(),
        name: "Owner".into(),
    }
}

#[tokio::test]
async fn sign_up_refuses_bad_input_and_creates_no_tenant() {
    let app = spawn_app().await;
    let slug = unique_slug();
    let cases: Vec<(&str, pb::SignUpRequest)> = vec![
        (
            "email",
            pb::SignUpRequest {
                email: String::new(),
                ..sign_up_request(&slug)
            },
        ),
        (
            "email",
            pb::SignUpRequest {
                email: "owner-at-example.com".into(),
                ..sign_up_request(&slug)
            },
        ),
        (
            "password",
            pb::SignUpRequest {
                password: "elevenchars".into(),
                ..sign_up_request(&slug)
            },
        ),
        (
            "name",
            pb::SignUpRequest {
                name: "n".repeat(201),
                ..sign_up_request(&slug)
            },
        ),
        (
            "tenant_name",
            pb::SignUpRequest {
                tenant_name: "n".repeat(201),
                ..sign_up_request(&slug)
            },
        ),
        ("tenant_slug", sign_up_request("bad_slug!")),
        ("tenant_slug", sign_up_request("-leading-hyphen")),
        ("tenant_slug", sign_up_request(&"s".repeat(64))),
    ];
    for (field, req) in cases {
        let tried = req.tenant_slug.clone();
        let e = refused(app.client().sign_up(req).await, Code::InvalidArgument);
        assert_eq!(e.code, ErrorCode::ValidationFailed, "{field}: {e:?}");
        assert_eq!(fields(&e), [field], "{e:?}");
        assert_eq!(
            app.admin_count(
                "SELECT count(*) FROM identity.tenants WHERE slug = $1",
                vec![tried.to_lowercase().into()]
            )
            .await,
            0,
            "{field}: a tenant was created"
        );
    }
    for table in ["tenants", "users", "roles", "outbox", "security_events"] {
        assert_eq!(
            app.admin_count(&format!("SELECT count(*) FROM identity.{table}"), vec![])
                .await,
            0,
            "{table} was written"
        );
    }
}

#[tokio::test]
async fn a_taken_slug_conflicts_and_creates_nothing_more() {
    let app = spawn_app().await;
    let a = app.sign_up().await;
    let e = refused(
        app.client().sign_up(sign_up_request(a.slug())).await,
        Code::AlreadyExists,
    );
    assert_eq!(fields(&e), ["tenant_slug"]);
    assert_eq!(
        app.admin_count("SELECT count(*) FROM identity.tenants", vec![])
            .await,
        1
    );
    assert_eq!(
        app.admin_count("SELECT count(*) FROM identity.users", vec![])
            .await,
        1
    );
}

/// What the tenant has written so far, as counts.
async fn footprint(app: &TestApp, t: &SignedUp) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    for table in [
        "users",
        "roles",
        "teams",
        "outbox",
        "security_events",
        "idempotent_requests",
    ] {
        let n = app
            .admin_count(
                &format!("SELECT count(*) FROM identity.{table} WHERE tenant_id = $1"),
                vec![t.tenant_id().into()],
            )
            .await;
        out.push((table, n));
    }
    out
}

fn create_user_request(email: &str) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        email: email.into(),
        name: "Someone".into(),
        role: "sales_rep".into(),
        request_id: Uuid::new_v4().to_string(),
        ..Default::default()
    }
}

#[tokio::test]
async fn admin_calls_refuse_bad_input_and_write_nothing() {
    let app = spawn_app().await;
    let a = app.sign_up().await;
    let at = a.token();
    let mut c = app.client();
    // A second user, so that a list of one per page has a next page.
    app.create_user(
        at,
        &format!("second@{}.example.com", a.slug()),
        "read_only",
        None,
    )
    .await;
    let before = footprint(&app, &a).await;

    let valid_email = format!("new@{}.example.com", a.slug());
    let creates = [
        ("email", create_user_request("not-an-email")),
        (
            "role",
            pb::CreateUserRequest {
                role: "no_such_role".into(),
                ..create_user_request(&valid_email)
            },
        ),
        (
            "name",
            pb::CreateUserRequest {
                name: "n".repeat(201),
                ..create_user_request(&valid_email)
            },
        ),
    ];
    for (field, req) in creates {
        let e = refused(c.create_user(authed(at, req)).await, Code::InvalidArgument);
        assert_eq!(e.code, ErrorCode::ValidationFailed);
        assert_eq!(fields(&e), [field], "{e:?}");
    }

    let e = refused(
        c.create_role(authed(
            at,
            pb::CreateRoleRequest {
                key: "pilot".into(),
                name: "Pilot".into(),
                permissions: vec![pb::Permission {
                    object_type: "spaceship".into(),
                    action: "read".into(),
                    scope: pb::Scope::All as i32,
                }],
                ..Default::default()
            },
        ))
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(fields(&e), ["permissions[0].object_type"], "{e:?}");

    for update_mask in [None, Some(FieldMask { paths: vec![] })] {
        let e = refused(
            c.update_user(authed(
                at,
                pb::UpdateUserRequest {
                    id: a.user.id.clone(),
                    update_mask,
                    name: "Renamed".into(),
                    ..Default::default()
                },
            ))
            .await,
            Code::InvalidArgument,
        );
        assert_eq!(fields(&e), ["update_mask"], "{e:?}");
    }

    let e = refused(
        c.list_users(authed(
            at,
            pb::ListUsersRequest {
                page_size: 500,
                ..Default::default()
            },
        ))
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(e.code, ErrorCode::ValidationFailed);
    assert_eq!(fields(&e), ["page_size"], "{e:?}");

    let token = c
        .list_users(authed(
            at,
            pb::ListUsersRequest {
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .expect("first page")
        .into_inner()
        .next_page_token;
    assert!(!token.is_empty(), "two users make two pages");
    let mut tampered = token.clone().into_bytes();
    let i = tampered.len() / 3;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    for page_token in [tampered, "garbage".to_owned(), format!("{token}x")] {
        let e = refused(
            c.list_users(authed(
                at,
                pb::ListUsersRequest {
                    page_size: 1,
                    page_token,
                },
            ))
            .await,
            Code::InvalidArgument,
        );
        assert_eq!(e.code, ErrorCode::InvalidCursor, "{e:?}");
    }

    assert_eq!(footprint(&app, &a).await, before, "a refused call wrote");
    let me = c
        .get_user(authed(
            at,
            pb::GetUserRequest {
                id: a.user.id.clone(),
            },
        ))
        .await
        .expect("get user")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(
        (me.name.as_str(), me.version),
        ("Ada Admin", a.user.version)
    );
}

#[tokio::test]
async fn text_with_a_nul_character_is_refused_naming_the_field() {
    let app = spawn_app().await;
    let a = app.sign_up().await;
    let mut c = app.client();
    let e = refused(
        c.login(pb::LoginRequest {
            tenant_slug: a.slug().into(),
            email: "ad\0min@example.com".into(),
            password: "whatever it is".into(),
            client_address: String::new(),
        })
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(fields(&e), ["email"]);
    let e = refused(
        c.create_team(authed(
            a.token(),
            pb::CreateTeamRequest {
                name: "Sa\0les".into(),
                request_id: String::new(),
            },
        ))
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(fields(&e), ["name"]);
    let e = refused(
        c.list_security_events(authed(
            a.token(),
            pb::ListSecurityEventsRequest {
                kind: "login\0".into(),
                ..Default::default()
            },
        ))
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(fields(&e), ["kind"]);
}
