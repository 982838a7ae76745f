//! The client wire format: every JSON shape a browser or the SDK sees, in one place.
//!
//! Invariants:
//! - Only this module knows the client JSON. The SDK's `client-sdk/src/protocol.ts` mirrors it, and both are
//!   tested against the same golden files in `tests/golden/`.
//! - A notification is serialised once ([`encode_notification_frame`]) and the resulting bytes are shared by
//!   every recipient session; nothing downstream re-serialises it.
//! - A user's notifications form two chains, each in id order: their own (targeted) and the broadcasts. A
//!   client's [`Position`] is one cursor per chain, and it resumes with `?since=<targeted>&since_broadcast=<broadcast>`.
//!   Ids are never compared across chains: a broadcast may overtake a targeted notification with a smaller id.

use axum::extract::ws::Utf8Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

/// A stored notification, exactly as REST returns it and as it travels inside a `notification` frame.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Notification {
    /// The position: ids only grow, in commit order, and a user sees their notifications in id order.
    pub id: i64,
    /// The previous id in this notification's chain (0 for the first): for a targeted notification, this
    /// user's previous targeted one that is not muted (muted ones are never pushed); for a broadcast, the
    /// previous broadcast. A client whose cursor for that
    /// chain is `L` has missed something exactly when `prev_id > L`.
    pub prev_id: i64,
    /// `null` for a broadcast (visible to every user).
    #[schema(required = true)]
    pub user_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub content: String,
    pub event_type: String,
    #[schema(required = true)]
    pub source: Option<String>,
    #[schema(required = true)]
    pub related_object: Option<RelatedObject>,
    /// Whatever JSON the rule put there (often the event's payload); `null` when none.
    #[serde(with = "raw_json")]
    #[schema(value_type = Value)]
    pub data: Box<RawValue>,
    #[serde(serialize_with = "ts")]
    pub created_at: DateTime<Utc>,
    /// `null` while unread.
    #[serde(serialize_with = "opt_ts")]
    #[schema(required = true)]
    pub read_at: Option<DateTime<Utc>>,
    /// When the user first saw it (`seen_all`: the bell was opened; reading implies seeing); `null` while unseen.
    #[serde(serialize_with = "opt_ts", default)]
    #[schema(required = true)]
    pub seen_at: Option<DateTime<Utc>>,
    /// `null` unless archived: archived notifications are left out of lists (unless `archived=true`) and counts.
    #[serde(serialize_with = "opt_ts", default)]
    #[schema(required = true)]
    pub archived_at: Option<DateTime<Utc>>,
    /// Its type was muted by the user's preferences when it was stored: listed, never pushed live, not counted.
    #[serde(default)]
    #[schema(required = true)]
    pub muted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct RelatedObject {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

/// The two delivery chains of a user's notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    /// The user's own notifications (`user_id` set).
    Targeted,
    /// Notifications for everyone (`user_id` null).
    Broadcast,
}

impl Notification {
    pub fn chain(&self) -> Chain {
        if self.user_id.is_some() {
            Chain::Targeted
        } else {
            Chain::Broadcast
        }
    }
}

/// Where a client is: the last id it received in each chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Position {
    pub targeted: i64,
    pub broadcast: i64,
}

impl Position {
    /// Both cursors at `id` (what a v1 client's single `since` means).
    pub fn both(id: i64) -> Self {
        Position { targeted: id, broadcast: id }
    }

    pub fn get(&self, chain: Chain) -> i64 {
        match chain {
            Chain::Targeted => self.targeted,
            Chain::Broadcast => self.broadcast,
        }
    }

    /// Move the cursor of `chain` forward to `id` (never back).
    pub fn advance(&mut self, chain: Chain, id: i64) {
        let c = match chain {
            Chain::Targeted => &mut self.targeted,
            Chain::Broadcast => &mut self.broadcast,
        };
        *c = (*c).max(id);
    }

    /// The newest id of either chain (the v1 single cursor).
    pub fn max(&self) -> i64 {
        self.targeted.max(self.broadcast)
    }

    /// Each chain's later cursor of the two.
    pub fn later_each(self, other: Position) -> Position {
        Position { targeted: self.targeted.max(other.targeted), broadcast: self.broadcast.max(other.broadcast) }
    }

    /// Each chain's earlier cursor of the two.
    pub fn earlier_each(self, other: Position) -> Position {
        Position { targeted: self.targeted.min(other.targeted), broadcast: self.broadcast.min(other.broadcast) }
    }
}

/// Frames the server sends. Tagged by `type`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    /// First frame of every session.
    Ready {
        session_id: &'a str,
        user_id: &'a str,
        /// The newest notification id visible to this user when the session opened (0 if none).
        latest_id: i64,
        /// The newest id of each chain when the session opened: where a session without `since` starts.
        latest_targeted_id: i64,
        latest_broadcast_id: i64,
        ping_interval_ms: u64,
    },
    Notification {
        event_type: &'a str,
        notification: &'a Notification,
        /// The event body exactly as the publishing service sent it.
        body: &'a RawValue,
    },
    /// Sent after a replay: the session's position now (`up_to` is the greater cursor, for v1 clients).
    Replayed {
        up_to: i64,
        up_to_targeted: i64,
        up_to_broadcast: i64,
    },
    /// The replay that follows starts below the retained history: what was pruned cannot be replayed.
    Truncated {
        since: i64,
        since_broadcast: i64,
        /// Notifications the client missed below this id were pruned (one above the highest pruned id of the
        /// chains the client had missed).
        oldest_id: i64,
    },
    /// This session may have missed frames (its outbound queue overflowed, or the node's Redis link dropped):
    /// the server replays notifications from the inbox after this position, then sends `replayed`. Read-state
    /// frames are not replayed: the client refetches its counts and visible page.
    Resync {
        reason: &'a str,
        since: i64,
        since_broadcast: i64,
    },
    /// The session's token expires at `expires_at` (unix seconds): send `{"type":"auth","token":...}` before
    /// then or the session closes with 4001.
    TokenExpiring {
        expires_at: i64,
    },
    /// A refreshed token was accepted.
    AuthOk {
        expires_at: i64,
    },
    Pong,
    /// Notifications were marked read (by another tab, or through REST).
    Read {
        ids: &'a [i64],
        #[serde(serialize_with = "ts")]
        read_at: DateTime<Utc>,
    },
    /// Everything up to and including `up_to` is read.
    ReadAll {
        up_to: i64,
        #[serde(serialize_with = "ts")]
        read_at: DateTime<Utc>,
    },
    Deleted {
        ids: &'a [i64],
    },
    /// Notifications were marked unread again (`read_at` is `null` now).
    Unread {
        ids: &'a [i64],
    },
    /// Notifications were archived: drop them from the lists that leave archived ones out.
    Archived {
        ids: &'a [i64],
    },
    /// Archived notifications were restored to the inbox.
    Unarchived {
        ids: &'a [i64],
    },
    /// Everything up to and including `up_to` was seen (the bell was opened).
    SeenAll {
        up_to: i64,
        #[serde(serialize_with = "ts")]
        seen_at: DateTime<Utc>,
    },
    /// The user's unread and unseen counts (archived and muted notifications excluded). Sent after `ready`, after
    /// `replayed`, and whenever they change.
    Counts {
        unread: u64,
        unseen: u64,
    },
    /// This user's inbox was erased (GDPR): drop everything shown.
    Purged,
    /// A live-only event (a rule with `action = "live"`): pushed to the sessions open now, never stored, never
    /// replayed, not counted as unread. Best effort.
    Event {
        event_type: &'a str,
        title: &'a str,
        content: &'a str,
        /// The event body exactly as the publishing service sent it.
        body: &'a RawValue,
    },
    Error {
        code: &'a str,
        message: &'a str,
    },
}

impl ServerFrame<'_> {
    /// Serialise once into a shareable text payload (cloning it is a reference-count bump).
    pub fn encode(&self) -> Utf8Bytes {
        let mut json = Vec::with_capacity(self.size_hint());
        // Serialising these types cannot fail: no maps with non-string keys, no failing Serialize impls.
        serde_json::to_writer(&mut json, self).expect("server frames always serialise");
        // SAFETY: serde_json writes UTF-8 only (its `to_string` makes the same conversion).
        Utf8Bytes::from(unsafe { String::from_utf8_unchecked(json) })
    }

    /// Bytes to reserve for the encoding: a frame's fixed fields and the texts it carries, so that a notification
    /// frame is written into one allocation instead of growing from serde_json's 128 bytes (three or four
    /// reallocations and copies for a typical notification; its size is the bound ingest checks, never under it).
    /// An underestimate (other frames) only means one more growth.
    fn size_hint(&self) -> usize {
        const FIELDS: usize = 128;
        match self {
            ServerFrame::Notification { event_type, notification: n, body } => {
                FrameTexts::of(event_type, n).bound(&[n.data.get(), body.get()])
            }
            ServerFrame::Event { event_type, title, content, body } => {
                FIELDS + event_type.len() + title.len() + content.len() + body.get().len()
            }
            ServerFrame::Read { ids, .. }
            | ServerFrame::Deleted { ids }
            | ServerFrame::Unread { ids }
            | ServerFrame::Archived { ids }
            | ServerFrame::Unarchived { ids } => FIELDS + ids.len() * 21, // an i64 and its comma at most
            _ => FIELDS,
        }
    }
}

/// Bytes a notification frame takes besides its texts and JSON values, at most: the keys, punctuation, two ids of
/// 19 digits and a sign, four timestamps and the flags (checked by a test against a frame with every such field
/// at its longest).
const NOTIFICATION_FRAME_FIXED: usize = 512;

/// The texts a notification frame carries, each as JSON escapes it: what [`FrameTexts::bound`] counts. Ingest
/// builds them from a rule's draft to refuse a notification over what a session can carry before storing it
/// (`ingest::check_sizes`); [`ServerFrame::encode`] from the stored notification, to size its buffer.
pub struct FrameTexts<'a> {
    pub kind: &'a str,
    pub title: &'a str,
    pub content: &'a str,
    /// Carried twice: the frame's and the notification's.
    pub event_type: &'a str,
    pub source: Option<&'a str>,
    pub related: Option<&'a RelatedObject>,
    /// The user (`None`: a broadcast, or not known yet).
    pub recipient: Option<&'a str>,
}

impl<'a> FrameTexts<'a> {
    pub fn of(event_type: &'a str, n: &'a Notification) -> FrameTexts<'a> {
        FrameTexts {
            kind: &n.kind,
            title: &n.title,
            content: &n.content,
            event_type,
            source: n.source.as_deref(),
            related: n.related_object.as_ref(),
            recipient: n.user_id.as_deref(),
        }
    }

    /// The most bytes the frame can take with these texts and these JSON `values` (its data and the event's body,
    /// carried verbatim).
    pub fn bound(&self, values: &[&str]) -> usize {
        let texts = [
            self.kind,
            self.title,
            self.content,
            self.event_type,
            self.event_type,
            self.source.unwrap_or(""),
            self.related.map_or("", |r| r.kind.as_str()),
            self.related.map_or("", |r| r.id.as_str()),
            self.recipient.unwrap_or(""),
        ];
        NOTIFICATION_FRAME_FIXED
            + texts.iter().map(|t| json_escaped_len(t)).sum::<usize>()
            + values.iter().map(|v| v.len()).sum::<usize>()
    }
}

/// Bytes the event shape ([`Format::Event`]) adds at most to a `notification` or `event` frame whose texts are
/// these: the title and content again (as `title` and `message`), the event type and Herald's id at the top level,
/// their keys, and `{"data": …}` around a body that is not an object. Ingest adds it to what it checks, so a
/// notification it stores reaches sessions in either format (an event-format session skipped one near the limit).
/// A body is re-serialised in that shape: a number written with an exponent may come out a few bytes longer.
pub fn event_shape_extra(title: &str, content: &str, event_type: &str) -> usize {
    const EVENT_SHAPE_FIXED: usize = 96;
    EVENT_SHAPE_FIXED + json_escaped_len(title) + json_escaped_len(content) + json_escaped_len(event_type)
}

/// The length of `s` as a JSON string's contents, as serde_json writes it: a quote, a backslash and the short control
/// escapes take two bytes, other control characters six (`\u00XX`), everything else itself.
fn json_escaped_len(s: &str) -> usize {
    s.len()
        + s.bytes()
            .map(|b| match b {
                b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
                0..=0x1f => 5,
                _ => 0,
            })
            .sum::<usize>()
}

/// The one serialisation of a notification frame, shared by all its recipients.
pub fn encode_notification_frame(n: &Notification, body: &RawValue) -> Utf8Bytes {
    ServerFrame::Notification { event_type: &n.event_type, notification: n, body }.encode()
}

/// How a session's frames are shaped, chosen at connect time (`?format=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Herald's frames, as documented in `docs/PROTOCOL.md`.
    #[default]
    Herald,
    /// What hand-written gateways sent (the seeds' frontends): each notification or live event is the event's
    /// own fields at the top level, plus `event_type`, Herald's `id` (for resume) and, when the body has none,
    /// `title` and `message`. Control frames are unchanged.
    Event,
}

/// The answer to any text a client in [`Format::Event`] sends (what the seeds' FastAPI gateway answered).
pub const EVENT_FORMAT_PONG: &str = r#"{"type":"pong","message":"Connection alive"}"#;

/// Reshape a `notification` or `event` frame for [`Format::Event`]; `None` for any other frame (sent as is).
/// Done once per message and node, lazily, for the sessions that asked for it.
pub fn event_format(frame: &str) -> Option<Utf8Bytes> {
    #[derive(Deserialize)]
    struct Shape<'a> {
        #[serde(rename = "type", borrow)]
        kind: &'a str,
        #[serde(borrow)]
        event_type: Option<std::borrow::Cow<'a, str>>,
        notification: Option<serde_json::Value>,
        title: Option<String>,
        content: Option<String>,
        #[serde(default)]
        body: serde_json::Value,
    }
    let shape: Shape = serde_json::from_str(frame).ok()?;
    if shape.kind != "notification" && shape.kind != "event" {
        return None;
    }
    let mut out = match shape.body {
        serde_json::Value::Object(map) => map,
        other => {
            let mut map = serde_json::Map::new();
            map.insert("data".into(), other);
            map
        }
    };
    let n = shape.notification.as_ref();
    let field = |name: &str| n.and_then(|n| n.get(name)).cloned();
    let event_type = n.and_then(|n| n.get("event_type")).and_then(|v| v.as_str()).map(str::to_owned);
    let event_type = event_type.or(shape.event_type.map(|c| c.into_owned())).unwrap_or_default();
    out.insert("event_type".into(), event_type.into());
    if let Some(id) = field("id") {
        out.insert("id".into(), id);
    }
    let title = field("title").or(shape.title.map(Into::into));
    let message = field("content").or(shape.content.map(Into::into));
    if let (Some(t), false) = (title, out.contains_key("title")) {
        out.insert("title".into(), t);
    }
    if let (Some(m), false) = (message, out.contains_key("message")) {
        out.insert("message".into(), m);
    }
    if let Some(n) = n {
        out.insert("notification".into(), n.clone());
    }
    Some(Utf8Bytes::from(serde_json::Value::Object(out).to_string()))
}

/// What a client may send on an open socket.
#[derive(Debug, PartialEq)]
pub enum ClientMessage {
    Ping,
    /// Replay everything after this position, then continue live.
    Resume {
        since: Position,
    },
    /// A fresh token for this session.
    Auth {
        token: String,
    },
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientJson {
    Ping,
    Resume { since: i64, since_broadcast: Option<i64> },
    Auth { token: String },
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct BadClientMessage(pub String);

/// Why a negative replay cursor is refused, on the handshake (`400 bad_query`) and in a `resume` (an `error` frame).
pub const NEGATIVE_CURSOR: &str =
    "since and since_broadcast are notification ids: 0 or more (0 replays all that is kept)";

impl ClientMessage {
    pub fn parse(text: &str) -> Result<Self, BadClientMessage> {
        let trimmed = text.trim();
        if trimmed.eq_ignore_ascii_case("ping") {
            return Ok(ClientMessage::Ping);
        }
        match serde_json::from_str::<ClientJson>(trimmed) {
            Ok(ClientJson::Ping) => Ok(ClientMessage::Ping),
            Ok(ClientJson::Resume { since, since_broadcast }) => {
                let since = Position { targeted: since, broadcast: since_broadcast.unwrap_or(since) };
                match since.targeted >= 0 && since.broadcast >= 0 {
                    true => Ok(ClientMessage::Resume { since }),
                    // A cursor below every id would read as "history was pruned under you" (`truncated`).
                    false => Err(BadClientMessage(NEGATIVE_CURSOR.into())),
                }
            }
            Ok(ClientJson::Auth { token }) => Ok(ClientMessage::Auth { token }),
            Err(e) => {
                Err(BadClientMessage(format!("expected `ping` or a JSON object with type ping|resume|auth: {e}")))
            }
        }
    }
}

/// A page of the REST inbox, newest first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InboxPage {
    pub items: Vec<Notification>,
    /// Pass as `before` to get the next (older) page; `null` when there is none.
    #[schema(required = true)]
    pub next_before: Option<i64>,
    pub has_more: bool,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UnreadCount {
    pub unread_count: u64,
}

/// A user's counts, kept as counters (read by key): archived and muted notifications are in neither.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Counts {
    /// Unread notifications, broadcasts included.
    pub unread: u64,
    /// Notifications not seen yet (not since the last `seen_all`, not read).
    pub unseen: u64,
}

/// Counts as of one commit or snapshot: the newest broadcast id they include, and their version among the user's
/// counts — higher is newer, whichever node wrote them; 0 where their one writer orders them already (see
/// `inbox::Store::opening`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountsAt {
    pub counts: Counts,
    pub broadcast_up_to: i64,
    pub version: u64,
}

/// Whether notifications of one type reach the user live and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TypeSetting {
    /// Pushed live and counted (the default unless `preferences.muted_by_default` names the type).
    On,
    /// Stored and listed (`"muted": true`), never pushed live, not counted.
    Muted,
}

/// A user's notification preferences: one setting per notification `type`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Preferences {
    /// What the user set, by notification type.
    pub types: std::collections::BTreeMap<String, TypeSetting>,
    /// The configured defaults (`preferences.muted_by_default`), listed whether or not the user set the type:
    /// they apply to the types `types` leaves out.
    #[serde(default)]
    #[schema(required = true)]
    pub defaults: std::collections::BTreeMap<String, TypeSetting>,
    /// The types the rules in force store as written, sorted: what a settings page can offer before the user
    /// has any of them (a type a rule's template prints is not listed).
    #[serde(default)]
    #[schema(required = true)]
    pub known: Vec<String>,
}

/// The body of `PUT …/preferences`: replaces the user's settings.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferencesUpdate {
    pub types: std::collections::BTreeMap<String, TypeSetting>,
}

/// The body of `PATCH …/preferences`: changes the types it names, keeps the others.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferencesPatch {
    pub types: std::collections::BTreeMap<String, TypeSettingChange>,
}

/// What `PATCH …/preferences` sets a type to: `on`, `muted`, or `default` (what the user set is forgotten: the
/// configured default applies again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TypeSettingChange {
    On,
    Muted,
    Default,
}

impl TypeSettingChange {
    /// The setting, or `None` for the default.
    pub fn setting(self) -> Option<TypeSetting> {
        match self {
            TypeSettingChange::On => Some(TypeSetting::On),
            TypeSettingChange::Muted => Some(TypeSetting::Muted),
            TypeSettingChange::Default => None,
        }
    }
}

/// What `POST …/notifications/batch` does to each notification it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BatchAction {
    /// Read (and seen); one already read keeps its first `read_at`.
    Read,
    /// Unread again (it stays seen).
    Unread,
    Archive,
    Unarchive,
    /// Deleted (a broadcast: hidden from this user).
    Delete,
}

/// The body of `POST …/notifications/batch`: one action on up to 100 notifications, in one commit.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub action: BatchAction,
    /// 1 to 100 different notification ids; one named twice is changed once and counts once against the 100.
    #[schema(min_items = 1)]
    pub ids: Vec<i64>,
}

/// The answer to `POST …/notifications/batch`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchResult {
    pub action: BatchAction,
    /// The ids in this inbox, changed (or already in that state), in the request's order.
    pub ids: Vec<i64>,
    /// The ids not in this inbox (nothing was done to them).
    pub not_found: Vec<i64>,
    /// Those notifications as they are now, in the order of `ids` (empty for `delete`, and for a service key with
    /// `inbox:write` but not `inbox:read`, which may change an inbox without reading it).
    pub items: Vec<Notification>,
}

/// Timestamps on the wire: RFC 3339, UTC, millisecond precision, `Z` suffix.
pub fn format_ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn ts<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_ts(t))
}

fn opt_ts<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ts(t, s),
        None => s.serialize_none(),
    }
}

/// `data` is kept as raw JSON text from the store to the socket: never parsed on the hot path.
mod raw_json {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::value::RawValue;

    pub fn serialize<S: Serializer>(v: &RawValue, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Box<RawValue>, D::Error> {
        Box::<RawValue>::deserialize(d)
    }
}

/// Raw JSON `null`, for notifications without `data`.
pub fn raw_null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is valid JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn golden(name: &str) -> Value {
        let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn as_value(bytes: &Utf8Bytes) -> Value {
        serde_json::from_str(bytes.as_str()).unwrap()
    }

    fn sample() -> Notification {
        serde_json::from_value(golden("notification.json")).unwrap()
    }

    /// A golden notification frame, with the notification and body it is made of.
    fn golden_frame(name: &str) -> (Value, Notification, Box<RawValue>) {
        let g = golden(name);
        let n = serde_json::from_value(g["notification"].clone()).unwrap();
        let body = RawValue::from_string(g["body"].to_string()).unwrap();
        (g, n, body)
    }

    #[test]
    fn positions_combine_chain_by_chain() {
        let a = Position { targeted: 9, broadcast: 2 };
        let b = Position { targeted: 4, broadcast: 6 };
        assert_eq!(a.later_each(b), Position { targeted: 9, broadcast: 6 });
        assert_eq!(a.earlier_each(b), Position { targeted: 4, broadcast: 2 });
    }

    /// Ingest refuses a notification whose frame a session could not carry by this bound: it must never be under
    /// the frame's real length, whatever the texts hold (quotes, backslashes, control characters) and with every
    /// optional field at its longest.
    #[test]
    fn the_notification_frame_bound_is_never_under_the_encoded_frame() {
        let bound =
            |n: &Notification, body: &RawValue| FrameTexts::of(&n.event_type, n).bound(&[n.data.get(), body.get()]);
        let (_, golden, body) = golden_frame("frame-notification.json");
        assert!(encode_notification_frame(&golden, &body).len() <= bound(&golden, &body));

        let nasty = "\"\\\n\u{1}\u{1f}é😀</script>".repeat(50);
        use chrono::TimeZone;
        use serde_json::json;
        let at = Utc.with_ymd_and_hms(2999, 12, 31, 23, 59, 59).unwrap() + chrono::Duration::nanoseconds(999_999_999);
        let longest = Notification {
            id: i64::MIN,
            prev_id: i64::MIN,
            user_id: Some(nasty.clone()),
            kind: nasty.clone(),
            title: nasty.clone(),
            content: nasty.clone(),
            event_type: nasty.clone(),
            source: Some(nasty.clone()),
            related_object: Some(RelatedObject { kind: nasty.clone(), id: nasty.clone() }),
            data: RawValue::from_string(serde_json::to_string(&json!({ "k": nasty })).unwrap()).unwrap(),
            created_at: at,
            read_at: Some(at),
            seen_at: Some(at),
            archived_at: Some(at),
            muted: true,
        };
        let body = RawValue::from_string(serde_json::to_string(&json!({ "b": nasty })).unwrap()).unwrap();
        let frame = encode_notification_frame(&longest, &body);
        assert!(frame.len() <= bound(&longest, &body), "{} > {}", frame.len(), bound(&longest, &body));
        // In the event shape, with what it adds, too (a body that is an object, and one that is not).
        for (n, body) in
            [(&longest, &*body), (&golden, &*RawValue::from_string(serde_json::to_string(&nasty).unwrap()).unwrap())]
        {
            let frame = encode_notification_frame(n, body);
            let reshaped = event_format(&frame).unwrap();
            let limit = bound(n, body) + event_shape_extra(&n.title, &n.content, &n.event_type);
            assert!(reshaped.len() <= limit, "{} > {limit}", reshaped.len());
            let live =
                ServerFrame::Event { event_type: &n.event_type, title: &n.title, content: &n.content, body }.encode();
            let limit = live.len() + event_shape_extra(&n.title, &n.content, &n.event_type);
            assert!(event_format(&live).unwrap().len() <= limit);
        }
        // And not far over it: the fixed part is what the frame adds besides its texts and values.
        let empty = Notification { user_id: None, source: None, related_object: None, ..sample() };
        let fixed = encode_notification_frame(&empty, &RawValue::from_string("{}".into()).unwrap()).len();
        assert!(fixed <= NOTIFICATION_FRAME_FIXED, "{fixed}");
    }

    #[test]
    fn notification_round_trips_the_golden_file() {
        let n = sample();
        assert_eq!(serde_json::to_value(&n).unwrap(), golden("notification.json"));
    }

    #[test]
    fn notification_frame_matches_golden() {
        let g = golden("frame-notification.json");
        let body = RawValue::from_string(g["body"].to_string()).unwrap();
        assert_eq!(as_value(&encode_notification_frame(&sample(), &body)), g);
    }

    #[test]
    fn broadcast_frame_matches_golden() {
        let (g, n, body) = golden_frame("frame-broadcast.json");
        assert_eq!(n.user_id, None);
        assert_eq!(as_value(&encode_notification_frame(&n, &body)), g);
    }

    #[test]
    fn notification_event_and_id_list_frames_fit_the_buffer_reserved_for_them() {
        let live_body = RawValue::from_string(r#"{"referee_id":"r1","week_number":43}"#.into()).unwrap();
        let ids: Vec<i64> = (i64::MAX - 500..i64::MAX).collect();
        let frames = ["frame-notification.json", "frame-broadcast.json"].map(golden_frame);
        let mut cases: Vec<ServerFrame> = frames
            .iter()
            .map(|(_, n, body)| ServerFrame::Notification { event_type: &n.event_type, notification: n, body })
            .collect();
        cases.push(ServerFrame::Event {
            event_type: "availability.updated",
            title: "t",
            content: "",
            body: &live_body,
        });
        cases.push(ServerFrame::Deleted { ids: &ids });
        cases.push(ServerFrame::Counts { unread: u64::MAX, unseen: u64::MAX });
        for frame in &cases {
            let encoded = frame.encode();
            assert!(
                encoded.len() <= frame.size_hint(),
                "{} bytes > {} reserved: {frame:?}",
                encoded.len(),
                frame.size_hint()
            );
        }
    }

    #[test]
    fn control_frames_match_golden() {
        let read_at = "2026-01-10T09:00:00Z".parse().unwrap();
        let live_body = RawValue::from_string(r#"{"referee_id":"r1","week_number":43}"#.into()).unwrap();
        let bad_message = ClientMessage::parse("subscribe everything").unwrap_err().to_string();
        let cases: Vec<(ServerFrame, &str)> = vec![
            (
                ServerFrame::Ready {
                    session_id: "s-1f",
                    user_id: "42",
                    latest_id: 43,
                    latest_targeted_id: 43,
                    latest_broadcast_id: 40,
                    ping_interval_ms: 25_000,
                },
                "frame-ready.json",
            ),
            (ServerFrame::Pong, "frame-pong.json"),
            (ServerFrame::Read { ids: &[42], read_at }, "frame-read.json"),
            (ServerFrame::ReadAll { up_to: 43, read_at }, "frame-read-all.json"),
            (ServerFrame::Deleted { ids: &[42] }, "frame-deleted.json"),
            (ServerFrame::Unread { ids: &[42] }, "frame-unread.json"),
            (ServerFrame::Archived { ids: &[42] }, "frame-archived.json"),
            (ServerFrame::Unarchived { ids: &[42] }, "frame-unarchived.json"),
            (ServerFrame::SeenAll { up_to: 43, seen_at: read_at }, "frame-seen-all.json"),
            (ServerFrame::Counts { unread: 3, unseen: 1 }, "frame-counts.json"),
            (ServerFrame::Purged, "frame-purged.json"),
            (
                ServerFrame::Event {
                    event_type: "availability.updated",
                    title: "Availability updated",
                    content: "",
                    body: &live_body,
                },
                "frame-event.json",
            ),
            (ServerFrame::Replayed { up_to: 43, up_to_targeted: 43, up_to_broadcast: 40 }, "frame-replayed.json"),
            (ServerFrame::Truncated { since: 3, since_broadcast: 2, oldest_id: 17 }, "frame-truncated.json"),
            (ServerFrame::Resync { reason: "slow_consumer", since: 41, since_broadcast: 40 }, "frame-resync.json"),
            (ServerFrame::TokenExpiring { expires_at: 1767000000 }, "frame-token-expiring.json"),
            (ServerFrame::AuthOk { expires_at: 1767003600 }, "frame-auth-ok.json"),
            // The text a session answers to a message that is not one (`subscribe everything`).
            (ServerFrame::Error { code: "bad_message", message: &bad_message }, "frame-error.json"),
        ];
        for (frame, file) in cases {
            assert_eq!(as_value(&frame.encode()), golden(file), "{file}");
        }
    }

    #[test]
    fn the_event_format_puts_the_event_fields_at_the_top_level() {
        let (_, n, body) = golden_frame("frame-broadcast.json");
        let herald = encode_notification_frame(&n, &body);
        let shaped = as_value(&event_format(herald.as_str()).unwrap());
        assert_eq!(shaped, golden("event-format-notification.json"));
        let live = ServerFrame::Event {
            event_type: "availability.updated",
            title: "Availability updated",
            content: "",
            body: &RawValue::from_string(r#"{"referee_id":"r1","week_number":43}"#.into()).unwrap(),
        };
        assert_eq!(as_value(&event_format(live.encode().as_str()).unwrap()), golden("event-format-live.json"));
        assert!(event_format(ServerFrame::Pong.encode().as_str()).is_none(), "control frames are sent as they are");
        assert_eq!(serde_json::from_str::<Value>(EVENT_FORMAT_PONG).unwrap(), golden("event-format-pong.json"));
    }

    #[test]
    fn inbox_page_and_unread_count_parse_from_golden() {
        let page: InboxPage = serde_json::from_value(golden("inbox-page.json")).unwrap();
        assert_eq!(page.items.len(), 2);
        assert_eq!(serde_json::to_value(&page).unwrap(), golden("inbox-page.json"));
        let c: UnreadCount = serde_json::from_value(golden("unread-count.json")).unwrap();
        assert_eq!(c.unread_count, 1);
    }

    #[test]
    fn counts_and_preferences_round_trip_their_golden_files() {
        let c: Counts = serde_json::from_value(golden("counts.json")).unwrap();
        assert_eq!(c, Counts { unread: 3, unseen: 1 });
        assert_eq!(serde_json::to_value(c).unwrap(), golden("counts.json"));
        let p: Preferences = serde_json::from_value(golden("preferences.json")).unwrap();
        assert_eq!(p.types["digest"], TypeSetting::Muted);
        assert_eq!(p.types["stage"], TypeSetting::On);
        assert_eq!(serde_json::to_value(&p).unwrap(), golden("preferences.json"));
        let update: PreferencesUpdate = serde_json::from_value(serde_json::json!({"types": {"a": "on"}})).unwrap();
        assert_eq!(update.types["a"], TypeSetting::On);
        assert!(serde_json::from_value::<PreferencesUpdate>(serde_json::json!({"types": {"a": "off"}})).is_err());
        let patch: PreferencesPatch =
            serde_json::from_value(serde_json::json!({"types": {"a": "default", "b": "muted"}})).unwrap();
        assert_eq!((patch.types["a"].setting(), patch.types["b"].setting()), (None, Some(TypeSetting::Muted)));
        assert!(serde_json::from_value::<PreferencesPatch>(serde_json::json!({"types": {"a": null}})).is_err());
    }

    #[test]
    fn a_notification_carries_its_seen_archived_and_muted_state() {
        let n = sample();
        assert_eq!(n.seen_at.map(|t| format_ts(&t)).as_deref(), Some("2026-01-10T08:20:00.000Z"));
        assert!(n.archived_at.is_none() && !n.muted);
        let v = serde_json::to_value(&n).unwrap();
        for field in ["read_at", "seen_at", "archived_at", "muted"] {
            assert!(v.as_object().unwrap().contains_key(field), "{field} is always present");
        }
    }

    #[test]
    fn client_messages_parse_text_ping_and_json() {
        assert_eq!(ClientMessage::parse("ping"), Ok(ClientMessage::Ping));
        assert_eq!(ClientMessage::parse(&golden("client-ping.json").to_string()), Ok(ClientMessage::Ping));
        assert_eq!(
            ClientMessage::parse(r#"{"type":"resume","since":7}"#),
            Ok(ClientMessage::Resume { since: Position::both(7) }),
            "a v1 resume moves both cursors"
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"resume","since":7,"since_broadcast":5}"#),
            Ok(ClientMessage::Resume { since: Position { targeted: 7, broadcast: 5 } })
        );
        for negative in [r#"{"type":"resume","since":-1}"#, r#"{"type":"resume","since":3,"since_broadcast":-5}"#] {
            assert_eq!(ClientMessage::parse(negative), Err(BadClientMessage(NEGATIVE_CURSOR.into())), "{negative}");
        }
        assert_eq!(
            ClientMessage::parse(r#"{"type":"auth","token":"t"}"#),
            Ok(ClientMessage::Auth { token: "t".into() })
        );
        assert!(matches!(
            ClientMessage::parse(&golden("client-auth.json").to_string()),
            Ok(ClientMessage::Auth { .. })
        ));
        assert_eq!(
            ClientMessage::parse(&golden("client-resume.json").to_string()),
            Ok(ClientMessage::Resume { since: Position { targeted: 41, broadcast: 40 } })
        );
        assert!(matches!(
            ClientMessage::parse(&golden("client-auth.json").to_string()),
            Ok(ClientMessage::Auth { .. })
        ));
        assert!(ClientMessage::parse("hello").is_err());
        assert!(ClientMessage::parse(r#"{"type":"subscribe"}"#).is_err());
    }
}
