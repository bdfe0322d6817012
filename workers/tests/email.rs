//! Email against a real SMTP server on loopback: multipart text + HTML, `List-Unsubscribe`,
//! STARTTLS with authentication, and header injection attempts neutralised.

use std::path::PathBuf;

use common::events::{Channel, Content, DispatchMessage, Lane, Outcome, RecipientRef, SCHEMA};
use devkit::smtp::{SinkOptions, SmtpSink};
use workers::{config::EmailConfig, email::EmailProvider, provider::Provider};

fn message(to: &str, subject: &str, data: Option<serde_json::Value>) -> DispatchMessage {
    DispatchMessage {
        schema: SCHEMA,
        delivery_id: uuid::Uuid::now_v7(),
        notification_id: uuid::Uuid::now_v7(),
        attempt: 1,
        channel: Channel::Email,
        lane: Lane::Bulk,
        recipient: RecipientRef {
            user_id: None,
            address: to.into(),
        },
        content: Content {
            subject: Some(subject.into()),
            text: "Hello Ann,\n.\nA line with only a dot above.".into(),
            html: Some("<p>Hello <b>Ann</b></p>".into()),
            data,
        },
        locale: None,
        not_after: None,
        created_at: chrono::Utc::now(),
    }
}

fn provider(smtp_url: String, tls_ca_path: Option<PathBuf>) -> EmailProvider {
    EmailProvider::new(&EmailConfig {
        smtp_url,
        from: "Notify <notify@example.com>".into(),
        timeout_ms: 5_000,
        pool_size: 2,
        tls_ca_path,
        ..EmailConfig::default()
    })
    .unwrap()
}

/// The header block of a raw message, unfolded, one header per entry.
fn headers(raw: &str) -> Vec<String> {
    let head = raw.split("\r\n\r\n").next().unwrap();
    let mut out: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with(' ') || line.starts_with('\t') {
            out.last_mut().unwrap().push_str(line);
        } else {
            out.push(line.to_owned());
        }
    }
    out
}

fn header<'a>(headers: &'a [String], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter_map(|h| {
            let (n, v) = h.split_once(':')?;
            n.eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_email_with_one_click_unsubscribe() {
    let sink = SmtpSink::start(0, None).unwrap();
    let email = provider(sink.url(), None);
    let msg = message(
        "ann@example.com",
        "Your weekly digest",
        Some(
            serde_json::json!({ "unsubscribe_url": "https://example.com/unsubscribe/abc?c=digest" }),
        ),
    );
    let r = email.send(&msg).await;
    assert_eq!(r.outcome, Outcome::Sent, "{:?}", r.error);
    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, vec!["ann@example.com".to_owned()]);
    let raw = mails[0].text();
    let h = headers(&raw);
    assert_eq!(header(&h, "From"), vec!["Notify <notify@example.com>"]);
    assert_eq!(header(&h, "To"), vec!["ann@example.com"]);
    assert_eq!(header(&h, "Subject"), vec!["Your weekly digest"]);
    assert_eq!(
        header(&h, "List-Unsubscribe"),
        vec!["<https://example.com/unsubscribe/abc?c=digest>"]
    );
    assert_eq!(
        header(&h, "List-Unsubscribe-Post"),
        vec!["List-Unsubscribe=One-Click"]
    );
    assert_eq!(
        header(&h, "Message-ID"),
        vec![format!("<{}.1@example.com>", msg.delivery_id).as_str()]
    );
    assert!(header(&h, "Content-Type")[0].starts_with("multipart/alternative"));
    assert!(raw.contains("<p>Hello <b>Ann</b></p>"));
    // SMTP dot-stuffing is undone by the server: the lone dot line arrives intact.
    assert!(
        raw.contains("Hello Ann,\r\n.\r\nA line with only a dot above."),
        "{raw}"
    );

    // No unsubscribe URL (or one that is neither https nor mailto): no header.
    for data in [
        None,
        Some(serde_json::json!({ "unsubscribe_url": "javascript:alert(1)" })),
    ] {
        let r = email
            .send(&message("ann@example.com", "Receipt", data))
            .await;
        assert_eq!(r.outcome, Outcome::Sent, "{:?}", r.error);
    }
    let mails = sink.mails();
    assert_eq!(mails.len(), 3);
    for m in &mails[1..] {
        let h = headers(&m.text());
        assert_eq!(header(&h, "Subject"), vec!["Receipt"]);
        assert!(header(&h, "List-Unsubscribe").is_empty());
        assert!(header(&h, "List-Unsubscribe-Post").is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_injection_is_impossible() {
    let sink = SmtpSink::start(0, None).unwrap();
    let email = provider(sink.url(), None);

    // CR/LF in the address: not one mailbox, so nothing is sent.
    let r = email
        .send(&message(
            "ann@example.com\r\nBcc: evil@attacker.example",
            "Hi",
            None,
        ))
        .await;
    assert_eq!(r.outcome, Outcome::InvalidAddress);
    assert!(sink.mails().is_empty());

    // CR/LF in the subject and in the unsubscribe URL: neutralised, one recipient, no Bcc.
    let r = email
        .send(&message(
            "ann@example.com",
            "Hi\r\nBcc: evil@attacker.example\r\n\r\nforged body",
            Some(serde_json::json!({
                "unsubscribe_url": "https://example.com/u\r\nBcc: evil2@attacker.example"
            })),
        ))
        .await;
    assert_eq!(r.outcome, Outcome::Sent, "{:?}", r.error);
    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, vec!["ann@example.com".to_owned()]);
    let raw = mails[0].text();
    let h = headers(&raw);
    assert!(header(&h, "Bcc").is_empty(), "{raw}");
    assert_eq!(header(&h, "Subject").len(), 1);
    assert!(!raw.contains("\r\nforged body"), "{raw}");
    assert!(!raw.to_lowercase().contains("evil@attacker.example\r\n\r\n"));
    let unsub = header(&h, "List-Unsubscribe");
    assert_eq!(unsub.len(), 1);
    assert!(!unsub[0].contains('\r') && !unsub[0].contains('\n'));
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../tools/devkit/fixtures/{name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_authentication() {
    let sink = SmtpSink::start_with(
        0,
        None,
        SinkOptions {
            tls: Some((fixture("smtp_cert.pem"), fixture("smtp_key.pem"))),
            credentials: Some(("notify".into(), "s3cret".into())),
            ..SinkOptions::default()
        },
    )
    .unwrap();
    let port = sink.addr().port();
    let ca = Some(fixture("smtp_ca.pem"));

    let email = provider(
        format!("smtp://notify:s3cret@localhost:{port}?tls=required"),
        ca.clone(),
    );
    let r = email
        .send(&message("ann@example.com", "Over TLS", None))
        .await;
    assert_eq!(r.outcome, Outcome::Sent, "{:?}", r.error);
    assert_eq!(sink.mails().len(), 1);

    // A wrong password is a permanent failure the admin sees (535), not a silent drop.
    let wrong = provider(
        format!("smtp://notify:nope@localhost:{port}?tls=required"),
        ca.clone(),
    );
    let r = wrong
        .send(&message("ann@example.com", "Over TLS", None))
        .await;
    assert_eq!(
        (r.outcome, r.error.unwrap().code.as_str()),
        (Outcome::PermanentFailure, "smtp_535")
    );
    // Without trusting the test CA the certificate is refused: transient (could be fixed).
    let untrusted = provider(
        format!("smtp://notify:s3cret@localhost:{port}?tls=required"),
        None,
    );
    let r = untrusted
        .send(&message("ann@example.com", "Over TLS", None))
        .await;
    assert_ne!(r.outcome, Outcome::Sent);
    assert_eq!(sink.mails().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls() {
    // TLS from the first byte (`smtps://`, port 465 style). The sink terminates TLS in front of
    // the SMTP server, which then cannot offer AUTH (mailin offers it only on its own TLS);
    // authentication over TLS is covered by the STARTTLS test.
    let sink = SmtpSink::start_with(
        0,
        None,
        SinkOptions {
            implicit_tls: Some((fixture("smtp_cert.pem"), fixture("smtp_key.pem"))),
            ..SinkOptions::default()
        },
    )
    .unwrap();
    let port = sink.addr().port();

    let email = provider(
        format!("smtps://localhost:{port}"),
        Some(fixture("smtp_ca.pem")),
    );
    let r = email
        .send(&message("ann@example.com", "Over implicit TLS", None))
        .await;
    assert_eq!(r.outcome, Outcome::Sent, "{:?}", r.error);
    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, vec!["ann@example.com".to_owned()]);
    assert!(mails[0].text().contains("Subject: Over implicit TLS"));

    // Plain SMTP to the TLS port, or a certificate not trusted: nothing is sent.
    for (url, ca) in [
        (format!("smtp://localhost:{port}"), None),
        (format!("smtps://localhost:{port}"), None),
    ] {
        let r = provider(url.clone(), ca)
            .send(&message("ann@example.com", "Not sent", None))
            .await;
        assert_ne!(r.outcome, Outcome::Sent, "{url}");
    }
    assert_eq!(sink.mails().len(), 1, "nothing else arrived");
}

#[tokio::test]
async fn smtp_urls_and_tls_settings_are_checked_at_start() {
    let cfg = |url: &str, ca: Option<PathBuf>| EmailConfig {
        smtp_url: url.into(),
        tls_ca_path: ca,
        ..EmailConfig::default()
    };
    for ok in [
        "smtp://127.0.0.1:2525",
        "smtp://user:pass@smtp.example.com:587?tls=required",
        "smtps://user:pass@smtp.example.com:465",
    ] {
        assert!(EmailProvider::new(&cfg(ok, None)).is_ok(), "{ok}");
    }
    let err = |c| EmailProvider::new(&c).err().unwrap().to_string();
    assert!(err(cfg("http://example.com", None)).contains("email.smtp_url"));
    assert!(
        err(cfg("smtp://localhost:25", Some(fixture("smtp_ca.pem")))).contains("needs a TLS URL")
    );
    assert!(
        err(cfg("smtps://localhost:465", Some(fixture("missing.pem"))))
            .contains("email.tls_ca_path")
    );
}
