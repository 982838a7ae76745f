-- plain
SELECT * FROM (SELECT id, user_id, kind, title, content, event_type, source, related_type, related_id, data, created_at, prev_id, read_at, seen_at, archived_at, muted FROM notifications
             WHERE user_id = ?1 AND id < ?2 AND archived_at IS NULL
             ORDER BY id DESC LIMIT ?3) t UNION ALL SELECT * FROM (SELECT n.id, n.user_id, n.kind, n.title, n.content, n.event_type, n.source,
        n.related_type, n.related_id, n.data, n.created_at, n.prev_id,
        CASE WHEN COALESCE(s.unread, 0) = 1 THEN NULL
             ELSE COALESCE(s.read_at, CASE WHEN n.id <= w.read_all_up_to THEN w.read_all_at END) END AS read_at,
        COALESCE(s.seen_at, CASE WHEN n.id <= w.seen_all_up_to THEN w.seen_all_at END) AS seen_at,
        s.archived_at AS archived_at, 0 AS muted FROM notifications n
         LEFT JOIN broadcast_state s ON s.user_id = ?1 AND s.notification_id = n.id
         LEFT JOIN user_state w ON w.user_id = ?1
         WHERE n.user_id IS NULL AND NOT COALESCE(s.deleted, FALSE) AND n.id < ?2 AND s.archived_at IS NULL ORDER BY n.id DESC LIMIT ?3) b0 ORDER BY id DESC LIMIT ?3
;;
-- unread
SELECT * FROM (SELECT id, user_id, kind, title, content, event_type, source, related_type, related_id, data, created_at, prev_id, read_at, seen_at, archived_at, muted FROM notifications
             WHERE user_id = ?1 AND id < ?2 AND read_at IS NULL AND NOT muted AND archived_at IS NULL
             ORDER BY id DESC LIMIT ?3) t UNION ALL SELECT * FROM (SELECT n.id, n.user_id, n.kind, n.title, n.content, n.event_type, n.source,
        n.related_type, n.related_id, n.data, n.created_at, n.prev_id,
        CASE WHEN COALESCE(s.unread, 0) = 1 THEN NULL
             ELSE COALESCE(s.read_at, CASE WHEN n.id <= w.read_all_up_to THEN w.read_all_at END) END AS read_at,
        COALESCE(s.seen_at, CASE WHEN n.id <= w.seen_all_up_to THEN w.seen_all_at END) AS seen_at,
        s.archived_at AS archived_at, 0 AS muted FROM notifications n
         LEFT JOIN broadcast_state s ON s.user_id = ?1 AND s.notification_id = n.id
         LEFT JOIN user_state w ON w.user_id = ?1
         WHERE n.user_id IS NULL AND NOT COALESCE(s.deleted, FALSE) AND n.id < ?2 AND n.id > (SELECT COALESCE(max(read_all_up_to), 0) FROM user_state WHERE user_id = ?1) AND s.read_at IS NULL AND s.archived_at IS NULL ORDER BY n.id DESC LIMIT ?3) b0 UNION ALL SELECT * FROM (SELECT n.id, n.user_id, n.kind, n.title, n.content, n.event_type, n.source,
        n.related_type, n.related_id, n.data, n.created_at, n.prev_id,
        CASE WHEN COALESCE(s.unread, 0) = 1 THEN NULL
             ELSE COALESCE(s.read_at, CASE WHEN n.id <= w.read_all_up_to THEN w.read_all_at END) END AS read_at,
        COALESCE(s.seen_at, CASE WHEN n.id <= w.seen_all_up_to THEN w.seen_all_at END) AS seen_at,
        s.archived_at AS archived_at, 0 AS muted FROM broadcast_state s CROSS JOIN notifications n
         LEFT JOIN user_state w ON w.user_id = ?1
         WHERE n.id = s.notification_id AND s.user_id = ?1 AND NOT s.deleted AND n.user_id IS NULL
           AND s.notification_id < ?2 AND s.notification_id <= (SELECT COALESCE(max(read_all_up_to), 0) FROM user_state WHERE user_id = ?1) AND s.unread AND s.read_at IS NULL
                 AND s.archived_at IS NULL ORDER BY s.notification_id DESC LIMIT ?3) b1 ORDER BY id DESC LIMIT ?3
;;
-- archived
SELECT * FROM (SELECT id, user_id, kind, title, content, event_type, source, related_type, related_id, data, created_at, prev_id, read_at, seen_at, archived_at, muted FROM notifications INDEXED BY notifications_archived
             WHERE user_id = ?1 AND id < ?2 AND archived_at IS NOT NULL
             ORDER BY id DESC LIMIT ?3) t UNION ALL SELECT * FROM (SELECT n.id, n.user_id, n.kind, n.title, n.content, n.event_type, n.source,
        n.related_type, n.related_id, n.data, n.created_at, n.prev_id,
        CASE WHEN COALESCE(s.unread, 0) = 1 THEN NULL
             ELSE COALESCE(s.read_at, CASE WHEN n.id <= w.read_all_up_to THEN w.read_all_at END) END AS read_at,
        COALESCE(s.seen_at, CASE WHEN n.id <= w.seen_all_up_to THEN w.seen_all_at END) AS seen_at,
        s.archived_at AS archived_at, 0 AS muted FROM broadcast_state s CROSS JOIN notifications n
         LEFT JOIN user_state w ON w.user_id = ?1
         WHERE n.id = s.notification_id AND s.user_id = ?1 AND NOT s.deleted AND n.user_id IS NULL
           AND s.notification_id < ?2 AND s.archived_at IS NOT NULL ORDER BY s.notification_id DESC LIMIT ?3) b0 ORDER BY id DESC LIMIT ?3
;;
-- kind
SELECT * FROM (SELECT id, user_id, kind, title, content, event_type, source, related_type, related_id, data, created_at, prev_id, read_at, seen_at, archived_at, muted FROM notifications
             WHERE user_id = ?1 AND id < ?2 AND archived_at IS NULL AND kind = ?4
             ORDER BY id DESC LIMIT ?3) t UNION ALL SELECT * FROM (SELECT n.id, n.user_id, n.kind, n.title, n.content, n.event_type, n.source,
        n.related_type, n.related_id, n.data, n.created_at, n.prev_id,
        CASE WHEN COALESCE(s.unread, 0) = 1 THEN NULL
             ELSE COALESCE(s.read_at, CASE WHEN n.id <= w.read_all_up_to THEN w.read_all_at END) END AS read_at,
        COALESCE(s.seen_at, CASE WHEN n.id <= w.seen_all_up_to THEN w.seen_all_at END) AS seen_at,
        s.archived_at AS archived_at, 0 AS muted FROM notifications n INDEXED BY notifications_broadcast_kinds
         LEFT JOIN broadcast_state s ON s.user_id = ?1 AND s.notification_id = n.id
         LEFT JOIN user_state w ON w.user_id = ?1
         WHERE n.user_id IS NULL AND NOT COALESCE(s.deleted, FALSE) AND n.id < ?2 AND n.kind = ?4 AND s.archived_at IS NULL ORDER BY n.id DESC LIMIT ?3) b0 ORDER BY id DESC LIMIT ?3
;;
-- related
SELECT * FROM (SELECT id, user_id, kind, title, content, event_type, source, related_type, related_id, data, created_at, prev_id, read_at, seen_at, archived_at, muted FROM notifications
             WHERE user_id = ?1 AND id < ?2 AND archived_at IS NULL AND related_type = ?4 AND related_id = ?5
             ORDER BY id DESC LIMIT ?3) t UNION ALL SELECT * FROM (SELECT n.id, n.user_id, n.kind, n.title, n.content, n.event_type, n.source,
        n.related_type, n.related_id, n.data, n.created_at, n.prev_id,
        CASE WHEN COALESCE(s.unread, 0) = 1 THEN NULL
             ELSE COALESCE(s.read_at, CASE WHEN n.id <= w.read_all_up_to THEN w.read_all_at END) END AS read_at,
        COALESCE(s.seen_at, CASE WHEN n.id <= w.seen_all_up_to THEN w.seen_all_at END) AS seen_at,
        s.archived_at AS archived_at, 0 AS muted FROM notifications n INDEXED BY notifications_broadcast_related
         LEFT JOIN broadcast_state s ON s.user_id = ?1 AND s.notification_id = n.id
         LEFT JOIN user_state w ON w.user_id = ?1
         WHERE n.user_id IS NULL AND NOT COALESCE(s.deleted, FALSE) AND n.id < ?2 AND n.related_type = ?4 AND n.related_id = ?5 AND s.archived_at IS NULL ORDER BY n.id DESC LIMIT ?3) b0 ORDER BY id DESC LIMIT ?3
;;
-- related_type
SELECT * FROM (SELECT id, user_id, kind, title, content, event_type, source, related_type, related_id, data, created_at, prev_id, read_at, seen_at, archived_at, muted FROM notifications
             WHERE user_id = ?1 AND id < ?2 AND archived_at IS NULL AND related_type = ?4
             ORDER BY id DESC LIMIT ?3) t UNION ALL SELECT * FROM (SELECT n.id, n.user_id, n.kind, n.title, n.content, n.event_type, n.source,
        n.related_type, n.related_id, n.data, n.created_at, n.prev_id,
        CASE WHEN COALESCE(s.unread, 0) = 1 THEN NULL
             ELSE COALESCE(s.read_at, CASE WHEN n.id <= w.read_all_up_to THEN w.read_all_at END) END AS read_at,
        COALESCE(s.seen_at, CASE WHEN n.id <= w.seen_all_up_to THEN w.seen_all_at END) AS seen_at,
        s.archived_at AS archived_at, 0 AS muted FROM notifications n INDEXED BY notifications_broadcast_related_types
         LEFT JOIN broadcast_state s ON s.user_id = ?1 AND s.notification_id = n.id
         LEFT JOIN user_state w ON w.user_id = ?1
         WHERE n.user_id IS NULL AND NOT COALESCE(s.deleted, FALSE) AND n.id < ?2 AND n.related_type = ?4 AND s.archived_at IS NULL ORDER BY n.id DESC LIMIT ?3) b0 ORDER BY id DESC LIMIT ?3
;;
