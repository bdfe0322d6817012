//! notifyctl: the operator's and the developer's tool.
//!
//! * `notifyctl send | status | dead-letters | stats | tail` — operate any deployment through
//!   its public API ([`ops`]).
//! * `notifyctl up` — the whole platform on this machine ([`launcher`]).
//! * `notifyctl token --role service --sub billing` — mint a dev token ([`stack`]).
//! * `notifyctl kafka` — only the embedded Kafka (librdkafka's mock cluster, 3 brokers).
//! * `notifyctl smoke` — send through a running stack, wait for `sent`, print latency and
//!   every service's RSS.
//! * `notifyctl chaos` — the delivery guarantee under load and injected faults ([`chaos`],
//!   driven by the open-loop load generator [`load`]).
//! * `notifyctl bench-outbox` — the relay and its purge at a sustained rate ([`bench_outbox`]).
//! * `notifyctl load` — one load scenario against a running stack, accounted from the
//!   platform's records, with an HTML report ([`scenario`], [`report`], [`procs`]).
//! * `notifyctl bench` — pgbench's baseline, then the standard scenarios against a fresh
//!   release stack ([`bench`]).

pub mod bench;
pub mod bench_digest;
pub mod bench_inbox;
pub mod bench_outbox;
pub mod chaos;
pub mod dashboard;
pub mod launcher;
pub mod load;
pub mod ops;
pub mod procs;
pub mod report;
pub mod scenario;
pub mod smoke;
pub mod stack;
