-- The per-event trace (src/trace/): an append-only log of steps, written by every node, assembled when read.
-- Its own migrations (table `_herald_trace_migrations`), applied by the trace at start.
CREATE TABLE IF NOT EXISTS trace_steps (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL,
    trace_id TEXT,
    event_id TEXT,
    notification_id BIGINT,
    user_id TEXT,
    kind TEXT NOT NULL,
    node TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS trace_steps_event ON trace_steps (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS trace_steps_trace ON trace_steps (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS trace_steps_notification ON trace_steps (notification_id) WHERE notification_id IS NOT NULL;
-- Only the rows looked up by user: `delivered` and `read` rows (the many) stay out of it. (Version 1 was replaced
-- before any release carried it.)
CREATE INDEX IF NOT EXISTS trace_steps_user ON trace_steps (user_id, kind, id)
    WHERE kind IN ('stored', 'read_all', 'seen_all');
