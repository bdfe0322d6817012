//! What a channel's transport implements.

use std::future::Future;

use common::events::{DispatchMessage, ErrorInfo, Outcome};

/// The result of one attempt at a provider.
#[derive(Debug, Clone)]
pub struct ProviderResult {
    pub outcome: Outcome,
    pub provider_message_id: Option<String>,
    pub error: Option<ErrorInfo>,
    /// The provider's `Retry-After`, if it sent one.
    pub retry_after_ms: Option<u64>,
    /// Which provider answered, when a channel has several (failover); otherwise the
    /// channel's [`Provider::provider_for`].
    pub provider: Option<&'static str>,
}

impl ProviderResult {
    pub fn sent(provider_message_id: Option<String>) -> Self {
        Self {
            outcome: Outcome::Sent,
            provider_message_id,
            error: None,
            retry_after_ms: None,
            provider: None,
        }
    }

    /// This result, as answered by `provider`.
    pub fn answered_by(mut self, provider: &'static str) -> Self {
        self.provider = Some(provider);
        self
    }

    pub fn failed(outcome: Outcome, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            outcome,
            provider_message_id: None,
            error: Some(ErrorInfo {
                code: code.into(),
                message: message.into(),
            }),
            retry_after_ms: None,
            provider: None,
        }
    }
}

/// A transport for one channel. `send` never returns an error: every failure is an outcome
/// the repeater acts on.
pub trait Provider: Send + Sync + 'static {
    /// Reported as `provider` in status events.
    fn name(&self) -> &'static str;
    /// Every name [`Provider::provider_for`] can answer (the metrics declare each at start).
    fn providers(&self) -> Vec<&'static str> {
        vec![self.name()]
    }
    /// The provider that handles `msg` (a channel with several platforms answers per message).
    fn provider_for(&self, _msg: &DispatchMessage) -> &'static str {
        self.name()
    }
    fn send(&self, msg: &DispatchMessage) -> impl Future<Output = ProviderResult> + Send;
}
