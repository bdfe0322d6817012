//! Digests at intake and at their close's rendering (decision 0030): which deliveries of a
//! send are folded ([`mark`], [`with_default`]), and how a digest's items read ([`render`]:
//! the template's digest form or the built-in list). Intake calls these; the close itself is
//! `crate::digest`.

use api::admin::Locales;
use common::{
    events::{Content, Lane},
    problem::ApiError,
};
use serde_json::json;

use crate::{
    AppState,
    db::digests::{Digest, Item},
    planning::{PlannedDelivery, PlannedStatus},
    request::{DigestSpec, SendRequest},
};

/// The items a digest renders (its `count` is all of them; `last` is the last one).
pub const MAX_RENDERED_ITEMS: i64 = 100;
/// The most of one item's text the built-in form lists.
const BUILT_IN_ITEM_CHARS: usize = 500;

/// A send without its own `digest` takes its category's default window (key: the category),
/// unless it is urgent or scheduled.
pub async fn with_default(state: &AppState, req: &mut SendRequest) -> Result<(), ApiError> {
    if req.digest.is_some()
        || req.send_at.is_some()
        || crate::planning::lane(req, &state.planning) == Lane::Urgent
    {
        return Ok(());
    }
    let rules = state.rules.get().await?;
    if let Some(window_seconds) = rules
        .get(&req.category)
        .and_then(|r| r.digest_window_seconds)
    {
        req.digest = Some(DigestSpec {
            key: req.category.clone(),
            window_seconds,
        });
    }
    Ok(())
}

/// Plans `digested` the deliveries of a digest send that would go out; urgent ones never.
pub fn mark(req: &SendRequest, deliveries: &mut [PlannedDelivery]) {
    if req.digest.is_none() {
        return;
    }
    for d in deliveries {
        if d.lane == Lane::Bulk
            && matches!(d.status, PlannedStatus::Queued | PlannedStatus::Pending)
        {
            d.status = PlannedStatus::Digested;
            d.available_at = None;
        }
    }
}

/// What a digest is rendered from: its row, its first items and their count.
pub struct Folded<'a> {
    pub digest: &'a Digest,
    pub items: &'a [Item],
    /// The last item when it is not among `items`.
    pub last: Option<&'a Item>,
    pub total: i64,
    /// The first item's template (its digest form), when it has one.
    pub template: Option<&'a Locales>,
}

/// Renders the digest into `req` in the locales of `deliveries` (as templates are rendered
/// for a send). A digest form that does not render is a 422 naming `template`.
pub fn render(
    req: &mut SendRequest,
    deliveries: &[PlannedDelivery],
    folded: &Folded<'_>,
    default_locale: &str,
) -> Result<(), ApiError> {
    let one = |locale: Option<&str>| -> Result<Content, ApiError> {
        let form = folded.template.and_then(|t| {
            crate::templates::pick(t, locale, default_locale)
                .and_then(|(chosen, v)| v.digest.as_ref().map(|f| (chosen, f)))
        });
        let mut content = match form {
            Some((chosen, form)) => {
                let ctx = context(folded, locale);
                crate::templates::render_digest(form, &ctx).map_err(|e| {
                    ApiError::invalid_field(
                        "template",
                        format!(
                            "the digest form of template `{}` ({chosen}): {e}",
                            folded.digest.template.as_deref().unwrap_or_default()
                        ),
                    )
                })?
            }
            None => built_in(folded, locale),
        };
        content.data = Some(json!({
            "digest": {
                "id": folded.digest.id,
                "key": folded.digest.key,
                "count": folded.total,
            }
        }));
        Ok(content)
    };
    let locales = crate::planning::locales_to_render(deliveries);
    crate::templates::render_in(req, &locales, one)
}

/// What a template's digest form sees: `count`, `items` (each `{subject, text, data}`, the
/// first [`MAX_RENDERED_ITEMS`]), `first`, `last`, `more` (items not in `items`), `key`.
fn context(folded: &Folded<'_>, locale: Option<&str>) -> serde_json::Value {
    let item = |i: &Item| {
        let c = i.content_for(locale);
        json!({ "subject": c.subject, "text": c.text, "data": c.data, "created_at": i.created_at })
    };
    let items: Vec<serde_json::Value> = folded.items.iter().map(item).collect();
    let last = folded
        .last
        .or(folded.items.last())
        .map(item)
        .unwrap_or_default();
    json!({
        "count": folded.total,
        "key": folded.digest.key,
        "first": items.first().cloned().unwrap_or_default(),
        "last": last,
        "more": (folded.total - items.len() as i64).max(0),
        "items": items,
    })
}

/// The built-in form (a `content` send): a digest of one is that item as it was; more are
/// listed in order, each item's subject and text, with the count.
fn built_in(folded: &Folded<'_>, locale: Option<&str>) -> Content {
    if folded.total == 1
        && let Some(only) = folded.items.first()
    {
        let mut c = only.content_for(locale).clone();
        c.data = None;
        return c;
    }
    let mut text = format!("{} notifications:\n", folded.total);
    for (n, i) in folded.items.iter().enumerate() {
        let c = i.content_for(locale);
        let body: String = c.text.chars().take(BUILT_IN_ITEM_CHARS).collect();
        let cut = if c.text.chars().count() > BUILT_IN_ITEM_CHARS {
            "…"
        } else {
            ""
        };
        match &c.subject {
            Some(s) => text.push_str(&format!("\n{}. {s}\n{body}{cut}\n", n + 1)),
            None => text.push_str(&format!("\n{}. {body}{cut}\n", n + 1)),
        }
    }
    let more = folded.total - folded.items.len() as i64;
    if more > 0 {
        text.push_str(&format!("\n… and {more} more.\n"));
    }
    let subject = folded
        .items
        .first()
        .and_then(|i| i.content_for(locale).subject.clone())
        .map(|first| {
            let s = format!("{first} (+{} more)", folded.total - 1);
            s.chars().take(crate::request::MAX_SUBJECT_CHARS).collect()
        })
        .or_else(|| Some(format!("{} notifications", folded.total)));
    Content {
        subject,
        text,
        html: None,
        data: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use uuid::Uuid;

    fn item(subject: Option<&str>, text: &str) -> Item {
        Item {
            notification_id: Uuid::now_v7(),
            delivery_id: Uuid::now_v7(),
            created_at: Utc::now(),
            locale: None,
            content: sqlx::types::Json(Content {
                subject: subject.map(Into::into),
                text: text.into(),
                html: None,
                data: None,
            }),
            localized: None,
        }
    }

    fn digest() -> Digest {
        Digest {
            id: Uuid::now_v7(),
            created_by: "svc".into(),
            channel: "email".into(),
            user_id: None,
            recipient: json!({ "email": "a@b.co" }),
            key: "comments".into(),
            category: "social".into(),
            template: None,
            window_seconds: 60,
            opened_at: Utc::now(),
            closes_at: Utc::now(),
            items: 1,
            state: "closing".into(),
        }
    }

    #[test]
    fn the_built_in_form_lists_every_item_in_order_with_the_count() {
        let d = digest();
        let items = vec![item(Some("First"), "one"), item(None, "two")];
        let folded = Folded {
            digest: &d,
            items: &items,
            last: None,
            total: 3,
            template: None,
        };
        let c = built_in(&folded, None);
        assert_eq!(c.subject.as_deref(), Some("First (+2 more)"));
        assert_eq!(
            c.text,
            "3 notifications:\n\n1. First\none\n\n2. two\n\n… and 1 more.\n"
        );
        let one = Folded {
            total: 1,
            items: &items[..1],
            ..folded
        };
        assert_eq!(built_in(&one, None).text, "one");
    }

    #[test]
    fn a_template_digest_form_sees_count_items_first_and_last() {
        let d = digest();
        let items = vec![item(Some("A"), "a"), item(Some("B"), "b")];
        let last = item(Some("Z"), "z");
        let folded = Folded {
            digest: &d,
            items: &items,
            last: Some(&last),
            total: 5,
            template: None,
        };
        let ctx = context(&folded, None);
        assert_eq!(ctx["count"], 5);
        assert_eq!(ctx["first"]["subject"], "A");
        assert_eq!(ctx["last"]["subject"], "Z");
        assert_eq!(ctx["more"], 3);
        assert_eq!(ctx["items"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn only_bulk_deliveries_that_would_go_out_are_digested() {
        let mut req = crate::request::tests_support::request("social");
        let d = |lane, status| PlannedDelivery {
            id: Uuid::now_v7(),
            channel: common::events::Channel::Email,
            lane,
            user_id: None,
            recipient: json!({}),
            address: Some("a@b.co".into()),
            status,
            reason: None,
            locale: None,
            available_at: None,
        };
        let mut ds = vec![
            d(Lane::Bulk, PlannedStatus::Queued),
            d(Lane::Bulk, PlannedStatus::Pending),
            d(Lane::Bulk, PlannedStatus::Suppressed),
            d(Lane::Urgent, PlannedStatus::Queued),
        ];
        mark(&req, &mut ds);
        assert!(ds.iter().all(|d| d.status != PlannedStatus::Digested));
        req.digest = Some(DigestSpec {
            key: "k".into(),
            window_seconds: 60,
        });
        mark(&req, &mut ds);
        let statuses: Vec<_> = ds.iter().map(|d| d.status).collect();
        assert_eq!(
            statuses,
            [
                PlannedStatus::Digested,
                PlannedStatus::Digested,
                PlannedStatus::Suppressed,
                PlannedStatus::Queued
            ]
        );
    }
}
