//! `notifyctl send`: one notification from flags (or a request body from a file), printed as
//! its deliveries; `--wait` follows it until every delivery has settled. `--file` sends many
//! (`send_file`).

use std::path::PathBuf;

use api::notifications::NotificationView;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{As, Target, status};

#[derive(clap::Args, Debug, Clone)]
pub struct SendArgs {
    /// A registered user (their contacts and preferences decide the channels). Repeatable.
    #[arg(long = "user")]
    pub users: Vec<Uuid>,
    /// An email address. Repeatable.
    #[arg(long = "email")]
    pub emails: Vec<String>,
    /// A phone number in E.164 (SMS). Repeatable.
    #[arg(long = "phone")]
    pub phones: Vec<String>,
    /// A webhook URL. Repeatable.
    #[arg(long = "webhook")]
    pub webhooks: Vec<String>,
    #[arg(long, default_value = "ops")]
    pub category: String,
    /// `high` or `normal`.
    #[arg(long)]
    pub priority: Option<String>,
    /// Only these channels (comma-separated), e.g. `email,sms`.
    #[arg(long, value_delimiter = ',')]
    pub channels: Vec<String>,
    #[arg(long)]
    pub subject: Option<String>,
    /// The text (or give --template).
    #[arg(long)]
    pub text: Option<String>,
    /// A stored template's name, rendered with --data.
    #[arg(long, conflicts_with = "text")]
    pub template: Option<String>,
    /// The template's data, a JSON object.
    #[arg(long, value_parser = parse_object)]
    pub data: Option<Value>,
    /// The whole request body from a file (`-` for standard input) instead of the flags above.
    #[arg(long, conflicts_with_all = ["users", "emails", "phones", "webhooks", "text", "template"])]
    pub body: Option<PathBuf>,
    /// JSON Lines: one send body per line, each with its own optional `idempotency_key`, sent
    /// through the batch route with a progress bar (`-` for standard input).
    #[arg(long, conflicts_with_all = ["users", "emails", "phones", "webhooks", "text", "template", "body", "idempotency_key", "wait"])]
    pub file: Option<PathBuf>,
    /// With --file: at most this many notifications per request (1 to 1,000).
    #[arg(long, default_value_t = 100, requires = "file")]
    pub batch_size: usize,
    /// Sent as `Idempotency-Key`: sending again with it answers the first notification.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Follow the notification until every delivery has settled (exit 1 if any failed).
    #[arg(long)]
    pub wait: bool,
    /// Stop waiting after this many seconds (exit 1).
    #[arg(long, requires = "wait")]
    pub timeout: Option<u64>,
    #[command(flatten)]
    pub target: Target,
}

fn parse_object(s: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(s) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("must be a JSON object".into()),
        Err(e) => Err(format!("is not JSON: {e}")),
    }
}

/// The request body the flags describe.
pub fn body(args: &SendArgs) -> anyhow::Result<Value> {
    if let Some(path) = &args.body {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())?
        } else {
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        };
        return serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", path.display()));
    }
    let mut recipients: Vec<Value> = Vec::new();
    recipients.extend(args.users.iter().map(|u| json!({ "user_id": u })));
    recipients.extend(args.emails.iter().map(|e| json!({ "email": e })));
    recipients.extend(args.phones.iter().map(|p| json!({ "phone": p })));
    recipients.extend(
        args.webhooks
            .iter()
            .map(|w| json!({ "webhook": { "url": w } })),
    );
    anyhow::ensure!(
        !recipients.is_empty(),
        "give a recipient: --user, --email, --phone or --webhook (or --body)"
    );
    let mut body = json!({ "recipients": recipients, "category": args.category });
    if let Some(t) = &args.template {
        body["template"] = json!(t);
        body["data"] = args.data.clone().unwrap_or_else(|| json!({}));
    } else {
        let Some(text) = &args.text else {
            anyhow::bail!("give --text or --template");
        };
        body["content"] = json!({ "text": text });
        if let Some(s) = &args.subject {
            body["content"]["subject"] = json!(s);
        }
    }
    if let Some(p) = &args.priority {
        body["priority"] = json!(p);
    }
    if !args.channels.is_empty() {
        body["channels"] = json!(args.channels);
    }
    Ok(body)
}

pub fn run(args: &SendArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.file {
        return super::send_file::run(path, args.batch_size, &args.target);
    }
    let body = body(args)?;
    let client = args.target.client(As::Service)?;
    super::block_on(async {
        let headers: Vec<(&str, &str)> = args
            .idempotency_key
            .as_deref()
            .map(|k| ("idempotency-key", k))
            .into_iter()
            .collect();
        let (view, request_id): (NotificationView, _) =
            client.post("/v1/notifications", &body, &headers).await?;
        if let Some(r) = request_id.filter(|_| !args.target.json) {
            // The id every log line and the trace carry (Jaeger: tag `request_id`).
            println!("request {r}");
        }
        if args.wait {
            return status::follow(&client, view.id, args.target.json, args.timeout).await;
        }
        if args.target.json {
            println!("{}", serde_json::to_string_pretty(&view)?);
        } else {
            print!("{}", status::render(&view));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        send: SendArgs,
    }

    fn parse(args: &[&str]) -> Result<Value, String> {
        let cli = Cli::try_parse_from(std::iter::once("send").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        body(&cli.send).map_err(|e| e.to_string())
    }

    #[test]
    fn flags_make_the_body_the_api_takes() {
        let b = parse(&[
            "--email",
            "a@example.com",
            "--phone",
            "+15550100",
            "--text",
            "hi",
            "--subject",
            "s",
            "--channels",
            "email,sms",
            "--priority",
            "high",
        ])
        .unwrap();
        assert_eq!(
            b,
            json!({
                "recipients": [{ "email": "a@example.com" }, { "phone": "+15550100" }],
                "category": "ops",
                "content": { "text": "hi", "subject": "s" },
                "channels": ["email", "sms"],
                "priority": "high",
            })
        );
        let b = parse(&[
            "--email",
            "a@example.com",
            "--template",
            "welcome",
            "--data",
            r#"{"n":1}"#,
        ])
        .unwrap();
        assert_eq!(b["template"], "welcome");
        assert_eq!(b["data"], json!({ "n": 1 }));
    }

    #[test]
    fn a_body_without_recipient_or_text_is_refused_before_any_request() {
        assert!(
            parse(&["--text", "hi"])
                .unwrap_err()
                .contains("give a recipient")
        );
        assert!(
            parse(&["--email", "a@example.com"])
                .unwrap_err()
                .contains("--text")
        );
        assert!(
            parse(&["--email", "a@example.com", "--data", "[1]"])
                .unwrap_err()
                .contains("JSON object")
        );
        assert!(parse(&["--email", "a@example.com", "--text", "x", "--template", "t"]).is_err());
    }
}
