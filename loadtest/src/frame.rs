//! What the tool reads from and writes into Herald's frames, without parsing whole JSON documents on the
//! hot path (a broadcast run reads 100k+ frames a second on one core).
//!
//! Every event the tool publishes carries a marker field in its body, `"herald_lt":"RUN:SEQ:SENT_NS"`: the run,
//! the event's sequence number and its intended send instant. Herald copies the original body into the
//! notification frame, so the receiver learns which event arrived and how late, whatever the route.

use std::sync::LazyLock;

use memchr::memmem::Finder;

pub const MARKER_KEY: &str = "herald_lt";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub run: u64,
    pub seq: u64,
    pub sent_ns: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Ready {
        latest_id: i64,
    },
    Notification {
        id: i64,
        marker: Option<Marker>,
    },
    Replayed {
        up_to: i64,
    },
    /// A message from nchan (`ws+meta.nchan`): which of the subscribed channels it came from (0: the user's,
    /// 1: broadcast), its position in that channel (nchan's message id: time, tag), and the marker.
    Nchan {
        channel: usize,
        id: (u64, u64),
        marker: Option<Marker>,
    },
    /// Any other control frame (pong, resync, read, ...).
    Other,
}

static TYPE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"type\":\""));
static NOTIFICATION_ID: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"notification\":{\"id\":"));
static LATEST_ID: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"latest_id\":"));
static UP_TO: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"up_to\":"));
static MARKER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"herald_lt\":\""));

/// The marker field to splice into an event body (no leading or trailing comma).
pub fn marker_field(m: Marker) -> String {
    format!("\"{MARKER_KEY}\":\"{}:{}:{}\"", m.run, m.seq, m.sent_ns)
}

pub fn parse(text: &str) -> Frame {
    let b = text.as_bytes();
    // Herald writes the tag first; anything unexpected falls back to a real JSON parse.
    let kind = TYPE.find(b).map(|i| {
        let rest = &text[i + 8..];
        &rest[..rest.find('"').unwrap_or(0)]
    });
    match kind {
        Some("notification") => match int_after(&NOTIFICATION_ID, text) {
            Some(id) => Frame::Notification { id, marker: find_marker(text) },
            None => slow(text),
        },
        Some("ready") => match int_after(&LATEST_ID, text) {
            Some(latest_id) => Frame::Ready { latest_id },
            None => slow(text),
        },
        Some("replayed") => match int_after(&UP_TO, text) {
            Some(up_to) => Frame::Replayed { up_to },
            None => slow(text),
        },
        Some(_) => Frame::Other,
        None => slow(text),
    }
}

pub fn find_marker(text: &str) -> Option<Marker> {
    let i = MARKER.find(text.as_bytes())?;
    let rest = &text[i + MARKER_KEY.len() + 4..];
    let value = &rest[..rest.find('"')?];
    let mut it = value.split(':').map(|p| p.parse::<u64>().ok());
    Some(Marker { run: it.next()??, seq: it.next()??, sent_ns: it.next()?? })
}

/// An nchan `ws+meta.nchan` frame: `id: <time>:<tags>\ncontent-type: …\n\n<data>`. On a multiplexed
/// subscriber the tags are one per channel, comma-separated, the message's own in brackets (`1795922768:1,[1]`);
/// times are one for all channels or one per channel, in the same order.
pub fn parse_nchan(text: &str) -> Frame {
    let (head, data) = match text.split_once("\n\n") {
        Some(p) => p,
        None => return Frame::Other,
    };
    let Some(id) = head.lines().find_map(|l| l.strip_prefix("id: ")) else {
        return Frame::Other;
    };
    match nchan_id(id) {
        Some((channel, id)) => Frame::Nchan { channel, id, marker: find_marker(data) },
        None => Frame::Other,
    }
}

fn nchan_id(id: &str) -> Option<(usize, (u64, u64))> {
    let (times, tags) = id.trim().split_once(':')?;
    let times: Vec<&str> = times.split(',').collect();
    let (k, tag) = tags
        .split(',')
        .enumerate()
        .find_map(|(k, t)| Some((k, t.strip_prefix('[')?.strip_suffix(']')?)))
        // A single channel: no brackets.
        .or_else(|| (!tags.contains(',')).then_some((0, tags)))?;
    let time = times.get(k).or(times.first())?.parse().ok()?;
    Some((k, (time, tag.parse().ok()?)))
}

fn int_after(f: &Finder<'_>, text: &str) -> Option<i64> {
    let i = f.find(text.as_bytes())? + f.needle().len();
    let rest = text[i..].trim_start();
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '-')).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn slow(text: &str) -> Frame {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return Frame::Other;
    };
    match v["type"].as_str() {
        Some("notification") => Frame::Notification {
            id: v["notification"]["id"].as_i64().unwrap_or(0),
            marker: v["body"][MARKER_KEY].as_str().and_then(|s| find_marker(&format!("\"{MARKER_KEY}\":\"{s}\""))),
        },
        Some("ready") => Frame::Ready { latest_id: v["latest_id"].as_i64().unwrap_or(0) },
        Some("replayed") => Frame::Replayed { up_to: v["up_to"].as_i64().unwrap_or(0) },
        _ => Frame::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Marker = Marker { run: 7, seq: 123, sent_ns: 99_000_000_001 };

    #[test]
    fn a_notification_frame_yields_its_id_and_marker() {
        let f = format!(
            r#"{{"type":"notification","event_type":"sgad.notifications","notification":{{"id":42,"prev_id":40,"user_id":"lt-1","type":"info","title":"t"}},"body":{{"user_id":"lt-1","title":"t",{}}}}}"#,
            marker_field(M)
        );
        assert_eq!(parse(&f), Frame::Notification { id: 42, marker: Some(M) });
    }

    #[test]
    fn pretty_printed_frames_take_the_slow_path() {
        let f =
            r#"{ "type": "notification", "notification": { "id": 9 }, "body": { "herald_lt": "7:123:99000000001" } }"#;
        assert_eq!(parse(f), Frame::Notification { id: 9, marker: Some(M) });
    }

    #[test]
    fn control_frames() {
        assert_eq!(
            parse(r#"{"type":"ready","session_id":"s-1","user_id":"u","latest_id":17,"ping_interval_ms":25000}"#),
            Frame::Ready { latest_id: 17 }
        );
        assert_eq!(parse(r#"{"type":"replayed","up_to":311}"#), Frame::Replayed { up_to: 311 });
        assert_eq!(parse(r#"{"type":"pong"}"#), Frame::Other);
        assert_eq!(parse("not json"), Frame::Other);
    }

    #[test]
    fn nchan_meta_frames_yield_the_channel_its_position_and_the_marker() {
        let body = format!(r#"{{"user_id":"lt-1","title":"t",{}}}"#, marker_field(M));
        let user = format!("id: 1795922768:[1],0\ncontent-type: application/json\n\n{body}");
        assert_eq!(parse_nchan(&user), Frame::Nchan { channel: 0, id: (1795922768, 1), marker: Some(M) });
        let bcast = format!("id: 1795922761,1795922768:-,[3]\ncontent-type: application/json\n\n{body}");
        assert_eq!(parse_nchan(&bcast), Frame::Nchan { channel: 1, id: (1795922768, 3), marker: Some(M) });
        let single = "id: 17:2\n\n{}";
        assert_eq!(parse_nchan(single), Frame::Nchan { channel: 0, id: (17, 2), marker: None });
        assert_eq!(parse_nchan("no meta"), Frame::Other);
    }

    #[test]
    fn a_foreign_notification_has_no_marker() {
        let f = r#"{"type":"notification","notification":{"id":5},"body":{"user_id":"x"}}"#;
        assert_eq!(parse(f), Frame::Notification { id: 5, marker: None });
    }
}
