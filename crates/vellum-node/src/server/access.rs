//! Users and custom roles: `/app/users` (one role per user, api-version 2022-05-13),
//! `/app/ledgerUsers` (several roles per user) and `/app/roles` (custom roles), all views of
//! the ledger's users and roles tables (`acl-2024-api.md` §4). Every change is a transaction;
//! the call returns once it is committed and applied on the node that answers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use super::context::{
    ApiError, ApiResult, AppState, Authorized, PathParam, RolesDelete, RolesRead, RolesWrite, St,
    UsersDelete, UsersRead, UsersReadAll, UsersWrite, body_bytes, json_body, ok_json, write_failed,
};
use super::query::Query;
use crate::users::RoleName;

/// The routes.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/app/users", get(list_users))
        .route(
            "/app/users/{id}",
            get(get_user).patch(patch_user).delete(delete_user),
        )
        .route("/app/ledgerUsers", get(list_ledger_users))
        .route(
            "/app/ledgerUsers/{id}",
            get(get_ledger_user)
                .patch(patch_ledger_user)
                .delete(delete_user),
        )
        .route(
            "/app/roles",
            get(get_role)
                .put(put_roles)
                .patch(patch_roles)
                .delete(delete_role),
        )
}

/// One page of a list sorted by key, after the key `after` (exclusive): the items, and the
/// `nextLink` (server-relative, keeping `api-version`) when more follow.
pub(super) fn page<T>(
    items: impl IntoIterator<Item = (String, T)>,
    q: &Query,
    path: &str,
    page_size: usize,
) -> (Vec<(String, T)>, Option<String>) {
    let after = q.get("after");
    let mut out: Vec<(String, T)> = items
        .into_iter()
        .filter(|(k, _)| after.is_none_or(|a| k.as_str() > a))
        .take(page_size.max(1) + 1)
        .collect();
    let next = (out.len() > page_size.max(1)).then(|| {
        out.truncate(page_size.max(1));
        let last = out.last().map(|(k, _)| k.as_str()).unwrap_or_default();
        let mut link = form_urlencoded::Serializer::new(String::new());
        link.append_pair("api-version", q.api_version());
        link.append_pair("after", last);
        format!("{path}?{}", link.finish())
    });
    (out, next)
}

/// `{key: items, "nextLink"?: ...}`.
pub(super) fn paged_json(key: &str, items: Vec<Value>, next: Option<String>) -> Value {
    let mut body = json!({ key: items });
    if let Some(n) = next {
        body["nextLink"] = Value::String(n);
    }
    body
}

fn unknown_user(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!("no user {id:?}"),
    )
}

fn valid_user_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 256 || id.chars().any(|c| c.is_control()) {
        return Err(ApiError::bad(
            "InvalidResourceName",
            format!("invalid user id {id:?}"),
        ));
    }
    Ok(())
}

/// The one role the single-role view shows: the strongest built-in role the user holds, else
/// its first custom role.
fn single_role(roles: &[RoleName]) -> String {
    RoleName::strongest(roles)
        .map(|r| r.to_string())
        .or_else(|| roles.first().map(ToString::to_string))
        .unwrap_or_default()
}

fn user_json(id: &str, roles: &[RoleName]) -> Value {
    json!({"assignedRole": single_role(roles), "userId": id})
}

fn ledger_user_json(id: &str, roles: &[RoleName]) -> Value {
    json!({"assignedRoles": roles, "userId": id})
}

fn roles_of(st: &AppState, id: &str) -> Result<Vec<RoleName>, ApiError> {
    st.node
        .with_access(|a| a.roles_of(id).map(<[RoleName]>::to_vec))
        .ok_or_else(|| unknown_user(id))
}

async fn list_users(
    State(st): St,
    _: Authorized<UsersReadAll>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    list(&st, raw, "/app/users", user_json)
}

async fn list_ledger_users(
    State(st): St,
    _: Authorized<UsersReadAll>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    list(&st, raw, "/app/ledgerUsers", ledger_user_json)
}

fn list(
    st: &AppState,
    raw: Option<String>,
    path: &str,
    shape: fn(&str, &[RoleName]) -> Value,
) -> ApiResult {
    let q = Query::parse(raw.as_deref())?;
    // Only the page is copied out of the users table.
    let (items, next) = st.node.with_access(|a| {
        let users = a.users.iter().map(|(id, roles)| (id.clone(), roles));
        let (users, next) = page(users, &q, path, st.cfg.limits.page_size);
        let items: Vec<Value> = users.iter().map(|(id, r)| shape(id, r)).collect();
        (items, next)
    });
    Ok(ok_json(paged_json("ledgerUsers", items, next)))
}

async fn get_user(State(st): St, _: Authorized<UsersRead>, PathParam(id): PathParam) -> ApiResult {
    Ok(ok_json(user_json(&id, &roles_of(&st, &id)?)))
}

async fn get_ledger_user(
    State(st): St,
    _: Authorized<UsersRead>,
    PathParam(id): PathParam,
) -> ApiResult {
    Ok(ok_json(ledger_user_json(&id, &roles_of(&st, &id)?)))
}

fn role_name(v: &Value) -> Result<RoleName, ApiError> {
    let s = v
        .as_str()
        .ok_or_else(|| ApiError::bad("InvalidInput", "a role name must be a string"))?;
    RoleName::parse(s).map_err(|e| ApiError::bad("InvalidInput", e.to_string()))
}

/// `PATCH /app/users/{id}` (merge patch): `assignedRole` replaces every role the user holds;
/// without it the user is kept as it is.
async fn patch_user(
    st: St,
    auth: Authorized<UsersWrite>,
    id: PathParam,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    patch(
        st,
        auth,
        id,
        body,
        "assignedRole",
        one_builtin_role,
        user_json,
    )
    .await
}

/// `PATCH /app/ledgerUsers/{id}` (merge patch): `assignedRoles` replaces the user's roles
/// (merge patch replaces arrays whole).
async fn patch_ledger_user(
    st: St,
    auth: Authorized<UsersWrite>,
    id: PathParam,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    patch(
        st,
        auth,
        id,
        body,
        "assignedRoles",
        role_list,
        ledger_user_json,
    )
    .await
}

/// `assignedRole`: one built-in role.
fn one_builtin_role(v: &Value) -> Result<Vec<RoleName>, ApiError> {
    match role_name(v)? {
        b @ RoleName::BuiltIn(_) => Ok(vec![b]),
        RoleName::Custom(name) => Err(ApiError::bad(
            "InvalidInput",
            format!(
                "{name:?} is not a built-in role (Administrator, Contributor or Reader): give \
                 custom roles through /app/ledgerUsers"
            ),
        )),
    }
}

/// `assignedRoles`: role names, a repeated one kept once.
fn role_list(v: &Value) -> Result<Vec<RoleName>, ApiError> {
    let list = v.as_array().ok_or_else(|| {
        ApiError::bad(
            "InvalidInput",
            "\"assignedRoles\" must be an array of role names",
        )
    })?;
    let mut roles: Vec<RoleName> = Vec::new();
    for r in list {
        let r = role_name(r)?;
        if !roles.contains(&r) {
            roles.push(r);
        }
    }
    Ok(roles)
}

/// A merge patch of a user: `field`, read by `parse`, replaces its roles; without it the user
/// is kept as it is (and must exist). Other keys are ignored (samples send `user_id`).
async fn patch(
    State(st): St,
    auth: Authorized<UsersWrite>,
    PathParam(id): PathParam,
    body: Result<Bytes, BytesRejection>,
    field: &str,
    parse: fn(&Value) -> Result<Vec<RoleName>, ApiError>,
    shape: fn(&str, &[RoleName]) -> Value,
) -> ApiResult {
    valid_user_id(&id)?;
    let v = json_body(&body_bytes(body)?)?;
    if !v.is_object() {
        return Err(ApiError::bad(
            "InvalidInput",
            "the body must be a JSON object",
        ));
    }
    let roles = match v.get(field) {
        Some(r) => parse(r)?,
        None => roles_of(&st, &id)
            .map_err(|_| ApiError::bad("InvalidInput", format!("missing {field:?}")))?,
    };
    st.node
        .set_user_roles(auth.caller.identity(), &id, roles.clone())
        .await
        .map_err(write_failed)?;
    Ok(ok_json(shape(&id, &roles)))
}

async fn delete_user(
    State(st): St,
    auth: Authorized<UsersDelete>,
    PathParam(id): PathParam,
) -> ApiResult {
    roles_of(&st, &id)?;
    st.node
        .remove_user(auth.caller.identity(), &id)
        .await
        .map_err(write_failed)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A role as every known client reads it: both ACL spellings of each field.
fn role_json(name: &str, actions: &BTreeSet<String>) -> Value {
    json!({"roleName": name, "roleActions": actions, "role_name": name, "role_actions": actions})
}

fn role_name_param(q: &Query) -> Result<&str, ApiError> {
    match q.get("roleName") {
        Some(n) if !n.is_empty() => Ok(n),
        _ => Err(ApiError::bad(
            "InvalidQueryParameterValue",
            "roleName is required",
        )),
    }
}

fn unknown_role(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "RoleNotFound",
        format!("no role {name:?}"),
    )
}

/// `GET /app/roles?roleName=`: `{"roles": [R], "role": [R]}` (the sources disagree on the key;
/// both are sent, see docs/api.md).
async fn get_role(State(st): St, _: Authorized<RolesRead>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = Query::parse(raw.as_deref())?;
    let name = role_name_param(&q)?;
    let actions = st
        .node
        .with_access(|a| a.roles.get(name).cloned())
        .ok_or_else(|| unknown_role(name))?;
    let r = role_json(name, &actions);
    Ok(ok_json(json!({"roles": [r.clone()], "role": [r]})))
}

/// The roles of a PUT or PATCH body: a bare array, `{"roles": [...]}` or `{"role": [...]}`,
/// each element with `roleName`/`role_name` and `roleActions`/`role_actions`.
fn parse_roles(v: &Value) -> Result<BTreeMap<String, BTreeSet<String>>, ApiError> {
    let bad = |m: &str| ApiError::bad("InvalidInput", m.to_owned());
    let list = match v {
        Value::Array(l) => l,
        Value::Object(o) => match o.get("roles").or_else(|| o.get("role")) {
            Some(Value::Array(l)) => l,
            _ => {
                return Err(bad(
                    "expected {\"roles\": [{\"roleName\", \"roleActions\"}, ...]}",
                ));
            }
        },
        _ => return Err(bad("expected a list of roles")),
    };
    if list.is_empty() {
        return Err(bad("no roles given"));
    }
    let mut roles = BTreeMap::new();
    for r in list {
        let name = r
            .get("roleName")
            .or_else(|| r.get("role_name"))
            .and_then(Value::as_str)
            .ok_or_else(|| bad("each role needs a string \"roleName\""))?;
        let actions = match r.get("roleActions").or_else(|| r.get("role_actions")) {
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(str::to_owned))
                .collect::<Option<BTreeSet<String>>>()
                .ok_or_else(|| bad("\"roleActions\" must be an array of strings"))?,
            None => BTreeSet::new(),
            Some(_) => return Err(bad("\"roleActions\" must be an array of strings")),
        };
        let slot: &mut BTreeSet<String> = roles.entry(name.to_owned()).or_default();
        slot.extend(actions);
    }
    Ok(roles)
}

async fn put_roles(
    st: St,
    auth: Authorized<RolesWrite>,
    raw: RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    define(st, auth, raw, body, false).await
}

async fn patch_roles(
    st: St,
    auth: Authorized<RolesWrite>,
    raw: RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    define(st, auth, raw, body, true).await
}

/// PUT replaces each named role's actions; PATCH adds to them (ACL: "to remove an action,
/// delete the role and create it again"). Answered 200, with the roles echoed from
/// api-version 2026-07-31-preview on.
async fn define(
    State(st): St,
    auth: Authorized<RolesWrite>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
    add: bool,
) -> ApiResult {
    let q = Query::parse(raw.as_deref())?;
    let roles = parse_roles(&json_body(&body_bytes(body)?)?)?;
    let names: Vec<String> = roles.keys().cloned().collect();
    st.node
        .define_roles(auth.caller.identity(), roles, add)
        .await
        .map_err(write_failed)?;
    if !q.since_2026_07_31() {
        return Ok(StatusCode::OK.into_response());
    }
    let echoed: Vec<Value> = st.node.with_access(|a| {
        names
            .iter()
            .filter_map(|n| a.roles.get(n).map(|acts| role_json(n, acts)))
            .collect()
    });
    Ok(ok_json(json!({ "roles": echoed })))
}

/// `DELETE /app/roles?roleName=`: 200 (204 from api-version 2026-07-31-preview on). Users
/// holding the role keep its name, which allows nothing until a role of that name is defined.
async fn delete_role(
    State(st): St,
    auth: Authorized<RolesDelete>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = Query::parse(raw.as_deref())?;
    let name = role_name_param(&q)?;
    if !st.node.with_access(|a| a.roles.contains_key(name)) {
        return Err(unknown_role(name));
    }
    st.node
        .delete_role(auth.caller.identity(), name)
        .await
        .map_err(write_failed)?;
    if q.since_2026_07_31() {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Ok(StatusCode::OK.into_response())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::users::Role;

    #[test]
    fn role_bodies_in_every_known_shape() {
        let want: BTreeMap<String, BTreeSet<String>> =
            BTreeMap::from([("m".to_owned(), BTreeSet::from(["/a".to_owned()]))]);
        for body in [
            json!([{"roleName": "m", "roleActions": ["/a"]}]),
            json!({"roles": [{"roleName": "m", "roleActions": ["/a"]}]}),
            json!({"role": [{"role_name": "m", "role_actions": ["/a", "/a"]}]}),
        ] {
            assert_eq!(parse_roles(&body).unwrap(), want, "{body}");
        }
        for bad in [
            json!([]),
            json!({"roles": 1}),
            json!([{"roleActions": ["/a"]}]),
            json!([{"roleName": "m", "roleActions": [1]}]),
        ] {
            assert!(parse_roles(&bad).is_err(), "{bad}");
        }
        assert_eq!(
            single_role(&[
                RoleName::Custom("m".into()),
                RoleName::BuiltIn(Role::Reader)
            ]),
            "Reader"
        );
        assert_eq!(single_role(&[RoleName::Custom("m".into())]), "m");
    }
}
