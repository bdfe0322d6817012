//! What users-service consumes from `notify.events`: `device.invalidated` (a push provider
//! called a token dead) removes that device. Every other event is someone else's.

use common::{
    events::{DomainEvent, Platform},
    kafka::runner::{HandleError, MessageHandler},
};
use rdkafka::{Message, message::OwnedMessage};
use sqlx::PgPool;

use crate::{db, routes::me::changed};

pub struct EventsHandler {
    pub pool: PgPool,
}

impl EventsHandler {
    /// Removes the device with this token (whoever registered it: a token belongs to one app
    /// install) and announces the profile change, in one transaction. Idempotent.
    pub async fn remove_device(&self, platform: Platform, token: &str) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await?;
        let owners = db::delete_device_by_token(&mut tx, platform, token).await?;
        for user_id in &owners {
            changed(&mut tx, *user_id)
                .await
                .map_err(|e| anyhow::anyhow!("announcing the change: {e:?}"))?;
        }
        tx.commit().await?;
        Ok(owners.len())
    }
}

impl MessageHandler for EventsHandler {
    async fn handle(&self, raw: &OwnedMessage) -> Result<(), HandleError> {
        let event: DomainEvent = serde_json::from_slice(raw.payload().unwrap_or_default())
            .map_err(|e| HandleError::Skip(anyhow::anyhow!("undecodable domain event: {e}")))?;
        match event {
            DomainEvent::DeviceInvalidated {
                platform,
                token,
                reason,
                delivery_id,
                ..
            } => {
                let removed = self
                    .remove_device(platform, &token)
                    .await
                    .map_err(HandleError::Retry)?;
                tracing::info!(platform = platform.as_str(), %reason, %delivery_id, removed, "dead push token removed");
                Ok(())
            }
            DomainEvent::UserRegistered { .. }
            | DomainEvent::PreferencesUpdated { .. }
            | DomainEvent::DeliveryDead { .. }
            | DomainEvent::TelegramMessage { .. } => Ok(()),
        }
    }
}
