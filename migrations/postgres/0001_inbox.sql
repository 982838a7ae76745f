-- The inbox, as in the SQLite backend (src/inbox/sqlite.rs), shared by every Herald node using this database.
-- Embedded in the binary and applied at start by sqlx's migrator (named so the sqlx CLI can apply it too).

CREATE TABLE notifications (
    -- Drawn only by write transactions holding the inbox write lock, so ids become visible in increasing order.
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     TEXT        NOT NULL,
    user_id      TEXT,                   -- NULL: a broadcast, visible to every user
    kind         TEXT        NOT NULL,
    title        TEXT        NOT NULL,
    content      TEXT        NOT NULL,
    event_type   TEXT        NOT NULL,
    source       TEXT,
    related_type TEXT,
    related_id   TEXT,
    data         JSON        NOT NULL,   -- JSON, not JSONB: the text is kept byte for byte
    body         JSON        NOT NULL,   -- the original event body
    created_at   TIMESTAMPTZ NOT NULL,
    read_at      TIMESTAMPTZ,            -- targeted rows only; broadcasts keep read state per user below
    -- Gap detection: the id this user saw just before (for a broadcast, the previous broadcast).
    prev_id      BIGINT      NOT NULL DEFAULT 0
);
CREATE INDEX notifications_by_user ON notifications (user_id, id);
CREATE INDEX notifications_unread ON notifications (user_id, id) WHERE read_at IS NULL AND user_id IS NOT NULL;
CREATE INDEX notifications_broadcasts ON notifications (id) WHERE user_id IS NULL;

-- Idempotency: one row per event id ever applied.
CREATE TABLE applied_events (
    event_id   TEXT        PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL
);

-- Per-user state of broadcasts: read and/or deleted.
CREATE TABLE broadcast_state (
    user_id         TEXT        NOT NULL,
    notification_id BIGINT      NOT NULL,
    read_at         TIMESTAMPTZ,
    deleted         BOOLEAN     NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, notification_id)
);

-- "Read all" watermark: broadcasts with id <= read_all_up_to are read for this user.
CREATE TABLE user_state (
    user_id        TEXT        PRIMARY KEY,
    read_all_up_to BIGINT      NOT NULL,
    read_all_at    TIMESTAMPTZ NOT NULL
);
