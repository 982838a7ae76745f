//! The head of each chain (the `prev_id` the next row of that chain gets), kept in memory by a store's single
//! writer so a stored notification costs no `max()` query for its `prev_id`.
//!
//! Invariants: an entry is either absent (the writer loads it from the database on first use) or equal to what
//! the database would say as of the writer's open transaction — the newest unmuted targeted id of that user, or
//! the newest broadcast id. So the writer forgets a user's head whenever it deletes that user's rows (a delete, a
//! purge, retention) and forgets everything when a transaction fails (a rolled-back id is reused by the next
//! one). The map holds at most `capacity` users: when full it starts again empty, and heads are reloaded lazily.
//! Only a backend with a single writer may use it (SQLite); several PostgreSQL nodes write the same chains.

use std::collections::HashMap;

/// Users kept by default (about 100 bytes each).
pub(crate) const DEFAULT_CAPACITY: usize = 65_536;

pub(crate) struct Chains {
    users: HashMap<String, i64>,
    broadcast: Option<i64>,
    capacity: usize,
}

impl Chains {
    pub fn new(capacity: usize) -> Chains {
        Chains { users: HashMap::new(), broadcast: None, capacity: capacity.max(1) }
    }

    /// The head of `user`'s chain (`None`: the broadcast chain), 0 when it has no row yet; `load` reads it from
    /// the database on a miss.
    pub fn head<E>(&mut self, user: Option<&str>, load: impl FnOnce() -> Result<i64, E>) -> Result<i64, E> {
        match user {
            None => match self.broadcast {
                Some(id) => Ok(id),
                None => {
                    let id = load()?;
                    self.broadcast = Some(id);
                    Ok(id)
                }
            },
            Some(u) => match self.users.get(u) {
                Some(id) => Ok(*id),
                None => {
                    let id = load()?;
                    self.remember(u, id);
                    Ok(id)
                }
            },
        }
    }

    /// Row `id` joined `user`'s chain (`None`: a broadcast) in the open transaction.
    pub fn advance(&mut self, user: Option<&str>, id: i64) {
        match user {
            None => self.broadcast = Some(id),
            Some(u) => match self.users.get_mut(u) {
                Some(head) => *head = id,
                None => self.remember(u, id),
            },
        }
    }

    /// Rows of `user`'s chain were deleted: load its head again when next needed.
    pub fn forget_user(&mut self, user: &str) {
        self.users.remove(user);
    }

    /// Broadcasts were deleted.
    pub fn forget_broadcast(&mut self) {
        self.broadcast = None;
    }

    /// The transaction that moved some heads did not commit.
    pub fn clear(&mut self) {
        self.users.clear();
        self.broadcast = None;
    }

    fn remember(&mut self, user: &str, id: i64) {
        if self.users.len() >= self.capacity {
            self.users.clear();
        }
        self.users.insert(user.to_owned(), id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(id: i64) -> impl FnOnce() -> Result<i64, ()> {
        move || Ok(id)
    }

    fn unused() -> impl FnOnce() -> Result<i64, ()> {
        || panic!("the head is known: no load")
    }

    #[test]
    fn a_head_is_loaded_once_then_follows_the_rows_added() {
        let mut chains = Chains::new(8);
        assert_eq!(chains.head(Some("u"), load(4)), Ok(4));
        chains.advance(Some("u"), 9);
        assert_eq!(chains.head(Some("u"), unused()), Ok(9));
        assert_eq!(chains.head(None, load(3)), Ok(3), "the broadcast chain is its own");
        chains.advance(None, 10);
        assert_eq!(chains.head(None, unused()), Ok(10));
        assert_eq!(chains.head(Some("u"), unused()), Ok(9), "chains never link to each other");
    }

    #[test]
    fn forgotten_or_rolled_back_heads_are_loaded_again() {
        let mut chains = Chains::new(8);
        chains.advance(Some("u"), 5);
        chains.advance(Some("v"), 6);
        chains.advance(None, 7);
        chains.forget_user("u");
        assert_eq!(chains.head(Some("u"), load(2)), Ok(2));
        assert_eq!(chains.head(Some("v"), unused()), Ok(6));
        chains.forget_broadcast();
        assert_eq!(chains.head(None, load(1)), Ok(1));
        chains.clear();
        assert_eq!(chains.head(Some("v"), load(0)), Ok(0));
        assert_eq!(chains.head(None, load(0)), Ok(0));
    }

    #[test]
    fn a_full_map_starts_again_rather_than_growing() {
        let mut chains = Chains::new(2);
        chains.advance(Some("a"), 1);
        chains.advance(Some("b"), 2);
        chains.advance(Some("c"), 3);
        assert_eq!(chains.users.len(), 1, "bounded by its capacity");
        assert_eq!(chains.head(Some("c"), unused()), Ok(3));
        assert_eq!(chains.head(Some("a"), load(1)), Ok(1), "an evicted head is loaded again");
    }
}
