-- Each user's counters row carries the order of its writes, so that sessions on every node can tell the newer of
-- two `counts` frames: two nodes' commits reach a third node's session over Redis in any order, and the older
-- counts arriving last left the badge wrong until the user's next change.
--
-- `inbox_counts.version`: a value of the global sequence below, taken by every write of the row (the trigger, so
-- that no write path — the group commit's upsert, the row-by-row statements, read all, seen all, pruning, an
-- operator's own UPDATE — can leave it behind). Writes of one row are serialised by its row lock and the trigger
-- runs once the lock is held, so each write of a row takes a higher value than the one before it.
CREATE SEQUENCE herald_counts_versions;
ALTER TABLE inbox_counts ADD COLUMN version BIGINT NOT NULL DEFAULT 0;

CREATE FUNCTION herald_version_counts() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    NEW.version := nextval('herald_counts_versions');
    RETURN NEW;
END
$$;

CREATE TRIGGER inbox_counts_version BEFORE INSERT OR UPDATE ON inbox_counts
FOR EACH ROW EXECUTE FUNCTION herald_version_counts();

-- As migration 8's `herald_write_targeted`, but it also returns each changed user's version, under a name of its
-- own: nodes of the release before keep calling the old function, whose prepared statements (with its result
-- columns) stay valid, and it still works (the trigger versions what it writes). A later release drops it once it
-- raises `compatible_from` past this migration.
CREATE FUNCTION herald_write_targeted_versioned(
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
        INSERT INTO inbox_counts AS c (user_id, unread, unseen, head) SELECT u, n, n, last FROM added
        ON CONFLICT (user_id) DO UPDATE SET unread = c.unread + excluded.unread, unseen = c.unseen + excluded.unseen,
            head_before = c.head, head = excluded.head
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
