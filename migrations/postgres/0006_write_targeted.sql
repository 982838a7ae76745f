-- The totals every counts message carries: broadcasts ever written (their last ordinal), broadcasts pruned, and the
-- newest broadcast id (see `Counters` in src/inbox/mod.rs). One definition for the writer's queries and for
-- `herald_write_targeted`.
CREATE FUNCTION herald_totals(OUT total BIGINT, OUT pruned BIGINT, OUT broadcast_up_to BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT COALESCE((SELECT value FROM store_state WHERE name = 'broadcast_ord'), 0),
           COALESCE((SELECT value FROM store_state WHERE name = 'broadcast_pruned_ord'), 0),
           COALESCE((SELECT max(id) FROM notifications WHERE user_id IS NULL), 0)
$$;

-- One group commit of targeted notifications (the shape of one event per request), called in autocommit so the
-- whole commit is one round trip: `SELECT * FROM herald_write_targeted(...)` answers after its transaction
-- committed. See `write_targeted` in src/inbox/postgres.rs, which passes:
--   write_lock, user_locks, lock_keys: the advisory locks (`WRITE_LOCK` shared, then one per user in key order);
--   written_at: the rows' `created_at` and the dedupe keys' `applied_at`; muted_by_default: types muted unless a user
--   turned them on;
--   keys .. bodies: one element per write (its dedupe key and its stored columns, texts already made storable);
--   row_writes, row_users: one element per recipient row, in commit order: its write (1-based) and its user.
-- It returns, per write, whether it was fresh (its key newly recorded and not repeated earlier in the call); per
-- row of a fresh write, in order, its id, prev_id and muted; the counters of every user whose counts changed (in
-- the order of their first unmuted row); and the totals.
--
-- Each statement of a PL/pgSQL function takes a new snapshot (READ COMMITTED), so everything read below the locks
-- sees every transaction that held them before: ids are drawn, and chain heads read, under the user's lock,
-- exactly as the row-by-row path does inside its locked transaction.
CREATE FUNCTION herald_write_targeted(
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

    -- The rows of fresh writes, each muted as `is_muted` in src/inbox/mod.rs decides: the user's setting for the
    -- type, else whether the type is muted by default.
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

    -- prev_id: the user's previous unmuted row of this call, else their newest unmuted row, else 0.
    SELECT array_agg(COALESCE(t.p, (SELECT n.id FROM notifications n WHERE n.user_id = t.u AND NOT n.muted
                                    ORDER BY n.id DESC LIMIT 1), 0) ORDER BY t.i)
    INTO prev_ids
    FROM (SELECT u, i, max(id) FILTER (WHERE NOT m)
                           OVER (PARTITION BY u ORDER BY i ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS p
          FROM unnest(users, muted, ids) WITH ORDINALITY AS r(u, m, id, i)) t;

    INSERT INTO notifications (id, user_id, event_id, kind, title, content, event_type, source, related_type,
                               related_id, data, body, created_at, muted, prev_id)
    OVERRIDING SYSTEM VALUE
    SELECT r.id, r.u, event_ids[r.w], kinds[r.w], titles[r.w], contents[r.w], event_types[r.w], sources[r.w],
           related_types[r.w], related_ids[r.w], datas[r.w]::json, bodies[r.w]::json, written_at, r.m, r.p
    FROM unnest(ids, users, writes, muted, prev_ids) AS r(id, u, w, m, p);

    WITH added AS (
        SELECT r.u, count(*) AS n, min(r.i) AS first FROM unnest(users, muted) WITH ORDINALITY AS r(u, m, i)
        WHERE NOT r.m GROUP BY r.u
    ), upserted AS (
        INSERT INTO inbox_counts AS c (user_id, unread, unseen) SELECT u, n, n FROM added
        ON CONFLICT (user_id) DO UPDATE SET unread = c.unread + excluded.unread, unseen = c.unseen + excluded.unseen
        RETURNING c.*
    )
    SELECT array_agg(c.user_id ORDER BY a.first), array_agg(c.unread ORDER BY a.first),
           array_agg(c.unseen ORDER BY a.first), array_agg(c.read_ord ORDER BY a.first),
           array_agg(c.seen_ord ORDER BY a.first), array_agg(c.unread_adj ORDER BY a.first),
           array_agg(c.unseen_adj ORDER BY a.first)
    INTO count_users, unread, unseen, read_ord, seen_ord, unread_adj, unseen_adj
    FROM upserted c JOIN added a ON a.u = c.user_id;

    SELECT t.total, t.pruned, t.broadcast_up_to INTO total, pruned, broadcast_up_to FROM herald_totals() t;
END
$$;

-- The lowest migration a node must know to write this database beside the others (see `compatible` in
-- src/inbox/postgres.rs): nodes from before migration 4 would not keep the counters. A later migration that older
-- releases cannot run beside raises it.
INSERT INTO store_state (name, value) VALUES ('compatible_from', 4)
ON CONFLICT (name) DO UPDATE SET value = GREATEST(store_state.value, excluded.value);
