//! One tenant never sees or touches another's data: through the API, and in the database
//! itself, where row-level security holds even for a query that forgets the tenant filter.

use std::collections::HashSet;

use crm_kit::{Db, TenantId, admin, db::RoleCheckError};
use crm_proto::identity as pb;
use prost_types::FieldMask;
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{
    Options, PASSWORD, RUNTIME_ROLE, SignedUp, TestApp, as_user, authed, refused, spawn_app,
    spawn_app_with,
};

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

async fn count<C: ConnectionTrait>(c: &C, sql: &str, values: Vec<Value>) -> i64 {
    c.query_one_raw(stmt(sql, values))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .expect("one row")
        .try_get_by_index(0)
        .expect("a bigint")
}

async fn create_team(app: &TestApp, t: &SignedUp, name: &str) -> pb::Team {
    app.client()
        .create_team(authed(
            t.token(),
            pb::CreateTeamRequest {
                name: name.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("create team")
        .into_inner()
        .team
        .expect("team")
}

async fn create_client(app: &TestApp, t: &SignedUp, name: &str) -> pb::ApiClient {
    app.client()
        .create_api_client(authed(
            t.token(),
            pb::CreateApiClientRequest {
                name: name.into(),
                role: "read_only".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("create api client")
        .into_inner()
        .api_client
        .expect("api client")
}

/// Every id a tenant can list: users, teams, roles, API clients, security events.
async fn listed_ids(app: &TestApp, token: &str) -> Vec<String> {
    let mut c = app.client();
    let mut ids = Vec::new();
    let users = c
        .list_users(authed(
            token,
            pb::ListUsersRequest {
                page_size: 200,
                ..Default::default()
            },
        ))
        .await
        .expect("list users")
        .into_inner()
        .users;
    ids.extend(users.into_iter().map(|u| u.id));
    let teams = c
        .list_teams(authed(
            token,
            pb::ListTeamsRequest {
                page_size: 200,
                ..Default::default()
            },
        ))
        .await
        .expect("list teams")
        .into_inner()
        .teams;
    ids.extend(teams.into_iter().map(|t| t.id));
    let roles = c
        .list_roles(authed(
            token,
            pb::ListRolesRequest {
                page_size: 200,
                ..Default::default()
            },
        ))
        .await
        .expect("list roles")
        .into_inner()
        .roles;
    ids.extend(roles.into_iter().map(|r| r.id));
    let clients = c
        .list_api_clients(authed(
            token,
            pb::ListApiClientsRequest {
                page_size: 200,
                ..Default::default()
            },
        ))
        .await
        .expect("list api clients")
        .into_inner()
        .api_clients;
    ids.extend(clients.into_iter().map(|c| c.id));
    let events = c
        .list_security_events(authed(
            token,
            pb::ListSecurityEventsRequest {
                page_size: 200,
                ..Default::default()
            },
        ))
        .await
        .expect("list security events")
        .into_inner()
        .security_events;
    ids.extend(events.into_iter().map(|e| e.id));
    ids
}

#[tokio::test]
async fn another_tenants_admin_can_neither_read_nor_change_anything() {
    let app = spawn_app().await;
    let a = app.sign_up().await;
    let b = app.sign_up().await;
    let mut c = app.client();

    let a_user = app
        .create_user(
            a.token(),
            &format!("member@{}.example.com", a.slug()),
            "sales_rep",
            None,
        )
        .await;
    let a_team = create_team(&app, &a, "Alpha").await;
    let a_team = c
        .add_team_member(authed(
            a.token(),
            pb::AddTeamMemberRequest {
                team_id: a_team.id.clone(),
                user_id: a_user.id.clone(),
            },
        ))
        .await
        .expect("add member")
        .into_inner()
        .team
        .expect("team");
    let a_role = c
        .create_role(authed(
            a.token(),
            pb::CreateRoleRequest {
                key: "auditor".into(),
                name: "Auditor".into(),
                permissions: vec![pb::Permission {
                    object_type: "contact".into(),
                    action: "read".into(),
                    scope: pb::Scope::All as i32,
                }],
                ..Default::default()
            },
        ))
        .await
        .expect("create role")
        .into_inner()
        .role
        .expect("role");
    let a_client = create_client(&app, &a, "A sync").await;
    let b_team = create_team(&app, &b, "Bravo").await;
    let b_client = create_client(&app, &b, "B sync").await;

    let bt = b.token();
    let missing = refused(
        c.get_user(authed(
            bt,
            pb::GetUserRequest {
                id: Uuid::now_v7().to_string(),
            },
        ))
        .await,
        Code::NotFound,
    );
    let hidden = refused(
        c.get_user(authed(
            bt,
            pb::GetUserRequest {
                id: a_user.id.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    assert_eq!(
        hidden.message, missing.message,
        "another tenant's user must look exactly like a missing one"
    );
    refused(
        c.update_user(authed(
            bt,
            pb::UpdateUserRequest {
                id: a_user.id.clone(),
                update_mask: mask(&["name", "role"]),
                name: "Taken over".into(),
                role: "admin".into(),
                ..Default::default()
            },
        ))
        .await,
        Code::NotFound,
    );
    refused(
        c.get_effective_permissions(authed(
            bt,
            pb::GetEffectivePermissionsRequest {
                user_id: a_user.id.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    refused(
        c.get_team(authed(
            bt,
            pb::GetTeamRequest {
                id: a_team.id.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    refused(
        c.add_team_member(authed(
            bt,
            pb::AddTeamMemberRequest {
                team_id: a_team.id.clone(),
                user_id: b.user.id.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    refused(
        c.remove_team_member(authed(
            bt,
            pb::RemoveTeamMemberRequest {
                team_id: a_team.id.clone(),
                user_id: a_user.id.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    refused(
        c.add_team_member(authed(
            bt,
            pb::AddTeamMemberRequest {
                team_id: b_team.id.clone(),
                user_id: a_user.id.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    refused(
        c.get_role(authed(
            bt,
            pb::GetRoleRequest {
                id: a_role.id.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    refused(
        c.update_role(authed(
            bt,
            pb::UpdateRoleRequest {
                id: a_role.id.clone(),
                update_mask: mask(&["name"]),
                name: "Owned".into(),
                ..Default::default()
            },
        ))
        .await,
        Code::NotFound,
    );
    refused(
        c.delete_api_client(authed(
            bt,
            pb::DeleteApiClientRequest {
                id: a_client.id.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );

    let of_a: HashSet<String> = listed_ids(&app, a.token()).await.into_iter().collect();
    for id in [&a.user.id, &a_user.id, &a_team.id, &a_role.id, &a_client.id] {
        assert!(of_a.contains(id), "tenant A lists its own {id}");
    }
    let of_b = listed_ids(&app, bt).await;
    for id in [&b.user.id, &b_team.id, &b_client.id] {
        assert!(of_b.contains(id), "tenant B lists its own {id}");
    }
    let leaked: Vec<&String> = of_b.iter().filter(|id| of_a.contains(*id)).collect();
    assert!(
        leaked.is_empty(),
        "tenant B's lists show A's ids {leaked:?}"
    );

    let at = a.token();
    let user = c
        .get_user(authed(
            at,
            pb::GetUserRequest {
                id: a_user.id.clone(),
            },
        ))
        .await
        .expect("A reads its user")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(
        (user.name.as_str(), user.role.as_str(), user.version),
        (a_user.name.as_str(), "sales_rep", a_user.version)
    );
    let team = c
        .get_team(authed(
            at,
            pb::GetTeamRequest {
                id: a_team.id.clone(),
            },
        ))
        .await
        .expect("A reads its team")
        .into_inner()
        .team
        .expect("team");
    assert_eq!(team.member_user_ids, vec![a_user.id.clone()]);
    assert_eq!(team.version, a_team.version);
    let role = c
        .get_role(authed(
            at,
            pb::GetRoleRequest {
                id: a_role.id.clone(),
            },
        ))
        .await
        .expect("A reads its role")
        .into_inner()
        .role
        .expect("role");
    assert_eq!(
        (role.name.as_str(), role.version),
        ("Auditor", a_role.version)
    );
    assert_eq!(role.permissions, a_role.permissions);
    let clients = c
        .list_api_clients(authed(at, pb::ListApiClientsRequest::default()))
        .await
        .expect("A lists its clients")
        .into_inner()
        .api_clients;
    assert!(clients.iter().any(|x| x.id == a_client.id));
}

#[tokio::test]
async fn a_tenant_transaction_sees_and_writes_only_its_own_rows() {
    let app = spawn_app().await;
    let a = app.sign_up().await;
    let b = app.sign_up().await;
    for t in [&a, &b] {
        create_team(&app, t, "Team").await;
        create_client(&app, t, "Client").await;
    }
    let (ta, tb) = (a.tenant_id(), b.tenant_id());

    let tx = app.db.tenant_tx(TenantId(tb)).await.expect("tenant tx");
    for table in [
        "users",
        "teams",
        "roles",
        "api_clients",
        "refresh_tokens",
        "security_events",
        "outbox",
    ] {
        let by_tenant = format!("SELECT count(*) FROM identity.{table} WHERE tenant_id = $1");
        let of_a = app.admin_count(&by_tenant, vec![ta.into()]).await;
        let of_b = app.admin_count(&by_tenant, vec![tb.into()]).await;
        assert!(of_a > 0 && of_b > 0, "{table}: both tenants have rows");
        let seen = count(
            tx.conn(),
            &format!("SELECT count(*) FROM identity.{table}"),
            vec![],
        )
        .await;
        assert_eq!(seen, of_b, "{table}: B's transaction sees exactly B's rows");
        assert_eq!(
            count(tx.conn(), &by_tenant, vec![ta.into()]).await,
            0,
            "{table}: A's rows are invisible to B"
        );
    }
    assert_eq!(
        count(tx.conn(), "SELECT count(*) FROM identity.tenants", vec![]).await,
        1
    );
    let updated = tx
        .conn()
        .execute_raw(stmt(
            "UPDATE identity.users SET name = 'renamed by B' WHERE tenant_id = $1",
            vec![ta.into()],
        ))
        .await
        .expect("update runs");
    assert_eq!(updated.rows_affected(), 0, "B cannot update A's users");

    let a_admin_role: Uuid = app
        .admin
        .query_one_raw(stmt(
            "SELECT id FROM identity.roles WHERE tenant_id = $1 AND key = 'admin'",
            vec![ta.into()],
        ))
        .await
        .expect("query")
        .expect("A's admin role")
        .try_get_by_index(0)
        .expect("uuid");
    let intruder = Uuid::now_v7();
    let err = tx
        .conn()
        .execute_raw(stmt(
            "INSERT INTO identity.users (tenant_id, id, email, role_id) VALUES ($1, $2, $3, $4)",
            vec![
                ta.into(),
                intruder.into(),
                "intruder@example.com".into(),
                a_admin_role.into(),
            ],
        ))
        .await
        .expect_err("B cannot insert a user into A");
    assert!(err.to_string().contains("row-level security"), "{err}");
    tx.rollback().await.expect("rollback");
    assert_eq!(
        app.admin_count(
            "SELECT count(*) FROM identity.users WHERE id = $1",
            vec![intruder.into()]
        )
        .await,
        0
    );
    assert_eq!(
        app.admin_count(
            "SELECT count(*) FROM identity.users WHERE tenant_id = $1 AND name = 'renamed by B'",
            vec![ta.into()]
        )
        .await,
        0
    );

    // The pool's connections have served tenant transactions; outside one nothing is visible.
    for _ in 0..4 {
        assert_eq!(
            count(app.db.conn(), "SELECT count(*) FROM identity.users", vec![]).await,
            0
        );
    }
}

#[tokio::test]
async fn the_runtime_role_owns_nothing_and_unfit_roles_are_refused() {
    let app = spawn_app().await;
    let who: String = app
        .db
        .conn()
        .query_one_raw(stmt("SELECT current_user::text", vec![]))
        .await
        .expect("query")
        .expect("row")
        .try_get_by_index(0)
        .expect("text");
    assert_eq!(who, RUNTIME_ROLE);
    let attrs = app
        .admin
        .query_one_raw(stmt(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1",
            vec![RUNTIME_ROLE.into()],
        ))
        .await
        .expect("query")
        .expect("the runtime role exists");
    assert!(!attrs.try_get_by_index::<bool>(0).expect("rolsuper"));
    assert!(!attrs.try_get_by_index::<bool>(1).expect("rolbypassrls"));
    assert_eq!(
        app.admin_count(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = $1",
            vec![RUNTIME_ROLE.into()]
        )
        .await,
        0,
        "the runtime role owns no relation"
    );
    let unforced: Vec<String> = app
        .admin
        .query_all_raw(stmt(
            "SELECT relname::text FROM pg_class WHERE relnamespace = 'identity'::regnamespace \
             AND relkind IN ('r', 'p') AND NOT (relrowsecurity AND relforcerowsecurity) ORDER BY 1",
            vec![],
        ))
        .await
        .expect("query")
        .iter()
        .map(|r| r.try_get_by_index(0).expect("name"))
        .collect();
    assert_eq!(
        unforced,
        ["signing_keys"],
        "every tenant table forces row-level security"
    );

    let superuser = Db::connect(app.admin_url(), 1)
        .await
        .expect("connect as superuser");
    let err = superuser
        .check_runtime_role()
        .await
        .expect_err("a superuser is refused");
    let name = admin::user_name(app.admin_url()).expect("user of the admin url");
    assert!(
        matches!(&err, RoleCheckError::Superuser(r) if *r == name),
        "{err}"
    );

    let suffix = Uuid::new_v4().simple().to_string();
    let bypass = format!("identity_it_bypass_{suffix}");
    let owner = format!("identity_it_owner_{suffix}");
    app.drop_role_later(&bypass);
    app.drop_role_later(&owner);
    app.admin
        .execute_unprepared(&format!(
            "CREATE ROLE {bypass} LOGIN NOSUPERUSER BYPASSRLS;
             CREATE ROLE {owner} LOGIN NOSUPERUSER NOBYPASSRLS;
             CREATE TABLE public.owned_{suffix} (id int);
             ALTER TABLE public.owned_{suffix} OWNER TO {owner};"
        ))
        .await
        .expect("create unfit roles");
    let err = Db::connect(&as_user(app.admin_url(), &bypass), 1)
        .await
        .expect("connect as the BYPASSRLS role")
        .check_runtime_role()
        .await
        .expect_err("a BYPASSRLS role is refused");
    assert!(matches!(err, RoleCheckError::BypassRls(_)), "{err}");
    let err = Db::connect(&as_user(app.admin_url(), &owner), 1)
        .await
        .expect("connect as the table owner")
        .check_runtime_role()
        .await
        .expect_err("a table owner is refused");
    assert!(
        matches!(err, RoleCheckError::Owner { count: 1, .. }),
        "{err}"
    );
}

/// Production runs the migrations as a dedicated owner role, not a superuser. Row-level
/// security is FORCE'd, so it applies to that owner too, including inside the SECURITY
/// DEFINER look-ups that find a tenant before any tenant is known (by slug, refresh token
/// or client id).
#[tokio::test]
async fn login_refresh_and_client_tokens_work_when_a_non_superuser_owns_the_schema() {
    let app = spawn_app_with(Options {
        owner_role: true,
        ..Options::default()
    })
    .await;
    let a = app.sign_up().await;
    let mut c = app.client();
    let created = c
        .create_api_client(authed(
            a.token(),
            pb::CreateApiClientRequest {
                name: "Partner".into(),
                role: "read_only".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("create api client")
        .into_inner();

    let mut broken = Vec::new();
    if let Err(s) = app.login(a.slug(), &a.email, PASSWORD).await {
        broken.push(format!("login: {s:?}"));
    }
    if let Err(s) = c
        .refresh_token(pb::RefreshTokenRequest {
            refresh_token: a.tokens.refresh_token.clone(),
        })
        .await
    {
        broken.push(format!("refresh: {s:?}"));
    }
    if let Err(s) = c
        .issue_client_token(pb::IssueClientTokenRequest {
            client_id: created.api_client.expect("api client").client_id,
            client_secret: created.client_secret,
            scope: String::new(),
        })
        .await
    {
        broken.push(format!("client token: {s:?}"));
    }
    assert!(broken.is_empty(), "{broken:#?}");
}
