//! What the services enforce, said in the OpenAPI document.
//!
//! utoipa's derive describes a type's shape; the rules beyond it — exactly one recipient kind,
//! `template` or `content`, closed sets of names, the forms of cursors and durations, no NUL
//! anywhere — are added here, once, to the document the bff serves ([`refine`]). Each pattern is
//! a constant the service checks with ([`Rule::is_match`]) or a parser of `common::address`
//! the tests below hold equal to it, so the document and the check cannot drift apart.
//!
//! A few rules are not JSON Schema: they are named formats the document explains (`phone`: E.164
//! that libphonenumber accepts; `time-zone`: an IANA zone; `send-at`: an RFC 3339 instant at
//! most a year ahead). A tool that does not know a format treats it as any string.

use std::sync::LazyLock;

use common::events::Channel;
use serde_json::{Value, json};

/// A regular expression the document carries and the service checks with.
pub struct Rule {
    pub pattern: &'static str,
    re: LazyLock<regex::Regex>,
}

macro_rules! rule {
    ($(#[$doc:meta])* $name:ident = $pattern:literal) => {
        $(#[$doc])*
        pub static $name: Rule = Rule {
            pattern: $pattern,
            re: LazyLock::new(|| regex::Regex::new($pattern).expect("a valid pattern")),
        };
    };
}

impl Rule {
    pub fn is_match(&self, s: &str) -> bool {
        self.re.is_match(s)
    }
}

rule!(
    /// Any text without a NUL (no store here keeps one): every string with no other rule.
    NO_NUL = r"^[^\x00]*$"
);
rule!(
    /// A cursor of a list ordered by time and id: `<microseconds>_<uuid>` (empty: the first
    /// page).
    PAGE_CURSOR = r"^([0-9]{1,17}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})?$"
);
rule!(
    /// A cursor of the attempts feed: `<microseconds>_<delivery uuid>_<attempt>`.
    FEED_CURSOR = r"^([0-9]{1,17}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}_[0-9]{1,9})?$"
);
rule!(
    /// A cursor of an inbox: the last item's `seq` (empty: the first page).
    INBOX_CURSOR = r"^([1-9][0-9]{0,17})?$"
);
rule!(
    /// A cursor of the skipped events: `<microseconds>_<id>`.
    SKIPPED_CURSOR = r"^([0-9]{1,17}_[0-9]{1,18})?$"
);
rule!(
    /// A cursor of one notification's deliveries: the last delivery's id.
    DELIVERY_CURSOR = r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})?$"
);
rule!(
    /// A length of time for stats: a number and `s`, `m`, `h` or `d`, from 1 s to 31 days.
    DURATION = r"^([1-9][0-9]{0,5}s|1[0-9]{6}s|2[0-5][0-9]{5}s|26[0-6][0-9]{4}s|267[0-7][0-9]{3}s|2678[0-3][0-9]{2}s|2678400s|[1-9][0-9]{0,3}m|[1-3][0-9]{4}m|4[0-3][0-9]{3}m|44[0-5][0-9]{2}m|446[0-3][0-9]m|44640m|[1-9][0-9]?h|[1-6][0-9]{2}h|7[0-3][0-9]h|74[0-4]h|[1-9]d|[12][0-9]d|3[01]d)$"
);
rule!(
    /// A digest's window: a number and `s`, `m`, `h` or `d`, from 1 s to 7 days.
    DIGEST_WINDOW = r"^([1-9][0-9]{0,4}s|[1-5][0-9]{5}s|60[0-3][0-9]{3}s|604[0-7][0-9]{2}s|604800s|[1-9][0-9]{0,3}m|100[0-7][0-9]m|10080m|[1-9][0-9]?h|1[0-5][0-9]h|16[0-8]h|[1-7]d)$"
);
rule!(
    /// A digest key: 1 to 128 visible ASCII characters.
    DIGEST_KEY = r"^[!-~]{1,128}$"
);

/// The seconds of a length of time a rule took (`1s`, `15m`, `2h`, `7d`); `None` when `rule`
/// refuses it.
pub fn seconds(rule: &Rule, w: &str) -> Option<i64> {
    if !rule.is_match(w) {
        return None;
    }
    let unit = w.chars().last()?;
    let n: i64 = w[..w.len() - unit.len_utf8()].parse().ok()?;
    match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3600),
        'd' => n.checked_mul(86_400),
        _ => None,
    }
}

rule!(
    /// A BCP 47 language tag, loosely (`common::address::parse_locale`).
    LOCALE = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$"
);
rule!(
    /// A category or template name (`common::address::parse_name`).
    NAME = r"^[a-z0-9_.-]{1,64}$"
);
rule!(
    /// A cursor of the topics: the last topic's key (empty: the first page).
    NAME_CURSOR = r"^([a-z0-9_.-]{1,64})?$"
);
rule!(
    /// A display name: not blank, no control characters (a topic's name).
    DISPLAY_NAME = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
);
rule!(
    /// A time of day, `HH:MM`.
    CLOCK = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
);
rule!(
    /// A Telegram chat id (`common::address::parse_telegram_chat_id`).
    TELEGRAM_CHAT = r"^(-[0-9]{1,31}|[0-9]{1,32})$"
);
rule!(
    /// An APNs device token (`common::address::check_push_token`).
    APNS_TOKEN = r"^[0-9A-Fa-f]{1,400}$"
);
rule!(
    /// An FCM registration token: printable ASCII.
    FCM_TOKEN = r"^[!-~]{1,4096}$"
);
rule!(
    /// Content text: something other than (ASCII) white space.
    NOT_BLANK = r"^[^\x00]*[^\x00\t\n\x0c\r ][^\x00]*$"
);
rule!(
    /// An idempotency key: 1 to 255 visible ASCII characters.
    IDEMPOTENCY_KEY = r"^[!-~]{1,255}$"
);
rule!(
    /// One line (a subject).
    ONE_LINE = r"^[^\x00\r\n]*$"
);

/// The longest address a search takes (`recipient`, `address`): an email address is at most
/// 254 characters, a webhook URL is longer, none of the stored ones longer than this is useful
/// to search for, and the query string stays within what nginx takes in a request line.
pub const MAX_ADDRESS_CHARS: usize = 320;

/// Delivery statuses (`delivery::Status`), for the list filters.
pub const STATUSES: [&str; 12] = [
    "pending",
    "queued",
    "sending",
    "sent",
    "retrying",
    "dead",
    "suppressed",
    "cancelled",
    "expired",
    "delivered",
    "undelivered",
    "digested",
];

fn channels() -> Value {
    json!(Channel::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>())
}

/// `{type: [string, null]}` with `extra` merged in.
fn nullable_string(extra: Value) -> Value {
    let mut s = json!({ "type": ["string", "null"] });
    merge(&mut s, extra);
    s
}

/// A property of type `["string", "null"]` with a named format as `anyOf` a formatted string
/// or null: the format is about the string only. (A fuzzer told only the union and a format
/// it cannot check takes `null` for a value that breaks the format — schemathesis did, seed
/// 583876091 — and calls the service wrong for accepting it.)
fn format_or_null(prop: &mut Value) {
    // Strings only: a number's `format` (`int64`, `double`) is about its width.
    let nullable_string = prop["type"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t == "null") && t.iter().any(|t| t == "string"));
    if !nullable_string {
        return;
    }
    let mut string = prop.clone();
    string["type"] = json!("string");
    let mut split = json!({ "anyOf": [string, { "type": "null" }] });
    for k in ["description", "example", "examples"] {
        if let Some(v) = prop.get(k) {
            split[k] = v.clone();
        }
    }
    *prop = split;
}

/// [`format_or_null`] on every schema of the document: a nullable string with a format,
/// wherever a rule put one (a null email was taken for a broken format in CI too).
fn formats_or_null(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.contains_key("format") {
                format_or_null(v);
                return;
            }
            for (k, child) in m.iter_mut() {
                if k != "example" && k != "examples" && k != "description" {
                    formats_or_null(child);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(formats_or_null),
        _ => {}
    }
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        for (k, v) in from {
            into.insert(k, v);
        }
    }
}

/// Exactly one of `fields` is present and not null (each branch names its field's type).
fn exactly_one(fields: &[(&str, Value)]) -> Value {
    Value::Array(
        fields
            .iter()
            .map(|(name, ty)| json!({ "required": [name], "properties": { (*name): ty } }))
            .collect(),
    )
}

/// Adds the services' rules to the document utoipa built (see the module's text).
pub fn refine(doc: &mut Value) {
    refine_parameters(doc);
    refine_schemas(doc);
    formats_or_null(doc);
    // Last: every string left without a rule refuses NUL, as every service does.
    no_nul(doc);
}

fn refine_parameters(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
                continue;
            };
            for p in params {
                if p["in"] != "query" {
                    continue;
                }
                let name = p["name"].as_str().unwrap_or_default().to_owned();
                let rule = match name.as_str() {
                    "status" if path == "/v1/me/inbox" => {
                        json!({ "enum": crate::inbox::STATUSES })
                    }
                    "cursor" if path == "/v1/me/inbox" => {
                        json!({ "pattern": INBOX_CURSOR.pattern })
                    }
                    "channel" => json!({ "enum": channels() }),
                    "status" => json!({ "enum": STATUSES }),
                    "error_code" | "provider" => json!({ "minLength": 1, "maxLength": 200 }),
                    "category" => json!({ "pattern": NAME.pattern }),
                    "recipient" | "address" => json!({ "maxLength": MAX_ADDRESS_CHARS }),
                    "window" | "bucket" => json!({ "pattern": DURATION.pattern }),
                    "cursor" => {
                        let rule = if path == "/v1/admin/attempts" {
                            &FEED_CURSOR
                        } else if path == "/v1/admin/topics" {
                            &NAME_CURSOR
                        } else if path == "/v1/admin/skipped-events" {
                            &SKIPPED_CURSOR
                        } else if path.ends_with("/deliveries") {
                            &DELIVERY_CURSOR
                        } else {
                            &PAGE_CURSOR
                        };
                        json!({ "pattern": rule.pattern })
                    }
                    _ => continue,
                };
                merge(&mut p["schema"], rule);
            }
        }
    }
}

fn refine_schemas(doc: &mut Value) {
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let channel_list = |min: u64, max: Option<u64>, unique: bool| {
        let mut v = json!({
            "type": ["array", "null"],
            "items": { "type": "string", "enum": channels() },
            "minItems": min,
        });
        if let Some(max) = max {
            v["maxItems"] = json!(max);
        }
        if unique {
            v["uniqueItems"] = json!(true);
        }
        v
    };
    if let Some(send) = schemas.get_mut("SendBody") {
        let props = &mut send["properties"];
        merge(&mut props["channels"], channel_list(1, None, false));
        merge(
            &mut props["fallback"],
            channel_list(2, Some(Channel::ALL.len() as u64), true),
        );
        merge(&mut props["ttl_seconds"], json!({ "maximum": 30 * 86_400 }));
        props["data"] = json!({
            "type": ["object", "null"],
            "description": "The template's variables (an object)."
        });
        merge(
            &mut props["send_at"],
            json!({
                "format": "send-at",
                "description": "Not before this instant (RFC 3339), at most a year ahead; a past one means now."
            }),
        );
        send["oneOf"] = exactly_one(&[
            ("template", json!({ "type": "string" })),
            ("content", json!({ "type": "object" })),
        ]);
        send["description"] = json!(
            "A notification to send: to 1..=1000 recipients, exactly one of `content` and a \
             `template` rendered with `data`."
        );
        // A digest goes out at its window's end: not with `send_at`, never urgent.
        send["not"] = json!({
            "anyOf": [
                {
                    "required": ["digest", "send_at"],
                    "properties": { "digest": { "type": "object" }, "send_at": { "type": "string" } }
                },
                {
                    "required": ["digest", "priority"],
                    "properties": { "digest": { "type": "object" }, "priority": { "const": "high" } }
                }
            ]
        });
    }
    if let Some(digest) = schemas.get_mut("DigestBody") {
        merge(
            &mut digest["properties"]["key"],
            json!({ "pattern": DIGEST_KEY.pattern }),
        );
        merge(
            &mut digest["properties"]["window"],
            json!({ "pattern": DIGEST_WINDOW.pattern }),
        );
    }
    if let Some(cap) = schemas.get_mut("CapBody") {
        merge(
            &mut cap["properties"]["window"],
            json!({ "pattern": DURATION.pattern }),
        );
    }
    if let Some(rules) = schemas.get_mut("CategoryRulesBody") {
        rules["properties"]["digest_window"] = nullable_string(json!({
            "pattern": DIGEST_WINDOW.pattern,
            "description": "Sends of this category without their own `digest` are digested with this window (key: the category). 1s to 7d."
        }));
    }
    // A batch item is a send body plus its own idempotency key.
    if let Some(send) = schemas.get("SendBody").cloned() {
        let mut item = send;
        item["properties"]["idempotency_key"] = json!({
            "type": ["string", "null"],
            "pattern": IDEMPOTENCY_KEY.pattern,
            "description": "Same key and item within 24 h: the first answer again (status 200); a different item: 422."
        });
        item["description"] = json!(
            "One notification of a batch: the body of a single send, plus its own optional \
             `idempotency_key`."
        );
        schemas.insert("BatchItem".into(), item);
        // Any value is taken: an item that is not a valid `BatchItem` is answered in its own
        // result (422), it never refuses the batch — so the request's schema cannot refuse it.
        if let Some(batch) = schemas.get_mut("BatchRequest") {
            batch["properties"]["notifications"]["items"] = json!({
                "description": "A `BatchItem` (the body of a single send plus its own \
                    `idempotency_key`), validated like a single send: an item that is not one \
                    gets its own 422 result and the others go on."
            });
        }
    }
    if let Some(r) = schemas.get_mut("RecipientBody") {
        let device = json!({
            "type": "object",
            "required": ["platform", "token"],
            "properties": {
                "platform": { "enum": ["fcm", "apns"] },
                "token": { "type": "string" }
            }
        });
        let webhook = json!({
            "type": "object",
            "required": ["url"],
            "properties": { "url": { "type": "string" } }
        });
        let telegram = json!({
            "type": "object",
            "required": ["chat_id"],
            "properties": { "chat_id": { "type": ["string", "number"] } }
        });
        let props = &mut r["properties"];
        for (name, schema) in [
            ("device", &device),
            ("webhook", &webhook),
            ("telegram", &telegram),
        ] {
            let mut s = schema.clone();
            s["type"] = json!(["object", "null"]);
            merge(&mut props[name], s);
        }
        r["oneOf"] = exactly_one(&[
            ("user_id", json!({ "type": "string" })),
            ("email", json!({ "type": "string" })),
            ("phone", json!({ "type": "string" })),
            ("device", device),
            ("webhook", webhook),
            ("telegram", telegram),
            ("topic", json!({ "type": "string" })),
        ]);
        merge(
            &mut r["properties"]["topic"],
            json!({ "pattern": NAME.pattern }),
        );
        r["description"] = json!(
            "Exactly one of the fields is set. An address that is not usable (a malformed \
             email or phone, a bad push token or URL) is accepted and its delivery suppressed \
             with the reason."
        );
    }
    if let Some(c) = schemas.get_mut("ContentBody") {
        merge(
            &mut c["properties"]["text"],
            json!({ "pattern": NOT_BLANK.pattern, "maxLength": 100_000 }),
        );
        merge(
            &mut c["properties"]["subject"],
            json!({ "pattern": ONE_LINE.pattern, "maxLength": 998 }),
        );
        merge(
            &mut c["properties"]["html"],
            json!({ "maxLength": 200_000 }),
        );
    }
    if let Some(r) = schemas.get_mut("RedriveRequest") {
        r["oneOf"] = exactly_one(&[
            ("ids", json!({ "type": "array" })),
            ("filter", json!({ "type": "object" })),
        ]);
    }
    if let Some(f) = schemas.get_mut("RedriveFilter") {
        merge(
            &mut f["properties"]["channel"],
            nullable_string(
                json!({ "enum": channels().as_array().unwrap().iter().cloned().chain([Value::Null]).collect::<Vec<_>>() }),
            ),
        );
    }
    for name in ["RegisterUser", "ContactsBody"] {
        if let Some(s) = schemas.get_mut(name) {
            let props = &mut s["properties"];
            merge(
                &mut props["phone"],
                json!({ "format": "phone", "description": "E.164 (`+4930123456`), a number libphonenumber accepts." }),
            );
            merge(
                &mut props["email"],
                json!({ "format": "email", "maxLength": 254 }),
            );
            merge(
                &mut props["telegram_chat_id"],
                json!({ "pattern": TELEGRAM_CHAT.pattern }),
            );
            if props.get("locale").is_some() {
                merge(
                    &mut props["locale"],
                    json!({ "pattern": LOCALE.pattern, "maxLength": 35 }),
                );
            }
            if props.get("timezone").is_some() {
                merge(&mut props["timezone"], json!({ "format": "time-zone" }));
            }
        }
    }
    if let Some(p) = schemas.get_mut("PreferencesUpdate") {
        let props = &mut p["properties"];
        merge(
            &mut props["locale"],
            json!({ "pattern": LOCALE.pattern, "maxLength": 35 }),
        );
        props["channels"]["propertyNames"] = json!({ "enum": channels() });
        props["categories"]["propertyNames"] = json!({ "pattern": NAME.pattern });
        props["categories"]["additionalProperties"]["propertyNames"] =
            json!({ "enum": channels() });
    }
    if let Some(t) = schemas.get_mut("TopicBody") {
        merge(
            &mut t["properties"]["name"],
            json!({ "pattern": DISPLAY_NAME.pattern }),
        );
    }
    if let Some(k) = schemas.get_mut("TopicKeysBody") {
        merge(
            &mut k["properties"]["keys"]["items"],
            json!({ "pattern": NAME.pattern }),
        );
    }
    if let Some(q) = schemas.get_mut("QuietHoursBody") {
        let props = &mut q["properties"];
        merge(&mut props["start"], json!({ "pattern": CLOCK.pattern }));
        merge(&mut props["end"], json!({ "pattern": CLOCK.pattern }));
        merge(&mut props["timezone"], json!({ "format": "time-zone" }));
    }
    if let Some(d) = schemas.get_mut("DeviceRequest") {
        d["properties"]["platform"] = json!({ "type": "string", "enum": ["fcm", "apns"] });
        d["properties"]["token"] = json!({ "type": "string" });
        d["oneOf"] = json!([
            { "properties": { "platform": { "const": "fcm" }, "token": { "pattern": FCM_TOKEN.pattern } } },
            { "properties": { "platform": { "const": "apns" }, "token": { "pattern": APNS_TOKEN.pattern } } }
        ]);
    }
    if let Some(p) = schemas.get_mut("TemplatePreviewRequest") {
        merge(
            &mut p["properties"]["data"],
            json!({ "type": ["object", "null"] }),
        );
    }
    if let Some(t) = schemas.get_mut("TemplateBody") {
        merge(
            &mut t["properties"]["locales"],
            json!({ "minProperties": 1, "propertyNames": { "pattern": LOCALE.pattern, "maxLength": 35 } }),
        );
    }
}

/// Adds [`NO_NUL`] to every string schema without a pattern, format or set of values.
fn no_nul(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let is_string = match m.get("type") {
                Some(Value::String(t)) => t == "string",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
                _ => false,
            };
            let ruled = ["pattern", "format", "enum", "const"]
                .iter()
                .any(|k| m.contains_key(*k));
            if is_string && !ruled {
                m.insert("pattern".into(), json!(NO_NUL.pattern));
            }
            for (k, child) in m.iter_mut() {
                // Examples and descriptions are data, not schemas.
                if k != "example" && k != "examples" && k != "description" {
                    no_nul(child);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(no_nul),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document's patterns and the parsers of `common::address` agree.
    #[test]
    fn patterns_and_parsers_agree() {
        use common::address::{parse_locale, parse_name, parse_telegram_chat_id};
        let samples = [
            "",
            "en",
            "de-AT",
            "zh-Hant-TW",
            "e",
            "english",
            "en-",
            "-en",
            "en--at",
            "de-AT1234",
            "de-AT12345",
            "ab",
            "a1",
            "0",
            "-1",
            "12",
            "-",
            "+1",
            "1-2",
            "billing",
            "a.b-c_d",
            "Billing",
            "a b",
            "x".repeat(64).as_str(),
            "x".repeat(65).as_str(),
            "1".repeat(32).as_str(),
            "1".repeat(33).as_str(),
            format!("-{}", "1".repeat(31)).as_str(),
            format!("-{}", "1".repeat(32)).as_str(),
            "en-abcdefgh-abcdefgh-abcdefgh-abc",
            "en-abcdefgh-abcdefgh-abcdefgh-abcd",
        ]
        .map(str::to_owned);
        for s in &samples {
            assert_eq!(
                LOCALE.is_match(s) && s.len() <= 35,
                parse_locale(s).is_ok(),
                "locale {s:?}"
            );
            assert_eq!(NAME.is_match(s), parse_name(s).is_ok(), "name {s:?}");
            assert_eq!(
                TELEGRAM_CHAT.is_match(s),
                parse_telegram_chat_id(s).is_ok(),
                "chat {s:?}"
            );
        }
    }

    #[test]
    fn a_nullable_formatted_string_is_a_formatted_string_or_null() {
        let mut prop =
            json!({ "type": ["string", "null"], "format": "time-zone", "description": "zone" });
        format_or_null(&mut prop);
        assert_eq!(
            prop,
            json!({ "anyOf": [
                { "type": "string", "format": "time-zone", "description": "zone" },
                { "type": "null" }
            ], "description": "zone" })
        );
        let mut doc = json!({ "components": { "schemas": { "RegisterUser": { "properties": {
            "email": { "type": ["string", "null"] },
            "send_at": { "type": ["string", "null"], "format": "date-time" },
            "p50": { "type": ["number", "null"], "format": "double" }
        } } } } });
        refine(&mut doc);
        let props = &doc["components"]["schemas"]["RegisterUser"]["properties"];
        for p in ["email", "send_at"] {
            assert_eq!(
                props[p]["anyOf"][1],
                json!({ "type": "null" }),
                "{p}: {props}"
            );
            assert!(props[p]["anyOf"][0]["format"].is_string(), "{p}: {props}");
        }
        assert_eq!(
            props["p50"],
            json!({ "type": ["number", "null"], "format": "double" })
        );
        let mut required = json!({ "type": "string", "format": "time-zone" });
        format_or_null(&mut required);
        assert_eq!(required, json!({ "type": "string", "format": "time-zone" }));
    }

    #[test]
    fn durations_are_one_second_to_31_days() {
        for ok in [
            "1s", "2678400s", "44640m", "744h", "31d", "1h", "15m", "999999s",
        ] {
            assert!(DURATION.is_match(ok), "{ok}");
        }
        for bad in [
            "0s", "2678401s", "44641m", "745h", "32d", "01h", "+1h", "1w", "h", "",
        ] {
            assert!(!DURATION.is_match(bad), "{bad}");
        }
        // Every count of each unit up to its bound, and none above.
        for (unit, secs) in [("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)] {
            let max = 31 * 86_400 / secs;
            for n in [1, 9, 10, 99, 100, max - 1, max, max + 1, max * 10] {
                assert_eq!(
                    DURATION.is_match(&format!("{n}{unit}")),
                    n <= max,
                    "{n}{unit}"
                );
            }
        }
    }

    #[test]
    fn digest_windows_are_one_second_to_7_days() {
        for (unit, secs) in [("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)] {
            let max = 7 * 86_400 / secs;
            for n in [1, 9, 10, 99, 100, max - 1, max, max + 1, max * 10] {
                let w = format!("{n}{unit}");
                assert_eq!(DIGEST_WINDOW.is_match(&w), n <= max, "{w}");
                assert_eq!(
                    seconds(&DIGEST_WINDOW, &w),
                    (n <= max).then_some(n * secs),
                    "{w}"
                );
            }
        }
        for bad in ["0s", "01m", "1w", "", "8d"] {
            assert_eq!(seconds(&DIGEST_WINDOW, bad), None, "{bad}");
        }
        assert_eq!(seconds(&DURATION, "31d"), Some(31 * 86_400));
    }

    #[test]
    fn strings_without_a_rule_refuse_nul() {
        let mut doc = json!({ "a": { "type": "string" }, "b": { "type": ["string", "null"], "pattern": "x" }, "c": { "type": "string", "example": { "type": "string" } } });
        no_nul(&mut doc);
        assert_eq!(doc["a"]["pattern"], NO_NUL.pattern);
        assert_eq!(doc["b"]["pattern"], "x");
        assert!(doc["c"]["example"].get("pattern").is_none());
    }
}
