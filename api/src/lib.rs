//! The HTTP wire contract, one definition per body.
//!
//! Services deserialise requests into these types and serialise these types as answers; the
//! bff builds its OpenAPI document from the same types (`utoipa::ToSchema`), so the document
//! cannot describe a body the service does not accept. Validation beyond the shape (address
//! syntax, ranges the schema cannot say) stays in the service that owns the data, with the
//! value parsers of `common::address`.
//!
//! - [`notifications`]: sending, reading and cancelling notifications, a user's history;
//! - [`admin`]: admin searches, stats, dead letters, templates;
//! - [`users`]: registration, contacts, preferences, devices, `GET /v1/me`;
//! - [`inbox`]: the in-app inbox (items, marks, counts, the change log streams replay);
//! - [`digests`]: a send's `digest` and `cap`, digests in history, rules per category;
//! - [`topics`]: topics, their subscribers, and users-service's fan-out reads;
//! - [`rules`]: what the services enforce beyond the shapes, added to the OpenAPI document;
//! - [`profiles`]: users-service's internal contract with notification-service (delivery
//!   profiles, with the rule "may this user get this category on this channel").

/// One page of a keyset-paginated list of `$item`: a concrete type per list, so the OpenAPI
/// document names each one.
macro_rules! page {
    ($(#[$doc:meta])* $name:ident of $item:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        pub struct $name {
            pub items: Vec<$item>,
            /// Pass as `cursor` for the next page; absent on the last one.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub next_cursor: Option<String>,
        }
    };
}
pub(crate) use page;

pub mod admin;
pub mod digests;
pub mod inbox;
pub mod notifications;
pub mod profiles;
pub mod rules;
pub mod topics;
pub mod users;
