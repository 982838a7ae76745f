-- Filtered lists (src/inbox/list.rs): broadcasts of one type or related object found through
-- their own index instead of a walk of every retained broadcast, and a user's archived rows instead of a walk of
-- all their rows. Partial: a targeted insert writes none of them (a row enters the last one when it is archived).
CREATE INDEX notifications_broadcast_kinds ON notifications (kind, id) WHERE user_id IS NULL;
CREATE INDEX notifications_broadcast_related ON notifications (related_type, related_id, id) WHERE user_id IS NULL;
CREATE INDEX notifications_broadcast_related_types ON notifications (related_type, id) WHERE user_id IS NULL;
CREATE INDEX notifications_archived ON notifications (user_id, id) WHERE archived_at IS NOT NULL;
