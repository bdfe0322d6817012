//! The dispatch message of a delivery and the outbox row that carries it — built here for
//! every writer (intake, retries, re-drives) — and a delivery read under its row lock.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::status::Status;
use uuid::Uuid;

use common::{
    events::{
        Channel, Content, DispatchMessage, Lane, Priority, RecipientRef, SCHEMA, dispatch_topic,
    },
    outbox::{self, OutboxMessage},
};

/// The outbox row that carries a dispatch message: its lane's topic, keyed by `key`, with the
/// delivery and attempt in headers, urgent-lane rows published ahead of bulk ones. Every
/// writer of a dispatch (intake, retries, re-drives) builds it here.
pub fn dispatch_row(
    msg: &DispatchMessage,
    key: impl Into<String>,
) -> anyhow::Result<OutboxMessage> {
    row_of(msg, msg, key)
}

/// The row of `msg` whose payload is `payload` (the message, or the message without its
/// content).
fn row_of(
    msg: &DispatchMessage,
    payload: &impl serde::Serialize,
    key: impl Into<String>,
) -> anyhow::Result<OutboxMessage> {
    Ok(
        OutboxMessage::new(dispatch_topic(msg.channel, msg.lane), key, payload)?
            .header("delivery-id", msg.delivery_id)
            .header("attempt", msg.attempt)
            .urgent(msg.lane == Lane::Urgent),
    )
}

/// A dispatch message serialised without its `content` (every other field as
/// [`DispatchMessage`] writes it; the round trip through [`fill_content`] is tested).
struct WithoutContent<'a>(&'a DispatchMessage);

impl serde::Serialize for WithoutContent<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let m = self.0;
        let mut st = s.serialize_struct("DispatchMessage", 10)?;
        st.serialize_field("schema", &m.schema)?;
        st.serialize_field("delivery_id", &m.delivery_id)?;
        st.serialize_field("notification_id", &m.notification_id)?;
        st.serialize_field("attempt", &m.attempt)?;
        st.serialize_field("channel", &m.channel)?;
        st.serialize_field("lane", &m.lane)?;
        st.serialize_field("recipient", &m.recipient)?;
        if let Some(locale) = &m.locale {
            st.serialize_field("locale", locale)?;
        }
        if let Some(not_after) = &m.not_after {
            st.serialize_field("not_after", not_after)?;
        }
        st.serialize_field("created_at", &m.created_at)?;
        st.end()
    }
}

/// Everything a dispatch message is made of. The one builder of [`DispatchMessage`]: intake
/// (attempt 1, from the request) and every later attempt (from the stored rows) fill it in.
pub struct DispatchParts<'a> {
    pub delivery_id: Uuid,
    pub notification_id: Uuid,
    pub attempt: u32,
    pub channel: Channel,
    pub lane: Lane,
    pub user_id: Option<Uuid>,
    pub address: Option<&'a str>,
    pub locale: Option<&'a str>,
    pub content: &'a Content,
    /// Renderings per recipient locale (template notifications).
    pub localized: Option<&'a std::collections::BTreeMap<String, Content>>,
    pub created_at: DateTime<Utc>,
    pub send_at: Option<DateTime<Utc>>,
    pub ttl_seconds: Option<i64>,
}

/// The header of an outbox row whose payload leaves the content out
/// ([`DispatchParts::row_by_reference`]) …
pub const CONTENT_HEADER: &str = "content";
/// … and its value: the content is its notification's (`content`, or `localized` for the row's
/// locale), filled in by [`fill_content`] before the row is published.
pub const CONTENT_OF_NOTIFICATION: &str = "notification";

impl DispatchParts<'_> {
    pub fn message(&self) -> DispatchMessage {
        self.message_with(content_for(self.content, self.localized, self.locale).clone())
    }

    fn message_with(&self, content: Content) -> DispatchMessage {
        DispatchMessage {
            schema: SCHEMA,
            delivery_id: self.delivery_id,
            notification_id: self.notification_id,
            attempt: self.attempt,
            channel: self.channel,
            lane: self.lane,
            recipient: RecipientRef {
                user_id: self.user_id,
                address: self.address.unwrap_or_default().to_owned(),
            },
            content,
            locale: self.locale.map(str::to_owned),
            not_after: not_after(self.created_at, self.send_at, self.ttl_seconds),
            created_at: self.created_at,
        }
    }

    /// The Kafka key: the recipient (per-recipient ordering).
    pub fn key(&self) -> String {
        recipient_key(self.user_id, self.address)
    }

    /// The outbox row carrying [`Self::message`].
    pub fn row(&self) -> anyhow::Result<OutboxMessage> {
        dispatch_row(&self.message(), self.key())
    }

    /// [`Self::row`] without the content, which the notification holds once for all its
    /// deliveries: a 1,000-recipient request writes its text once, not 1,000 times. The relay
    /// of the `notify` outbox fills it in just before publishing ([`fill_content`]), so the
    /// message on Kafka is the same self-contained one.
    pub fn row_by_reference(&self) -> anyhow::Result<OutboxMessage> {
        let empty = Content {
            subject: None,
            text: String::new(),
            html: None,
            data: None,
        };
        let msg = self.message_with(empty);
        Ok(row_of(&msg, &WithoutContent(&msg), self.key())?
            .header(CONTENT_HEADER, CONTENT_OF_NOTIFICATION))
    }
}

/// The payload of a [`DispatchParts::row_by_reference`] row (parsed) with its content put back:
/// the notification's `content`, or its rendering for the row's `locale`.
pub fn fill_content(
    payload: &mut serde_json::Value,
    content: &Content,
    localized: Option<&std::collections::BTreeMap<String, Content>>,
) -> anyhow::Result<()> {
    let locale = payload
        .get("locale")
        .and_then(|l| l.as_str())
        .map(str::to_owned);
    let content = serde_json::to_value(content_for(content, localized, locale.as_deref()))?;
    payload
        .as_object_mut()
        .ok_or_else(|| anyhow::anyhow!("a dispatch payload that is not an object"))?
        .insert("content".to_owned(), content);
    Ok(())
}

/// The content a delivery in `locale` gets: its rendering, else its language's (`de` for
/// `de-AT`: a fan-out renders every locale of its template once, not each recipient's), else
/// the default.
pub fn content_for<'a>(
    content: &'a Content,
    localized: Option<&'a std::collections::BTreeMap<String, Content>>,
    locale: Option<&str>,
) -> &'a Content {
    let Some(localized) = localized else {
        return content;
    };
    let locale = locale.unwrap_or_default();
    let language = locale.split('-').next().unwrap_or(locale);
    localized
        .get(locale)
        .or_else(|| localized.get(language))
        .unwrap_or(content)
}

/// The instant after which a notification must not be sent any more (its TTL counted from
/// `send_at`, or from its creation).
pub fn not_after(
    created_at: DateTime<Utc>,
    send_at: Option<DateTime<Utc>>,
    ttl_seconds: Option<i64>,
) -> Option<DateTime<Utc>> {
    ttl_seconds.map(|ttl| send_at.unwrap_or(created_at) + chrono::Duration::seconds(ttl))
}

/// The Kafka key of a recipient: its user, else its address.
pub fn recipient_key(user_id: Option<Uuid>, address: Option<&str>) -> String {
    user_id
        .map(|u| u.to_string())
        .or_else(|| address.map(str::to_owned))
        .unwrap_or_default()
}

/// A delivery with its notification: every column [`LockedDelivery`] reads.
/// (A macro so each query is one `&'static str`, put together at compile time: the status
/// batches lock with it on the hot path.)
macro_rules! select {
    ($rest:literal) => {
        concat!(
            "SELECT d.id, d.status, d.current_attempt, d.retry_base, d.notification_id, d.channel,
                d.lane, d.user_id, d.address, d.locale, n.content, n.localized, n.created_at,
                n.send_at, n.ttl_seconds, n.fallback, n.category, n.priority, n.template,
                n.created_by, now() AS db_now
             FROM deliveries d JOIN notifications n ON n.id = d.notification_id ",
            $rest
        )
    };
}

/// A delivery with what its dispatch message needs, read under a row lock.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LockedDelivery {
    pub id: Uuid,
    #[sqlx(try_from = "String")]
    pub status: Status,
    pub current_attempt: i32,
    pub retry_base: i32,
    pub notification_id: Uuid,
    #[sqlx(try_from = "String")]
    pub channel: Channel,
    #[sqlx(try_from = "String")]
    pub lane: Lane,
    pub user_id: Option<Uuid>,
    pub address: Option<String>,
    pub locale: Option<String>,
    pub content: sqlx::types::Json<Content>,
    /// Renderings per recipient locale (template notifications).
    pub localized: Option<sqlx::types::Json<std::collections::BTreeMap<String, Content>>>,
    pub created_at: DateTime<Utc>,
    pub send_at: Option<DateTime<Utc>>,
    pub ttl_seconds: Option<i32>,
    /// The notification's fallback channel order, if it asked for one.
    pub fallback: Option<sqlx::types::Json<Vec<Channel>>>,
    pub category: String,
    #[sqlx(try_from = "String")]
    pub priority: Priority,
    pub template: Option<String>,
    pub created_by: String,
    /// The locking transaction's `now()`: the database's clock, which the relay compares
    /// `available_at` with and which stamps `attempts.recorded_at`. Schedules computed from it
    /// mean the same on every host, however far an application server's clock drifts.
    pub db_now: DateTime<Utc>,
}

impl LockedDelivery {
    /// Locks the delivery row (`FOR NO KEY UPDATE`: attempt rows referencing it can still be
    /// inserted) and reads it with its notification.
    pub async fn lock(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Self>> {
        sqlx::query_as(select!("WHERE d.id = $1 FOR NO KEY UPDATE OF d"))
            .bind(id)
            .fetch_optional(conn)
            .await
    }

    /// Reads the delivery with its notification without locking it (what fallback plans
    /// from before it locks the row with [`crate::fallback::claim`]).
    pub async fn read(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Self>> {
        sqlx::query_as(select!("WHERE d.id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await
    }

    /// Locks every delivery of `ids` that exists (in id order, like a cancel, so the two
    /// cannot deadlock) and reads each with its notification.
    pub async fn lock_many(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<Self>> {
        sqlx::query_as(select!(
            "WHERE d.id = ANY($1) ORDER BY d.id FOR NO KEY UPDATE OF d"
        ))
        .bind(ids)
        .fetch_all(conn)
        .await
    }

    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }

    /// The instant after which the notification must not be sent any more (its TTL).
    pub fn not_after(&self) -> Option<DateTime<Utc>> {
        not_after(
            self.created_at,
            self.send_at,
            self.ttl_seconds.map(i64::from),
        )
    }

    /// The Kafka key: the recipient (per-recipient ordering).
    pub fn key(&self) -> String {
        recipient_key(self.user_id, self.address.as_deref())
    }

    /// The dispatch message of attempt `attempt`.
    pub fn dispatch(&self, attempt: u32) -> anyhow::Result<DispatchMessage> {
        Ok(self.parts(attempt)?.message())
    }

    fn parts(&self, attempt: u32) -> anyhow::Result<DispatchParts<'_>> {
        Ok(DispatchParts {
            delivery_id: self.id,
            notification_id: self.notification_id,
            attempt,
            channel: self.channel,
            lane: self.lane,
            user_id: self.user_id,
            address: self.address.as_deref(),
            locale: self.locale.as_deref(),
            content: &self.content.0,
            localized: self.localized.as_ref().map(|l| &l.0),
            created_at: self.created_at,
            send_at: self.send_at,
            ttl_seconds: self.ttl_seconds.map(i64::from),
        })
    }

    /// Writes attempt `attempt`'s dispatch message to the outbox, published at `at` (`None` =
    /// now). Call in the transaction that moved `current_attempt` to `attempt`.
    pub async fn enqueue_attempt(
        &self,
        conn: &mut PgConnection,
        attempt: u32,
        at: Option<DateTime<Utc>>,
    ) -> anyhow::Result<()> {
        let msg = self.dispatch(attempt)?;
        let out = dispatch_row(&msg, self.key())?.available_at(at);
        outbox::enqueue(conn, &[out]).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dispatch_takes_the_recipients_rendering_its_ttl_from_send_at_and_the_user_as_key() {
        let content = |text: &str| Content {
            subject: None,
            text: text.into(),
            html: None,
            data: None,
        };
        let localized = std::collections::BTreeMap::from([("de".to_owned(), content("Hallo"))]);
        let default = content("Hello");
        let created = Utc::now();
        let send_at = created + chrono::Duration::minutes(5);
        let user = Uuid::now_v7();
        let parts = |locale| DispatchParts {
            delivery_id: Uuid::now_v7(),
            notification_id: Uuid::now_v7(),
            attempt: 2,
            channel: Channel::Email,
            lane: Lane::Bulk,
            user_id: Some(user),
            address: Some("a@example.org"),
            locale,
            content: &default,
            localized: Some(&localized),
            created_at: created,
            send_at: Some(send_at),
            ttl_seconds: Some(60),
        };
        let de = parts(Some("de")).message();
        assert_eq!(de.content.text, "Hallo");
        assert_eq!(de.attempt, 2);
        assert_eq!(de.not_after, Some(send_at + chrono::Duration::seconds(60)));
        assert_eq!(parts(Some("fr")).message().content.text, "Hello");
        assert_eq!(parts(None).key(), user.to_string());
        assert_eq!(recipient_key(None, Some("a@example.org")), "a@example.org");

        // By reference: no content in the row; filled in, the message is the full one.
        for locale in [Some("de"), Some("fr"), None] {
            let p = parts(locale);
            let row = p.row_by_reference().unwrap();
            let mut payload: serde_json::Value = serde_json::from_str(row.payload.get()).unwrap();
            assert!(payload.get("content").is_none(), "{payload}");
            assert_eq!(row.headers[CONTENT_HEADER], CONTENT_OF_NOTIFICATION);
            fill_content(&mut payload, &default, Some(&localized)).unwrap();
            let filled: DispatchMessage = serde_json::from_value(payload).unwrap();
            assert_eq!(filled, p.message());
        }
    }
}
