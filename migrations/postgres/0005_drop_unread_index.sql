-- Counts come from `inbox_counts` (migration 4), so the partial unread index only cost every insert and every read
-- mark another B-tree write. Listing a user's unread rows walks `notifications_by_user` instead.
DROP INDEX IF EXISTS notifications_unread;
