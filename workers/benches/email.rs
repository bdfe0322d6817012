//! Emails per second through the email provider (its `TCP_NODELAY` pool) to the local SMTP
//! sink, at concurrency 1 and 32 — and, as the baseline in the same run, the same messages
//! through lettre's own pooled transport (sockets with Nagle's algorithm, what the provider
//! used before). A benchmark, not a test: `cargo bench -p workers --bench email` (`EMAILS=n`
//! sets how many per run, default 2000).

use std::{sync::Arc, time::Instant};

use common::events::{Channel, Content, DispatchMessage, Lane, RecipientRef, SCHEMA};
use futures::StreamExt;
use workers::{config::EmailConfig, email::EmailProvider, provider::Provider};

fn message(i: usize) -> DispatchMessage {
    DispatchMessage {
        schema: SCHEMA,
        delivery_id: uuid::Uuid::now_v7(),
        notification_id: uuid::Uuid::now_v7(),
        attempt: 1,
        channel: Channel::Email,
        lane: Lane::Bulk,
        recipient: RecipientRef {
            user_id: None,
            address: format!("bench{i}@example.com"),
        },
        content: Content {
            subject: Some(format!("Bench {i}")),
            text: "A short notification body.".into(),
            html: None,
            data: None,
        },
        locale: None,
        not_after: None,
        created_at: chrono::Utc::now(),
    }
}

fn main() {
    let n: usize = std::env::var("EMAILS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for concurrency in [1usize, 32] {
        // A connection with Nagle manages ~22 mails/s: a quarter is plenty at concurrency 1.
        let n = if concurrency == 1 { (n / 4).max(1) } else { n };
        baseline(&rt, concurrency, n);
        let sink = devkit::smtp::SmtpSink::start(0, None).unwrap();
        let cfg = EmailConfig {
            smtp_url: sink.url(),
            pool_size: concurrency as u32,
            ..EmailConfig::default()
        };
        // The provider (and lettre's pool) lives and dies inside the runtime.
        let (sent, secs) = rt.block_on(async {
            let provider = Arc::new(EmailProvider::new(&cfg).unwrap());
            let started = Instant::now();
            let sent = futures::stream::iter(0..n)
                .map(|i| {
                    let provider = provider.clone();
                    async move { provider.send(&message(i)).await }
                })
                .buffer_unordered(concurrency)
                .filter(|r| std::future::ready(r.outcome == common::events::Outcome::Sent))
                .count()
                .await;
            (sent, started.elapsed().as_secs_f64())
        });
        assert_eq!(sent, n, "every email accepted");
        assert_eq!(sink.mails().len(), n);
        println!(
            "email concurrency {concurrency:>2}: {n} emails in {secs:.2} s = {:.0} emails/s",
            n as f64 / secs
        );
    }
}

/// The same kind of messages through lettre's `AsyncSmtpTransport` (its own sockets).
fn baseline(rt: &tokio::runtime::Runtime, concurrency: usize, n: usize) {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let sink = devkit::smtp::SmtpSink::start(0, None).unwrap();
    let (sent, secs) = rt.block_on(async {
        let transport = Arc::new(
            AsyncSmtpTransport::<Tokio1Executor>::from_url(&sink.url())
                .unwrap()
                .pool_config(
                    lettre::transport::smtp::PoolConfig::new().max_size(concurrency as u32),
                )
                .build(),
        );
        let started = Instant::now();
        let sent = futures::stream::iter(0..n)
            .map(|i| {
                let transport = transport.clone();
                async move {
                    let email = Message::builder()
                        .from("Notify <notify@localhost.localdomain>".parse().unwrap())
                        .to(format!("bench{i}@example.com").parse().unwrap())
                        .subject(format!("Bench {i}"))
                        .body("A short notification body.".to_owned())
                        .unwrap();
                    transport.send(email).await.is_ok()
                }
            })
            .buffer_unordered(concurrency)
            .filter(|ok| std::future::ready(*ok))
            .count()
            .await;
        (sent, started.elapsed().as_secs_f64())
    });
    assert_eq!(sent, n, "every email accepted");
    println!(
        "baseline, lettre's transport, concurrency {concurrency:>2}: {n} emails in {secs:.2} s = {:.0} emails/s",
        n as f64 / secs
    );
}
