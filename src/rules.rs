//! Route: declarative rules (`config/rules.toml`) turn an [`Event`] into an action.
//!
//! A rule matches on exchange and AMQP-style routing-key patterns (`*` one word, `#` zero or more); the first
//! matching rule wins. Recipients come from JSON pointers into the body, routing-key segments, or `everyone`;
//! type, title, content and related object are minijinja templates over the body.
//!
//! Invariants: rules are compiled and validated at start (bad rules refuse to start, naming the rule);
//! routing is pure — no I/O, no clock — so it is tested data-driven from `tests/cases/route/`; a pattern
//! matches in one pass over the key (O(key words × pattern words)), never by backtracking.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use minijinja::{Environment, UndefinedBehavior};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::event::{id_string, Event};
use crate::protocol::{raw_null, RelatedObject};

pub const DEFAULT_RULES_TOML: &str = include_str!("../config/rules.toml");

/// `rules.path` as `config/default.toml` sets it: where that file is absent, the shipped rules stand in for it.
pub const DEFAULT_RULES_PATH: &str = "config/rules.toml";

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("rules file {path}: {message}")]
    File { path: String, message: String },
    #[error("rule `{rule}`: {message}")]
    Invalid { rule: String, message: String },
}

/// Why an event that matched a rule could not be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(into = "String")]
pub enum RouteError {
    #[error("rule `{rule}`: no user id at {tried}")]
    MissingRecipient { rule: String, tried: String },
    #[error("rule `{rule}`: template `{field}` failed: {message}")]
    Template { rule: String, field: &'static str, message: String },
    #[error("rule `{rule}`: user id is {len} bytes, over the {max}-byte limit")]
    UserIdTooLong { rule: String, len: usize, max: usize },
    /// A control character: no token can name such a user (`auth`'s rule for the user claim), so nobody could
    /// ever read what was stored for it.
    #[error("rule `{rule}`: user id `{id}` holds a control character, which no token can carry")]
    InvalidUserId { rule: String, id: String },
    #[error("rule `{rule}`: {count} recipients, over the {max} one event may name (a broadcast reaches everyone)")]
    TooManyRecipients { rule: String, count: usize, max: usize },
    #[error(
        "rule `{rule}`: the notification's frame would take up to {bytes} bytes, over the {max} a session can carry \
         (websocket.outbound_queue_bytes, websocket.max_write_buffer_bytes)"
    )]
    NotificationTooLarge { rule: String, bytes: usize, max: usize },
    /// Over what a preference can name: such a type could be listed and filtered on, never muted.
    #[error("rule `{rule}`: the notification type is {len} bytes, over the {max} a preference can name")]
    TypeTooLong { rule: String, len: usize, max: usize },
    /// A control character in the type: no preference can name it (`PUT …/preferences` refuses one).
    #[error("rule `{rule}`: the notification type `{kind}` holds a control character, which a preference cannot name")]
    InvalidType { rule: String, kind: String },
    #[error("rule `{rule}`: {rows} notifications of up to {row} bytes each would store {total} bytes, over the {max} one event may")]
    TooMuchToStore { rule: String, rows: usize, row: usize, total: usize, max: usize },
    /// An alias the event teaches, longer than a user id may be: an alias is looked up by its text (an index
    /// entry on PostgreSQL, which refuses one over ~2.7 KB as a failed commit), and `PUT /api/v1/aliases` refuses
    /// it as `alias_too_long`.
    #[error("rule `{rule}`: the {kind} alias is {len} bytes, over the {max}-byte limit")]
    AliasTooLong { rule: String, kind: String, len: usize, max: usize },
    /// A related object's type or id over the bound: broadcasts are listed by them (an index entry on
    /// PostgreSQL, as above).
    #[error("rule `{rule}`: the related object's {field} is {len} bytes, over the {max}-byte limit")]
    RelatedObjectTooLong { rule: String, field: &'static str, len: usize, max: usize },
    /// Reported by the store, which resolves aliases in the commit (see [`Recipients::Alias`]).
    #[error("no user is known for {kind} alias `{alias}` yet")]
    UnresolvedRecipient { kind: String, alias: String },
}

/// The notification type of a rule that names none, or whose type prints blank for an event.
const DEFAULT_TYPE: &str = "info";

/// The longest notification type: what a preference can name (`PUT …/preferences`,
/// `preferences.muted_by_default`), so no type is stored that could be listed but never muted.
pub const MAX_TYPE_LEN: usize = 200;

/// The longest related object type or id a rule may print (each): what a list filters broadcasts by.
pub const MAX_RELATED_LEN: usize = 256;

impl From<RouteError> for String {
    fn from(e: RouteError) -> String {
        e.to_string()
    }
}

impl RouteError {
    /// The rule that matched the event it could not route (`None`: refused by the store, after routing).
    pub fn rule(&self) -> Option<&str> {
        match self {
            RouteError::MissingRecipient { rule, .. }
            | RouteError::Template { rule, .. }
            | RouteError::UserIdTooLong { rule, .. }
            | RouteError::InvalidUserId { rule, .. }
            | RouteError::TooManyRecipients { rule, .. }
            | RouteError::NotificationTooLarge { rule, .. }
            | RouteError::TypeTooLong { rule, .. }
            | RouteError::InvalidType { rule, .. }
            | RouteError::TooMuchToStore { rule, .. }
            | RouteError::AliasTooLong { rule, .. }
            | RouteError::RelatedObjectTooLong { rule, .. } => Some(rule),
            RouteError::UnresolvedRecipient { .. } => None,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            RouteError::MissingRecipient { .. } => "missing_user_id",
            RouteError::Template { .. } => "template_error",
            RouteError::UserIdTooLong { .. } => "user_id_too_long",
            RouteError::InvalidUserId { .. } => "invalid_user_id",
            RouteError::UnresolvedRecipient { .. } => "unresolved_recipient",
            RouteError::TooManyRecipients { .. } => "too_many_recipients",
            RouteError::NotificationTooLarge { .. } => "notification_too_large",
            RouteError::TooMuchToStore { .. } => "too_much_to_store",
            RouteError::TypeTooLong { .. } => "type_too_long",
            RouteError::InvalidType { .. } => "invalid_type",
            RouteError::AliasTooLong { .. } => "alias_too_long",
            RouteError::RelatedObjectTooLong { .. } => "related_object_too_long",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    Users(Vec<String>),
    Everyone,
    /// The users behind these aliases of one kind (e.g. the student profile ids an event names): resolved by the
    /// store in the commit, where aliases recorded earlier (even in the same batch) are visible.
    Alias {
        kind: String,
        aliases: Vec<String>,
    },
}

/// "This `kind` id stands for this user", learned from an event (a rule's `aliases`) or set over the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasRecord {
    pub kind: String,
    pub alias: String,
    pub user: String,
}

/// A notification as a rule drafted it, before the store gives it an id.
#[derive(Debug, Clone)]
pub struct Draft {
    pub recipients: Recipients,
    /// The rule's `event_type` when it sets one (what front-ends switch on), else the event's own.
    pub event_type: Option<String>,
    /// The rule's `dedupe_key` when it sets one: the idempotency key instead of the event id, so a re-published
    /// event (same meaning, fresh timestamp) is stored once. Namespaced by the rule's name.
    pub dedupe_key: Option<String>,
    /// Aliases this event teaches (recorded with the notification, in the same commit).
    pub aliases: Vec<AliasRecord>,
    pub kind: String,
    pub title: String,
    pub content: String,
    pub related_object: Option<RelatedObject>,
    pub data: Box<RawValue>,
}

#[derive(Debug, Clone)]
pub enum Route {
    Notify(Draft),
    /// Push to the recipients' open sessions without storing (`action = "live"`).
    Live(Draft),
    /// Erase these users' inboxes (GDPR).
    Purge(Vec<String>),
    Ignore,
    /// No rule matched: counted and logged by the caller.
    Unmatched,
}

/// The rules file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default, rename = "rule")]
    rules: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    /// Exchanges this rule applies to; empty = any.
    #[serde(default)]
    exchanges: Vec<String>,
    /// Routing-key patterns; empty = any.
    #[serde(default)]
    routing_keys: Vec<String>,
    #[serde(default)]
    action: Action,
    /// Recipient sources tried in order: "/json/pointer", "segment:N", "everyone".
    #[serde(default)]
    to: Vec<String>,
    /// Resolved values that mean "everyone" (e.g. "system").
    #[serde(default)]
    everyone_values: Vec<String>,
    /// When no source resolves: "error" (dead-letter / 4xx) or "everyone".
    #[serde(default)]
    when_missing: WhenMissing,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    /// Template for the notification's `event_type` (default: the event's own).
    #[serde(default)]
    event_type: Option<String>,
    /// Template for a semantic idempotency key (default: the event id).
    #[serde(default)]
    dedupe_key: Option<String>,
    /// Aliases to record from the event: `{ kind = "student", alias = "/payload/student_id", user =
    /// "/payload/user_id" }`.
    #[serde(default)]
    aliases: Vec<AliasSpec>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    related_object: Option<RelatedSpec>,
    /// JSON pointer into the body for the notification's `data`.
    #[serde(default)]
    data: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AliasSpec {
    kind: String,
    /// JSON pointer to the alias (e.g. the profile id).
    alias: String,
    /// JSON pointer to the user id it stands for.
    user: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelatedSpec {
    #[serde(rename = "type")]
    kind: String,
    id: String,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Action {
    #[default]
    Notify,
    /// Push to open sessions only: no inbox row, no unread count, not replayed.
    Live,
    Purge,
    Ignore,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum WhenMissing {
    #[default]
    Error,
    Everyone,
}

#[derive(Debug)]
enum Source {
    Pointer(String),
    Segment(usize),
    Everyone,
    /// `alias:KIND:/pointer`: the users behind the alias ids at the pointer.
    Alias {
        kind: String,
        pointer: String,
    },
}

#[derive(Debug)]
struct Rule {
    name: String,
    exchanges: Vec<String>,
    patterns: Vec<Pattern>,
    action: Action,
    to: Vec<Source>,
    everyone_values: Vec<String>,
    when_missing: WhenMissing,
    data: Option<String>,
    event_type: Option<Field>,
    dedupe_key: Option<Field>,
    /// `type`, `title`, `content`, `related_object.type`, `related_object.id` (the order of [`FIELDS`]);
    /// empty for `purge` and `ignore`.
    fields: Vec<Field>,
    aliases: Vec<AliasSpec>,
}

/// One templated field of a rule, resolved when the rules load: text without template syntax is used as
/// written (trimmed, as a render leaves it) and never rendered; a template is compiled under its name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Literal(String),
    /// The name of the compiled template in [`Rules::templates`].
    Template(String),
    /// A template that only prints a value of the body — `{{ a.b }}`, or `{{ a.b | default('x') }}` — read
    /// straight from the body when [`BodyPath::text`] can say what minijinja would print; otherwise the
    /// compiled template (`template`) renders it. Either way the text is the same (tested:
    /// `a_path_template_reads_the_body_as_minijinja_renders_it`).
    Path {
        template: String,
        path: BodyPath,
    },
}

/// The names the template context sets itself beside the body's keys, which they shadow: the `context!` in
/// [`Rules::route_by`] lists exactly these.
const CONTEXT_NAMES: [&str; 3] = ["event", "segments", "body"];

/// `a.b.c` (identifiers, the first a key of the body other than one of [`CONTEXT_NAMES`])
/// and the literal of a `default` filter.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BodyPath {
    keys: Vec<String>,
    default: Option<String>,
}

impl BodyPath {
    /// The path a template source prints, if that is all it does.
    fn parse(source: &str) -> Option<BodyPath> {
        let inner = source.trim().strip_prefix("{{")?.strip_suffix("}}")?;
        if ["{{", "}}", "{%", "{#"].iter().any(|s| inner.contains(s))
            || inner.starts_with(['-', '+'])
            || inner.ends_with(['-', '+'])
        {
            return None; // more than one expression, or whitespace control
        }
        let (expr, filter) = match inner.split_once('|') {
            Some((expr, filter)) => (expr, Some(filter.trim())),
            None => (inner, None),
        };
        let default = match filter {
            None => None,
            Some(f) => {
                let arg = f.strip_prefix("default")?.trim_start().strip_prefix('(')?.strip_suffix(')')?.trim();
                let quote = arg.chars().next().filter(|q| *q == '\'' || *q == '"')?;
                let text = arg.strip_prefix(quote)?.strip_suffix(quote)?;
                if text.contains(['\'', '"', '\\']) {
                    return None;
                }
                Some(text.to_owned())
            }
        };
        let ident = |w: &str| {
            w.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        let keys: Vec<String> = expr.trim().split('.').map(str::to_owned).collect();
        if !keys.iter().all(|k| ident(k)) || CONTEXT_NAMES.contains(&keys[0].as_str()) {
            return None;
        }
        Some(BodyPath { keys, default })
    }

    /// What the template prints for `body`, when that is plain: a string or an integer at the path,
    /// or — with a default — nothing at its last steps (a key missing from an object: minijinja's undefined).
    /// `None` when minijinja must say: the first key missing (it may name a global), a step through something
    /// other than an object, or a boolean (`True`), a null, a float, an array or an object at the end.
    fn text<'a>(&'a self, body: &'a serde_json::Map<String, Value>) -> Option<std::borrow::Cow<'a, str>> {
        let mut value = body.get(&self.keys[0])?;
        for key in &self.keys[1..] {
            match value.as_object()?.get(key) {
                Some(v) => value = v,
                None => return Some(self.default.as_deref().unwrap_or("").into()),
            }
        }
        match value {
            Value::String(s) => Some(s.as_str().into()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string().into()),
            _ => None,
        }
    }
}

impl Field {
    /// Compile `source` as `rule`'s `field` (a literal needs no compiling).
    fn compile(
        templates: &mut Environment<'static>,
        rule: &str,
        field: &str,
        source: String,
    ) -> Result<Field, minijinja::Error> {
        // minijinja's syntax starts only with these; anything else renders as itself.
        if !["{{", "{%", "{#"].iter().any(|open| source.contains(open)) {
            return Ok(Field::Literal(source.trim().to_owned()));
        }
        // The name errors show: `(in rule `r` title:1)`.
        let name = format!("rule `{rule}` {field}");
        let path = BodyPath::parse(&source);
        templates.add_template_owned(name.clone(), source)?;
        // A filter, test or function name is looked up when the template runs: run it once over no event, so a
        // misspelt one (`| defualt`) is refused at load (`rules check`, a reload) and not on every event. Only in
        // what runs without a body: a branch a missing value skips is not checked.
        if let Err(e) = templates.get_template(&name)?.render(()) {
            use minijinja::ErrorKind::{UnknownFilter, UnknownFunction, UnknownTest};
            if matches!(e.kind(), UnknownFilter | UnknownTest | UnknownFunction) {
                return Err(e);
            }
        }
        Ok(match path {
            Some(path) => Field::Path { template: name, path },
            None => Field::Template(name),
        })
    }
}

/// The compiled rule set. Cheap to share behind an `Arc`.
pub struct Rules {
    rules: Vec<Rule>,
    templates: Environment<'static>,
    /// The first 12 hex digits of the file's SHA-256: which rules a node runs (`herald_rules_info`).
    digest: String,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules").field("rules", &self.rules.len()).finish()
    }
}

const FIELDS: [&str; 5] = ["type", "title", "content", "related_type", "related_id"];

/// The field name of a rule's `dedupe_key`, which ends its template's name (`rule `r` dedupe_key`).
const DEDUPE_KEY_FIELD: &str = "dedupe_key";
/// What a dedupe key prints for a value the event lacks (a body value holding a NUL is taken as missing too: the
/// event keeps its digest).
const MISSING_KEY_PART: char = '\0';

impl Rules {
    /// Load `path`; a file that does not exist is an error (a reload keeps the rules in force).
    pub fn load(path: &Path) -> Result<Rules, RulesError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Rules::parse(&text).map_err(|e| match e {
                RulesError::File { message, .. } => RulesError::File { path: path.display().to_string(), message },
                other => other,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(RulesError::File { path: path.display().to_string(), message: "no such file".into() })
            }
            Err(e) => Err(RulesError::File { path: path.display().to_string(), message: e.to_string() }),
        }
    }

    /// The rules to start with: `path`, or the shipped rules when `path` is the default one and absent (a binary
    /// run outside a checkout). A path an operator configured must exist: a typo does not silently route with
    /// rules they never wrote (the shipped ones include a GDPR erase).
    pub fn load_at_start(path: &Path) -> Result<Rules, RulesError> {
        if path == Path::new(DEFAULT_RULES_PATH) && !path.exists() {
            tracing::info!("no {DEFAULT_RULES_PATH}: using the rules shipped in the binary");
            return Rules::parse(DEFAULT_RULES_TOML);
        }
        Rules::load(path)
    }

    pub fn parse(text: &str) -> Result<Rules, RulesError> {
        let file: RulesFile =
            toml_from_str(text).map_err(|message| RulesError::File { path: "<rules>".into(), message })?;
        let mut templates = Environment::new();
        templates.set_undefined_behavior(UndefinedBehavior::Chainable);
        // A dedupe key that prints a value the event lacks (or a null) would make every such event one: it prints a
        // marker instead, and a key holding it does not apply — the event keeps its own id (`Rules::route_by`). A
        // marker, not an error, so the rest of the template still runs (the trial render at load checks its
        // filters). Other fields print nothing for those: a Python publisher's `None` is no text (minijinja would
        // print `none`, and `| default(...)` does not replace a null).
        templates.set_formatter(|out, state, value| {
            if value.is_undefined() || value.is_none() {
                if state.name().ends_with(DEDUPE_KEY_FIELD) {
                    use std::fmt::Write;
                    return out.write_char(MISSING_KEY_PART).map_err(minijinja::Error::from);
                }
                return Ok(());
            }
            minijinja::escape_formatter(out, state, value)
        });
        let mut rules = Vec::with_capacity(file.rules.len());
        let mut names = std::collections::HashSet::new();
        for spec in file.rules {
            let invalid = |message: String| RulesError::Invalid { rule: spec.name.clone(), message };
            if !names.insert(spec.name.clone()) {
                return Err(invalid("duplicate rule name".into()));
            }
            let patterns =
                spec.routing_keys.iter().map(|p| Pattern::parse(p)).collect::<Result<Vec<_>, _>>().map_err(invalid)?;
            let to = spec.to.iter().map(|s| parse_source(s)).collect::<Result<Vec<_>, _>>().map_err(invalid)?;
            let uses_aliases = to.iter().any(|s| matches!(s, Source::Alias { .. }));
            if uses_aliases && spec.action != Action::Notify {
                return Err(invalid(
                    "alias recipients are resolved when a notification is stored: `notify` only".into(),
                ));
            }
            if !spec.aliases.is_empty() && spec.action != Action::Notify {
                return Err(invalid("`aliases` are recorded with a stored notification: `notify` only".into()));
            }
            for a in &spec.aliases {
                if !a.alias.starts_with('/') || !a.user.starts_with('/') || a.kind.is_empty() {
                    return Err(invalid(format!(
                        "alias `{}`: `kind` must be set and `alias`/`user` must be JSON pointers",
                        a.kind
                    )));
                }
            }
            // A purge erases the inboxes of the users an event names; one that could resolve to everyone would only
            // ever dead-letter such events.
            if spec.action == Action::Purge
                && (to.iter().any(|s| matches!(s, Source::Everyone))
                    || spec.when_missing == WhenMissing::Everyone
                    || !spec.everyone_values.is_empty())
            {
                return Err(invalid(
                    "a purge erases the users an event names, never everyone: no `everyone` source, \
                     `when_missing = \"everyone\"` or `everyone_values`"
                        .into(),
                ));
            }
            if spec.action != Action::Ignore && to.is_empty() && spec.when_missing == WhenMissing::Error {
                return Err(invalid("needs `to` (who receives it / whose inbox is purged)".into()));
            }
            if let Some(d) = &spec.data {
                if !d.is_empty() && !d.starts_with('/') {
                    return Err(invalid(format!("`data` must be a JSON pointer starting with '/', got `{d}`")));
                }
            }
            let mut optional =
                [("event_type", &spec.event_type), (DEDUPE_KEY_FIELD, &spec.dedupe_key)].map(|(field, source)| {
                    source
                        .as_ref()
                        .map(|t| {
                            Field::compile(&mut templates, &spec.name, field, t.clone())
                                .map_err(|e| invalid(format!("template `{field}`: {e}")))
                        })
                        .transpose()
                });
            let dedupe_key = std::mem::replace(&mut optional[1], Ok(None))?;
            let event_type = std::mem::replace(&mut optional[0], Ok(None))?;
            let mut fields = Vec::new();
            if matches!(spec.action, Action::Notify | Action::Live) {
                let title = spec.title.clone().ok_or_else(|| invalid("a notify or live rule needs `title`".into()))?;
                let sources = [
                    spec.kind.clone().unwrap_or_else(|| DEFAULT_TYPE.into()),
                    title,
                    spec.content.clone().unwrap_or_default(),
                    spec.related_object.as_ref().map(|r| r.kind.clone()).unwrap_or_default(),
                    spec.related_object.as_ref().map(|r| r.id.clone()).unwrap_or_default(),
                ];
                for (field, source) in FIELDS.iter().zip(sources) {
                    fields.push(
                        Field::compile(&mut templates, &spec.name, field, source)
                            .map_err(|e| invalid(format!("template `{field}`: {e}")))?,
                    );
                }
            }
            rules.push(Rule {
                name: spec.name,
                exchanges: spec.exchanges,
                patterns,
                action: spec.action,
                to,
                everyone_values: spec.everyone_values,
                when_missing: spec.when_missing,
                data: spec.data,
                event_type,
                dedupe_key,
                fields,
                aliases: spec.aliases,
            });
        }
        use sha2::Digest;
        let digest = hex::encode(&sha2::Sha256::digest(text.as_bytes())[..6]);
        Ok(Rules { rules, templates, digest })
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Which rules these are: the first 12 hex digits of their file's SHA-256 (two nodes with the same file
    /// report the same).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The notification types these rules store as written (a `notify` rule's literal `type`), sorted, each
    /// once: what a preferences page can offer before any is stored. A type a template prints is not in it.
    pub fn known_types(&self) -> Vec<String> {
        let mut types: Vec<String> = self
            .rules
            .iter()
            .filter(|r| r.action == Action::Notify)
            .filter_map(|r| match r.fields.first() {
                Some(Field::Literal(kind)) => Some(kind.clone()),
                _ => None,
            })
            .collect();
        types.sort_unstable();
        types.dedup();
        types
    }

    /// The name of the rule that applies, if any (for logs).
    pub fn matching(&self, event: &Event) -> Option<&str> {
        self.find(event).map(|r| r.name.as_str())
    }

    fn find(&self, event: &Event) -> Option<&Rule> {
        self.rules.iter().find(|r| {
            (r.exchanges.is_empty() || r.exchanges.contains(&event.exchange))
                && (r.patterns.is_empty() || r.patterns.iter().any(|p| p.matches(&event.routing_key)))
        })
    }

    pub fn route(&self, event: &Event) -> Result<Route, RouteError> {
        self.route_named(event).1
    }

    /// [`Rules::route`], with the name of the rule that matched (for the trace), found once.
    pub fn route_named(&self, event: &Event) -> (Option<&str>, Result<Route, RouteError>) {
        let rule = self.find(event);
        (rule.map(|r| r.name.as_str()), self.route_by(rule, event))
    }

    fn route_by(&self, rule: Option<&Rule>, event: &Event) -> Result<Route, RouteError> {
        let Some(rule) = rule else {
            return Ok(Route::Unmatched);
        };
        match rule.action {
            Action::Ignore => Ok(Route::Ignore),
            Action::Purge => match rule.recipients(event)? {
                Recipients::Users(users) => Ok(Route::Purge(users)),
                // Refused when the rules load (a purge names no `everyone` and no alias source).
                Recipients::Everyone | Recipients::Alias { .. } => Err(RouteError::MissingRecipient {
                    rule: rule.name.clone(),
                    tried: "the sources a purge reads (it erases named users, never everyone)".into(),
                }),
            },
            Action::Notify | Action::Live => {
                let recipients = rule.recipients(event)?;
                // Built on the first template that needs it (a rule of literals never does), with the body
                // converted to template values once.
                let ctx = std::cell::OnceCell::new();
                let context = || {
                    ctx.get_or_init(|| {
                        let body = minijinja::Value::from_serialize(&event.body);
                        // Exactly the names in `CONTEXT_NAMES`, then the body's keys.
                        minijinja::context! {
                            event => minijinja::context! {
                                id => event.id, exchange => event.exchange, routing_key => event.routing_key,
                                event_type => event.event_type, source => event.source,
                                occurred_at => event.occurred_at.map(|t| t.to_rfc3339()),
                            },
                            segments => event.routing_key.split('.').collect::<Vec<_>>(),
                            body => body.clone(),
                            ..body
                        }
                    })
                };
                let template = |field: &'static str, name: &str| -> Result<String, RouteError> {
                    let tmpl = self.templates.get_template(name).expect("compiled at load");
                    tmpl.render(context()).map(|s| s.trim().to_owned()).map_err(|e| RouteError::Template {
                        rule: rule.name.clone(),
                        field,
                        message: e.to_string(),
                    })
                };
                let render = |field: &'static str, f: &Field| -> Result<String, RouteError> {
                    match f {
                        Field::Literal(text) => Ok(text.clone()),
                        Field::Template(name) => template(field, name),
                        Field::Path { template: name, path } => match path.text(&event.body) {
                            Some(text) => Ok(text.trim().to_owned()),
                            None => template(field, name),
                        },
                    }
                };
                let field = |i: usize| render(FIELDS[i], &rule.fields[i]);
                let mut aliases = Vec::with_capacity(rule.aliases.len());
                for a in &rule.aliases {
                    let Some(alias) = pointer(&event.body, &a.alias).and_then(id_string) else { continue };
                    // An alias pointing at a user no token can name would route their events to nobody.
                    let Some(user) = pointer(&event.body, &a.user)
                        .and_then(id_string)
                        .filter(|u| crate::event::user_id_is_readable(u))
                    else {
                        continue;
                    };
                    let max = crate::event::MAX_ID_LEN;
                    if alias.len() > max {
                        let (rule, kind, len) = (rule.name.clone(), a.kind.clone(), alias.len());
                        return Err(RouteError::AliasTooLong { rule, kind, len, max });
                    }
                    if user.len() > max {
                        return Err(RouteError::UserIdTooLong { rule: rule.name.clone(), len: user.len(), max });
                    }
                    aliases.push(AliasRecord { kind: a.kind.clone(), alias, user });
                }
                let (related_type, related_id) = (field(3)?, field(4)?);
                for (field, text) in [("type", &related_type), ("id", &related_id)] {
                    if text.len() > MAX_RELATED_LEN {
                        let (rule, len, max) = (rule.name.clone(), text.len(), MAX_RELATED_LEN);
                        return Err(RouteError::RelatedObjectTooLong { rule, field, len, max });
                    }
                }
                let related_object = (!related_type.is_empty() && !related_id.is_empty())
                    .then_some(RelatedObject { kind: related_type, id: related_id });
                let data = match rule.data.as_deref() {
                    Some(ptr) => match pointer(&event.body, ptr) {
                        Some(v) => RawValue::from_string(v.to_string()).expect("a Value serialises to JSON"),
                        None => raw_null(),
                    },
                    None => raw_null(),
                };
                let event_type = rule.event_type.as_ref().map(|f| render("event_type", f)).transpose()?;
                let dedupe_key = match rule.dedupe_key.as_ref().map(|f| render(DEDUPE_KEY_FIELD, f)) {
                    // Empty, or printing a value this event lacks: the event keeps its own id.
                    Some(Ok(k)) if k.is_empty() || k.contains(MISSING_KEY_PART) => None,
                    Some(Ok(k)) => Some(format!("{}:{k}", rule.name)),
                    None => None,
                    Some(Err(e)) => return Err(e),
                };
                // A type is what preferences name: a blank one is the default's, a longer one is refused.
                let kind = match field(0)? {
                    blank if blank.is_empty() => DEFAULT_TYPE.to_owned(),
                    kind if kind.len() > MAX_TYPE_LEN => {
                        let (rule, len, max) = (rule.name.clone(), kind.len(), MAX_TYPE_LEN);
                        return Err(RouteError::TypeTooLong { rule, len, max });
                    }
                    kind if kind.chars().any(char::is_control) => {
                        let (rule, kind) = (rule.name.clone(), kind.escape_debug().to_string());
                        return Err(RouteError::InvalidType { rule, kind });
                    }
                    kind => kind,
                };
                let draft = Draft {
                    recipients,
                    event_type,
                    dedupe_key,
                    aliases,
                    kind,
                    title: field(1)?,
                    content: field(2)?,
                    related_object,
                    data,
                };
                Ok(if rule.action == Action::Live { Route::Live(draft) } else { Route::Notify(draft) })
            }
        }
    }
}

/// The rules in force, replaceable while running (SIGHUP, `POST /api/v1/admin/rules/reload`). Each event is
/// routed by one snapshot; a file that does not compile is refused and the rules in force stay.
#[derive(Clone)]
pub struct RulesHandle {
    current: Arc<RwLock<Arc<Rules>>>,
    /// Held from reading the file to putting its rules in force: two reloads at once (SIGHUP, the admin endpoint,
    /// another node's request) put them in force in the order they read the file, so the last file read stays.
    reloading: Arc<std::sync::Mutex<()>>,
    path: PathBuf,
}

impl RulesHandle {
    pub fn new(rules: Rules, path: &Path) -> Self {
        report_digest(None, rules.digest());
        RulesHandle {
            current: Arc::new(RwLock::new(Arc::new(rules))),
            reloading: Arc::default(),
            path: path.to_owned(),
        }
    }

    /// The rules in force now.
    pub fn current(&self) -> Arc<Rules> {
        self.current.read().expect("rules lock poisoned").clone()
    }

    /// Load the rules file again (SIGHUP, the admin endpoint on this node or another), counted and logged. On
    /// error the rules in force are kept.
    pub fn reload(&self) -> Result<Arc<Rules>, RulesError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let rules = Arc::new(Rules::load(&self.path)?);
        let old = std::mem::replace(&mut *self.current.write().expect("rules lock poisoned"), rules.clone());
        report_digest(Some(old.digest()), rules.digest());
        metrics::counter!("herald_rules_reloads_total").increment(1);
        tracing::info!(rules = rules.len(), digest = rules.digest(), "rules reloaded");
        Ok(rules)
    }
}

/// `herald_rules_info{digest}`: 1 for the rules in force, 0 for those they replaced — nodes running different
/// rules (a reload that did not reach one, a rolling deploy) show as two digests at 1.
fn report_digest(old: Option<&str>, new: &str) {
    if let Some(old) = old.filter(|old| *old != new) {
        metrics::gauge!("herald_rules_info", "digest" => old.to_owned()).set(0.0);
    }
    metrics::gauge!("herald_rules_info", "digest" => new.to_owned()).set(1.0);
}

/// Recipients (users or aliases) one event may name: each is a row of its own and a frame of its own, so the list a
/// body carries is bounded; a broadcast (`to = ["everyone"]`) reaches every user with one row.
pub const MAX_RECIPIENTS: usize = 1000;

impl Rule {
    fn too_many(&self, count: usize) -> Result<(), RouteError> {
        if count > MAX_RECIPIENTS {
            return Err(RouteError::TooManyRecipients { rule: self.name.clone(), count, max: MAX_RECIPIENTS });
        }
        Ok(())
    }

    fn recipients(&self, event: &Event) -> Result<Recipients, RouteError> {
        for source in &self.to {
            let found: Vec<String> = match source {
                Source::Everyone => return Ok(Recipients::Everyone),
                Source::Segment(i) => event
                    .routing_key
                    .split('.')
                    .nth(*i)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .into_iter()
                    .collect(),
                Source::Pointer(p) => ids_at(&event.body, p),
                Source::Alias { kind, pointer } => {
                    let aliases = ids_at(&event.body, pointer);
                    if aliases.is_empty() {
                        continue;
                    }
                    self.too_many(aliases.len())?;
                    return Ok(Recipients::Alias { kind: kind.clone(), aliases });
                }
            };
            if found.iter().any(|u| self.everyone_values.iter().any(|e| e == u)) {
                return Ok(Recipients::Everyone);
            }
            if let Some(long) = found.iter().find(|u| u.len() > crate::event::MAX_ID_LEN) {
                return Err(RouteError::UserIdTooLong {
                    rule: self.name.clone(),
                    len: long.len(),
                    max: crate::event::MAX_ID_LEN,
                });
            }
            if let Some(bad) = found.iter().find(|u| !crate::event::user_id_is_readable(u)) {
                return Err(RouteError::InvalidUserId { rule: self.name.clone(), id: bad.escape_debug().to_string() });
            }
            if !found.is_empty() {
                let mut users = found;
                let mut seen = std::collections::HashSet::new();
                users.retain(|u| seen.insert(u.clone()));
                self.too_many(users.len())?;
                return Ok(Recipients::Users(users));
            }
        }
        // Only an absent recipient means everyone: a value that is there but is no id (`null`, `12.5`, `true`,
        // `"  "`, an object) is a producer's mistake, and broadcasting it would tell every user what was meant
        // for one.
        let malformed = self.to.iter().any(|s| match s {
            Source::Pointer(p) | Source::Alias { pointer: p, .. } => {
                pointer(&event.body, p).and_then(not_an_id).is_some()
            }
            Source::Segment(_) | Source::Everyone => false,
        });
        match self.when_missing {
            WhenMissing::Everyone if !malformed => Ok(Recipients::Everyone),
            WhenMissing::Everyone | WhenMissing::Error => Err(self.missing(event)),
        }
    }

    fn missing(&self, event: &Event) -> RouteError {
        let tried = self
            .to
            .iter()
            .map(|s| {
                // A value that is there but not an id is said, not passed over as missing.
                let said = |p: &str, shown: String| match pointer(&event.body, p).and_then(not_an_id) {
                    Some(what) => format!("{shown} (holds {what}, not a non-empty string or an integer)"),
                    None => shown,
                };
                match s {
                    Source::Pointer(p) => said(p, p.clone()),
                    Source::Segment(i) => format!("segment:{i}"),
                    Source::Everyone => "everyone".into(),
                    Source::Alias { kind, pointer } => said(pointer, format!("alias:{kind}:{pointer}")),
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        RouteError::MissingRecipient { rule: self.name.clone(), tried }
    }
}

fn pointer<'a>(body: &'a serde_json::Map<String, Value>, ptr: &str) -> Option<&'a Value> {
    if ptr.is_empty() {
        return None;
    }
    let mut parts = ptr.strip_prefix('/')?.splitn(2, '/');
    let first = parts.next()?.replace("~1", "/").replace("~0", "~");
    let v = body.get(&first)?;
    match parts.next() {
        Some(rest) => v.pointer(&format!("/{rest}")),
        None => Some(v),
    }
}

/// What a value found where a user id was looked for is, when it is not one (`None`: absent, null, or an id).
fn not_an_id(v: &Value) -> Option<&'static str> {
    match v {
        // Python's `None`: a producer that named no one by mistake (the old gateways reached nobody), not one
        // that meant everyone, which only an absent recipient or an everyone value says.
        Value::Null => Some("null"),
        Value::Bool(_) => Some("a boolean"),
        Value::Object(_) => Some("an object"),
        Value::Array(items) if items.iter().all(|i| id_string(i).is_none()) => Some("an array without an id"),
        Value::String(s) if s.trim().is_empty() => Some("a blank string"),
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => Some("a number that is not an integer (or too large)"),
        _ => None,
    }
}

/// The id or ids (an array) at `ptr`, as strings.
fn ids_at(body: &serde_json::Map<String, Value>, ptr: &str) -> Vec<String> {
    match pointer(body, ptr) {
        Some(Value::Array(items)) => items.iter().filter_map(id_string).collect(),
        Some(v) => id_string(v).into_iter().collect(),
        None => Vec::new(),
    }
}

fn parse_source(s: &str) -> Result<Source, String> {
    if let Some(rest) = s.strip_prefix("alias:") {
        match rest.split_once(':') {
            Some((kind, ptr)) if !kind.is_empty() && ptr.starts_with('/') => {
                Ok(Source::Alias { kind: kind.to_owned(), pointer: ptr.to_owned() })
            }
            _ => Err(format!("`{s}`: alias sources are alias:KIND:/json/pointer")),
        }
    } else if s == "everyone" {
        Ok(Source::Everyone)
    } else if let Some(n) = s.strip_prefix("segment:") {
        n.parse().map(Source::Segment).map_err(|_| format!("`{s}`: segment:N needs a number"))
    } else if s.starts_with('/') {
        Ok(Source::Pointer(s.to_owned()))
    } else {
        Err(format!("`{s}` is not a JSON pointer (/a/b), segment:N, alias:KIND:/pointer or everyone"))
    }
}

fn toml_from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

/// An AMQP topic pattern: words split on `.`, `*` matches one word, `#` zero or more.
///
/// Matching is an NFA simulation over the pattern words: one pass over the key, keeping the set of pattern
/// positions reachable so far, so it costs O(key words × pattern words) whatever the pattern — a backtracking
/// matcher is exponential in the number of `#` words (`#.b.#.b.#.z` against a long key stalled the runtime).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(Vec<Word>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Word {
    Literal(String),
    Star,
    Hash,
}

impl Pattern {
    pub fn parse(p: &str) -> Result<Pattern, String> {
        let mut words = Vec::new();
        for w in p.split('.') {
            let word = match w {
                "*" => Word::Star,
                "#" => Word::Hash,
                w if w.contains(['*', '#']) => return Err(format!("pattern `{p}`: `*` and `#` must be whole words")),
                w => Word::Literal(w.to_owned()),
            };
            // `#.#` means what `#` means: collapsing keeps the reachable set small.
            if !(word == Word::Hash && words.last() == Some(&Word::Hash)) {
                words.push(word);
            }
        }
        Ok(Pattern(words))
    }

    /// Whether `key` matches. An empty key is one empty word, as in RabbitMQ.
    pub fn matches(&self, key: &str) -> bool {
        let pat = &self.0;
        if pat.iter().all(|w| matches!(w, Word::Literal(_))) {
            // No wildcard: the words are the key's, one for one.
            let mut words = key.split('.');
            return pat.iter().all(|w| matches!(w, Word::Literal(l) if words.next() == Some(l.as_str())))
                && words.next().is_none();
        }
        // The reachable sets live on the stack for the patterns rules use; longer ones allocate.
        const INLINE: usize = 16;
        let n = pat.len() + 1;
        if n <= INLINE {
            let (mut live, mut next) = ([false; INLINE], [false; INLINE]);
            run_nfa(pat, key, &mut live[..n], &mut next[..n])
        } else {
            run_nfa(pat, key, &mut vec![false; n], &mut vec![false; n])
        }
    }
}

/// The NFA simulation of [`Pattern::matches`]; `live` and `next` hold one flag per pattern position (+ 1).
fn run_nfa<'a>(pat: &[Word], key: &str, mut live: &'a mut [bool], mut next: &'a mut [bool]) -> bool {
    // live[j]: the key words read so far can be matched by pat[..j].
    live[0] = true;
    close_over_hashes(pat, live);
    for word in key.split('.') {
        next.fill(false);
        let mut any = false;
        for (j, w) in pat.iter().enumerate() {
            if !live[j] {
                continue;
            }
            match w {
                // `#` takes this word and may take more: stay on it.
                Word::Hash => next[j] = true,
                Word::Star => next[j + 1] = true,
                Word::Literal(l) if l == word => next[j + 1] = true,
                Word::Literal(_) => continue,
            }
            any = true;
        }
        if !any {
            return false;
        }
        close_over_hashes(pat, next);
        std::mem::swap(&mut live, &mut next);
    }
    live[pat.len()]
}

/// A `#` may match zero words: whoever reaches it also reaches the word after it.
fn close_over_hashes(pat: &[Word], live: &mut [bool]) {
    for (j, w) in pat.iter().enumerate() {
        if live[j] && *w == Word::Hash {
            live[j + 1] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A misspelt filter, test or function is refused when the rules load (`rules check`, a reload), not found
    /// on every event as a dead letter; the error names the rule and the field in words (it held a NUL byte).
    #[test]
    fn a_misspelt_filter_test_or_function_is_refused_at_load_naming_the_rule_and_field() {
        let rule = |title: &str| format!("[[rule]]\nname = \"paid\"\nto = [\"/u\"]\ntitle = \"{title}\"\n");
        for (title, what) in [
            ("{{ amount | defualt('0') }}", "defualt"),
            ("{% if amount is numbr %}x{% endif %}", "numbr"),
            ("{{ rnage(3) }}", "rnage"),
        ] {
            let e = Rules::parse(&rule(title)).unwrap_err().to_string();
            assert!(e.contains(what) && e.contains("rule `paid` title") && !e.contains('\u{0}'), "{title}: {e}");
        }
        // Undefined values are not errors at load (they render empty), and known filters pass.
        Rules::parse(&rule("{{ amount | default('0') }} {{ missing.deeper }}")).unwrap();
        // In a dedupe key too, after a value the (empty) trial event lacks: the rest of the key is checked.
        let keyed = format!("{}dedupe_key = \"{{{{ a }}}}:{{{{ b | defualt('x') }}}}\"\n", rule("t"));
        let e = Rules::parse(&keyed).unwrap_err().to_string();
        assert!(e.contains("defualt") && e.contains("dedupe_key"), "{e}");
    }

    /// A dedupe key that prints a value the event lacks, or a null, does not apply (the event keeps its own id):
    /// it would have made every such event one.
    #[test]
    fn a_dedupe_key_printing_a_missing_or_null_value_does_not_apply() {
        let rules = rule("title = \"t\"\ndedupe_key = \"{{ kind }}:{{ order.id }}\"");
        let key = |body| match rules.route(&event(body)).unwrap() {
            Route::Notify(d) => d.dedupe_key,
            other => panic!("{other:?}"),
        };
        assert_eq!(key(json!({"u": "x", "kind": "k", "order": {"id": 7}})).as_deref(), Some("r:k:7"));
        assert_eq!(key(json!({"u": "x", "kind": "k", "order": {}})), None, "missing");
        assert_eq!(key(json!({"u": "x", "kind": "k", "order": {"id": null}})), None, "null");
        assert_eq!(key(json!({"u": "x", "order": {"id": 7}})), None, "missing before the rest");
    }

    /// Before, a missing file loaded the shipped rules — also on reload, so renaming the rules file away and
    /// reloading swapped an operator's one rule for the shipped fourteen (a GDPR erase among them).
    #[test]
    fn a_missing_rules_file_is_refused_unless_it_is_the_default_one_at_start_and_a_reload_keeps_the_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mine.toml");
        std::fs::write(&path, "[[rule]]\nname = \"only\"\nrouting_keys = [\"a.b\"]\naction = \"ignore\"\n").unwrap();
        let handle = RulesHandle::new(Rules::load_at_start(&path).unwrap(), &path);
        assert_eq!(handle.current().len(), 1);
        std::fs::remove_file(&path).unwrap();
        let e = handle.reload().unwrap_err().to_string();
        assert!(e.contains("mine.toml") && e.contains("no such file"), "{e}");
        assert_eq!(handle.current().len(), 1, "the rules in force stay");
        let e = Rules::load_at_start(&path).unwrap_err().to_string();
        assert!(e.contains("no such file"), "a configured path must exist at start: {e}");
        // The default path is the one `config/default.toml` sets (here, in the checkout, the file exists).
        assert_eq!(crate::config::Settings::defaults().rules.path, Path::new(DEFAULT_RULES_PATH));
        assert_eq!(
            Rules::load_at_start(Path::new(DEFAULT_RULES_PATH)).unwrap().len(),
            Rules::parse(DEFAULT_RULES_TOML).unwrap().len()
        );
    }

    #[test]
    fn topic_patterns_follow_amqp_semantics() {
        let m = |p: &str, k: &str| Pattern::parse(p).unwrap().matches(k);
        assert!(m("stage.*", "stage.accepted"));
        assert!(!m("stage.*", "stage.accepted.x"));
        assert!(!m("stage.*", "stage"));
        assert!(m("availability.#", "availability"));
        assert!(m("availability.#", "availability.closed.abc"));
        assert!(m("#", ""));
        assert!(m("a.#.z", "a.z"));
        assert!(m("a.#.z", "a.b.c.z"));
        assert!(!m("a.#.z", "a.b.c"));
        assert!(m("*.created", "student.created"));
        assert!(Pattern::parse("st*ge.x").is_err());
    }

    #[test]
    fn patterns_with_many_hashes_match_a_10000_word_key() {
        // A backtracking matcher explores O(n^3) splits here and does not return.
        let p = Pattern::parse("#.b.#.b.#.z").unwrap();
        let key = vec!["b"; 10_000].join(".");
        assert!(!p.matches(&key), "no trailing z");
        assert!(p.matches(&format!("{key}.z")));
        assert!(!p.matches(&format!("{key}.z.b")), "z must be the last word");
        assert!(!p.matches("b.z"), "two b words are needed");
        assert!(p.matches("a.b.c.b.z"));
    }

    #[test]
    fn consecutive_hashes_mean_one_hash() {
        let m = |p: &str, k: &str| Pattern::parse(p).unwrap().matches(k);
        assert!(m("a.#.#.z", "a.z"));
        assert!(m("a.#.#.z", "a.x.y.z"));
        assert!(m("#.#", ""));
        assert!(!m("a.#.#.z", "a.x"));
        assert_eq!(Pattern::parse("#.#.#.a").unwrap().0, Pattern::parse("#.a").unwrap().0);
    }

    #[test]
    fn literal_and_wildcard_patterns_agree_with_the_general_matcher() {
        // Literal patterns take the word-for-word path; patterns longer than the stack buffer allocate.
        let m = |p: &str, k: &str| Pattern::parse(p).unwrap().matches(k);
        assert!(m("a.b.c", "a.b.c"));
        assert!(!m("a.b.c", "a.b"));
        assert!(!m("a.b", "a.b.c"));
        assert!(!m("a.b", ""));
        assert!(m("", ""), "an empty pattern is one empty word, as an empty key is");
        let long: Vec<String> = (0..40).map(|i| if i % 7 == 3 { "*".into() } else { format!("w{i}") }).collect();
        let key: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
        assert!(m(&long.join("."), &key.join(".")));
        assert!(!m(&long.join("."), &key[..39].join(".")));
        assert!(m(&format!("{}.#", long.join(".")), &format!("{}.x.y", key.join("."))));
    }

    fn rule(fields: &str) -> Rules {
        Rules::parse(&format!("[[rule]]\nname = \"r\"\nto = [\"/u\"]\n{fields}\n")).unwrap()
    }

    fn event(body: serde_json::Value) -> Event {
        let raw = serde_json::value::to_raw_value(&body).unwrap();
        let env = crate::event::Envelope {
            exchange: "x",
            routing_key: Some("a.b"),
            message_id: None,
            caller: None,
            element: None,
        };
        crate::event::decode(env, raw).unwrap()
    }

    /// `when_missing = "everyone"` broadcasts an event that names nobody (the recipient absent) or names an
    /// everyone value; a recipient that is there but is no id (`null` — Python's `None` —, `12.5`, `true`, a
    /// blank string, an object, a number too large) is the producer's mistake and is refused, not told to every
    /// user.
    #[test]
    fn only_an_absent_recipient_means_everyone_a_malformed_one_is_refused() {
        let r = Rules::parse(
            "[[rule]]\nname = \"r\"\nto = [\"/u\", \"alias:student:/s\"]\nwhen_missing = \"everyone\"\n\
             everyone_values = [\"system\"]\ntitle = \"t\"\n",
        )
        .unwrap();
        let recipients = |body| match r.route(&event(body)) {
            Ok(Route::Notify(d)) => Ok(d.recipients),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        for body in [json!({}), json!({"u": "system"}), json!({"other": null})] {
            assert_eq!(recipients(body.clone()).unwrap(), Recipients::Everyone, "{body}");
        }
        assert_eq!(recipients(json!({"u": 7})).unwrap(), Recipients::Users(vec!["7".into()]));
        for (body, what) in [
            (json!({"u": null}), "/u (holds null"),
            (json!({"u": null, "s": null}), "/u (holds null"),
            (json!({"s": null}), "alias:student:/s (holds null"),
            (json!({"u": 12.5}), "/u (holds a number that is not an integer"),
            (json!({"u": 1e30}), "/u (holds a number that is not an integer"),
            (json!({"u": true}), "/u (holds a boolean"),
            (json!({"u": "   "}), "/u (holds a blank string"),
            (json!({"u": ""}), "/u (holds a blank string"),
            (json!({"u": {"id": "a"}}), "/u (holds an object"),
            (json!({"u": []}), "/u (holds an array without an id"),
            (json!({"s": false}), "alias:student:/s (holds a boolean"),
        ] {
            let e = recipients(body.clone()).unwrap_err();
            assert_eq!(e.reason(), "missing_user_id", "{body}");
            assert!(e.to_string().contains(what), "{body}: {e}");
        }
    }

    /// A user id that is there but unusable is named as such, not reported as missing; over 1,000 recipients are
    /// refused.
    #[test]
    fn an_unusable_user_id_is_said_and_a_recipient_list_is_bounded() {
        let r = rule("title = \"t\"");
        for (value, what) in [
            (json!(true), "a boolean"),
            (json!({"a": 1}), "an object"),
            (json!(1.5), "not an integer"),
            (json!(""), "a blank string"),
            (json!([true]), "an array without an id"),
        ] {
            let e = r.route(&event(json!({ "u": value }))).unwrap_err();
            assert_eq!(e.reason(), "missing_user_id");
            assert!(e.to_string().contains(what), "{value}: {e}");
        }
        let e = r.route(&event(json!({}))).unwrap_err();
        assert!(e.to_string().ends_with("no user id at /u"), "{e}");
        let many: Vec<String> = (0..=MAX_RECIPIENTS).map(|i| format!("u{i}")).collect();
        assert_eq!(r.route(&event(json!({ "u": many }))).unwrap_err().reason(), "too_many_recipients");
        let enough: Vec<String> = (0..MAX_RECIPIENTS).map(|i| format!("u{i}")).collect();
        assert!(matches!(r.route(&event(json!({ "u": enough }))), Ok(Route::Notify(_))));
    }

    #[test]
    fn a_path_template_reads_the_body_as_minijinja_renders_it() {
        let body = json!({
            "title": "  Hello  ", "n": 42, "big": u64::MAX, "neg": -7, "yes": true, "no": false, "nil": null,
            "f": 1.5, "whole": 2.0, "list": [1, 2], "obj": {"a": {"b": "deep", "n": 3}, "nil": null},
            "range": "a key named like a global", "s": "text", "empty": "", "u": "ann",
        });
        let sources = [
            "{{ title }}",
            "{{title}}",
            "  {{ n }} ",
            "{{ big }}",
            "{{ neg }}",
            "{{ yes }}",
            "{{ no }}",
            "{{ nil }}",
            "{{ f }}",
            "{{ whole }}",
            "{{ list }}",
            "{{ obj }}",
            "{{ obj.a }}",
            "{{ obj.a.b }}",
            "{{ obj.a.n }}",
            "{{ obj.nil }}",
            "{{ obj.missing }}",
            "{{ obj.missing.deeper }}",
            "{{ s.upper }}",
            "{{ n.x }}",
            "{{ list.x }}",
            "{{ missing }}",
            "{{ missing | default('x') }}",
            "{{ range }}",
            "{{ obj.missing | default('fallback') }}",
            "{{ obj.missing|default(\"dq\") }}",
            "{{ empty | default('e') }}",
            "{{ title | default('t') }}",
            "{{ nil | default('n') }}",
            "{{ obj.a.b | default ( 'x' ) }}",
            "{{ true }}",
            "{{ none }}",
            "{{ event.id }}",
            "{{ body.title }}",
            "{{ segments }}",
            "{{ title | upper }}",
            "{{- title }}",
            "{{ title -}}",
            "{{ title }}{{ n }}",
            "{{ n + 1 }}",
            "{{ obj['a'] }}",
            "{{ obj.a.b }}!",
        ];
        let event = event(body);
        let mut fast = 0;
        for source in sources {
            let mut rules = rule(&format!("title = {}", toml::Value::String(source.into())));
            let Route::Notify(d) = rules.route(&event).unwrap() else { panic!("a notify rule") };
            // The same source rendered by minijinja alone, as a plain template field renders it.
            let name = match &rules.rules[0].fields[1] {
                Field::Path { template, path } => {
                    fast += path.text(&event.body).is_some() as usize;
                    template.clone()
                }
                Field::Template(name) => name.clone(),
                Field::Literal(_) => panic!("{source} is a template"),
            };
            rules.rules[0].fields[1] = Field::Template(name);
            let Route::Notify(m) = rules.route(&event).unwrap() else { panic!("a notify rule") };
            assert_eq!(d.title, m.title, "{source}");
        }
        assert!(fast >= 15, "the fast path answered only {fast} of them");
        let paths = |src: &str| BodyPath::parse(src).map(|p| (p.keys, p.default));
        assert_eq!(paths("{{ a.b | default('x') }}"), Some((vec!["a".into(), "b".into()], Some("x".into()))));
        for other in ["{{ event.id }}", "{{ a | upper }}", "{{- a }}", "{{ a }}{{ b }}", "{{ a[0] }}", "x {{ a }}"] {
            assert_eq!(paths(other), None, "{other}");
        }
    }

    #[test]
    fn literal_fields_are_taken_as_written_and_never_compiled() {
        let rules = rule("title = \"  Hello {there} %  \"\ncontent = \"{# a comment #}Hi {{ name }}\"");
        let r = &rules.rules[0];
        assert_eq!(r.fields[1], Field::Literal("Hello {there} %".into()));
        assert_eq!(r.fields[0], Field::Literal("info".into()), "the default type");
        assert_eq!(r.fields[2], Field::Template("rule `r` content".into()), "a comment is template syntax");
        assert!(rules.templates.get_template("rule `r` title").is_err(), "a literal is not compiled");
        let Route::Notify(d) = rules.route(&event(json!({"u": "ann", "name": "Ann"}))).unwrap() else {
            panic!("a notify rule")
        };
        assert_eq!((d.kind.as_str(), d.title.as_str(), d.content.as_str()), ("info", "Hello {there} %", "Hi Ann"));
        assert!(d.related_object.is_none());
    }

    #[test]
    fn templates_see_the_body_at_the_top_level_and_under_body() {
        let rules = rule("title = \"{{ name }}/{{ body.name }}/{{ segments[1] }}/{{ event.exchange }}\"\nevent_type = \"t.{{ name }}\"\ndedupe_key = \"k\"");
        let Route::Notify(d) = rules.route(&event(json!({"u": "ann", "name": "Ann"}))).unwrap() else {
            panic!("a notify rule")
        };
        assert_eq!(d.title, "Ann/Ann/b/x");
        assert_eq!(d.event_type.as_deref(), Some("t.Ann"));
        assert_eq!(d.dedupe_key.as_deref(), Some("r:k"), "a literal dedupe key is namespaced as a rendered one");
    }

    #[test]
    fn shipped_rules_compile() {
        let rules = Rules::parse(DEFAULT_RULES_TOML).unwrap();
        assert!(rules.len() >= 8);
    }

    /// The shipped file's header says so: a rule an operator adds for their own exchange is never shadowed by a
    /// shipped one, and a publisher on another exchange cannot reach the seeds' rules (a `match.assigned` on
    /// `billing.events` put text of its choosing in any referee's inbox).
    #[test]
    fn every_shipped_rule_names_its_exchanges() {
        let rules = Rules::parse(DEFAULT_RULES_TOML).unwrap();
        for r in &rules.rules {
            assert!(!r.exchanges.is_empty(), "shipped rule `{}` matches every exchange", r.name);
        }
    }

    /// A purge that could resolve to everyone would dead-letter every event it matched: refused at load.
    #[test]
    fn a_purge_that_could_mean_everyone_is_refused_at_load() {
        let purge = |extra: &str| format!("[[rule]]\nname = \"erase\"\naction = \"purge\"\n{extra}\n");
        for extra in [
            "to = [\"everyone\"]",
            "to = [\"/u\", \"everyone\"]",
            "to = [\"/u\"]\nwhen_missing = \"everyone\"",
            "when_missing = \"everyone\"",
            "to = [\"/u\"]\neveryone_values = [\"system\"]",
        ] {
            let e = Rules::parse(&purge(extra)).unwrap_err().to_string();
            assert!(e.contains("erase") && e.contains("never everyone"), "{extra}: {e}");
        }
        Rules::parse(&purge("to = [\"/u\"]")).unwrap();
    }

    /// A null prints nothing, as a missing value does (minijinja printed `none`, and `| default` kept it): a
    /// Python publisher's `None` title is no text, and its `None` type is the default's, not a type `none`.
    #[test]
    fn a_null_prints_nothing_and_a_null_type_is_the_default() {
        let rules = rule("type = \"{{ kind | default('info') }}\"\ntitle = \"[{{ t }}]\"\ncontent = \"{{ c.d }}\"");
        let Route::Notify(d) =
            rules.route(&event(json!({"u": "x", "kind": null, "t": null, "c": {"d": null}}))).unwrap()
        else {
            panic!("a notify rule")
        };
        assert_eq!((d.kind.as_str(), d.title.as_str(), d.content.as_str()), ("info", "[]", ""));
    }

    /// What an event teaches is bounded as what it addresses is: an alias or its user over the 256 bytes of a
    /// user id, a related object's type or id over 256 bytes, is refused before anything is stored (on
    /// PostgreSQL such a value failed the commit's index entry: a 500, and an AMQP batch retried for ever).
    #[test]
    fn an_alias_or_related_object_over_its_bound_is_refused() {
        let rules = rule(
            "title = \"t\"\naliases = [{ kind = \"student\", alias = \"/s\", user = \"/au\" }]\n\
             related_object = { type = \"{{ rt }}\", id = \"{{ ri }}\" }",
        );
        let long = "x".repeat(257);
        let ok = "x".repeat(256);
        let route = |body: serde_json::Value| rules.route(&event(body));
        let e = route(json!({"u": "x", "s": long, "au": "y", "rt": "a", "ri": "b"})).unwrap_err();
        assert_eq!(e.reason(), "alias_too_long", "{e}");
        assert!(e.to_string().contains("student alias is 257 bytes"), "{e}");
        let e = route(json!({"u": "x", "s": "s1", "au": long, "rt": "a", "ri": "b"})).unwrap_err();
        assert_eq!(e.reason(), "user_id_too_long", "the alias's user: {e}");
        let e = route(json!({"u": "x", "s": "s1", "rt": long, "ri": "b"})).unwrap_err();
        assert_eq!(e.reason(), "related_object_too_long");
        let e = route(json!({"u": "x", "s": "s1", "rt": "a", "ri": long})).unwrap_err();
        assert!(e.to_string().contains("related object's id is 257 bytes"), "{e}");
        let Route::Notify(d) = route(json!({"u": "x", "s": ok, "au": ok, "rt": ok, "ri": ok})).unwrap() else {
            panic!("a notify rule")
        };
        assert_eq!((d.aliases.len(), d.related_object.map(|r| r.id.len())), (1, Some(256)));
    }

    #[test]
    fn bad_rules_refuse_to_load_and_name_the_rule() {
        let e = Rules::parse("[[rule]]\nname = \"r1\"\nto = [\"payload.user\"]\ntitle = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("r1"), "{e}");
        let e = Rules::parse("[[rule]]\nname = \"r2\"\nto = [\"/u\"]\n").unwrap_err();
        assert!(e.to_string().contains("r2") && e.to_string().contains("title"), "{e}");
        let e = Rules::parse("[[rule]]\nname = \"r3\"\nto = [\"/u\"]\ntitle = \"{{ broken\"\n").unwrap_err();
        assert!(e.to_string().contains("r3"), "{e}");
        let e = Rules::parse("[[rule]]\nname = \"r4\"\nbogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }
}
