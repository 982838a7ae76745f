//! `herald rules test`: what the configured rules would do with event fixtures, without a broker or a store.
//!
//! Each file is decoded as its transport would decode it and routed; recipients given as aliases are resolved
//! from the aliases the *given* fixtures teach (all of them, whatever their order: the files describe the
//! events a deployment sees, not one delivery order), so an alias no fixture teaches is reported as the dead
//! letter it would be. Pure: no I/O beyond reading the files.
//!
//! `POST /api/v1/admin/rules/dry-run` asks the same of one pasted event ([`decode_one`], [`verdict`]), with the
//! aliases it needs read from the store by the caller (and those the event teaches itself).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use crate::config::UnmatchedPolicy;
use crate::event::{decode_bytes, Envelope, Event};
use crate::ingest::fixture;
use crate::rules::{Recipients, Route, RouteError, Rules};

/// What the gateway would do with one event (as JSON: `outcome` names the variant).
#[derive(Debug, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Verdict {
    Stored {
        rule: String,
        /// User ids, `everyone`, or `user (via kind alias id)`.
        recipients: Vec<String>,
        #[serde(rename = "type")]
        kind: String,
        title: String,
        content: String,
        event_type: String,
    },
    Live {
        rule: String,
        recipients: Vec<String>,
        title: String,
        event_type: String,
    },
    Purged {
        rule: String,
        users: Vec<String>,
    },
    Ignored {
        rule: String,
    },
    /// No rule matches: dead-lettered over AMQP (the default `amqp.unmatched`; acknowledged and dropped with
    /// `"ack"`), `422 unmatched` over HTTP.
    Unmatched {
        #[serde(skip)]
        http: bool,
        /// Acknowledged and dropped (`amqp.unmatched = "ack"`), not dead-lettered.
        #[serde(skip)]
        dropped: bool,
    },
    DeadLetter {
        reason: &'static str,
        message: String,
    },
}

impl Verdict {
    /// Would this event end in the dead-letter queue (or a 4xx)?
    pub fn is_dead_letter(&self) -> bool {
        matches!(self, Verdict::DeadLetter { .. } | Verdict::Unmatched { dropped: false, .. })
    }
}

pub struct Report {
    pub file: PathBuf,
    pub verdict: Verdict,
}

/// What a dry run applies as ingest does: a body over its transport's limit is refused, and so is a
/// notification whose frame is over `max_frame` bytes; an AMQP event no rule matches meets `amqp.unmatched`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `amqp.unmatched`.
    pub unmatched: UnmatchedPolicy,
    /// `server.max_body_bytes`: an HTTP fixture's body.
    pub http_body_bytes: usize,
    /// `amqp.max_message_bytes`: an AMQP fixture's body.
    pub amqp_message_bytes: usize,
    /// What a session can carry (`WebsocketSettings::max_frame_bytes`).
    pub max_frame: usize,
}

/// Dry-run `files` through `rules` within ingest's `limits`.
pub fn run(rules: &Rules, files: &[PathBuf], limits: Limits) -> Vec<Report> {
    let decoded: Vec<(PathBuf, Decoded)> = files.iter().map(|f| (f.clone(), decode(f, limits))).collect();
    // Every alias the fixtures teach, first: only those of events ingest would store (a refused event teaches
    // nothing).
    let mut aliases: HashMap<(String, String), String> = HashMap::new();
    for (_, d) in &decoded {
        if let Ok((event, _)) = d {
            let route = rules.route(event);
            let Ok(route @ Route::Notify(_)) = route else { continue };
            if super::check_sizes(rules.matching(event), &route, event, limits.max_frame).is_err() {
                continue;
            }
            let Route::Notify(draft) = route else { unreachable!("matched above") };
            for a in draft.aliases {
                aliases.insert((a.kind, a.alias), a.user);
            }
        }
    }
    decoded
        .into_iter()
        .map(|(file, d)| {
            let verdict = match d {
                Err(v) => v,
                Ok((event, http)) => verdict(rules, &event, http, &aliases, limits.max_frame, limits.unmatched),
            };
            Report { file, verdict }
        })
        .collect()
}

/// A fixture decoded (with whether it came over HTTP), or what the gateway would answer instead.
type Decoded = Result<(Event, bool), Verdict>;

// The error is the report's verdict, built once per fixture by a command-line dry run: its size costs nothing.
#[allow(clippy::result_large_err)]
fn decode(file: &std::path::Path, limits: Limits) -> Decoded {
    let (f, payload) = fixture::read(file)
        .map_err(|e| Verdict::DeadLetter { reason: "unreadable_fixture", message: format!("{e:#}") })?;
    let max_bytes = if f.is_http() { limits.http_body_bytes } else { limits.amqp_message_bytes };
    let envelope = Envelope {
        exchange: f.exchange.as_deref().unwrap_or(""),
        routing_key: f.routing_key.as_deref().filter(|k| !k.is_empty()),
        message_id: f.properties.message_id.as_deref(),
        caller: None,
        element: None,
    };
    let event = decode_bytes(envelope, &payload, max_bytes)
        .map_err(|e| Verdict::DeadLetter { reason: e.reason(), message: e.to_string() })?;
    Ok((event, f.is_http()))
}

/// One event as it would arrive with this exchange and routing key (none: as HTTP ingest takes it, the key
/// from the body), or the dead letter it would be.
// As `decode`: the error is the verdict, built once per dry run.
#[allow(clippy::result_large_err)]
pub fn decode_one(
    exchange: Option<&str>,
    routing_key: Option<&str>,
    raw: Box<serde_json::value::RawValue>,
) -> Result<Event, Verdict> {
    let envelope = Envelope {
        exchange: exchange.unwrap_or(""),
        routing_key: routing_key.filter(|k| !k.is_empty()),
        message_id: None,
        caller: None,
        element: None,
    };
    crate::event::decode(envelope, raw).map_err(|e| Verdict::DeadLetter { reason: e.reason(), message: e.to_string() })
}

/// An alias: its kind and id (e.g. `student`, a profile id).
pub type AliasKey = (String, String);

/// The aliases routing `event` needs resolved, and those it teaches itself (with their user): a caller with a
/// store looks the first up and adds the second.
pub fn aliases(rules: &Rules, event: &Event) -> (Vec<AliasKey>, Vec<(AliasKey, String)>) {
    match rules.route(event) {
        Ok(Route::Notify(d)) => {
            let taught = d.aliases.into_iter().map(|a| ((a.kind, a.alias), a.user)).collect();
            let needed = match d.recipients {
                Recipients::Alias { kind, aliases } => aliases.into_iter().map(|a| (kind.clone(), a)).collect(),
                _ => Vec::new(),
            };
            (needed, taught)
        }
        _ => (Vec::new(), Vec::new()),
    }
}

/// What the rules do with `event` (`http`: it came over HTTP ingest), aliases resolved from `aliases`, with
/// ingest's bounds on what an event may store and on a frame (`max_frame` bytes: see `super::check_sizes`).
pub fn verdict(
    rules: &Rules,
    event: &Event,
    http: bool,
    aliases: &HashMap<(String, String), String>,
    max_frame: usize,
    unmatched: UnmatchedPolicy,
) -> Verdict {
    let rule = rules.matching(event).unwrap_or_default().to_owned();
    let dead = |e: RouteError| Verdict::DeadLetter { reason: e.reason(), message: e.to_string() };
    let resolve = |r: &Recipients| -> Result<Vec<String>, RouteError> {
        Ok(match r {
            Recipients::Everyone => vec!["everyone".into()],
            Recipients::Users(u) => u.clone(),
            Recipients::Alias { kind, aliases: ids } => {
                let mut users = Vec::new();
                for id in ids {
                    let user = aliases
                        .get(&(kind.clone(), id.clone()))
                        .ok_or_else(|| RouteError::UnresolvedRecipient { kind: kind.clone(), alias: id.clone() })?;
                    users.push(format!("{user} (via {kind} alias {id})"));
                }
                users
            }
        })
    };
    let routed = rules.route(event).and_then(|route| {
        super::check_sizes(Some(&rule), &route, event, max_frame)?;
        if let Route::Live(d) = &route {
            super::live_frame(Some(&rule), d, event, max_frame)?;
        }
        Ok(route)
    });
    match routed {
        Err(e) => dead(e),
        Ok(Route::Unmatched) => Verdict::Unmatched { http, dropped: !http && unmatched == UnmatchedPolicy::Ack },
        Ok(Route::Ignore) => Verdict::Ignored { rule },
        Ok(Route::Purge(users)) => Verdict::Purged { rule, users },
        Ok(Route::Notify(d)) => match resolve(&d.recipients) {
            Err(e) => dead(e),
            Ok(recipients) => Verdict::Stored {
                rule,
                recipients,
                kind: d.kind,
                title: d.title,
                content: d.content,
                event_type: d.event_type.unwrap_or_else(|| event.event_type.clone()),
            },
        },
        Ok(Route::Live(d)) => match resolve(&d.recipients) {
            Err(e) => dead(e),
            Ok(recipients) => Verdict::Live {
                rule,
                recipients,
                title: d.title,
                event_type: d.event_type.unwrap_or_else(|| event.event_type.clone()),
            },
        },
    }
}

/// One report as terminal text.
pub fn render(r: &Report) -> String {
    format!("{}\n{}", r.file.display(), render_verdict(&r.verdict))
}

/// One verdict as terminal text (indented two spaces, as under a report's file name).
pub fn render_verdict(verdict: &Verdict) -> String {
    let mut out = String::new();
    let _ = match verdict {
        Verdict::Stored { rule, recipients, kind, title, content, event_type } => write!(
            out,
            "  rule {rule}: notify {}\n  {event_type} [{kind}] {title}{}",
            recipients.join(", "),
            if content.is_empty() { String::new() } else { format!(" — {content}") }
        ),
        Verdict::Live { rule, recipients, title, event_type } => {
            write!(out, "  rule {rule}: live only (not stored) to {}\n  {event_type}: {title}", recipients.join(", "))
        }
        Verdict::Purged { rule, users } => write!(out, "  rule {rule}: erase the inbox of {}", users.join(", ")),
        Verdict::Ignored { rule } => write!(out, "  rule {rule}: ignored (acknowledged, not stored)"),
        Verdict::Unmatched { http: true, .. } => write!(out, "  no rule matches: answered 422 `unmatched`, not stored"),
        Verdict::Unmatched { http: false, dropped: true } => {
            write!(out, "  no rule matches: acknowledged and dropped (amqp.unmatched = \"ack\"), not stored")
        }
        Verdict::Unmatched { http: false, dropped: false } => write!(out, "  DEAD LETTER (unmatched): no rule matches"),
        // Not what Herald would do with an event: the file could not be read as one.
        Verdict::DeadLetter { reason: "unreadable_fixture", message } => write!(out, "  NOT TESTED: {message}"),
        Verdict::DeadLetter { reason, message } => write!(out, "  DEAD LETTER ({reason}): {message}"),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::DEFAULT_RULES_TOML;

    const MIB: Limits = Limits {
        unmatched: UnmatchedPolicy::DeadLetter,
        http_body_bytes: 1 << 20,
        amqp_message_bytes: 1 << 20,
        max_frame: 1 << 20,
    };

    /// An AMQP event no rule matches is a dead letter under the default `amqp.unmatched`, and acknowledged and
    /// dropped under `"ack"` (the report said dead letter, and `rules test` failed, whatever the setting).
    #[test]
    fn an_unmatched_amqp_event_follows_the_unmatched_policy() {
        let rules = Rules::parse(DEFAULT_RULES_TOML).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("unmatched.json");
        let fixture =
            serde_json::json!({"exchange": "billing", "routing_key": "invoice.paid", "body": {"user_id": "1"}});
        std::fs::write(&file, fixture.to_string()).unwrap();
        let r = run(&rules, std::slice::from_ref(&file), MIB);
        assert!(
            r[0].verdict.is_dead_letter() && render(&r[0]).contains("DEAD LETTER (unmatched)"),
            "{}",
            render(&r[0])
        );
        let r = run(&rules, &[file], Limits { unmatched: UnmatchedPolicy::Ack, ..MIB });
        assert!(!r[0].verdict.is_dead_letter(), "{}", render(&r[0]));
        assert!(render(&r[0]).contains("acknowledged and dropped"), "{}", render(&r[0]));
    }

    /// A dry run says what ingest would: an event refused for its size teaches no alias (the stage event that
    /// needs it is the dead letter it would be), and an HTTP fixture is bounded by `server.max_body_bytes`, an AMQP
    /// one by `amqp.max_message_bytes`.
    #[test]
    fn a_refused_event_teaches_nothing_and_each_transport_has_its_own_body_limit() {
        let rules = Rules::parse(DEFAULT_RULES_TOML).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let shipped = fixtures(&["medtrack-student-created.json", "medtrack-stage-created-core.json"]);
        let mut student: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&shipped[0]).unwrap()).unwrap();
        student["body"]["payload"]["first_name"] = serde_json::json!("n".repeat(8192));
        let large = dir.path().join("student-large.json");
        std::fs::write(&large, student.to_string()).unwrap();
        let limits = Limits { max_frame: 4096, ..MIB };
        let r = run(&rules, &[large, shipped[1].clone()], limits);
        assert!(
            matches!(r[0].verdict, Verdict::DeadLetter { reason: "notification_too_large", .. }),
            "{}",
            render(&r[0])
        );
        assert!(
            matches!(r[1].verdict, Verdict::DeadLetter { reason: "unresolved_recipient", .. }),
            "{}",
            render(&r[1])
        );

        let event = serde_json::json!({"user_id": "42", "title": "t".repeat(2000), "message": "m"});
        let http = dir.path().join("http.json");
        let fixture = serde_json::json!({"transport": "http", "exchange": "sgad.notifications", "body": event});
        std::fs::write(&http, fixture.to_string()).unwrap();
        let amqp = dir.path().join("amqp.json");
        std::fs::write(&amqp, serde_json::json!({"exchange": "sgad.notifications", "body": event}).to_string())
            .unwrap();
        let limits = Limits { http_body_bytes: 1024, ..MIB };
        let r = run(&rules, &[http.clone(), amqp.clone()], limits);
        assert!(matches!(r[0].verdict, Verdict::DeadLetter { reason: "oversized", .. }), "{}", render(&r[0]));
        assert!(matches!(r[1].verdict, Verdict::Stored { .. }), "{}", render(&r[1]));
        let r = run(&rules, &[http, amqp], Limits { amqp_message_bytes: 1024, ..MIB });
        assert!(matches!(r[0].verdict, Verdict::Stored { .. }), "{}", render(&r[0]));
        assert!(matches!(r[1].verdict, Verdict::DeadLetter { reason: "oversized", .. }), "{}", render(&r[1]));
    }

    fn fixtures(names: &[&str]) -> Vec<PathBuf> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
        names.iter().map(|n| dir.join(n)).collect()
    }

    #[test]
    fn a_stage_event_reaches_the_student_through_the_alias_another_fixture_teaches() {
        let rules = Rules::parse(DEFAULT_RULES_TOML).unwrap();
        // The stage event comes first on the command line: aliases are taught by all the given files.
        let r = run(&rules, &fixtures(&["medtrack-stage-created-core.json", "medtrack-student-created.json"]), MIB);
        match &r[0].verdict {
            Verdict::Stored { recipients, .. } => {
                assert!(
                    recipients[0].starts_with("0f8b6c2e-1d4a-4e7b-8c3f-5a9d2b6e1c40 (via student alias"),
                    "{recipients:?}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(!r.iter().any(|r| r.verdict.is_dead_letter()));
    }

    #[test]
    fn without_the_teaching_fixture_the_stage_event_is_a_dead_letter() {
        let rules = Rules::parse(DEFAULT_RULES_TOML).unwrap();
        let r = run(&rules, &fixtures(&["medtrack-stage-created-core.json"]), MIB);
        assert!(
            matches!(r[0].verdict, Verdict::DeadLetter { reason: "unresolved_recipient", .. }),
            "{:?}",
            r[0].verdict
        );
        assert!(render(&r[0]).contains("DEAD LETTER (unresolved_recipient)"));
    }

    /// A bare event body is not a fixture: the report says so and how to wrap it (it said "DEAD LETTER", which
    /// Herald would never do with the event); wrapped as an HTTP fixture it is tested as HTTP ingest takes it.
    #[test]
    fn a_bare_event_body_is_not_tested_and_the_report_says_how_to_wrap_it() {
        let rules = Rules::parse(DEFAULT_RULES_TOML).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let event = serde_json::json!({"user_id": "42", "title": "t", "message": "m", "type": "info"});
        let bare = dir.path().join("bare.json");
        std::fs::write(&bare, event.to_string()).unwrap();
        let wrapped = dir.path().join("wrapped.json");
        let fixture = serde_json::json!({"transport": "http", "exchange": "sgad.notifications", "body": event});
        std::fs::write(&wrapped, fixture.to_string()).unwrap();
        let r = run(&rules, &[bare, wrapped], MIB);
        let text = render(&r[0]);
        assert!(
            text.contains("NOT TESTED")
                && text.contains(r#"{"transport": "http", "exchange": "<its exchange>", "body""#),
            "{text}"
        );
        assert!(!text.contains("DEAD LETTER"), "{text}");
        assert!(matches!(r[1].verdict, Verdict::Stored { .. }), "{}", render(&r[1]));
    }

    #[test]
    fn every_shipped_fixture_dry_runs_without_a_dead_letter() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        let rules = Rules::parse(DEFAULT_RULES_TOML).unwrap();
        for r in run(&rules, &files, MIB) {
            assert!(!r.verdict.is_dead_letter(), "{}", render(&r));
        }
    }
}
