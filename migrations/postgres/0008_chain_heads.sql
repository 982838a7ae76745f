-- Each user's chain head kept in their counters row, so a group commit reads no `prev_id` from the notifications
-- (a lookup per user in every commit; BENCHMARKS.md has what this measured: the counters statement cheaper, the
-- whole call within this machine's noise).
--
-- `inbox_counts.head`: the user's newest unmuted targeted id — the `prev_id` their next row gets — or NULL when
-- not known (rows written before this migration, or the head row deleted), when the writer reads it from the
-- notifications as before. Whatever writes an unmuted targeted row sets it in the same transaction:
-- `herald_write_targeted` through its counters upsert, the row-by-row path with its INSERT (src/inbox/postgres.rs);
-- whatever deletes the head row clears it, through the triggers below, so no delete path (retention, a purge, a
-- delete, an operator's own DELETE or TRUNCATE) can leave it stale. `head_before` is the head the last upsert
-- replaced, read back by the same statement's RETURNING (an UPDATE's RETURNING sees only new values); nothing else
-- reads it.
ALTER TABLE inbox_counts ADD COLUMN head BIGINT, ADD COLUMN head_before BIGINT;

-- The search_path this migration ran with, pinned: a DELETE from a session with another search_path (an operator
-- naming the schema) still finds this schema's counters.
CREATE FUNCTION herald_forget_deleted_heads() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE inbox_counts c SET head = NULL FROM gone g WHERE c.user_id = g.user_id AND c.head = g.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER notifications_forget_deleted_heads AFTER DELETE ON notifications
REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION herald_forget_deleted_heads();

-- A TRUNCATE fires no DELETE trigger: it forgets every head.
CREATE FUNCTION herald_forget_all_heads() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE inbox_counts SET head = NULL WHERE head IS NOT NULL;
    RETURN NULL;
END
$$;

CREATE TRIGGER notifications_forget_all_heads AFTER TRUNCATE ON notifications
FOR EACH STATEMENT EXECUTE FUNCTION herald_forget_all_heads();

-- As migration 6's, but: the counters upsert records each user's new head and returns the one it replaced, which
-- is the `prev_id` of the user's first unmuted row of the call (no lookup unless it is NULL); the rows' INSERT
-- computes each `prev_id` itself (one statement fewer); and the changed users' counters come back in the upsert's
-- order (the caller matches them by user), not sorted by first row.
CREATE OR REPLACE FUNCTION herald_write_targeted(
    write_lock BIGINT, user_locks INT, lock_keys INT[], written_at TIMESTAMPTZ, muted_by_default TEXT[],
    keys BYTEA[], event_ids TEXT[], kinds TEXT[], titles TEXT[], contents TEXT[], event_types TEXT[],
    sources TEXT[], related_types TEXT[], related_ids TEXT[], datas TEXT[], bodies TEXT[],
    row_writes INT[], row_users TEXT[],
    OUT fresh BOOLEAN[], OUT ids BIGINT[], OUT prev_ids BIGINT[], OUT muted BOOLEAN[],
    OUT count_users TEXT[], OUT unread BIGINT[], OUT unseen BIGINT[], OUT read_ord BIGINT[], OUT seen_ord BIGINT[],
    OUT unread_adj BIGINT[], OUT unseen_adj BIGINT[],
    OUT total BIGINT, OUT pruned BIGINT, OUT broadcast_up_to BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    seq REGCLASS := pg_get_serial_sequence('notifications', 'id')::regclass;
    users TEXT[];
    writes INT[];
    heads BIGINT[];
BEGIN
    PERFORM pg_advisory_xact_lock_shared(write_lock);
    PERFORM pg_advisory_xact_lock(user_locks, k) FROM unnest(lock_keys) AS k;

    WITH recorded AS (
        INSERT INTO dedupe_keys (key, applied_at) SELECT k, written_at FROM unnest(keys) AS k
        ON CONFLICT DO NOTHING RETURNING key
    ), firsts AS (
        SELECT min(w.o) AS o FROM unnest(keys) WITH ORDINALITY AS w(key, o)
        WHERE w.key IN (SELECT key FROM recorded) GROUP BY w.key
    )
    SELECT array_agg(s.o IN (SELECT o FROM firsts) ORDER BY s.o) INTO fresh
    FROM generate_subscripts(keys, 1) AS s(o);

    SELECT array_agg(r.u ORDER BY r.i), array_agg(r.w ORDER BY r.i),
           array_agg(COALESCE(p.setting = 'muted', kinds[r.w] = ANY(muted_by_default)) ORDER BY r.i)
    INTO users, writes, muted
    FROM unnest(row_writes, row_users) WITH ORDINALITY AS r(w, u, i)
    LEFT JOIN preferences p ON p.user_id = r.u AND p.type = kinds[r.w]
    WHERE fresh[r.w];
    IF users IS NULL THEN
        RETURN;
    END IF;

    SELECT array_agg(x ORDER BY x) INTO ids
    FROM (SELECT nextval(seq) AS x FROM generate_series(1, cardinality(users))) s;

    WITH added AS (
        SELECT r.u, count(*) AS n, max(r.id) AS last FROM unnest(users, muted, ids) AS r(u, m, id)
        WHERE NOT r.m GROUP BY r.u
    ), upserted AS (
        INSERT INTO inbox_counts AS c (user_id, unread, unseen, head) SELECT u, n, n, last FROM added
        ON CONFLICT (user_id) DO UPDATE SET unread = c.unread + excluded.unread, unseen = c.unseen + excluded.unseen,
            head_before = c.head, head = excluded.head
        RETURNING c.*
    )
    SELECT array_agg(c.user_id), array_agg(c.unread), array_agg(c.unseen), array_agg(c.read_ord),
           array_agg(c.seen_ord), array_agg(c.unread_adj), array_agg(c.unseen_adj), array_agg(c.head_before)
    INTO count_users, unread, unseen, read_ord, seen_ord, unread_adj, unseen_adj, heads
    FROM upserted c;

    -- prev_id: the user's previous unmuted row of this call, else the head the upsert replaced, else (a head not
    -- known) their newest unmuted row, else 0. The lookup's snapshot predates this INSERT's own rows.
    WITH inserted AS (
        INSERT INTO notifications (id, user_id, event_id, kind, title, content, event_type, source, related_type,
                                   related_id, data, body, created_at, muted, prev_id)
        OVERRIDING SYSTEM VALUE
        SELECT r.id, r.u, event_ids[r.w], kinds[r.w], titles[r.w], contents[r.w], event_types[r.w], sources[r.w],
               related_types[r.w], related_ids[r.w], datas[r.w]::json, bodies[r.w]::json, written_at, r.m,
               COALESCE(r.p, h.b, (SELECT n.id FROM notifications n WHERE n.user_id = r.u AND NOT n.muted
                                   ORDER BY n.id DESC LIMIT 1), 0)
        FROM (SELECT u, w, m, id,
                     max(id) FILTER (WHERE NOT m)
                         OVER (PARTITION BY u ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS p
              FROM unnest(users, writes, muted, ids) AS r(u, w, m, id)) r
        LEFT JOIN unnest(count_users, heads) AS h(u, b) ON h.u = r.u
        RETURNING id, prev_id
    )
    SELECT array_agg(i.prev_id ORDER BY i.id) INTO prev_ids FROM inserted i;

    SELECT t.total, t.pruned, t.broadcast_up_to INTO total, pruned, broadcast_up_to FROM herald_totals() t;
END
$$;

-- Nodes from before this migration would write rows without moving the heads, and this release's nodes would then
-- link new rows to stale heads: they cannot write this database beside each other. (An older node still running
-- while a newer one migrates calls the function above, which moves the heads; only its row-by-row commits, those
-- holding a broadcast or aliases, do not — until it restarts and refuses to start — and a row linked to an older
-- head than it should only links below a client's cursor, which makes no gap to fill: nothing is lost.)
INSERT INTO store_state (name, value) VALUES ('compatible_from', 8)
ON CONFLICT (name) DO UPDATE SET value = GREATEST(store_state.value, excluded.value);
