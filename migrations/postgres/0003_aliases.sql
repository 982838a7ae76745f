-- Recipient aliases: "student 7d3c… is user 0f8b…", learned from events or set over the API; erased with the
-- user.
CREATE TABLE aliases (
    kind       TEXT        NOT NULL,
    alias      TEXT        NOT NULL,
    user_id    TEXT        NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kind, alias)
);
CREATE INDEX aliases_by_user ON aliases (user_id);
