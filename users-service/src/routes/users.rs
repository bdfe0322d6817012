//! `POST /v1/users`: registration by a service or an admin.

use api::{
    profiles::Contacts,
    users::{RegisterUser, Registered},
};
use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use common::{
    auth::{Principal, Role},
    events::{DomainEvent, EVENTS_TOPIC, SCHEMA},
    http::AppJson,
    outbox::{self, OutboxMessage},
    problem::ApiError,
};
use uuid::Uuid;

use crate::{
    AppState, db,
    domain::{EmailAddress, Errors, PhoneE164, parse_locale, parse_timezone},
};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/users", post(register))
}

#[tracing::instrument(skip_all, fields(caller = %principal.subject()))]
async fn register(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(body): AppJson<RegisterUser>,
) -> Result<(StatusCode, Json<Registered>), ApiError> {
    principal.require(&[Role::Service, Role::Admin])?;
    let mut errors = Errors::default();
    let email = errors.check("email", body.email.as_deref(), EmailAddress::parse);
    let phone = errors.check("phone", body.phone.as_deref(), PhoneE164::parse);
    let locale = errors.check("locale", body.locale.as_deref(), parse_locale);
    let timezone = errors.check("timezone", body.timezone.as_deref(), parse_timezone);
    let telegram = errors.check(
        "telegram_chat_id",
        body.telegram_chat_id.as_deref(),
        common::address::parse_telegram_chat_id,
    );
    if !errors.0.is_empty() {
        return Err(ApiError::validation(errors.0));
    }
    // A chat id says nothing about who holds the chat: whoever sets it gets that chat's
    // messages and its `/stop`. Users prove it through the bot (POST /v1/me/telegram/link);
    // only an admin may set one without proof.
    if telegram.is_some() && principal.role() != Role::Admin {
        return Err(ApiError::forbidden(
            "only an admin may set telegram_chat_id: users link their chat through the bot \
             (POST /v1/me/telegram/link)",
        ));
    }

    let user_id = Uuid::now_v7();
    let contacts = Contacts {
        email: email.map(|e| e.as_str().to_owned()),
        phone: phone.map(|p| p.as_str().to_owned()),
        telegram_chat_id: telegram,
    };
    let event = DomainEvent::UserRegistered {
        schema: SCHEMA,
        user_id,
        at: chrono::Utc::now(),
    };
    let message = OutboxMessage::new(EVENTS_TOPIC, user_id.to_string(), &event)?;

    let mut tx = state.pool.begin().await?;
    let user = db::NewUser {
        id: user_id,
        locale: locale.as_deref().unwrap_or("en"),
        timezone: timezone.as_deref().unwrap_or("UTC"),
        contacts: &contacts,
    };
    db::insert_user(&mut tx, &user)
        .await
        .map_err(db::telegram::taken_as_conflict)?;
    outbox::enqueue(&mut tx, &[message]).await?;
    tx.commit().await?;
    tracing::info!(%user_id, "user registered");
    Ok((StatusCode::CREATED, Json(Registered { user_id })))
}
