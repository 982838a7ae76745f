-- Inbox states (seen, archived, unread again), counters read by key, and preferences (issue 17), as in the
-- SQLite backend's fifth migration (src/inbox/sqlite.rs). Existing rows are carried over: what was read counts
-- as seen, and the counters start from the rows as they are.

ALTER TABLE notifications ADD COLUMN seen_at TIMESTAMPTZ;
ALTER TABLE notifications ADD COLUMN archived_at TIMESTAMPTZ;
ALTER TABLE notifications ADD COLUMN muted BOOLEAN NOT NULL DEFAULT FALSE;
-- Broadcasts only: 1, 2, 3, ... in id order (see `Counters` in src/inbox/mod.rs).
ALTER TABLE notifications ADD COLUMN ord BIGINT;
UPDATE notifications SET seen_at = read_at WHERE read_at IS NOT NULL;
UPDATE notifications SET ord = o.rn
    FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM notifications WHERE user_id IS NULL) o
    WHERE notifications.id = o.id;

-- Per-user broadcast state: seen, archived, and `unread` = marked unread although under the read_all watermark.
ALTER TABLE broadcast_state ADD COLUMN seen_at TIMESTAMPTZ;
ALTER TABLE broadcast_state ADD COLUMN archived_at TIMESTAMPTZ;
ALTER TABLE broadcast_state ADD COLUMN unread BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE broadcast_state SET seen_at = read_at WHERE read_at IS NOT NULL;

-- "Seen all" watermark, as read_all's (a read_all sees everything too).
ALTER TABLE user_state ADD COLUMN seen_all_up_to BIGINT;
ALTER TABLE user_state ADD COLUMN seen_all_at TIMESTAMPTZ;
ALTER TABLE user_state ALTER COLUMN read_all_at DROP NOT NULL;
UPDATE user_state SET seen_all_up_to = read_all_up_to, seen_all_at = read_all_at;

-- The counters (see `Counters` in src/inbox/mod.rs).
CREATE TABLE inbox_counts (
    user_id    TEXT   PRIMARY KEY,
    unread     BIGINT NOT NULL DEFAULT 0,
    unseen     BIGINT NOT NULL DEFAULT 0,
    read_ord   BIGINT NOT NULL DEFAULT 0,
    seen_ord   BIGINT NOT NULL DEFAULT 0,
    unread_adj BIGINT NOT NULL DEFAULT 0,
    unseen_adj BIGINT NOT NULL DEFAULT 0
);
INSERT INTO inbox_counts (user_id, unread, unseen)
    SELECT user_id, count(*) FILTER (WHERE read_at IS NULL), count(*) FILTER (WHERE read_at IS NULL)
    FROM notifications WHERE user_id IS NOT NULL GROUP BY user_id;
INSERT INTO inbox_counts (user_id) SELECT user_id FROM user_state ON CONFLICT DO NOTHING;
INSERT INTO inbox_counts (user_id) SELECT DISTINCT user_id FROM broadcast_state ON CONFLICT DO NOTHING;
UPDATE inbox_counts SET read_ord = COALESCE((SELECT max(n.ord) FROM notifications n, user_state w
    WHERE w.user_id = inbox_counts.user_id AND n.user_id IS NULL AND n.id <= w.read_all_up_to), 0);
UPDATE inbox_counts SET seen_ord = read_ord, unread_adj = (SELECT count(*) FROM broadcast_state s
    JOIN notifications n ON n.id = s.notification_id LEFT JOIN user_state w ON w.user_id = s.user_id
    WHERE s.user_id = inbox_counts.user_id AND n.id > COALESCE(w.read_all_up_to, 0)
      AND (s.read_at IS NOT NULL OR s.deleted));
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
);
