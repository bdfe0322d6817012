//! Consumer of `notify.events`: `user.registered` → the `welcome` notification on the
//! channels the new user has; `preferences.updated` → evict the cached profile;
//! `delivery.dead` → channel fallback ([`crate::fallback`]).
//!
//! Idempotent: the welcome notification's id is derived from the user id (UUIDv5), so a
//! redelivered event finds it already written and sends nothing twice.

use std::{collections::HashMap, sync::Arc};

use common::{
    events::{Content, DomainEvent},
    kafka::runner::{HandleError, MessageHandler},
};
use rdkafka::{Message, message::OwnedMessage};
use uuid::Uuid;

use crate::{
    AppState,
    config::WelcomeConfig,
    db::notifications::{self as db, NewNotification},
    planning,
    request::{Priority, Recipient, SendRequest},
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

impl EventsHandler {
    async fn welcome(&self, user_id: Uuid) -> anyhow::Result<()> {
        let token = self
            .state
            .users
            .service_token()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let profiles: HashMap<Uuid, _> = self
            .state
            .users
            .profiles(&token, &[user_id])
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .into_iter()
            .map(|p| (p.user_id, p))
            .collect();
        let now = chrono::Utc::now();
        let mut req = SendRequest {
            recipients: vec![Recipient::User(user_id)],
            category: "welcome".into(),
            priority: Priority::Normal,
            channels: None,
            content: Content {
                subject: None,
                text: String::new(),
                html: None,
                data: None,
            },
            send_at: None,
            ttl_seconds: None,
            template: Some(self.welcome.template.clone()),
            data: Some(serde_json::json!({})),
            localized: None,
            fallback: None,
        };
        // Only the channels the user has: no suppressed rows for contacts they never gave.
        let mut deliveries: Vec<_> = planning::plan(&req, &profiles, &self.state.planning, now)
            .into_iter()
            .filter(|d| d.reason != Some("no_contact"))
            .collect();
        crate::suppression::apply(&self.state.pool, &mut deliveries).await?;
        if deliveries.is_empty() {
            tracing::info!(%user_id, "new user has no reachable channel; no welcome");
            return Ok(());
        }
        let mut tx = self.state.pool.begin().await?;
        crate::templates::apply(
            &mut tx,
            &mut req,
            &deliveries,
            &self.state.planning.default_locale,
        )
        .await
        .map_err(|e| anyhow::anyhow!("welcome template: {e}"))?;
        let notification = NewNotification {
            id: welcome_id(user_id),
            created_by: "notification-service",
            request: &req,
            deliveries: &deliveries,
            created_at: now,
        };
        let written = db::insert(&mut tx, &notification).await?;
        tx.commit().await?;
        tracing::info!(%user_id, written, "welcome notification");
        Ok(())
    }
}

impl MessageHandler for EventsHandler {
    async fn handle(&self, raw: &OwnedMessage) -> Result<(), HandleError> {
        let event: DomainEvent = serde_json::from_slice(raw.payload().unwrap_or_default())
            .map_err(|e| HandleError::Skip(anyhow::anyhow!("undecodable domain event: {e}")))?;
        match event {
            DomainEvent::UserRegistered { user_id, .. } if self.welcome.enabled => {
                self.welcome(user_id).await.map_err(HandleError::Retry)
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
