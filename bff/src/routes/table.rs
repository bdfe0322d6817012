//! The route table. Each row's `doc` is its documentation's summary (first line) and
//! description; `answers` lists its own answers — the errors every route can give (400, 401,
//! 403, 404 where the path has an id, 413/415 where it takes a body, 422, 429, 503, 504) are
//! added to each operation by `crate::openapi`.

use api::{
    admin::{
        AttemptFeed, AttemptQuery, DeadLetterQuery, DeliveryDetail, DeliveryPage, NotificationPage,
        NotificationQuery, Preview, PreviewBody, RedriveBody, Redriven, SkippedEventPage,
        SkippedEventQuery, Stats, StatsQuery, SuppressionPage, SuppressionQuery, TemplateBody,
        TemplateView,
    },
    digests::{CategoryRules, CategoryRulesBody, DeliveryRules, DigestView},
    inbox::{InboxCounts, InboxEvent, InboxPage, InboxQuery, Marked},
    notifications::{
        BounceAnswer, BounceReport, DeliveriesQuery, HistoryPage, HistoryQuery, NotificationView,
        ReceiptAnswer, SendBody,
    },
    topics::{
        MyTopics, SubscribersBody, SubscribersChanged, TopicBody, TopicKeysBody, TopicPage,
        TopicQuery, TopicView,
    },
    users::{
        ContactsBody, DeviceBody, DeviceList, Me, PreferencesBody, PreferencesView, RegisterUser,
        Registered, TelegramLink,
    },
};
use common::{auth::Role, problem::Problem};

use super::{Answer, Handler, Limit, Param, QueryRule, Route, Verb, query, schema};
use crate::upstream::Service;

const ADMIN: &[Role] = &[Role::Admin];
const USER: &[Role] = &[Role::User];
const SERVICE: &[Role] = &[Role::Service];
const SERVICE_OR_ADMIN: &[Role] = &[Role::Service, Role::Admin];

/// Admin searches: filters with timestamps, addresses and cursors.
const ADMIN_QUERY: QueryRule = QueryRule {
    extra: b"=&-_%.@+:~",
    // Every filter at its longest, percent-encoded (up to 12 bytes a character), fits.
    max_len: 6144,
};
/// A user's history: a limit and a cursor.
const PAGE_QUERY: QueryRule = QueryRule {
    extra: b"=&-_%.~",
    max_len: 512,
};

const fn ok(status: u16, description: &'static str, body: super::SchemaFn) -> Answer {
    Answer {
        status,
        description,
        body: Some(body),
    }
}

const fn empty(status: u16, description: &'static str) -> Answer {
    Answer {
        status,
        description,
        body: None,
    }
}

const fn problem(status: u16, description: &'static str) -> Answer {
    ok(status, description, schema::<Problem>)
}

/// A row with the defaults of a forwarded, authenticated route.
const fn route(
    method: Verb,
    path: &'static str,
    roles: &'static [Role],
    upstream: Service,
    tag: &'static str,
    doc: &'static str,
    answers: &'static [Answer],
) -> Route {
    Route {
        method,
        path,
        roles,
        upstream: Some(upstream),
        handler: Handler::Forward,
        limit: Limit::Principal,
        param: None,
        query: None,
        tag,
        doc,
        request: None,
        query_params: None,
        answers,
        body_limit: None,
    }
}

const MARKED: &[Answer] = &[ok(
    200,
    "The item as it is now, and the counts after the mark",
    schema::<Marked>,
)];

/// `POST /v1/me/inbox/{id}/<mark>`: one of the user's items marked.
const fn mark(path: &'static str, doc: &'static str) -> Route {
    Route {
        param: Some(Param::Id("item")),
        ..route(
            Verb::Post,
            path,
            USER,
            Service::Notifications,
            "inbox",
            doc,
            MARKED,
        )
    }
}

pub static ROUTES: [Route; 56] = [
    Route {
        handler: Handler::Send,
        request: Some(schema::<SendBody>),
        ..route(
            Verb::Post,
            "/v1/notifications",
            SERVICE,
            Service::Notifications,
            "notifications",
            "Send a notification (service)\n\n202 only after it is committed. With an \
             `Idempotency-Key`: the same key and body within 24 h get the original answer \
             again; a different body 422; while the first is still running, 409.",
            &[
                ok(
                    202,
                    "Accepted: planned and committed",
                    schema::<NotificationView>,
                ),
                problem(404, "A recipient names a topic that does not exist"),
                problem(
                    409,
                    "The first request with this Idempotency-Key is still running",
                ),
            ],
        )
    },
    Route {
        handler: Handler::SendBatch,
        request: Some(schema::<api::notifications::BatchBody>),
        body_limit: Some(api::notifications::MAX_BATCH_BYTES),
        ..route(
            Verb::Post,
            "/v1/notifications/batch",
            SERVICE,
            Service::Notifications,
            "notifications",
            "Send up to 1,000 notifications (service)\n\nEach item is the body of a single \
             send plus its own optional `idempotency_key`; the answer (200) holds one result per \
             item, in order: `202` accepted (with its `id`), `200` the replay of an earlier send \
             with the same key and body, or the 4xx a single send would get, with its \
             `problem`. One bad item never fails the others; each accepted item is committed \
             before the answer. The whole request is refused only when it holds no item or \
             more than 1,000, more than 10,000 recipients in all (422), or more than 8 MiB \
             (413). The rate limit counts each item as one request.",
            &[ok(
                200,
                "One result per item, in order",
                schema::<api::notifications::BatchAnswer>,
            )],
        )
    },
    Route {
        query: Some(ADMIN_QUERY),
        query_params: Some(query::<NotificationQuery>),
        ..route(
            Verb::Get,
            "/v1/notifications",
            SERVICE_OR_ADMIN,
            Service::Notifications,
            "notifications",
            "Notifications you sent, by filters, newest first (service, admin)\n\nA service \
             sees its own notifications, and a `recipient` address matches only addresses it \
             gave itself (never one resolved from a user's profile); an admin sees everyone's, \
             as `GET /v1/admin/notifications`. Each item carries its delivery counts; the \
             deliveries are paged at `GET /v1/notifications/{id}/deliveries`. Keyset-paginated.",
            &[ok(
                200,
                "A page of notifications",
                schema::<NotificationPage>,
            )],
        )
    },
    Route {
        param: Some(Param::Id("notification")),
        ..route(
            Verb::Get,
            "/v1/notifications/{id}",
            SERVICE_OR_ADMIN,
            Service::Notifications,
            "notifications",
            "A notification with its first 100 deliveries and the counts of all (owning \
             service, admin)\n\nMore deliveries: `deliveries_next_cursor` pages them at \
             `GET /v1/notifications/{id}/deliveries`. A service sees no address, and no \
             provider text, of a delivery to a registered user.",
            &[ok(200, "The notification", schema::<NotificationView>)],
        )
    },
    Route {
        param: Some(Param::Id("notification")),
        query: Some(PAGE_QUERY),
        query_params: Some(query::<DeliveriesQuery>),
        ..route(
            Verb::Get,
            "/v1/notifications/{id}/deliveries",
            SERVICE_OR_ADMIN,
            Service::Notifications,
            "notifications",
            "A notification's deliveries, a page at a time (owning service, admin)\n\nIn id \
             order; start with the notification's `deliveries_next_cursor`, or without a \
             cursor for the first page. A service sees no address, and no provider text, of a \
             delivery to a registered user.",
            &[ok(200, "A page of deliveries", schema::<DeliveryPage>)],
        )
    },
    Route {
        param: Some(Param::Id("notification")),
        ..route(
            Verb::Post,
            "/v1/notifications/{id}/cancel",
            SERVICE_OR_ADMIN,
            Service::Notifications,
            "notifications",
            "Cancel every delivery not yet dispatched (owning service, admin)\n\n409 names \
             the deliveries that were already dispatched (the rest are cancelled).",
            &[
                ok(200, "Cancelled", schema::<NotificationView>),
                problem(409, "Some deliveries were already dispatched"),
            ],
        )
    },
    Route {
        request: Some(schema::<RegisterUser>),
        ..route(
            Verb::Post,
            "/v1/users",
            SERVICE_OR_ADMIN,
            Service::Users,
            "users",
            "Register a user (service, admin)\n\nEmits `user.registered`; the user gets the \
             `welcome` notification on the channels they have. Only an admin may set \
             `telegram_chat_id` (users link their chat through the bot), and a chat has one \
             user.",
            &[
                ok(201, "Registered", schema::<Registered>),
                problem(409, "The Telegram chat belongs to another user"),
            ],
        )
    },
    Route {
        handler: Handler::Me,
        ..route(
            Verb::Get,
            "/v1/me",
            USER,
            Service::Users,
            "me",
            "Profile, contacts, devices and preferences in one response",
            &[
                ok(200, "The user", schema::<Me>),
                problem(404, "The token's user does not exist"),
            ],
        )
    },
    Route {
        request: Some(schema::<ContactsBody>),
        ..route(
            Verb::Put,
            "/v1/me/contacts",
            USER,
            Service::Users,
            "me",
            "Replace the contact set (absent fields are cleared)\n\n`telegram_chat_id` keeps \
             (the linked chat sent back) or drops (null) the chat linked through the bot; any \
             other chat id is refused (409 `telegram_chat_not_linked`): a chat is linked only \
             with `POST /v1/me/telegram/link`.",
            &[
                ok(200, "The contacts", schema::<api::profiles::Contacts>),
                problem(
                    409,
                    "`telegram_chat_not_linked`: not the chat this user linked through the bot",
                ),
            ],
        )
    },
    route(
        Verb::Get,
        "/v1/me/preferences",
        USER,
        Service::Users,
        "me",
        "Channel switches, category × channel switches, quiet hours, locale",
        &[ok(200, "The preferences", schema::<PreferencesView>)],
    ),
    Route {
        request: Some(schema::<PreferencesBody>),
        ..route(
            Verb::Put,
            "/v1/me/preferences",
            USER,
            Service::Users,
            "me",
            "Replace the preference document",
            &[ok(200, "The preferences", schema::<PreferencesView>)],
        )
    },
    route(
        Verb::Get,
        "/v1/me/devices",
        USER,
        Service::Users,
        "me",
        "The user's push devices",
        &[ok(200, "The devices", schema::<DeviceList>)],
    ),
    Route {
        request: Some(schema::<DeviceBody>),
        ..route(
            Verb::Post,
            "/v1/me/devices",
            USER,
            Service::Users,
            "me",
            "Register a push token\n\n201 when new to this user, 200 when already theirs; \
             409 past the most devices a user may have.",
            &[
                ok(201, "Registered", schema::<api::profiles::Device>),
                ok(200, "Already registered", schema::<api::profiles::Device>),
                problem(409, "Too many devices"),
            ],
        )
    },
    Route {
        param: Some(Param::Id("device")),
        ..route(
            Verb::Delete,
            "/v1/me/devices/{id}",
            USER,
            Service::Users,
            "me",
            "Remove one of the user's devices",
            &[empty(204, "Removed")],
        )
    },
    Route {
        query: Some(PAGE_QUERY),
        query_params: Some(query::<HistoryQuery>),
        ..route(
            Verb::Get,
            "/v1/me/notifications",
            USER,
            Service::Notifications,
            "me",
            "The user's own notification history, newest first, cursor-paginated",
            &[ok(200, "A page of history", schema::<HistoryPage>)],
        )
    },
    Route {
        param: Some(Param::Name),
        request: Some(schema::<TemplateBody>),
        ..route(
            Verb::Put,
            "/v1/admin/templates/{name}",
            ADMIN,
            Service::Notifications,
            "admin",
            "Create or replace a template (all its locales); every variant must compile",
            &[ok(200, "The template", schema::<TemplateView>)],
        )
    },
    Route {
        request: Some(schema::<PreviewBody>),
        ..route(
            Verb::Post,
            "/v1/admin/template-preview",
            ADMIN,
            Service::Notifications,
            "admin",
            "Render one template variant with data, as intake would; nothing is stored\n\n\
             A variant that does not compile or data it cannot render with is a 422 naming \
             `variant` or `data`.",
            &[ok(200, "What a recipient would get", schema::<Preview>)],
        )
    },
    Route {
        param: Some(Param::Name),
        ..route(
            Verb::Get,
            "/v1/admin/templates/{name}",
            ADMIN,
            Service::Notifications,
            "admin",
            "A template with every locale",
            &[ok(200, "The template", schema::<TemplateView>)],
        )
    },
    Route {
        param: Some(Param::Name),
        ..route(
            Verb::Delete,
            "/v1/admin/templates/{name}",
            ADMIN,
            Service::Notifications,
            "admin",
            "Delete a template",
            &[empty(204, "Deleted")],
        )
    },
    Route {
        query: Some(ADMIN_QUERY),
        query_params: Some(query::<NotificationQuery>),
        ..route(
            Verb::Get,
            "/v1/admin/notifications",
            ADMIN,
            Service::Notifications,
            "admin",
            "Notifications by filters, newest first, keyset-paginated",
            &[ok(
                200,
                "A page of notifications",
                schema::<NotificationPage>,
            )],
        )
    },
    Route {
        param: Some(Param::Id("delivery")),
        ..route(
            Verb::Get,
            "/v1/admin/deliveries/{id}",
            ADMIN,
            Service::Notifications,
            "admin",
            "One delivery with every attempt (provider, outcome, error, duration) and re-drive",
            &[ok(200, "The delivery", schema::<DeliveryDetail>)],
        )
    },
    Route {
        query: Some(ADMIN_QUERY),
        query_params: Some(query::<StatsQuery>),
        ..route(
            Verb::Get,
            "/v1/admin/stats",
            ADMIN,
            Service::Notifications,
            "admin",
            "Counts per channel × status and accept → sent latency percentiles over a window",
            &[ok(200, "The stats", schema::<Stats>)],
        )
    },
    Route {
        query: Some(ADMIN_QUERY),
        query_params: Some(query::<AttemptQuery>),
        ..route(
            Verb::Get,
            "/v1/admin/attempts",
            ADMIN,
            Service::Notifications,
            "admin",
            "Provider attempts in the order they were recorded\n\nEvery answer carries a \
             `cursor`; pass it back to get what was recorded since (`notifyctl tail` follows \
             this). The last second is held back so that a cursor never skips an attempt \
             committed late.",
            &[ok(
                200,
                "Attempts and the position after them",
                schema::<AttemptFeed>,
            )],
        )
    },
    Route {
        query: Some(PAGE_QUERY),
        query_params: Some(query::<SkippedEventQuery>),
        ..route(
            Verb::Get,
            "/v1/admin/skipped-events",
            ADMIN,
            Service::Notifications,
            "admin",
            "Events that could never be handled, newest first\n\nA `user.registered` whose \
             welcome template does not render (or does not exist), a message that does not \
             decode: recorded with why and skipped, so the rest of `notify.events` flowed. \
             Counted in `notify_events_skipped_total`.",
            &[ok(
                200,
                "A page of skipped events",
                schema::<SkippedEventPage>,
            )],
        )
    },
    Route {
        query: Some(ADMIN_QUERY),
        query_params: Some(query::<DeadLetterQuery>),
        ..route(
            Verb::Get,
            "/v1/admin/dead-letters",
            ADMIN,
            Service::Notifications,
            "admin",
            "Deliveries that ended `dead`, newest first, keyset-paginated",
            &[ok(200, "A page of dead letters", schema::<DeliveryPage>)],
        )
    },
    Route {
        request: Some(schema::<RedriveBody>),
        ..route(
            Verb::Post,
            "/v1/admin/dead-letters/redrive",
            ADMIN,
            Service::Notifications,
            "admin",
            "Re-drive dead letters by ids or by filter\n\nEach gets a new attempt with the \
             whole retry schedule, audited with the admin's subject.",
            &[ok(200, "What was re-driven", schema::<Redriven>)],
        )
    },
    Route {
        method: Verb::Post,
        path: "/v1/receipts/twilio",
        roles: &[],
        upstream: Some(Service::Notifications),
        handler: Handler::Signed,
        limit: Limit::None,
        param: None,
        query: None,
        tag: "receipts",
        doc: "A Twilio status callback (delivery receipt)\n\nNo token: the request must carry \
              a valid `X-Twilio-Signature` (HMAC-SHA1 with the account's auth token over the \
              callback URL and the form parameters). `delivered` moves a sent SMS to \
              `delivered`; `undelivered` and `failed` to `undelivered`; other statuses are \
              acknowledged with 204 and change nothing.",
        request: None,
        query_params: None,
        answers: &[
            ok(
                200,
                "Recorded (applied, ignored or kept until its attempt is known)",
                schema::<ReceiptAnswer>,
            ),
            empty(204, "An intermediate status: nothing to record"),
            problem(403, "The signature is missing or does not match"),
            problem(404, "This deployment takes no Twilio receipts"),
            problem(409, "This receipt was received before; nothing changed"),
            problem(422, "MessageSid or MessageStatus is missing"),
        ],
        body_limit: None,
    },
    route(
        Verb::Post,
        "/v1/me/telegram/link",
        USER,
        Service::Users,
        "me",
        "A one-time code that links a Telegram chat to the user\n\nSend `/start <code>` to \
         the bot (or open the deep link) before it expires; it works once.",
        &[ok(
            201,
            "The code and its deep link",
            schema::<TelegramLink>,
        )],
    ),
    Route {
        method: Verb::Post,
        path: "/v1/telegram/webhook",
        roles: &[],
        upstream: Some(Service::Users),
        handler: Handler::Signed,
        limit: Limit::None,
        param: None,
        query: None,
        tag: "receipts",
        doc: "The Telegram bot's webhook (a Bot API `Update`)\n\nNo token: the request must \
              carry `X-Telegram-Bot-Api-Secret-Token`. `/start <code>` links the chat, `/stop` \
              opts the user out of Telegram, other messages are published as \
              `telegram.message` events.",
        request: None,
        query_params: None,
        answers: &[
            empty(200, "Taken (or taken before)"),
            problem(403, "The secret token is missing or wrong"),
            problem(404, "This deployment has no Telegram bot"),
            problem(422, "The body is not a Bot API update"),
        ],
        body_limit: None,
    },
    Route {
        method: Verb::Post,
        path: "/v1/bounces",
        roles: &[],
        upstream: Some(Service::Notifications),
        handler: Handler::Signed,
        limit: Limit::None,
        param: None,
        query: None,
        tag: "receipts",
        doc: "A bounce or complaint report from a mail system\n\nNo token: signed per Standard \
              Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`) with the \
              deployment's `bounces.secret`. A hard bounce or a complaint suppresses the \
              address; soft bounces are counted and suppress it at the threshold.",
        request: Some(schema::<BounceReport>),
        query_params: None,
        answers: &[
            ok(200, "Taken", schema::<BounceAnswer>),
            problem(403, "Unsigned, wrongly signed, or too old"),
            problem(404, "This deployment takes no bounce reports"),
            problem(
                409,
                "A report with this webhook-id was taken before; nothing changed",
            ),
            problem(415, "The body is not `application/json`"),
            problem(422, "A field is invalid; `errors` names each"),
        ],
        body_limit: None,
    },
    Route {
        query: Some(ADMIN_QUERY),
        query_params: Some(query::<SuppressionQuery>),
        ..route(
            Verb::Get,
            "/v1/admin/suppressions",
            ADMIN,
            Service::Notifications,
            "admin",
            "Suppressed addresses (bounced, complained), newest first, keyset-paginated",
            &[ok(200, "A page of suppressions", schema::<SuppressionPage>)],
        )
    },
    Route {
        param: Some(Param::Id("suppression")),
        ..route(
            Verb::Delete,
            "/v1/admin/suppressions/{id}",
            ADMIN,
            Service::Notifications,
            "admin",
            "Remove a suppression: the address is sent to again",
            &[empty(204, "Removed")],
        )
    },
    Route {
        param: Some(Param::Id("digest")),
        ..route(
            Verb::Get,
            "/v1/admin/digests/{id}",
            ADMIN,
            Service::Notifications,
            "admin",
            "A digest: its window, its state, the digest notification it was sent as and the \
             notifications it folded (the first 200, in order)",
            &[ok(200, "The digest", schema::<DigestView>)],
        )
    },
    route(
        Verb::Get,
        "/v1/admin/categories",
        ADMIN,
        Service::Notifications,
        "admin",
        "The deployment's frequency cap and every category's rules (default digest window, cap)",
        &[ok(200, "The rules", schema::<DeliveryRules>)],
    ),
    Route {
        param: Some(Param::Name),
        request: Some(schema::<CategoryRulesBody>),
        ..route(
            Verb::Put,
            "/v1/admin/categories/{name}",
            ADMIN,
            Service::Notifications,
            "admin",
            "Set a category's rules: sends without their own `digest` are digested with \
             `digest_window` (key: the category); at most `cap.limit` deliveries per user and \
             channel per `cap.window`. Urgent sends and mandatory categories are exempt. \
             Applied within `planning.rules_cache_ms` on every instance",
            &[ok(200, "The category's rules", schema::<CategoryRules>)],
        )
    },
    Route {
        param: Some(Param::Name),
        ..route(
            Verb::Delete,
            "/v1/admin/categories/{name}",
            ADMIN,
            Service::Notifications,
            "admin",
            "Remove a category's rules",
            &[empty(204, "Removed")],
        )
    },
    route(
        Verb::Get,
        "/v1/me/delivery-rules",
        USER,
        Service::Notifications,
        "me",
        "How often the platform may reach you: the deployment's cap, and each category's digest \
         window and cap (what the preference center shows)",
        &[ok(200, "The rules", schema::<DeliveryRules>)],
    ),
    Route {
        param: Some(Param::Key),
        request: Some(schema::<TopicBody>),
        ..route(
            Verb::Put,
            "/v1/topics/{key}",
            SERVICE_OR_ADMIN,
            Service::Users,
            "topics",
            "Create a topic, or change its name or openness (service, admin)\n\nA send \
             naming `{\"topic\": key}` reaches its subscribers. Open topics can be followed by \
             users themselves (`PUT /v1/me/topics`); closed ones (the default) get subscribers \
             from services and admins only.",
            &[
                ok(201, "Created", schema::<TopicView>),
                ok(200, "Changed", schema::<TopicView>),
            ],
        )
    },
    Route {
        param: Some(Param::Key),
        ..route(
            Verb::Get,
            "/v1/topics/{key}",
            SERVICE_OR_ADMIN,
            Service::Users,
            "topics",
            "A topic with its subscriber count (service, admin)",
            &[ok(200, "The topic", schema::<TopicView>)],
        )
    },
    Route {
        param: Some(Param::Key),
        request: Some(schema::<SubscribersBody>),
        body_limit: Some(api::topics::MAX_SUBSCRIBERS_BYTES),
        ..route(
            Verb::Put,
            "/v1/topics/{key}/subscribers",
            SERVICE_OR_ADMIN,
            Service::Users,
            "topics",
            "Subscribe up to 10,000 users to a topic (service, admin)\n\nCreates the topic \
             (closed) when it does not exist. Every id must be a registered user, or 404 names \
             the first unknown ones and nothing changes. Users already subscribed are not \
             counted again. Each subscription is one row: O(1) whatever the topic's size.",
            &[ok(200, "Subscribed", schema::<SubscribersChanged>)],
        )
    },
    Route {
        param: Some(Param::Key),
        request: Some(schema::<SubscribersBody>),
        body_limit: Some(api::topics::MAX_SUBSCRIBERS_BYTES),
        ..route(
            Verb::Delete,
            "/v1/topics/{key}/subscribers",
            SERVICE_OR_ADMIN,
            Service::Users,
            "topics",
            "Unsubscribe up to 10,000 users from a topic (service, admin)\n\nIds that were \
             not subscribed are not counted. A fan-out already running does not reach a user \
             removed before their chunk is planned.",
            &[ok(200, "Unsubscribed", schema::<SubscribersChanged>)],
        )
    },
    route(
        Verb::Get,
        "/v1/me/topics",
        USER,
        Service::Users,
        "me",
        "The topics the user follows, and open ones they could follow",
        &[ok(200, "The user's topics", schema::<MyTopics>)],
    ),
    Route {
        request: Some(schema::<TopicKeysBody>),
        ..route(
            Verb::Put,
            "/v1/me/topics",
            USER,
            Service::Users,
            "me",
            "Follow open topics (1 to 100 keys)\n\nKeys that name no topic are a 404, closed \
             topics a 403 (each naming them), and nothing changes; past 1,000 topics, 409.",
            &[
                ok(
                    200,
                    "The user's topics after the change",
                    schema::<MyTopics>,
                ),
                problem(404, "A key names no topic"),
                problem(409, "The user follows too many topics"),
            ],
        )
    },
    Route {
        request: Some(schema::<TopicKeysBody>),
        ..route(
            Verb::Delete,
            "/v1/me/topics",
            USER,
            Service::Users,
            "me",
            "Leave topics (1 to 100 keys), open or closed\n\nKeys the user does not follow \
             change nothing.",
            &[ok(
                200,
                "The user's topics after the change",
                schema::<MyTopics>,
            )],
        )
    },
    Route {
        query: Some(PAGE_QUERY),
        query_params: Some(query::<TopicQuery>),
        ..route(
            Verb::Get,
            "/v1/admin/topics",
            ADMIN,
            Service::Users,
            "admin",
            "Every topic, by key, keyset-paginated",
            &[ok(200, "A page of topics", schema::<TopicPage>)],
        )
    },
    Route {
        query: Some(PAGE_QUERY),
        query_params: Some(query::<InboxQuery>),
        ..route(
            Verb::Get,
            "/v1/me/inbox",
            USER,
            Service::Notifications,
            "inbox",
            "The user's in-app inbox, newest first, keyset-paginated\n\n`status`: `unread`, \
             `read` or `archived` (absent: every item not archived). Each item is an `in_app` \
             delivery with its rendered subject and text and the times it was seen, read, \
             archived and clicked.",
            &[ok(200, "A page of items", schema::<InboxPage>)],
        )
    },
    route(
        Verb::Get,
        "/v1/me/inbox/counts",
        USER,
        Service::Notifications,
        "inbox",
        "Unread and unseen items (the badge)\n\nKept with every change: one row read, never a \
         count over the inbox.",
        &[ok(200, "The counts", schema::<InboxCounts>)],
    ),
    Route {
        handler: Handler::InboxStream,
        ..route(
            Verb::Get,
            "/v1/me/inbox/stream",
            USER,
            Service::Notifications,
            "inbox",
            "The inbox in real time (Server-Sent Events)\n\nFirst a `counts` event (`unread`, \
             `unseen`, `last_seq`), then an `inbox` event per change — an item arriving or a \
             mark, from any tab or device — whose `id` is the change's number and whose data is \
             the change with the item and the counts after it. Reconnect with `Last-Event-ID` \
             to get exactly what was missed (a `reset` event instead when that is older than \
             what is kept: reload the list). A comment every 15 s; an `expired` event, then the \
             end, when the token expires. Authenticated like every `/v1/me` call (bearer token \
             or the pages' session cookie). 429 `too_many_streams` past the streams one user \
             (10) or one instance may hold.",
            &[
                ok(
                    200,
                    "The stream (`text/event-stream`)",
                    schema::<InboxEvent>,
                ),
                problem(429, "Too many streams for this user or this instance"),
            ],
        )
    },
    mark(
        "/v1/me/inbox/{id}/seen",
        "Mark an item seen\n\nAlready seen: nothing changes. 404 for an id that is not one of \
         the user's items.",
    ),
    mark(
        "/v1/me/inbox/{id}/read",
        "Mark an item read (and seen)\n\nAlready read: nothing changes. 404 for an id that is \
         not one of the user's items.",
    ),
    mark(
        "/v1/me/inbox/{id}/archive",
        "Archive an item\n\nArchived items leave the inbox's list and counts (list them with \
         `status=archived`). 404 for an id that is not one of the user's items.",
    ),
    mark(
        "/v1/me/inbox/{id}/click",
        "Record a click on an item's action (it is read, too)\n\n404 for an id that is not \
         one of the user's items.",
    ),
    route(
        Verb::Post,
        "/v1/me/inbox/read-all",
        USER,
        Service::Notifications,
        "inbox",
        "Mark every unread item read",
        &[ok(200, "The counts after it", schema::<InboxCounts>)],
    ),
    route(
        Verb::Post,
        "/v1/me/inbox/seen-all",
        USER,
        Service::Notifications,
        "inbox",
        "Mark every unseen item seen (the feed was opened)",
        &[ok(200, "The counts after it", schema::<InboxCounts>)],
    ),
    Route {
        method: Verb::Get,
        path: "/healthz",
        roles: &[],
        upstream: None,
        handler: Handler::Healthz,
        limit: Limit::None,
        param: None,
        query: None,
        tag: "health",
        doc: "The process is alive",
        request: None,
        query_params: None,
        answers: &[empty(200, "alive")],
        body_limit: None,
    },
    Route {
        method: Verb::Get,
        path: "/readyz",
        roles: &[],
        upstream: None,
        handler: Handler::Readyz,
        limit: Limit::None,
        param: None,
        query: None,
        tag: "health",
        doc: "Both services behind the bff answer\n\n`{\"status\": \"ready\"}` or 503 \
              `{\"status\": \"not_ready\"}`, nothing more (which dependency failed, and why, \
              is logged and shown on the bff's admin port, `http.metrics_listen`). Shed like \
              any request when the bff is saturated.",
        request: None,
        query_params: None,
        answers: &[empty(200, "ready"), empty(503, "a dependency is down")],
        body_limit: None,
    },
];
