-- The group commit's upsert sets the counters' version itself. Migration 9's trigger called a PL/pgSQL function
-- for every row the upsert wrote: 4–5 µs a row, a third of the upsert's time (`scripts/pg-statements.sh`).
--
-- The trigger stays for every write that does not take a new version itself (the release before's function, read
-- all, seen all, pruning, an operator's own UPDATE or INSERT), in a form PostgreSQL checks without calling the
-- function: it runs when a row is inserted without a version, or updated without a higher one. What migration 9
-- promised still holds: each write of a row takes a higher value than the one before it. The upsert takes its
-- value in `DO UPDATE SET`, which PostgreSQL evaluates once it holds the row's lock, as the trigger did; a value
-- taken before the lock (`excluded.version`, the INSERT's own) could be older than a write that committed while
-- the upsert waited for the row.
--
-- `version` is Herald's: do not write it by hand. The trigger used to overwrite such a value; now a value written
-- above the sequence stays, and later writes of the row count up from it (a user whose row is then deleted, by a
-- purge, starts again from the sequence, below it, and their open sessions keep older counts until the sequence
-- passes it).
DROP TRIGGER inbox_counts_version ON inbox_counts;

CREATE OR REPLACE FUNCTION herald_version_counts() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    NEW.version := nextval('herald_counts_versions');
    -- Only a version someone wrote by hand can be above the sequence; the next write still goes above it.
    IF TG_OP = 'UPDATE' AND NEW.version <= OLD.version THEN
        NEW.version := OLD.version + 1;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER inbox_counts_version_inserted BEFORE INSERT ON inbox_counts
FOR EACH ROW WHEN (NEW.version <= 0) EXECUTE FUNCTION herald_version_counts();

CREATE TRIGGER inbox_counts_version_updated BEFORE UPDATE ON inbox_counts
FOR EACH ROW WHEN (NEW.version <= OLD.version) EXECUTE FUNCTION herald_version_counts();

-- As migration 9's, but for the version in the upsert: a new row takes one in the INSERT, a row already there
-- takes one in `DO UPDATE SET`, after the row's lock.
CREATE OR REPLACE FUNCTION herald_write_targeted_versioned(
    write_lock BIGINT, user_locks INT, lock_keys INT[], written_at TIMESTAMPTZ, muted_by_default TEXT[],
    keys BYTEA[], event_ids TEXT[], kinds TEXT[], titles TEXT[], contents TEXT[], event_types TEXT[],
    sources TEXT[], related_types TEXT[], related_ids TEXT[], datas TEXT[], bodies TEXT[],
    row_writes INT[], row_users TEXT[],
    OUT fresh BOOLEAN[], OUT ids BIGINT[], OUT prev_ids BIGINT[], OUT muted BOOLEAN[],
    OUT count_users TEXT[], OUT unread BIGINT[], OUT unseen BIGINT[], OUT read_ord BIGINT[], OUT seen_ord BIGINT[],
    OUT unread_adj BIGINT[], OUT unseen_adj BIGINT[], OUT versions BIGINT[],
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
        INSERT INTO inbox_counts AS c (user_id, unread, unseen, head, version)
        SELECT u, n, n, last, nextval('herald_counts_versions') FROM added
        ON CONFLICT (user_id) DO UPDATE SET unread = c.unread + excluded.unread, unseen = c.unseen + excluded.unseen,
            head_before = c.head, head = excluded.head, version = nextval('herald_counts_versions')
        RETURNING c.*
    )
    SELECT array_agg(c.user_id), array_agg(c.unread), array_agg(c.unseen), array_agg(c.read_ord),
           array_agg(c.seen_ord), array_agg(c.unread_adj), array_agg(c.unseen_adj), array_agg(c.head_before),
           array_agg(c.version)
    INTO count_users, unread, unseen, read_ord, seen_ord, unread_adj, unseen_adj, heads, versions
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
