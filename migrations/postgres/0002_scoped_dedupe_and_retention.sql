-- Scoped dedupe keys and retention, as in the SQLite backend's third migration (src/inbox/sqlite.rs).

-- The old table held global event ids. It is kept, renamed, so an event applied before the upgrade and
-- redelivered after it is still a duplicate (deduped globally, as it was then) until `store.dedupe_window_days`
-- expires its row. New keys are `DedupeKey`s (src/event.rs): 16 bytes of SHA-256 over the id in its scope.
ALTER TABLE applied_events RENAME TO applied_events_legacy;
CREATE INDEX applied_events_legacy_by_age ON applied_events_legacy (applied_at);

CREATE TABLE dedupe_keys (
    key        BYTEA       PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX dedupe_keys_by_age ON dedupe_keys (applied_at);

-- The greatest targeted id retention pruned, per user (a resume from below it is told it was truncated).
CREATE TABLE pruned_floors (
    user_id TEXT   PRIMARY KEY,
    up_to   BIGINT NOT NULL
);

-- Small named values: 'broadcast_floor' (the greatest broadcast id pruned), 'probe' (the last probe write,
-- unix milliseconds).
CREATE TABLE store_state (
    name  TEXT   PRIMARY KEY,
    value BIGINT NOT NULL
);

-- Pruning a broadcast deletes every user's state of it.
CREATE INDEX broadcast_state_by_notification ON broadcast_state (notification_id);
