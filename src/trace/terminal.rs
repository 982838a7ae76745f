//! `herald trace`: ask a running gateway for traces (`GET /api/v1/admin/...`) and show each as a timeline for
//! a terminal, one line per step, oldest first (`--json`: the answer as it came).
//!
//! The admin key is sent only as the `Authorization` header and never printed, not even in errors.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::{EventTraces, Trace, UserTraces};

/// What `herald trace` asks for.
#[derive(Debug, Clone)]
pub enum Query {
    Event(String),
    User { user: String, limit: usize },
}

/// Fetch the traces `query` names from the gateway at `base` with the admin `key`; the text to print (a
/// timeline, or the raw JSON with `json`), or why not, in words.
pub async fn fetch(base: &str, key: &str, query: &Query, json: bool) -> anyhow::Result<String> {
    let mut url = url::Url::parse(base).map_err(|e| anyhow::anyhow!("--url `{base}`: {e}"))?;
    {
        let mut path = url.path_segments_mut().map_err(|_| anyhow::anyhow!("--url `{base}` cannot take a path"))?;
        path.pop_if_empty();
        match query {
            Query::Event(id) => path.extend(["api", "v1", "admin", "events", id.as_str(), "trace"]),
            Query::User { user, .. } => path.extend(["api", "v1", "admin", "users", user.as_str(), "trace"]),
        };
    }
    if let Query::User { limit, .. } = query {
        url.query_pairs_mut().append_pair("limit", &limit.to_string());
    }
    let response = reqwest::Client::new()
        .get(url.clone())
        .bearer_auth(key)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {base}: {}", causes(&e.without_url())))?;
    let status = response.status();
    let body = response.text().await.map_err(|e| anyhow::anyhow!("reading the answer: {}", e.without_url()))?;
    if !status.is_success() {
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let code = parsed["error"].as_str().unwrap_or("");
        let message = parsed["message"].as_str().unwrap_or("");
        anyhow::bail!(match (status.as_u16(), query) {
            (404, Query::Event(id)) if code == "not_found" => format!("no trace of event `{id}` is retained"),
            (401, _) => format!("the gateway refused the key ({status}, {code}): {message}"),
            (403, _) => format!("the key lacks the `admin` scope ({status}, {code}): {message}"),
            _ => format!("the gateway answered {status} {code}: {message}"),
        });
    }
    if json {
        return Ok(format!(
            "{body}
"
        ));
    }
    let not_a_trace = |e: serde_json::Error| anyhow::anyhow!("the gateway's answer is not a trace: {e}");
    let mut answer: serde_json::Value = serde_json::from_str(&body).map_err(not_a_trace)?;
    defang(&mut answer);
    let traces = match query {
        Query::Event(_) => serde_json::from_value::<EventTraces>(answer).map(|t| t.traces),
        Query::User { .. } => serde_json::from_value::<UserTraces>(answer).map(|t| t.traces),
    }
    .map_err(not_a_trace)?;
    Ok(render_all(&traces))
}

/// Every control character in the answer's strings written as its escape (`\u{1b}`): event ids, routing keys
/// and recipients come from publishers, and a terminal obeys the escape sequences they may hold (a cleared
/// screen, a forged line).
fn defang(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if s.chars().any(char::is_control) => {
            *s = s
                .chars()
                .map(|c| if c.is_control() { c.escape_unicode().to_string() } else { c.to_string() })
                .collect();
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(defang),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(defang),
        _ => {}
    }
}

/// An error and its causes, outermost first (`error sending request: … Connection refused`), where reqwest's own
/// text says only the first.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        source = cause.source();
    }
    text
}

fn time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// What an outcome means, in words.
fn outcome(t: &Trace) -> String {
    let what = match t.outcome.as_str() {
        "stored" => "stored",
        "duplicate" => "a duplicate: already applied, not stored again",
        "unmatched" => "no rule matched: not stored",
        "ignored" => "ignored by its rule: not stored",
        "dead_lettered" => "dead-lettered",
        "held_for_retry" => "not stored yet: held for a retry, its next try is a trace of its own",
        "purged" => "purged the recipients' inboxes",
        "live_only" => "pushed live only, not stored",
        "unresolved" => "not stored: its alias recipient is not known yet",
        other => other,
    };
    match &t.reason {
        Some(r) if t.outcome != "stored" => format!("{what} ({r})"),
        _ => what.to_owned(),
    }
}

/// One trace as a timeline.
pub fn render(t: &Trace) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "trace {}  event {}", t.trace_id, t.event_id);
    let mut lines: Vec<(DateTime<Utc>, u8, String)> = Vec::new();
    let mut received = format!(
        "received over {}",
        match t.transport {
            super::Transport::Http => "HTTP",
            super::Transport::Amqp => "AMQP",
        }
    );
    if let Some(x) = &t.exchange {
        let _ = write!(received, ", exchange {x}");
    }
    if let Some(k) = &t.routing_key {
        let _ = write!(received, ", routing key {k}");
    }
    if let Some(p) = &t.producer {
        let _ = write!(received, ", from key {p}");
    }
    if let Some(e) = &t.event_type {
        let _ = write!(received, ", type {e}");
    }
    lines.push((t.received_at, 0, received));
    let dedupe = match t.dedupe.as_str() {
        super::UNCHECKED => String::new(),
        d => format!("; dedupe: {d}"),
    };
    let rule = match &t.rule {
        Some(r) => format!("rule `{r}` matched{dedupe}"),
        None => format!("no rule matched{dedupe}"),
    };
    lines.push((t.received_at, 1, rule));
    let mut result = format!("outcome: {}", outcome(t));
    if !t.recipients.is_empty() {
        let _ = write!(result, "; recipients {}", t.recipients.join(", "));
    }
    if !t.notification_ids.is_empty() {
        let ids: Vec<String> = t.notification_ids.iter().map(|i| format!("#{i}")).collect();
        let _ = write!(result, "; notifications {}", ids.join(", "));
    }
    lines.push((t.received_at, 2, result));
    for d in &t.deliveries {
        let who = if d.user_id == "*" { "everyone (broadcast)".to_owned() } else { d.user_id.clone() };
        let what = match (d.reason.as_deref(), d.online) {
            (None, _) => {
                format!("queued for {} session{}", d.sessions_written, if d.sessions_written == 1 { "" } else { "s" })
            }
            (Some("offline"), _) => "not online there: nothing to push (it waits in the inbox)".to_owned(),
            (Some("muted"), _) => "muted by the user's preferences: stored, not pushed".to_owned(),
            (Some("outbox_overflow"), _) => {
                format!("outbox full: queued for {}, the others resync from the inbox", d.sessions_written)
            }
            (Some("closed"), _) => format!("session closing: queued for {}", d.sessions_written),
            (Some(other), _) => other.to_owned(),
        };
        lines.push((d.at, 3, format!("delivery to {who} on node {}: {what}", d.node)));
    }
    for r in &t.read {
        lines.push((r.read_at, 4, format!("read by {}", r.user_id)));
    }
    for s in &t.seen {
        if !t.read.iter().any(|r| r.user_id == s.user_id && r.read_at == s.seen_at) {
            lines.push((s.seen_at, 4, format!("seen by {}", s.user_id)));
        }
    }
    lines.sort_by_key(|l| (l.0, l.1));
    let mut last = None;
    for (at, _, text) in lines {
        let stamp = if last == Some(at) { " ".repeat(23) } else { time(&at) };
        last = Some(at);
        let _ = writeln!(out, "  {stamp}  {text}");
    }
    if !t.published_to.is_empty() {
        let _ = writeln!(out, "  published to {}", t.published_to.join(", "));
    }
    out
}

/// Several traces, newest first, separated by a blank line; a line saying so when there are none.
pub fn render_all(traces: &[Trace]) -> String {
    if traces.is_empty() {
        return "no trace retained\n".to_owned();
    }
    traces.iter().map(render).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{ReadMark, SeenMark, TraceDelivery, Transport};

    #[test]
    fn control_characters_from_publishers_reach_the_terminal_escaped() {
        let mut v = serde_json::json!({"event_id": "ok\u{1b}]0;T\u{7}\u{1b}[2J\nFAKE", "n": [1, "a\u{9b}b"]});
        defang(&mut v);
        assert_eq!(v["event_id"], "ok\\u{1b}]0;T\\u{7}\\u{1b}[2J\\u{a}FAKE");
        assert_eq!(v["n"][1], "a\\u{9b}b", "C1 controls too");
        assert_eq!(v["n"][0], 1);
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_trace_reads_as_a_timeline_of_steps() {
        let t = Trace {
            trace_id: "00ab".into(),
            event_id: "e-42".into(),
            received_at: at("2026-11-29T03:21:07.120Z"),
            transport: Transport::Http,
            exchange: Some("sgad.notifications".into()),
            routing_key: Some("availability.closed.7".into()),
            producer: Some("billing".into()),
            event_type: Some("availability.closed".into()),
            dedupe: "new".into(),
            rule: Some("availability_closed".into()),
            outcome: "stored".into(),
            reason: None,
            recipients: vec!["alice".into(), "bob".into()],
            notification_ids: vec![41, 42],
            published_to: vec!["node-a".into(), "node-b".into()],
            deliveries: vec![
                TraceDelivery {
                    user_id: "bob".into(),
                    node: "node-b".into(),
                    online: false,
                    sessions_written: 0,
                    reason: Some("offline".into()),
                    at: at("2026-11-29T03:21:07.130Z"),
                },
                TraceDelivery {
                    user_id: "alice".into(),
                    node: "node-a".into(),
                    online: true,
                    sessions_written: 2,
                    reason: None,
                    at: at("2026-11-29T03:21:07.125Z"),
                },
            ],
            read: vec![ReadMark { user_id: "alice".into(), read_at: at("2026-11-29T03:30:00Z") }],
            seen: vec![
                SeenMark { user_id: "alice".into(), seen_at: at("2026-11-29T03:30:00Z") },
                SeenMark { user_id: "bob".into(), seen_at: at("2026-11-29T04:00:00Z") },
            ],
        };
        let text = render(&t);
        let expected = "\
trace 00ab  event e-42
  2026-11-29 03:21:07.120  received over HTTP, exchange sgad.notifications, routing key availability.closed.7, from key billing, type availability.closed
                           rule `availability_closed` matched; dedupe: new
                           outcome: stored; recipients alice, bob; notifications #41, #42
  2026-11-29 03:21:07.125  delivery to alice on node node-a: queued for 2 sessions
  2026-11-29 03:21:07.130  delivery to bob on node node-b: not online there: nothing to push (it waits in the inbox)
  2026-11-29 03:30:00.000  read by alice
  2026-11-29 04:00:00.000  seen by bob
  published to node-a, node-b
";
        assert_eq!(text, expected, "got:\n{text}");
        assert!(!text.contains('{'), "no raw JSON");
    }

    #[test]
    fn an_unmatched_event_says_why_and_no_traces_say_so() {
        let t = Trace {
            trace_id: "01".into(),
            event_id: "e".into(),
            received_at: at("2026-11-29T03:00:00Z"),
            transport: Transport::Amqp,
            exchange: None,
            routing_key: Some("x.y".into()),
            producer: None,
            event_type: None,
            dedupe: "new".into(),
            rule: None,
            outcome: "unmatched".into(),
            reason: Some("no rule matches routing key `x.y`".into()),
            recipients: vec![],
            notification_ids: vec![],
            published_to: vec![],
            deliveries: vec![],
            read: vec![],
            seen: vec![],
        };
        let text = render(&t);
        assert!(text.contains("received over AMQP, routing key x.y"), "{text}");
        assert!(text.contains("no rule matched; dedupe: new"), "{text}");
        assert!(text.contains("outcome: no rule matched: not stored (no rule matches routing key `x.y`)"), "{text}");
        assert_eq!(render_all(&[]), "no trace retained\n");
        // Dead-lettered before its commit by the rule that matched: the rule named, no dedupe verdict.
        let refused = Trace {
            dedupe: crate::trace::UNCHECKED.into(),
            rule: Some("student-welcome".into()),
            outcome: "dead_lettered".into(),
            reason: Some("missing_user_id: no user id at /payload/user_id".into()),
            ..t
        };
        let text = render(&refused);
        assert!(text.contains("rule `student-welcome` matched\n"), "{text}");
        assert!(!text.contains("dedupe"), "{text}");
    }
}
