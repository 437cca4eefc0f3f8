//! What a caller may do here, from identity's effective permissions: a scope per object
//! type and action (which becomes a SQL predicate) and field rules (hidden, read-only).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{ApiError, ApiResult, Caller, TenantId, error::FieldViolation};
use crm_proto::identity::{self as pb, identity_service_client::IdentityServiceClient};
use tonic::transport::Channel;
use uuid::Uuid;

/// How far a grant reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Own,
    Team,
    All,
}

/// The rows a scope reaches, as a SQL predicate over `owner_user_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    All,
    /// Records owned by one of these users.
    Owners(Vec<Uuid>),
}

impl Reach {
    /// Whether a record owned by `owner` is within reach.
    pub fn covers(&self, owner: Option<Uuid>) -> bool {
        match self {
            Reach::All => true,
            Reach::Owners(ids) => owner.is_some_and(|o| ids.contains(&o)),
        }
    }
}

/// The caller's effective permissions.
#[derive(Clone, Debug)]
pub struct Access {
    pub subject: Uuid,
    pub is_client: bool,
    grants: HashMap<(String, String), Scope>,
    hidden: HashSet<(String, String)>,
    read_only: HashSet<(String, String)>,
    team_members: Vec<Uuid>,
}

impl Access {
    fn from_pb(p: pb::EffectivePermissions, caller: &Caller) -> Self {
        let mut grants: HashMap<(String, String), Scope> = HashMap::new();
        for g in p.permissions {
            let scope = match pb::Scope::try_from(g.scope) {
                Ok(pb::Scope::Own) => Scope::Own,
                Ok(pb::Scope::Team) => Scope::Team,
                Ok(pb::Scope::All) => Scope::All,
                _ => continue,
            };
            let e = grants.entry((g.object_type, g.action)).or_insert(scope);
            *e = (*e).max(scope);
        }
        let mut hidden = HashSet::new();
        let mut read_only = HashSet::new();
        for r in p.field_rules {
            match pb::FieldAccess::try_from(r.access) {
                Ok(pb::FieldAccess::Hidden) => {
                    hidden.insert((r.object_type, r.field));
                }
                Ok(pb::FieldAccess::ReadOnly) => {
                    read_only.insert((r.object_type, r.field));
                }
                _ => {}
            }
        }
        let mut team_members: Vec<Uuid> = p
            .team_member_user_ids
            .iter()
            .filter_map(|s| Uuid::parse_str(s).ok())
            .collect();
        if !team_members.contains(&caller.subject) {
            team_members.push(caller.subject);
        }
        Self {
            subject: caller.subject,
            is_client: caller.client_id.is_some(),
            grants,
            hidden,
            read_only,
            team_members,
        }
    }

    /// The scope of a grant, if any.
    pub fn scope(&self, object: &str, action: &str) -> Option<Scope> {
        self.grants
            .get(&(object.to_owned(), action.to_owned()))
            .copied()
    }

    /// The rows an action reaches, or a refusal naming what is missing.
    pub fn require(&self, object: &str, action: &str) -> ApiResult<Reach> {
        self.scope(object, action)
            .map(|s| self.reach(s))
            .ok_or_else(|| {
                ApiError::permission_denied(format!("the caller may not {action} {object}"))
            })
    }

    /// The rows of a scope.
    pub fn reach(&self, scope: Scope) -> Reach {
        match scope {
            Scope::All => Reach::All,
            Scope::Team => Reach::Owners(self.team_members.clone()),
            // API clients own nothing: scope own reaches no record.
            Scope::Own if self.is_client => Reach::Owners(vec![]),
            Scope::Own => Reach::Owners(vec![self.subject]),
        }
    }

    /// Whether a field (REST name, e.g. `email` or `custom.tier`) is hidden from the caller.
    pub fn is_hidden(&self, object: &str, field: &str) -> bool {
        let hidden = |f: &str| self.hidden.contains(&(object.to_owned(), f.to_owned()));
        hidden(field) || (field.starts_with("custom.") && hidden("custom"))
    }

    /// Whether a field may not be written by the caller (hidden or read-only).
    pub fn is_locked(&self, object: &str, field: &str) -> bool {
        let ro = |f: &str| self.read_only.contains(&(object.to_owned(), f.to_owned()));
        self.is_hidden(object, field) || ro(field) || (field.starts_with("custom.") && ro("custom"))
    }

    /// Refuses writes to fields the caller may not change, naming each.
    pub fn check_writable<'a>(
        &self,
        object: &str,
        fields: impl IntoIterator<Item = &'a str>,
    ) -> ApiResult<()> {
        let locked: Vec<FieldViolation> = fields
            .into_iter()
            .filter(|f| self.is_locked(object, f))
            .map(|f| FieldViolation {
                field: f.to_owned(),
                message: "your role may not change this field".into(),
            })
            .collect();
        if locked.is_empty() {
            return Ok(());
        }
        Err(ApiError::permission_denied(format!(
            "your role may not change: {}",
            locked
                .iter()
                .map(|f| f.field.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .with_fields(locked))
    }
}

/// Recently read permissions by tenant and subject.
type AccessCache = HashMap<(TenantId, Uuid), (Instant, Arc<Access>)>;

/// Effective permissions from identity, kept briefly per caller so a page of requests costs
/// one call to identity.
#[derive(Clone)]
pub struct Permissions {
    identity: IdentityServiceClient<Channel>,
    cache: Arc<Mutex<AccessCache>>,
    ttl: Duration,
}

/// The longest a role change takes to reach this service.
pub const PERMISSIONS_TTL: Duration = Duration::from_secs(5);

impl Permissions {
    /// Permissions read from identity through `identity`.
    pub fn new(identity: IdentityServiceClient<Channel>) -> Self {
        Self {
            identity,
            cache: Arc::new(Mutex::new(HashMap::new())),
            ttl: PERMISSIONS_TTL,
        }
    }

    /// The identity client (with the caller's token set per request by [`Self::request`]).
    pub fn identity(&self) -> IdentityServiceClient<Channel> {
        self.identity.clone()
    }

    /// A request to identity on behalf of the caller.
    pub fn request<T>(caller: &Caller, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Ok(v) = format!("Bearer {}", caller.token).parse() {
            req.metadata_mut().insert("authorization", v);
        }
        crate::telemetry::inject_context(&mut req);
        req
    }

    /// Refuses an owner (of the record field `field`) the caller may not assign within
    /// `reach`, or who is not an enabled user of the tenant.
    pub async fn check_assignable(
        &self,
        caller: &Caller,
        reach: &Reach,
        field: &str,
        owner: Option<Uuid>,
    ) -> ApiResult<()> {
        if !reach.covers(owner) {
            let message = "your role may not assign records to this user";
            return Err(
                ApiError::permission_denied(format!("{field}: {message}")).with_fields(vec![
                    FieldViolation {
                        field: field.into(),
                        message: message.into(),
                    },
                ]),
            );
        }
        let Some(owner) = owner else { return Ok(()) };
        if owner == caller.subject {
            return Ok(());
        }
        let res = self
            .identity()
            .get_user(Self::request(
                caller,
                pb::GetUserRequest {
                    id: owner.to_string(),
                },
            ))
            .await;
        match res {
            Ok(u) if u.get_ref().user.as_ref().is_some_and(|u| !u.disabled) => Ok(()),
            Ok(_) => Err(ApiError::invalid(field, "is a disabled user")),
            Err(s) if s.code() == tonic::Code::NotFound => {
                Err(ApiError::invalid(field, "no such user"))
            }
            Err(s) => Err(ApiError::from_status(&s)),
        }
    }

    /// The caller's permissions.
    pub async fn of(&self, caller: &Caller) -> ApiResult<Arc<Access>> {
        let key = (caller.tenant, caller.subject);
        if let Ok(cache) = self.cache.lock()
            && let Some((at, access)) = cache.get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(access.clone());
        }
        let resp = self
            .identity
            .clone()
            .get_effective_permissions(Self::request(
                caller,
                pb::GetEffectivePermissionsRequest::default(),
            ))
            .await
            .map_err(|s| {
                let e = ApiError::from_status(&s);
                if e.code == crate::ErrorCode::Internal {
                    ApiError::new(crate::ErrorCode::Unavailable, "identity is unavailable")
                } else {
                    e
                }
            })?
            .into_inner();
        let p = resp
            .permissions
            .ok_or_else(|| ApiError::internal("identity answered without permissions"))?;
        let access = Arc::new(Access::from_pb(p, caller));
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 10_000 {
                cache.retain(|_, (at, _)| at.elapsed() < self.ttl);
            }
            cache.insert(key, (Instant::now(), access.clone()));
        }
        Ok(access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(client: bool) -> Caller {
        Caller {
            tenant: TenantId::new(),
            subject: Uuid::now_v7(),
            roles: vec![],
            teams: vec![],
            client_id: client.then(|| "c".to_owned()),
            token: String::new(),
        }
    }

    fn perms(
        grants: &[(&str, &str, pb::Scope)],
        rules: &[(&str, pb::FieldAccess)],
    ) -> pb::EffectivePermissions {
        pb::EffectivePermissions {
            permissions: grants
                .iter()
                .map(|(o, a, s)| pb::Permission {
                    object_type: (*o).into(),
                    action: (*a).into(),
                    scope: *s as i32,
                })
                .collect(),
            field_rules: rules
                .iter()
                .map(|(f, a)| pb::FieldRule {
                    object_type: "contact".into(),
                    field: (*f).into(),
                    access: *a as i32,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn scopes_become_reaches() {
        let c = caller(false);
        let a = Access::from_pb(
            perms(
                &[
                    ("contact", "read", pb::Scope::Own),
                    ("contact", "read", pb::Scope::Team),
                    ("account", "read", pb::Scope::All),
                ],
                &[],
            ),
            &c,
        );
        assert_eq!(
            a.require("contact", "read").unwrap(),
            Reach::Owners(vec![c.subject]),
            "the widest grant wins; a team of one is the caller"
        );
        assert_eq!(a.require("account", "read").unwrap(), Reach::All);
        assert!(a.require("contact", "delete").is_err());
        let client = caller(true);
        let a = Access::from_pb(perms(&[("contact", "read", pb::Scope::Own)], &[]), &client);
        assert!(
            !a.require("contact", "read")
                .unwrap()
                .covers(Some(client.subject))
        );
    }

    #[test]
    fn field_rules_hide_and_lock() {
        let c = caller(false);
        let a = Access::from_pb(
            perms(
                &[],
                &[
                    ("email", pb::FieldAccess::Hidden),
                    ("title", pb::FieldAccess::ReadOnly),
                    ("custom", pb::FieldAccess::ReadOnly),
                ],
            ),
            &c,
        );
        assert!(a.is_hidden("contact", "email"));
        assert!(!a.is_hidden("account", "email"));
        assert!(!a.is_hidden("contact", "title"));
        assert!(a.is_locked("contact", "title"));
        assert!(a.is_locked("contact", "custom.tier"));
        let e = a
            .check_writable("contact", ["firstName", "email", "title"])
            .unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::PermissionDenied);
        assert_eq!(
            e.fields
                .iter()
                .map(|f| f.field.as_str())
                .collect::<Vec<_>>(),
            ["email", "title"]
        );
    }
}
