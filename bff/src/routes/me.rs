//! `GET /v1/me`: the user's profile, contacts, devices and preferences in one answer, from
//! four users-service reads made concurrently and read into the `api` types (a part that does
//! not parse is a 500 naming the part in the log, never a half-filled answer).

use api::{
    profiles::Contacts,
    users::{DeviceList, Me, PreferencesView, Profile},
};
use axum::{
    Json,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use common::{auth::Role, problem::ApiError};
use serde::de::DeserializeOwned;

use crate::{AppState, rate_limit::Caller, upstream::Service};

pub async fn get_me(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(&[Role::User])?;
    let up = &state.upstream;
    let p = &caller.0;
    let (profile, contacts, devices, preferences) = tokio::try_join!(
        up.get_json(Service::Users, "/v1/me/profile", p),
        up.get_json(Service::Users, "/v1/me/contacts", p),
        up.get_json(Service::Users, "/v1/me/devices", p),
        up.get_json(Service::Users, "/v1/me/preferences", p),
    )?;
    // The first part that failed answers for all (its problem+json passes through).
    for (status, body) in [&profile, &contacts, &devices, &preferences] {
        if !status.is_success() {
            let mut resp = (*status, Json(body.clone())).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(common::problem::PROBLEM_JSON),
            );
            return Ok(resp);
        }
    }
    let profile: Profile = part("profile", profile.1)?;
    let me = Me {
        user_id: profile.user_id,
        locale: profile.locale,
        timezone: profile.timezone,
        created_at: profile.created_at,
        contacts: part::<Contacts>("contacts", contacts.1)?,
        devices: part::<DeviceList>("devices", devices.1)?.items,
        preferences: part::<PreferencesView>("preferences", preferences.1)?,
    };
    Ok(Json(me).into_response())
}

fn part<T: DeserializeOwned>(what: &str, body: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(body).map_err(|e| {
        ApiError::internal(anyhow::anyhow!(
            "users-service answered a {what} the contract does not describe: {e}"
        ))
    })
}
