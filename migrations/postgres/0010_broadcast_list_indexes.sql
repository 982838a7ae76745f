-- Filtered lists (`list_sql` in src/inbox/postgres.rs): broadcasts of one type or related object found through
-- their own index instead of a walk of every retained broadcast. Partial: a targeted insert writes neither.
CREATE INDEX notifications_broadcast_kinds ON notifications (kind, id) WHERE user_id IS NULL;
CREATE INDEX notifications_broadcast_related ON notifications (related_type, related_id, id) WHERE user_id IS NULL;
