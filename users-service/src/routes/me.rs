//! `/v1/me…`: a user's own profile, contacts, preferences and devices.
//!
//! The user is always the token's `sub` — never a path or body value — so no request can name
//! another user. Only `user` tokens are accepted here. Every change writes a
//! `preferences.updated` event in the same transaction, so cached delivery profiles are
//! invalidated.

use std::collections::BTreeMap;

use api::{
    profiles::{Contacts, Device, Preferences, QuietHours},
    users::{ContactsBody, DeviceBody, DeviceList, PreferencesBody, PreferencesView, Profile},
};
use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{delete, get},
};
use common::{
    address::{parse_name, parse_telegram_chat_id},
    auth::{Principal, Role},
    events::{Channel, DomainEvent, EVENTS_TOPIC, Platform, SCHEMA},
    http::AppJson,
    outbox::{self, OutboxMessage},
    problem::{ApiError, FieldError},
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    AppState, db,
    domain::{EmailAddress, Errors, PhoneE164, parse_clock, parse_locale, parse_timezone},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/me/profile", get(profile))
        .route("/v1/me/contacts", get(get_contacts).put(put_contacts))
        .route(
            "/v1/me/preferences",
            get(get_preferences).put(put_preferences),
        )
        .route("/v1/me/devices", get(list_devices).post(add_device))
        .route("/v1/me/devices/{id}", delete(remove_device))
}

/// The caller's user id: `user` tokens only, `sub` must be a user id.
pub(crate) fn me(principal: &Principal) -> Result<Uuid, ApiError> {
    principal.require(&[Role::User])?;
    Uuid::parse_str(principal.subject())
        .map_err(|_| ApiError::forbidden("this token's subject is not a user id"))
}

/// 404 unless the user exists.
pub(crate) async fn existing(conn: &mut PgConnection, id: Uuid) -> Result<db::UserRow, ApiError> {
    db::user(conn, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))
}

/// Announces that a user's delivery profile changed (`preferences.updated`, in the caller's
/// transaction), so cached profiles are evicted.
pub(crate) async fn changed(conn: &mut PgConnection, user_id: Uuid) -> Result<(), ApiError> {
    let event = DomainEvent::PreferencesUpdated {
        schema: SCHEMA,
        user_id,
        at: chrono::Utc::now(),
    };
    outbox::enqueue(
        conn,
        &[OutboxMessage::new(
            EVENTS_TOPIC,
            user_id.to_string(),
            &event,
        )?],
    )
    .await?;
    Ok(())
}

async fn profile(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Profile>, ApiError> {
    let id = me(&principal)?;
    let mut conn = state.pool.acquire().await?;
    let user = existing(&mut conn, id).await?;
    Ok(Json(Profile {
        user_id: user.id,
        locale: user.locale,
        timezone: user.timezone,
        created_at: user.created_at,
    }))
}

async fn get_contacts(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Contacts>, ApiError> {
    let id = me(&principal)?;
    let mut conn = state.pool.acquire().await?;
    existing(&mut conn, id).await?;
    Ok(Json(db::contacts(&mut conn, id).await?))
}

async fn put_contacts(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(body): AppJson<ContactsBody>,
) -> Result<Json<Contacts>, ApiError> {
    let id = me(&principal)?;
    let mut errors = Errors::default();
    let contacts = Contacts {
        email: errors
            .check("email", body.email.as_deref(), EmailAddress::parse)
            .map(|e| e.as_str().to_owned()),
        phone: errors
            .check("phone", body.phone.as_deref(), PhoneE164::parse)
            .map(|p| p.as_str().to_owned()),
        telegram_chat_id: errors.check(
            "telegram_chat_id",
            body.telegram_chat_id.as_deref(),
            parse_telegram_chat_id,
        ),
    };
    if !errors.0.is_empty() {
        return Err(ApiError::validation(errors.0));
    }
    let mut tx = state.pool.begin().await?;
    existing(&mut tx, id).await?;
    // The chat linked through the bot may be kept (the same id sent back) or dropped (absent or
    // null), never replaced by one the user names: that would claim someone else's chat.
    let linked = db::contacts(&mut tx, id).await?.telegram_chat_id;
    if contacts.telegram_chat_id.is_some() && contacts.telegram_chat_id != linked {
        // 409: the id is well formed; it conflicts with the chat this user has linked.
        return Err(ApiError::conflict(
            "telegram_chat_not_linked",
            "a Telegram chat is linked only through the bot: POST /v1/me/telegram/link, then send \
             the code to the bot (send the linked chat id back, or null to unlink)",
        ));
    }
    db::replace_contacts(&mut tx, id, &contacts).await?;
    changed(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(contacts))
}

async fn preferences_view(
    conn: &mut PgConnection,
    state: &AppState,
    id: Uuid,
) -> Result<PreferencesView, ApiError> {
    let user = existing(conn, id).await?;
    let p = db::preferences(conn, id).await?;
    Ok(PreferencesView {
        channels: p.channels,
        categories: p.categories,
        quiet_hours: p.quiet_hours,
        locale: user.locale,
        mandatory_categories: state.mandatory_categories.to_vec(),
    })
}

async fn get_preferences(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<PreferencesView>, ApiError> {
    let id = me(&principal)?;
    let mut conn = state.pool.acquire().await?;
    Ok(Json(preferences_view(&mut conn, &state, id).await?))
}

/// Checks the whole document; every broken field at once (422).
fn validate_preferences(body: PreferencesBody) -> Result<(Preferences, Option<String>), ApiError> {
    {
        let mut errors = Vec::new();
        let mut channel = |field: String, name: &str| {
            let c = Channel::parse(name);
            if c.is_none() {
                errors.push(FieldError::new(
                    field,
                    "unknown channel (email, sms, push, webhook, telegram)",
                ));
            }
            c
        };
        let channels: BTreeMap<Channel, bool> = body
            .channels
            .iter()
            .filter_map(|(name, on)| channel(format!("channels.{name}"), name).map(|c| (c, *on)))
            .collect();
        let mut categories = BTreeMap::new();
        for (cat, switches) in &body.categories {
            let parsed: BTreeMap<Channel, bool> = switches
                .iter()
                .filter_map(|(name, on)| {
                    channel(format!("categories.{cat}.{name}"), name).map(|c| (c, *on))
                })
                .collect();
            categories.insert(cat.clone(), parsed);
        }
        for cat in body.categories.keys().filter(|c| parse_name(c).is_err()) {
            errors.push(FieldError::new(
                format!("categories.{cat}"),
                common::address::NAME_RULE,
            ));
        }
        let quiet_hours = body.quiet_hours.and_then(|q| {
            if let Err(m) = parse_clock(&q.start) {
                errors.push(FieldError::new("quiet_hours.start", m));
            }
            if let Err(m) = parse_clock(&q.end) {
                errors.push(FieldError::new("quiet_hours.end", m));
            }
            let tz = parse_timezone(&q.timezone)
                .map_err(|m| errors.push(FieldError::new("quiet_hours.timezone", m)))
                .ok();
            Some(QuietHours {
                start: q.start,
                end: q.end,
                timezone: tz?,
            })
        });
        let locale = match body.locale.as_deref().map(parse_locale) {
            Some(Err(m)) => {
                errors.push(FieldError::new("locale", m));
                None
            }
            Some(Ok(l)) => Some(l),
            None => None,
        };
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        Ok((
            Preferences {
                channels,
                categories,
                quiet_hours,
            },
            locale,
        ))
    }
}

async fn put_preferences(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(body): AppJson<PreferencesBody>,
) -> Result<Json<PreferencesView>, ApiError> {
    let id = me(&principal)?;
    let (prefs, locale) = validate_preferences(body)?;
    let mut tx = state.pool.begin().await?;
    existing(&mut tx, id).await?;
    db::replace_preferences(&mut tx, id, &prefs).await?;
    if let Some(locale) = &locale {
        db::set_locale(&mut tx, id, locale).await?;
    }
    changed(&mut tx, id).await?;
    let view = preferences_view(&mut tx, &state, id).await?;
    tx.commit().await?;
    Ok(Json(view))
}

async fn list_devices(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<DeviceList>, ApiError> {
    let id = me(&principal)?;
    let mut conn = state.pool.acquire().await?;
    existing(&mut conn, id).await?;
    Ok(Json(DeviceList {
        items: db::devices(&mut conn, id).await?,
    }))
}

/// Most push devices one user may have: each gets a copy of every push notification.
pub const MAX_DEVICES: i64 = 20;

/// 201 for a token new to this user, 200 when the user had it already (idempotent); 409
/// `too_many_devices` past [`MAX_DEVICES`].
async fn add_device(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(body): AppJson<DeviceBody>,
) -> Result<(StatusCode, Json<Device>), ApiError> {
    let id = me(&principal)?;
    let mut errors = Vec::new();
    let platform = Platform::parse(&body.platform);
    if platform.is_none() {
        errors.push(FieldError::new("platform", "must be fcm or apns"));
    }
    let token = body.token.trim();
    let check = match platform {
        Some(p) => common::address::check_push_token(p, token),
        None => common::address::check_push_token(Platform::Fcm, token),
    };
    if let Err(rule) = check {
        errors.push(FieldError::new("token", rule));
    }
    let Some(platform) = platform.filter(|_| errors.is_empty()) else {
        return Err(ApiError::validation(errors));
    };
    let mut tx = state.pool.begin().await?;
    existing(&mut tx, id).await?;
    if db::lock_and_count_other_devices(&mut tx, id, platform, token).await? >= MAX_DEVICES {
        return Err(ApiError::conflict(
            "too_many_devices",
            format!("a user can have at most {MAX_DEVICES} devices; remove one first"),
        ));
    }
    let (device, new) = db::add_device(&mut tx, id, platform, token).await?;
    if new {
        changed(&mut tx, id).await?;
    }
    tx.commit().await?;
    Ok((
        if new {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(device),
    ))
}

async fn remove_device(
    State(state): State<AppState>,
    principal: Principal,
    Path(device): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = me(&principal)?;
    let device = Uuid::parse_str(&device).map_err(|_| ApiError::not_found("no such device"))?;
    let mut tx = state.pool.begin().await?;
    if !db::delete_device(&mut tx, id, device).await? {
        return Err(ApiError::not_found("no such device"));
    }
    changed(&mut tx, id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
