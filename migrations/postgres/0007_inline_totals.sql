-- `herald_totals` (migration 6) returned one row of OUT parameters, a shape PostgreSQL never inlines: every
-- statement that named it ran it as a separate SQL function, parsed and planned again on each call (a tenth of
-- the writer's PostgreSQL time in `herald_write_targeted`, and three calls in each counts read). Declared as a
-- table function with the same columns and body, the planner inlines it into the calling statement, whose plan
-- is then cached like any other. Callers are unchanged: they select its columns `FROM herald_totals()`.
DROP FUNCTION herald_totals();
CREATE FUNCTION herald_totals() RETURNS TABLE (total BIGINT, pruned BIGINT, broadcast_up_to BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT COALESCE((SELECT value FROM store_state WHERE name = 'broadcast_ord'), 0),
           COALESCE((SELECT value FROM store_state WHERE name = 'broadcast_pruned_ord'), 0),
           COALESCE((SELECT max(id) FROM notifications WHERE user_id IS NULL), 0)
$$;
