//! `GET /api/v1/snapshots` (list), `/api/v1/snapshots/{id}?set=failed|healthy|all`
//! (HAR 1.2) and `/api/v1/snapshots/{id}/diff` (ranked factors). Read-only;
//! behind the same token as the rest of the API.
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{AdminState, error};
use crate::respond::snapshot::har::{self, Which};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetQuery {
    #[serde(default)]
    set: Option<String>,
}

fn frozen(
    s: &AdminState,
    id: &str,
) -> Result<std::sync::Arc<crate::respond::snapshot::FrozenSet>, Box<Response>> {
    let Some(f) = &s.snapshots else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "request snapshots are off (snapshots.enabled)",
        )));
    };
    let sets = f.read().unwrap_or_else(|p| p.into_inner());
    // The id came from the caller: bounded, and escaped by serde in the reply.
    sets.get(id).ok_or_else(|| {
        Box::new(error(
            StatusCode::NOT_FOUND,
            format!(
                "no snapshot set {:?} (dropped after snapshots.max_frozen newer ones, or never frozen)",
                crate::request::redact::cap(id, 64)
            ),
        ))
    })
}

pub(super) async fn list(State(s): State<AdminState>) -> Response {
    let Some(f) = &s.snapshots else {
        return Json(json!({ "snapshots": [] })).into_response();
    };
    let sets = f.read().unwrap_or_else(|p| p.into_inner());
    let list: Vec<_> = sets.list().iter().map(|x| x.summary()).collect();
    Json(json!({ "snapshots": list })).into_response()
}

pub(super) async fn har(
    State(s): State<AdminState>,
    Path(id): Path<String>,
    q: Result<Query<SetQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let which = match q.as_ref().map(|q| q.set.as_deref()) {
        Ok(None | Some("all")) => Which::All,
        Ok(Some("failed")) => Which::Failed,
        Ok(Some("healthy")) => Which::Healthy,
        Ok(Some(_)) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "set: one of failed, healthy, all",
            );
        }
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()),
    };
    match frozen(&s, &id) {
        Ok(set) => Json(har::to_har(&set, which)).into_response(),
        Err(r) => *r,
    }
}

pub(super) async fn diff(State(s): State<AdminState>, Path(id): Path<String>) -> Response {
    match frozen(&s, &id) {
        Ok(set) => {
            let d = crate::respond::snapshot::diff::diff(&set.failed, &set.healthy);
            Json(json!({ "id": set.id, "diff": d })).into_response()
        }
        Err(r) => *r,
    }
}
