//! notifyctl: the developer's tool.
//!
//! * `notifyctl up` — the whole platform on this machine ([`launcher`]).
//! * `notifyctl token --role service --sub billing` — mint a dev token ([`stack`]).
//! * `notifyctl kafka` — only the embedded Kafka (librdkafka's mock cluster, 3 brokers).
//! * `notifyctl smoke` — send through a running stack, wait for `sent`, print latency and
//!   every service's RSS.

pub mod launcher;
pub mod smoke;
pub mod stack;
