//! The list query (`Store::list`), written once for both backends: they differ only in the pieces a
//! [`Dialect`] names. Only the filters set appear in the query, so each part can walk an index, and each page's
//! work is bounded by what it can return rather than by every retained broadcast:
//! - a type or related-object filter finds broadcasts through partial indexes that hold broadcasts only, in id
//!   order from the cursor down (a targeted insert writes none of them: SQLite's migration 8, PostgreSQL's 10);
//! - unread broadcasts are those above the user's read_all watermark (walked from it) plus the ones marked
//!   unread below it (walked from the user's `broadcast_state` rows); archived broadcasts come from those rows,
//!   archived targeted rows through a partial index a row enters only when it is archived.
//!
//! What a filter still walks is the user's own targeted rows (of other types, or read): an index by type or by
//! unread per user would cost every targeted insert a B-tree write (the unread index was dropped for that), and
//! stopping at the unread counter would let a counter that drifted hide rows. Filters apply before the limit, so
//! rows that do not match crowd out none that do.

use super::ListQuery;

/// What the backends write differently.
pub(crate) struct Dialect {
    /// A targeted row's columns, in the order the backend's row mapping reads them.
    pub targeted_columns: &'static str,
    /// `SELECT` and a broadcast row's columns as user `1` sees it (`n` the broadcast, `s` their state of it, `w`
    /// their watermarks), in the same order.
    pub broadcast_select: &'static str,
    /// Name the index each walk takes: SQLite's `INDEXED BY`, so that statistics an operator's `ANALYZE` leaves
    /// cannot send a filtered list back to a walk of every broadcast. PostgreSQL's planner keeps per-value
    /// statistics and takes no hints.
    pub index_hints: bool,
    /// The sigil of numbered parameters: `?` (SQLite), `$` (PostgreSQL).
    pub placeholder: char,
}

impl Dialect {
    /// Broadcast rows as user `1` sees them, minus the ones they deleted (`n` the broadcast, `s` their state of
    /// it, `w` their watermarks), for the caller to add conditions on `n` to: the one text of this join, for the
    /// list, a replay's pages (`Store::after`) and a single row's visibility. `index` is a hint or empty.
    pub fn broadcasts(&self, index: &str) -> String {
        let user = format!("{}1", self.placeholder);
        format!(
            "{select} FROM notifications n{index}
         LEFT JOIN broadcast_state s ON s.user_id = {user} AND s.notification_id = n.id
         LEFT JOIN user_state w ON w.user_id = {user}
         WHERE n.user_id IS NULL AND NOT COALESCE(s.deleted, FALSE)",
            select = self.broadcast_select,
        )
    }
}

/// The list query for `q`: parameter 1 the user, 2 the cursor (`before`, exclusive), 3 the limit, then the
/// values of [`ListQuery::filters`] in order.
pub(crate) fn sql(q: &ListQuery, d: &Dialect) -> String {
    let p = |n: usize| format!("{}{n}", d.placeholder);
    let (user, before, limit) = (p(1), p(2), p(3));
    let (mut targeted_filters, mut broadcast_filters) = (String::new(), String::new());
    for (i, (column, _)) in q.filters().iter().enumerate() {
        targeted_filters += &format!(" AND {column} = {}", p(i + 4));
        broadcast_filters += &format!(" AND n.{column} = {}", p(i + 4));
    }
    let hint = |index: &str| if d.index_hints { format!(" INDEXED BY {index}") } else { String::new() };
    let broadcast_index = match (&q.kind, &q.related_type, &q.related_id) {
        (Some(_), _, _) => hint("notifications_broadcast_kinds"),
        (None, Some(_), Some(_)) => hint("notifications_broadcast_related"),
        (None, Some(_), None) => hint("notifications_broadcast_related_types"),
        (None, None, _) => String::new(),
    };
    let read_all_up_to = format!("(SELECT COALESCE(max(read_all_up_to), 0) FROM user_state WHERE user_id = {user})");
    // Walked from the broadcasts (in id order, or through the index named above) ...
    let rows = format!("{} AND n.id < {before}{broadcast_filters}", d.broadcasts(&broadcast_index));
    // ... or from the user's own states (SQLite keeps a `CROSS JOIN`'s order).
    let states = format!(
        "{select} FROM broadcast_state s CROSS JOIN notifications n
         LEFT JOIN user_state w ON w.user_id = {user}
         WHERE n.id = s.notification_id AND s.user_id = {user} AND NOT s.deleted AND n.user_id IS NULL
           AND s.notification_id < {before}{broadcast_filters}",
        select = d.broadcast_select,
    );
    let by_rows = format!("ORDER BY n.id DESC LIMIT {limit}");
    let by_states = format!("ORDER BY s.notification_id DESC LIMIT {limit}");
    let broadcasts = match (q.archived, q.unread_only) {
        (true, false) => vec![format!("{states} AND s.archived_at IS NOT NULL {by_states}")],
        (true, true) => vec![format!(
            "{states} AND s.archived_at IS NOT NULL AND s.read_at IS NULL
             AND (s.unread OR s.notification_id > {read_all_up_to}) {by_states}"
        )],
        (false, true) => vec![
            format!("{rows} AND n.id > {read_all_up_to} AND s.read_at IS NULL AND s.archived_at IS NULL {by_rows}"),
            format!(
                "{states} AND s.notification_id <= {read_all_up_to} AND s.unread AND s.read_at IS NULL
                 AND s.archived_at IS NULL {by_states}"
            ),
        ],
        (false, false) => vec![format!("{rows} AND s.archived_at IS NULL {by_rows}")],
    };
    // Unread lists what the unread count counts: muted notifications are in neither.
    let unread = if q.unread_only { " AND read_at IS NULL AND NOT muted" } else { "" };
    let (archived, targeted_index) = match q.archived {
        true => ("IS NOT NULL", hint("notifications_archived")),
        false => ("IS NULL", String::new()),
    };
    let mut sql = format!(
        "SELECT * FROM (SELECT {columns} FROM notifications{targeted_index}
             WHERE user_id = {user} AND id < {before}{unread} AND archived_at {archived}{targeted_filters}
             ORDER BY id DESC LIMIT {limit}) t",
        columns = d.targeted_columns,
    );
    for (i, part) in broadcasts.iter().enumerate() {
        sql += &format!(" UNION ALL SELECT * FROM ({part}) b{i}");
    }
    sql + &format!(" ORDER BY id DESC LIMIT {limit}")
}
