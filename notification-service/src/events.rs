//! Consumer of `notify.events`: `user.registered` → the `welcome` notification on the
//! channels the new user has; `preferences.updated` → evict the cached profile;
//! `delivery.dead` → channel fallback ([`crate::fallback`]).
//!
//! Idempotent: the welcome notification's id is derived from the user id (UUIDv5), so a
//! redelivered event finds it already written and sends nothing twice.
//!
//! An event that can never be handled — it does not decode, or the welcome's template does not
//! render (or does not exist) — is recorded in `skipped_events` (admins read them at
//! `GET /v1/admin/skipped-events`; `notify_events_skipped_total` counts them) and skipped, so
//! the rest flows: retried in place, eight of them would hold every slot of this consumer and
//! stop fallback planning and profile-cache eviction for everyone. What may succeed later (a
//! database or users-service away) is retried in place.

use std::sync::Arc;

use common::{
    events::DomainEvent,
    kafka::runner::{HandleError, MessageHandler},
};
use rdkafka::{Message, message::OwnedMessage};
use uuid::Uuid;

use crate::{
    AppState,
    config::WelcomeConfig,
    intake,
    request::{Recipient, SendRequest},
};

/// Namespace of the welcome notifications' ids.
const WELCOME_NAMESPACE: Uuid = Uuid::from_u128(0x6e6f7469_6679_2d77_656c_636f6d650001);

/// The welcome notification's id for a user.
pub fn welcome_id(user_id: Uuid) -> Uuid {
    Uuid::new_v5(&WELCOME_NAMESPACE, user_id.as_bytes())
}

pub struct EventsHandler {
    pub state: AppState,
    pub welcome: Arc<WelcomeConfig>,
}

/// Why a welcome was not written.
enum WelcomeFailure {
    /// It never will be as things stand (its template does not render): skip and record.
    Never(String),
    /// It may be on a retry (a dependency is away).
    Retry(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for WelcomeFailure {
    fn from(e: E) -> Self {
        Self::Retry(e.into())
    }
}

impl EventsHandler {
    async fn skip(
        &self,
        raw: &OwnedMessage,
        event_type: &str,
        error: &str,
    ) -> Result<(), HandleError> {
        crate::skip::skip(&self.state, raw, event_type, error).await
    }

    async fn welcome(&self, user_id: Uuid) -> Result<(), WelcomeFailure> {
        let mut req = SendRequest::internal(vec![Recipient::User(user_id)], "welcome");
        req.template = Some(self.welcome.template.clone());
        req.data = Some(serde_json::json!({}));
        let origin = intake::Origin::Welcome {
            id: welcome_id(user_id),
        };
        match intake::accept(&self.state, origin, req, chrono::Utc::now()).await {
            Ok(accepted) => {
                tracing::info!(%user_id, ?accepted, "welcome notification");
                Ok(())
            }
            // A 4xx: the template is missing or does not render with what a welcome has.
            Err(e) if e.status.is_client_error() => Err(WelcomeFailure::Never(format!(
                "welcome template: {}",
                e.detail
            ))),
            Err(e) => Err(WelcomeFailure::Retry(anyhow::anyhow!("welcome: {e}"))),
        }
    }
}

impl MessageHandler for EventsHandler {
    async fn handle(&self, raw: &OwnedMessage) -> Result<(), HandleError> {
        let event: DomainEvent = match serde_json::from_slice(raw.payload().unwrap_or_default()) {
            Ok(e) => e,
            Err(e) => {
                return self
                    .skip(raw, "unknown", &format!("undecodable domain event: {e}"))
                    .await;
            }
        };
        match event {
            DomainEvent::UserRegistered { user_id, .. } if self.welcome.enabled => {
                match self.welcome(user_id).await {
                    Ok(()) => Ok(()),
                    Err(WelcomeFailure::Never(why)) => {
                        self.skip(raw, "user.registered", &why).await
                    }
                    Err(WelcomeFailure::Retry(e)) => Err(HandleError::Retry(e)),
                }
            }
            DomainEvent::UserRegistered { .. } => Ok(()),
            DomainEvent::DeliveryDead { delivery_id, .. } => {
                let outcome = crate::fallback::on_dead(&self.state, delivery_id)
                    .await
                    .map_err(HandleError::Retry)?;
                tracing::info!(%delivery_id, ?outcome, "channel fallback");
                Ok(())
            }
            // users-service removes the device and then says `preferences.updated`.
            DomainEvent::DeviceInvalidated { .. } | DomainEvent::TelegramMessage { .. } => Ok(()),
            DomainEvent::PreferencesUpdated { user_id, .. } => self
                .state
                .users
                .evict(user_id)
                .await
                .map_err(|e| HandleError::Retry(e.into())),
        }
    }
}
