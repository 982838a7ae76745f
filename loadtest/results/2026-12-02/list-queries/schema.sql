
CREATE TABLE notifications (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT    NOT NULL,
    user_id      TEXT,              -- NULL: a broadcast, visible to every user
    kind         TEXT    NOT NULL,
    title        TEXT    NOT NULL,
    content      TEXT    NOT NULL,
    event_type   TEXT    NOT NULL,
    source       TEXT,
    related_type TEXT,
    related_id   TEXT,
    data         TEXT    NOT NULL,  -- JSON
    body         TEXT    NOT NULL,  -- the original event body, JSON
    created_at   INTEGER NOT NULL,  -- unix milliseconds
    read_at      INTEGER            -- targeted rows only; broadcasts keep read state per user below
);
CREATE INDEX notifications_by_user ON notifications(user_id, id);
CREATE INDEX notifications_unread ON notifications(user_id) WHERE read_at IS NULL;

-- Idempotency: one row per event id ever applied.
CREATE TABLE applied_events (
    event_id   TEXT    PRIMARY KEY,
    applied_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Per-user state of broadcasts: read and/or deleted.
CREATE TABLE broadcast_state (
    user_id         TEXT    NOT NULL,
    notification_id INTEGER NOT NULL,
    read_at         INTEGER,
    deleted         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, notification_id)
) WITHOUT ROWID;

-- "Read all" watermark: broadcasts with id <= read_all_up_to are read for this user.
CREATE TABLE user_state (
    user_id        TEXT    PRIMARY KEY,
    read_all_up_to INTEGER NOT NULL,
    read_all_at    INTEGER NOT NULL
) WITHOUT ROWID;
;
ALTER TABLE notifications ADD COLUMN prev_id INTEGER NOT NULL DEFAULT 0;;

ALTER TABLE applied_events RENAME TO applied_events_legacy;
CREATE INDEX applied_events_legacy_by_age ON applied_events_legacy(applied_at);

CREATE TABLE dedupe_keys (
    key        BLOB    PRIMARY KEY,
    applied_at INTEGER NOT NULL     -- unix milliseconds
) WITHOUT ROWID;
CREATE INDEX dedupe_keys_by_age ON dedupe_keys(applied_at);

-- The greatest targeted id retention pruned, per user (a resume from below it is told it was truncated).
CREATE TABLE pruned_floors (
    user_id TEXT    PRIMARY KEY,
    up_to   INTEGER NOT NULL
) WITHOUT ROWID;

-- Small named values: 'broadcast_floor' (the greatest broadcast id pruned), 'probe' (the last probe write).
CREATE TABLE store_state (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

-- Pruning a broadcast deletes every user's state of it.
CREATE INDEX broadcast_state_by_notification ON broadcast_state(notification_id);
;

CREATE TABLE aliases (
    kind       TEXT    NOT NULL,
    alias      TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,   -- unix milliseconds
    PRIMARY KEY (kind, alias)
) WITHOUT ROWID;
CREATE INDEX aliases_by_user ON aliases(user_id);
;

ALTER TABLE notifications ADD COLUMN seen_at INTEGER;
ALTER TABLE notifications ADD COLUMN archived_at INTEGER;
ALTER TABLE notifications ADD COLUMN muted INTEGER NOT NULL DEFAULT 0;
-- Broadcasts only: 1, 2, 3, ... in id order (see `Counters` in src/inbox/mod.rs).
ALTER TABLE notifications ADD COLUMN ord INTEGER;
UPDATE notifications SET seen_at = read_at WHERE read_at IS NOT NULL;
UPDATE notifications SET ord = o.rn
    FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM notifications WHERE user_id IS NULL) o
    WHERE notifications.id = o.id;

-- Per-user broadcast state: seen, archived, and `unread` = marked unread although under the read_all watermark.
ALTER TABLE broadcast_state ADD COLUMN seen_at INTEGER;
ALTER TABLE broadcast_state ADD COLUMN archived_at INTEGER;
ALTER TABLE broadcast_state ADD COLUMN unread INTEGER NOT NULL DEFAULT 0;
UPDATE broadcast_state SET seen_at = read_at WHERE read_at IS NOT NULL;

-- "Seen all" watermark, as read_all's (a read_all sees everything too).
ALTER TABLE user_state ADD COLUMN seen_all_up_to INTEGER;
ALTER TABLE user_state ADD COLUMN seen_all_at INTEGER;
UPDATE user_state SET seen_all_up_to = read_all_up_to, seen_all_at = read_all_at;

-- The counters (see `Counters` in src/inbox/mod.rs): targeted unread/unseen, the broadcast watermarks as
-- ordinals, and the per-broadcast-state adjustments.
CREATE TABLE inbox_counts (
    user_id    TEXT    PRIMARY KEY,
    unread     INTEGER NOT NULL DEFAULT 0,
    unseen     INTEGER NOT NULL DEFAULT 0,
    read_ord   INTEGER NOT NULL DEFAULT 0,
    seen_ord   INTEGER NOT NULL DEFAULT 0,
    unread_adj INTEGER NOT NULL DEFAULT 0,
    unseen_adj INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO inbox_counts (user_id, unread, unseen)
    SELECT user_id, sum(read_at IS NULL), sum(read_at IS NULL) FROM notifications
    WHERE user_id IS NOT NULL GROUP BY user_id;
INSERT OR IGNORE INTO inbox_counts (user_id) SELECT user_id FROM user_state;
INSERT OR IGNORE INTO inbox_counts (user_id) SELECT DISTINCT user_id FROM broadcast_state;
UPDATE inbox_counts SET read_ord = COALESCE((SELECT max(n.ord) FROM notifications n, user_state w
    WHERE w.user_id = inbox_counts.user_id AND n.user_id IS NULL AND n.id <= w.read_all_up_to), 0);
UPDATE inbox_counts SET seen_ord = read_ord, unread_adj = (SELECT count(*) FROM broadcast_state s
    JOIN notifications n ON n.id = s.notification_id LEFT JOIN user_state w ON w.user_id = s.user_id
    WHERE s.user_id = inbox_counts.user_id AND n.id > COALESCE(w.read_all_up_to, 0)
      AND (s.read_at IS NOT NULL OR s.deleted = 1));
UPDATE inbox_counts SET unseen_adj = unread_adj;
INSERT INTO store_state (name, value)
    SELECT 'broadcast_ord', COALESCE(max(ord), 0) FROM notifications WHERE user_id IS NULL;
INSERT INTO store_state (name, value) VALUES ('broadcast_pruned_ord', 0);

-- Preferences: one setting ('on' or 'muted') per user and notification type.
CREATE TABLE preferences (
    user_id TEXT NOT NULL,
    type    TEXT NOT NULL,
    setting TEXT NOT NULL,
    PRIMARY KEY (user_id, type)
) WITHOUT ROWID;
;
DROP INDEX notifications_unread;;

DROP INDEX dedupe_keys_by_age;
CREATE TABLE dedupe_sweep (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    stopped  BLOB    NOT NULL,  -- the position the last run swept to (8 bytes, see sweep.rs)
    at       INTEGER NOT NULL   -- when, unix milliseconds
);
;

CREATE INDEX notifications_broadcast_kinds ON notifications(kind, id) WHERE user_id IS NULL;
CREATE INDEX notifications_broadcast_related ON notifications(related_type, related_id, id) WHERE user_id IS NULL;
CREATE INDEX notifications_archived ON notifications(user_id, id) WHERE archived_at IS NOT NULL;
