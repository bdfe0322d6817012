//! Push: one channel, two platforms. A push delivery's address carries its platform
//! (`fcm:<token>` / `apns:<token>`, as planning writes it); this provider routes it to
//! [`fcm`](crate::fcm) or [`apns`](crate::apns), whichever is configured.

use common::{
    address::PushAddress,
    events::{DispatchMessage, Outcome, Platform},
};
use serde::Deserialize;

use crate::{
    apns::{ApnsConfig, ApnsProvider},
    fcm::{FcmConfig, FcmProvider},
    provider::{Provider, ProviderResult},
};

/// Push settings: either platform may be left out (its deliveries then fail permanently with
/// `push_platform_not_configured`, visible to an admin and re-drivable once configured).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PushConfig {
    pub fcm: Option<FcmConfig>,
    pub apns: Option<ApnsConfig>,
}

pub struct PushProvider {
    fcm: Option<FcmProvider>,
    apns: Option<ApnsProvider>,
}

impl PushProvider {
    pub fn new(cfg: &PushConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            cfg.fcm.is_some() || cfg.apns.is_some(),
            "push.fcm or push.apns must be configured to run the push channel"
        );
        Ok(Self {
            fcm: cfg.fcm.as_ref().map(FcmProvider::new).transpose()?,
            apns: cfg.apns.as_ref().map(ApnsProvider::new).transpose()?,
        })
    }
}

fn not_configured(platform: &str) -> ProviderResult {
    ProviderResult::failed(
        Outcome::PermanentFailure,
        "push_platform_not_configured",
        format!("this deployment has no {platform} credentials"),
    )
}

impl Provider for PushProvider {
    fn name(&self) -> &'static str {
        "push"
    }

    fn providers(&self) -> Vec<&'static str> {
        vec!["fcm", "apns", "push"]
    }

    fn provider_for(&self, msg: &DispatchMessage) -> &'static str {
        match PushAddress::parse(&msg.recipient.address).map(|a| a.platform) {
            Some(Platform::Fcm) => "fcm",
            Some(Platform::Apns) => "apns",
            None => "push",
        }
    }

    async fn send(&self, msg: &DispatchMessage) -> ProviderResult {
        match PushAddress::parse(&msg.recipient.address) {
            Some(PushAddress {
                platform: Platform::Fcm,
                token,
            }) => match &self.fcm {
                Some(fcm) => fcm.send(msg, &token).await,
                None => not_configured("FCM"),
            },
            Some(PushAddress {
                platform: Platform::Apns,
                token,
            }) => match &self.apns {
                Some(apns) => apns.send(msg, &token).await,
                None => not_configured("APNs"),
            },
            None => ProviderResult::failed(
                Outcome::InvalidAddress,
                "invalid_address",
                "a push address is `fcm:<token>` or `apns:<token>`",
            ),
        }
    }
}

/// The `data` of a push message: string values only (FCM requires it; APNs gets the same),
/// plus the ids that let an app report back which notification it showed.
pub fn data_strings(msg: &DispatchMessage) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    if let Some(serde_json::Value::Object(data)) = &msg.content.data {
        for (k, v) in data {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.insert(k.clone(), serde_json::Value::String(s));
        }
    }
    out.insert(
        "notification_id".into(),
        msg.notification_id.to_string().into(),
    );
    out.insert("delivery_id".into(), msg.delivery_id.to_string().into());
    out
}
