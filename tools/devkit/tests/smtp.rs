//! The catcher speaks SMTP to a real client (lettre) and fails on request.

use std::time::Duration;

use devkit::smtp::{Mode, SmtpSink};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

fn mail(n: u32) -> Message {
    Message::builder()
        .from("a@example.com".parse().unwrap())
        .to("b@example.com".parse().unwrap())
        .subject(format!("n{n}"))
        .body(format!("body {n}"))
        .unwrap()
}

#[tokio::test]
async fn accepts_then_fails_as_told() {
    let sink = SmtpSink::start(0, None).unwrap();
    let t = AsyncSmtpTransport::<Tokio1Executor>::from_url(&sink.url())
        .unwrap()
        .timeout(Some(Duration::from_secs(3)))
        .build();
    t.send(mail(1)).await.unwrap();
    sink.set_mode(Mode::FailTransient(1));
    let err = t.send(mail(2)).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    t.send(mail(3)).await.unwrap();
    sink.set_mode(Mode::RejectAll);
    let err = t.send(mail(4)).await.unwrap_err();
    assert!(err.is_permanent(), "{err}");
    let got: Vec<_> = sink
        .mails()
        .iter()
        .map(|m| m.text().contains("body 3") || m.text().contains("body 1"))
        .collect();
    assert_eq!(got, vec![true, true]);
    assert_eq!(sink.attempts(), 4);
}
