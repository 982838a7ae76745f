//! The behaviour every [`Store`] backend must show. Each backend's tests call [`run_all`] on a fresh store, and
//! [`run_retention`] on a fresh store opened with [`retention_settings`].

use std::sync::Arc;

use chrono::Duration;
use serde_json::value::RawValue;

use super::retention::PruneSteps;
use super::*;
use crate::config::StoreSettings;
use crate::rules::AliasRecord;

/// A notification for `recipients` from an event whose id is global (as an AMQP `message_id` is).
pub fn draft(event_id: &str, recipients: Recipients) -> NewNotification {
    NewNotification {
        aliases: Vec::new(),
        event_id: event_id.into(),
        dedupe_key: DedupeKey::global(event_id),
        recipients,
        kind: "info".into(),
        title: format!("title {event_id}"),
        content: "content".into(),
        event_type: "test.event".into(),
        source: Some("tests".into()),
        related_object: Some(RelatedObject { kind: "thing".into(), id: "7".into() }),
        data: RawValue::from_string(r#"{"k":1}"#.into()).unwrap(),
        body: Arc::from(RawValue::from_string(format!(r#"{{"event":"{event_id}"}}"#)).unwrap()),
        ingested_at: std::time::Instant::now(),
    }
}

fn users(u: &[&str]) -> Recipients {
    Recipients::Users(u.iter().map(|s| s.to_string()).collect())
}

async fn stored(store: &dyn Store, w: Write) -> Vec<Notification> {
    match store.apply(vec![w]).await.unwrap().pop().unwrap() {
        WriteOutcome::Stored(n) => n,
        other => panic!("expected Stored, got {other:?}"),
    }
}

fn q(limit: u32, before: Option<i64>, unread_only: bool) -> ListQuery {
    ListQuery { limit, before, unread_only, ..Default::default() }
}

/// Every notification `user` has (archived or not), paging through the list.
async fn everything(store: &dyn Store, user: &str) -> Vec<Notification> {
    let mut all = Vec::new();
    for archived in [false, true] {
        let mut before = None;
        loop {
            let page =
                store.list(user, ListQuery { limit: 100, before, archived, ..Default::default() }).await.unwrap();
            before = page.last().map(|n| n.id);
            let done = page.len() < 100;
            all.extend(page);
            if done {
                break;
            }
        }
    }
    all
}

/// The counters say what the rows say: `counts` (read by key) equals a count over the user's rows.
pub(crate) async fn counts_match_rows(store: &dyn Store, user: &str, step: &str) -> Counts {
    let rows = everything(store, user).await;
    let countable = |n: &&Notification| n.archived_at.is_none() && !n.muted;
    let truth = Counts {
        unread: rows.iter().filter(countable).filter(|n| n.read_at.is_none()).count() as u64,
        unseen: rows.iter().filter(countable).filter(|n| n.seen_at.is_none()).count() as u64,
    };
    let counts = store.counts(user).await.unwrap();
    assert_eq!(counts, truth, "{user}, after {step}: the counters disagree with the rows");
    // The `unread=true` list agrees with both (it lists muted ones, which do not count).
    let mut unread_listed = Vec::new();
    let mut before = None;
    loop {
        let page = store.list(user, ListQuery { limit: 100, before, unread_only: true, ..Default::default() });
        let page = page.await.unwrap();
        before = page.last().map(|n| n.id);
        let done = page.len() < 100;
        unread_listed.extend(page);
        if done {
            break;
        }
    }
    assert!(unread_listed.iter().all(|n| n.read_at.is_none() && n.archived_at.is_none()), "{user}, {step}");
    assert_eq!(
        unread_listed.iter().filter(|n| !n.muted).count() as u64,
        truth.unread,
        "{user}, after {step}: the unread list disagrees with the rows"
    );
    assert_eq!(store.unread_count(user).await.unwrap(), truth.unread, "{user}: unread_count is counts.unread");
    let (_, opening, _) = store.opening(user).await.unwrap();
    assert_eq!(opening, truth, "{user}, after {step}: the opening snapshot's counts");
    counts
}

/// Records the counts the store tells its listener about, per user, in order: the counts, their versions, and
/// the versions of the state changes.
#[derive(Default)]
pub struct CountsRecorder(
    pub std::sync::Mutex<Vec<(String, Counts)>>,
    pub std::sync::Mutex<Vec<(String, u64)>>,
    pub std::sync::Mutex<Vec<(String, u64)>>,
);

impl CommitListener for CountsRecorder {
    fn committed(&self, _: &NewNotification, _: &[Notification], _: &mut crate::inbox::CommitVersions<'_>) {}
    fn changed(&self, user: &str, _: &crate::inbox::StateChange, version: u64) {
        self.2.lock().unwrap().push((user.to_owned(), version));
    }
    fn counts(&self, user: &str, counts: Counts, _: i64, version: u64) {
        self.0.lock().unwrap().push((user.to_owned(), counts));
        self.1.lock().unwrap().push((user.to_owned(), version));
    }
}

impl CountsRecorder {
    pub fn last(&self, user: &str) -> Option<Counts> {
        self.0.lock().unwrap().iter().rev().find(|(u, _)| u == user).map(|(_, c)| *c)
    }
}

pub async fn run_all(store: &dyn Store) {
    same_event_twice_is_stored_once(store).await;
    broadcasts_are_one_row_with_per_user_state(store).await;
    list_pages_newest_first_with_before_cursor(store).await;
    read_all_and_delete_are_per_user(store).await;
    after_replays_oldest_first_with_bodies(store).await;
    after_takes_one_cursor_per_chain(store).await;
    replay_pages_stop_at_their_bytes_and_a_larger_row_comes_alone(store).await;
    aliases_resolve_in_the_commit_and_an_unknown_one_writes_nothing(store).await;
    purge_erases_only_that_user(store).await;
    an_erase_asked_again_erases_again(store).await;
    prev_id_links_each_users_stream(store).await;
    prev_id_follows_deletes_and_purges(store).await;
    one_commit_chains_its_own_rows_past_muted_ones(store).await;
    unread_pages_are_not_crowded_out_by_read_broadcasts(store).await;
    the_same_id_in_two_scopes_is_two_events(store).await;
    counters_follow_every_targeted_state_change(store).await;
    counters_follow_every_broadcast_state_change(store).await;
    read_all_and_seen_all_reset_the_counters_and_later_changes_still_count(store).await;
    lists_filter_by_archived_type_and_related_object(store).await;
    every_filtered_list_is_that_filter_over_everything(store).await;
    muted_types_are_stored_listed_not_counted_and_not_replayed(store).await;
    purge_resets_the_counters(store).await;
    unknown_ids_change_nothing(store).await;
    a_batch_changes_targeted_and_broadcast_notifications_in_one_commit(store).await;
    preferences_merge_and_a_change_over_the_cap_writes_nothing(store).await;
    store.probe_write().await.unwrap();
    store.ping().await.unwrap();
}

/// A body id is scoped (by exchange and routing key, see `DedupeKey`): the store dedupes on the key, not the id.
async fn the_same_id_in_two_scopes_is_two_events(store: &dyn Store) {
    let mut a = draft("77", users(&["scope-a"]));
    a.dedupe_key = DedupeKey::body_id("orders", "order.paid", "77");
    let mut b = draft("77", users(&["scope-b"]));
    b.dedupe_key = DedupeKey::body_id("users", "user.created", "77");
    let out = store.apply(vec![Write::Notify(a.clone()), Write::Notify(b), Write::Notify(a)]).await.unwrap();
    assert!(matches!(&out[0], WriteOutcome::Stored(v) if v.len() == 1));
    assert!(matches!(&out[1], WriteOutcome::Stored(v) if v.len() == 1), "another producer's id 77 is stored");
    assert!(matches!(out[2], WriteOutcome::Duplicate), "the same event twice is stored once");
    let targeted = store.list("scope-b", q(100, None, false)).await.unwrap();
    assert_eq!(targeted.iter().filter(|n| n.user_id.is_some()).count(), 1);
}

/// What [`run_retention`] expects the store to be opened with: a cap of 3 per user, small batches.
async fn counters_follow_every_targeted_state_change(store: &dyn Store) {
    let u = "cnt-t";
    let start = counts_match_rows(store, u, "nothing yet").await;
    let a = stored(store, Write::Notify(draft("cnt-t-1", users(&[u])))).await[0].id;
    let b = stored(store, Write::Notify(draft("cnt-t-2", users(&[u, "cnt-t-other"])))).await[0].id;
    let c = counts_match_rows(store, u, "two new").await;
    assert_eq!((c.unread, c.unseen), (start.unread + 2, start.unseen + 2));

    let read = store.change(u, a, Change::Read).await.unwrap().unwrap();
    assert!(read.read_at.is_some() && read.seen_at.is_some(), "reading implies seeing: {read:?}");
    let c = counts_match_rows(store, u, "read").await;
    assert_eq!((c.unread, c.unseen), (start.unread + 1, start.unseen + 1));
    let again = store.change(u, a, Change::Read).await.unwrap().unwrap();
    assert_eq!(again.read_at, read.read_at, "marking again keeps the first read_at");
    counts_match_rows(store, u, "read twice").await;

    let unread = store.change(u, a, Change::Unread).await.unwrap().unwrap();
    assert!(unread.read_at.is_none() && unread.seen_at.is_some(), "unread again, still seen: {unread:?}");
    let c = counts_match_rows(store, u, "unread").await;
    assert_eq!((c.unread, c.unseen), (start.unread + 2, start.unseen + 1));

    let archived = store.change(u, b, Change::Archive).await.unwrap().unwrap();
    assert!(archived.archived_at.is_some());
    let c = counts_match_rows(store, u, "archive").await;
    assert_eq!((c.unread, c.unseen), (start.unread + 1, start.unseen), "archived counts in neither");
    assert!(store.list(u, q(100, None, false)).await.unwrap().iter().all(|n| n.id != b), "left out by default");
    let listed = store.list(u, ListQuery { limit: 100, archived: true, ..Default::default() }).await.unwrap();
    assert_eq!(listed.iter().map(|n| n.id).collect::<Vec<_>>(), [b], "archived=true lists only archived ones");
    // Read while archived: still counts in neither, and is read once unarchived.
    store.change(u, b, Change::Read).await.unwrap().unwrap();
    counts_match_rows(store, u, "read while archived").await;
    let back = store.change(u, b, Change::Unarchive).await.unwrap().unwrap();
    assert!(back.archived_at.is_none() && back.read_at.is_some());
    let c = counts_match_rows(store, u, "unarchive").await;
    assert_eq!((c.unread, c.unseen), (start.unread + 1, start.unseen));
    assert_eq!(
        store.counts("cnt-t-other").await.unwrap().unread,
        counts_match_rows(store, "cnt-t-other", "x").await.unread
    );

    assert!(store.delete(u, a).await.unwrap());
    let c = counts_match_rows(store, u, "delete an unread one").await;
    assert_eq!((c.unread, c.unseen), (start.unread, start.unseen));
}

async fn counters_follow_every_broadcast_state_change(store: &dyn Store) {
    let (u, other) = ("cnt-b", "cnt-b-other");
    let start = counts_match_rows(store, u, "nothing yet").await;
    let other_start = counts_match_rows(store, other, "nothing yet").await;
    let b = stored(store, Write::Notify(draft("cnt-b-1", Recipients::Everyone))).await[0].id;
    let c = counts_match_rows(store, u, "a broadcast").await;
    assert_eq!((c.unread, c.unseen), (start.unread + 1, start.unseen + 1), "a broadcast counts for everyone");
    assert_eq!(counts_match_rows(store, other, "a broadcast").await.unread, other_start.unread + 1);

    for (step, change) in [
        ("read", Change::Read),
        ("unread", Change::Unread),
        ("archive", Change::Archive),
        ("read while archived", Change::Read),
        ("unarchive", Change::Unarchive),
        ("unread again", Change::Unread),
    ] {
        store.change(u, b, change).await.unwrap().unwrap();
        counts_match_rows(store, u, step).await;
        let o = counts_match_rows(store, other, step).await;
        assert_eq!(o.unread, other_start.unread + 1, "{step}: broadcast state is per user");
    }
    assert!(store.delete(u, b).await.unwrap());
    let c = counts_match_rows(store, u, "delete a broadcast").await;
    assert_eq!((c.unread, c.unseen), (start.unread, start.unseen));
    assert!(store.change(u, b, Change::Read).await.unwrap().is_none(), "deleted: no longer in the inbox");
    counts_match_rows(store, other, "deleted by another").await;
}

async fn read_all_and_seen_all_reset_the_counters_and_later_changes_still_count(store: &dyn Store) {
    let u = "cnt-all";
    let t = stored(store, Write::Notify(draft("cnt-all-1", users(&[u])))).await[0].id;
    let b = stored(store, Write::Notify(draft("cnt-all-b1", Recipients::Everyone))).await[0].id;
    let archived = stored(store, Write::Notify(draft("cnt-all-2", users(&[u])))).await[0].id;
    store.change(u, archived, Change::Archive).await.unwrap().unwrap();
    counts_match_rows(store, u, "setup").await;

    let seen = store.seen_all(u).await.unwrap();
    assert!(seen.up_to >= b.max(archived));
    let c = counts_match_rows(store, u, "seen_all").await;
    assert_eq!(c.unseen, 0, "the bell was opened");
    assert!(c.unread >= 2, "seeing is not reading: {c:?}");
    let listed = store.list(u, q(100, None, false)).await.unwrap();
    assert!(listed.iter().all(|n| n.seen_at.is_some()), "every listed notification is seen");

    let later = stored(store, Write::Notify(draft("cnt-all-b2", Recipients::Everyone))).await[0].id;
    let c = counts_match_rows(store, u, "a broadcast after seen_all").await;
    assert_eq!(c.unseen, 1);

    store.mark_all_read(u).await.unwrap();
    let c = counts_match_rows(store, u, "read_all").await;
    assert_eq!((c.unread, c.unseen), (0, 0), "read_all reads and sees everything");

    // Under the watermark: unread again, archived, unarchived, read, deleted.
    for (step, change) in [
        ("broadcast unread under the watermark", Change::Unread),
        ("archived", Change::Archive),
        ("unarchived", Change::Unarchive),
        ("read again", Change::Read),
        ("unread once more", Change::Unread),
    ] {
        store.change(u, later, change).await.unwrap().unwrap();
        counts_match_rows(store, u, step).await;
    }
    assert_eq!(store.counts(u).await.unwrap().unread, 1);
    store.change(u, t, Change::Unread).await.unwrap().unwrap();
    assert_eq!(counts_match_rows(store, u, "targeted unread under the watermark").await.unread, 2);
    assert!(store.delete(u, later).await.unwrap());
    assert_eq!(counts_match_rows(store, u, "deleted the unread broadcast").await.unread, 1);
    store.mark_all_read(u).await.unwrap();
    assert_eq!(counts_match_rows(store, u, "read_all again").await, Counts::default());
    // Still read for this user after read_all; another user still has it unread.
    assert!(store.list("cnt-all-other", q(100, None, true)).await.unwrap().iter().any(|n| n.id == b));
    counts_match_rows(store, "cnt-all-other", "someone else").await;
}

async fn lists_filter_by_archived_type_and_related_object(store: &dyn Store) {
    let u = "flt";
    let mut n = draft("flt-1", users(&[u]));
    n.kind = "invoice".into();
    n.related_object = Some(RelatedObject { kind: "order".into(), id: "o-1".into() });
    let invoice = stored(store, Write::Notify(n)).await[0].id;
    let mut n = draft("flt-2", users(&[u]));
    n.kind = "invoice".into();
    n.related_object = Some(RelatedObject { kind: "order".into(), id: "o-2".into() });
    let other_order = stored(store, Write::Notify(n)).await[0].id;
    let mut n = draft("flt-3", users(&[u]));
    n.kind = "comment".into();
    n.related_object = None;
    let comment = stored(store, Write::Notify(n)).await[0].id;
    let mut n = draft("flt-b", Recipients::Everyone);
    n.kind = "invoice".into();
    n.related_object = Some(RelatedObject { kind: "order".into(), id: "o-1".into() });
    let broadcast = stored(store, Write::Notify(n)).await[0].id;

    let ids =
        |q: ListQuery| async move { store.list(u, q).await.unwrap().into_iter().map(|n| n.id).collect::<Vec<_>>() };
    let by_type = ListQuery { limit: 100, kind: Some("invoice".into()), ..Default::default() };
    assert_eq!(ids(by_type.clone()).await, [broadcast, other_order, invoice]);
    let comments = ListQuery { limit: 100, kind: Some("comment".into()), ..Default::default() };
    assert_eq!(ids(comments).await, [comment]);
    let orders = ListQuery { limit: 100, related_type: Some("order".into()), ..Default::default() };
    assert_eq!(ids(orders).await, [broadcast, other_order, invoice]);
    let one_order = ListQuery {
        limit: 100,
        related_type: Some("order".into()),
        related_id: Some("o-1".into()),
        ..Default::default()
    };
    assert_eq!(ids(one_order.clone()).await, [broadcast, invoice]);
    // Filters apply before the limit and the cursor.
    assert_eq!(ids(ListQuery { limit: 1, ..one_order.clone() }).await, [broadcast]);
    assert_eq!(ids(ListQuery { limit: 1, before: Some(broadcast), ..one_order.clone() }).await, [invoice]);

    store.change(u, invoice, Change::Archive).await.unwrap().unwrap();
    store.change(u, broadcast, Change::Archive).await.unwrap().unwrap();
    assert_eq!(ids(one_order.clone()).await, Vec::<i64>::new(), "archived ones are left out by default");
    assert_eq!(ids(ListQuery { archived: true, ..one_order }).await, [broadcast, invoice]);
    assert_eq!(ids(ListQuery { unread_only: true, ..by_type }).await, [other_order]);
    counts_match_rows(store, u, "filters").await;
    assert!(
        store
            .list("flt-other", ListQuery { limit: 100, archived: true, ..Default::default() })
            .await
            .unwrap()
            .is_empty(),
        "archiving a broadcast is per user"
    );
}

/// Each combination of list filters pages through exactly the rows the same filter picks out of everything the
/// user has, whatever way the backend walks them (by type or related object, from the read_all watermark, from
/// the user's broadcast states, archived targeted rows by their index): read, unread again below the watermark,
/// archived, deleted and muted rows, targeted and broadcast, in one inbox.
async fn every_filtered_list_is_that_filter_over_everything(store: &dyn Store) {
    let u = "sel";
    store.set_preferences(u, [("digest".to_string(), TypeSetting::Muted)].into()).await.unwrap();
    let kinds = ["invoice", "comment", "digest"];
    let related = [Some(("order", "o-1")), Some(("order", "o-2")), Some(("ticket", "o-1")), None];
    let mut created = Vec::new();
    for i in 0..30 {
        let recipients = if i % 3 == 0 { Recipients::Everyone } else { users(&[u]) };
        let mut n = draft(&format!("sel-{i}"), recipients);
        n.kind = kinds[(i / 2) % 3].into();
        n.related_object = related[(i / 3) % 4].map(|(kind, id)| RelatedObject { kind: kind.into(), id: id.into() });
        created.push(
            stored(store, Write::Notify(n))
                .await
                .iter()
                .find(|n| n.user_id.is_none() || n.user_id.as_deref() == Some(u))
                .unwrap()
                .id,
        );
        if i == 17 {
            // Below the watermark: some read one by one first, then all, then some unread again or archived.
            store.mark_read(u, created[4]).await.unwrap().unwrap();
            store.mark_all_read(u).await.unwrap();
            for &k in &[0, 3, 5, 9, 10] {
                store.change(u, created[k], Change::Unread).await.unwrap().unwrap();
            }
            for &k in &[3, 6, 7, 12] {
                store.change(u, created[k], Change::Archive).await.unwrap().unwrap();
            }
            assert!(store.delete(u, created[9]).await.unwrap() && store.delete(u, created[15]).await.unwrap());
        }
    }
    // Above it: read, archived (read or not), deleted.
    for &k in &[18, 19, 22] {
        store.mark_read(u, created[k]).await.unwrap().unwrap();
    }
    for &k in &[21, 22, 25] {
        store.change(u, created[k], Change::Archive).await.unwrap().unwrap();
    }
    assert!(store.delete(u, created[24]).await.unwrap());

    let all = everything(store, u).await;
    let mine: Vec<&Notification> = all.iter().filter(|n| created.contains(&n.id)).collect();
    let gone = [created[9], created[15], created[24]];
    assert_eq!(mine.len(), created.len() - gone.len(), "every row but the deleted ones, once: {mine:?}");
    let archived: std::collections::BTreeSet<i64> = [3, 6, 7, 12, 21, 22, 25].iter().map(|&k| created[k]).collect();
    assert_eq!(
        mine.iter().filter(|n| n.archived_at.is_some()).map(|n| n.id).collect::<std::collections::BTreeSet<_>>(),
        archived
    );
    assert!(
        mine.iter().any(|n| n.user_id.is_none() && n.read_at.is_none() && n.id < created[17]),
        "a broadcast unread again below the watermark"
    );
    assert!(mine.iter().any(|n| n.muted && n.read_at.is_none()), "a muted unread row");

    let related_filters = [None, Some(("order", None)), Some(("order", Some("o-1"))), Some(("ticket", Some("o-1")))];
    for archived in [false, true] {
        for unread_only in [false, true] {
            for kind in [None, Some("invoice"), Some("digest")] {
                for related in related_filters {
                    let query = ListQuery::filtered(1000, unread_only, archived, kind, related);
                    let expected: Vec<i64> = all
                        .iter()
                        .filter(|n| n.archived_at.is_some() == archived)
                        .filter(|n| !unread_only || (n.read_at.is_none() && !n.muted))
                        .filter(|n| kind.is_none_or(|k| n.kind == k))
                        .filter(|n| {
                            related.is_none_or(|(t, id)| {
                                n.related_object.as_ref().is_some_and(|r| r.kind == t && id.is_none_or(|id| r.id == id))
                            })
                        })
                        .map(|n| n.id)
                        .collect();
                    // Whole, then in pages of 2 (the cursor and the limit apply after the filters).
                    let listed: Vec<i64> = store.list(u, query.clone()).await.unwrap().iter().map(|n| n.id).collect();
                    assert_eq!(listed, expected, "{query:?}");
                    let (mut paged, mut before) = (Vec::new(), None);
                    loop {
                        let page = store.list(u, ListQuery { limit: 2, before, ..query.clone() }).await.unwrap();
                        before = page.last().map(|n| n.id);
                        let done = page.len() < 2;
                        paged.extend(page.iter().map(|n| n.id));
                        if done {
                            break;
                        }
                    }
                    assert_eq!(paged, expected, "in pages of 2: {query:?}");
                }
            }
        }
    }
    counts_match_rows(store, u, "the filtered lists").await;
}

async fn muted_types_are_stored_listed_not_counted_and_not_replayed(store: &dyn Store) {
    let u = "mute";
    let before = stored(store, Write::Notify(draft("mute-0", users(&[u])))).await[0].id;
    let start = counts_match_rows(store, u, "start").await;
    let types = [("digest".to_string(), TypeSetting::Muted), ("info".to_string(), TypeSetting::On)].into();
    store.set_preferences(u, types).await.unwrap();
    let prefs = store.preferences(u).await.unwrap();
    assert_eq!(prefs.get("digest"), Some(&TypeSetting::Muted));
    assert_eq!(prefs.get("info"), Some(&TypeSetting::On));

    let mut n = draft("mute-1", users(&[u, "mute-other"]));
    n.kind = "digest".into();
    let rows = stored(store, Write::Notify(n)).await;
    let muted = rows.iter().find(|n| n.user_id.as_deref() == Some(u)).unwrap();
    let not_muted = rows.iter().find(|n| n.user_id.as_deref() == Some("mute-other")).unwrap();
    assert!(muted.muted && !not_muted.muted, "preferences are per user: {rows:?}");
    assert_eq!(counts_match_rows(store, u, "a muted notification").await, start, "not counted");
    let listed = store.list(u, q(100, None, false)).await.unwrap();
    assert!(listed.iter().any(|n| n.id == muted.id && n.muted), "stored and listed with muted: true");
    let replay =
        store.after(u, Position::both(before), PageLimit::rows(100), std::time::Instant::now()).await.unwrap().items;
    assert!(replay.iter().all(|r| r.notification.id != muted.id), "never replayed");
    // Marking a muted one read or archiving it moves no counter.
    store.change(u, muted.id, Change::Read).await.unwrap().unwrap();
    store.change(u, muted.id, Change::Unread).await.unwrap().unwrap();
    assert_eq!(counts_match_rows(store, u, "read/unread a muted one").await, start);

    // The chain skips muted rows: the next pushed row links past it, so no session sees a gap.
    let next = stored(store, Write::Notify(draft("mute-2", users(&[u])))).await[0].clone();
    assert!(!next.muted);
    assert_eq!(next.prev_id, before, "prev_id links to the previous row that was not muted");
    assert_eq!(counts_match_rows(store, u, "an unmuted one").await.unread, start.unread + 1);

    // Replacing the preferences unmutes what is left out (from the next commit on).
    store.set_preferences(u, Default::default()).await.unwrap();
    assert!(store.preferences(u).await.unwrap().is_empty());
    let mut n = draft("mute-3", users(&[u]));
    n.kind = "digest".into();
    assert!(!stored(store, Write::Notify(n)).await[0].muted);
}

async fn purge_resets_the_counters(store: &dyn Store) {
    let u = "cnt-purge";
    stored(store, Write::Notify(draft("cnt-purge-1", users(&[u])))).await;
    let b = stored(store, Write::Notify(draft("cnt-purge-b", Recipients::Everyone))).await[0].id;
    store.change(u, b, Change::Read).await.unwrap().unwrap();
    store.set_preferences(u, [("info".to_string(), TypeSetting::Muted)].into()).await.unwrap();
    store.apply(vec![Write::Purge { event_id: "cnt-purge-x".into(), users: vec![u.into()] }]).await.unwrap();
    let c = counts_match_rows(store, u, "purge").await;
    let fresh = counts_match_rows(store, "cnt-purge-never-seen", "nothing").await;
    assert_eq!(c, fresh, "a purged user counts like a new one (every live broadcast)");
    assert!(store.preferences(u).await.unwrap().is_empty(), "preferences are erased too");
}

async fn unknown_ids_change_nothing(store: &dyn Store) {
    let u = "unknown-ids";
    let theirs = stored(store, Write::Notify(draft("unknown-1", users(&["unknown-owner"])))).await[0].id;
    for change in [Change::Read, Change::Unread, Change::Archive, Change::Unarchive] {
        assert!(store.change(u, theirs, change).await.unwrap().is_none(), "{change:?}: not in this inbox");
        assert!(store.change(u, i64::MAX, change).await.unwrap().is_none(), "{change:?}: no such id");
    }
    assert!(!store.delete(u, theirs).await.unwrap());
    counts_match_rows(store, "unknown-owner", "another user's attempts").await;
}

/// `change_many` / `delete_many`: each id as `change` / `delete` would take it, in the order given, in one
/// commit; another user's or an unknown id is `None` / `false` and untouched.
async fn a_batch_changes_targeted_and_broadcast_notifications_in_one_commit(store: &dyn Store) {
    let u = "bulk-u";
    let start = counts_match_rows(store, u, "nothing yet").await;
    let a = stored(store, Write::Notify(draft("bulk-1", users(&[u])))).await[0].id;
    let b = stored(store, Write::Notify(draft("bulk-2", users(&[u])))).await[0].id;
    let everyone = stored(store, Write::Notify(draft("bulk-3", Recipients::Everyone))).await[0].id;
    let theirs = stored(store, Write::Notify(draft("bulk-4", users(&["bulk-other"])))).await[0].id;
    let c = counts_match_rows(store, u, "three new").await;
    assert_eq!(c.unread, start.unread + 3);

    let read = store.change_many(u, vec![theirs, a, everyone, i64::MAX, b], Change::Read).await.unwrap();
    let ids: Vec<Option<i64>> = read.iter().map(|n| n.as_ref().map(|n| n.id)).collect();
    assert_eq!(ids, [None, Some(a), Some(everyone), None, Some(b)], "in the order given, None where not this inbox's");
    assert!(read.iter().flatten().all(|n| n.read_at.is_some() && n.seen_at.is_some()), "{read:?}");
    let c = counts_match_rows(store, u, "a batch read").await;
    assert_eq!(c.unread, start.unread, "all three read in one batch");
    counts_match_rows(store, "bulk-other", "another user's id in the batch").await;
    let again = store.change_many(u, vec![a], Change::Read).await.unwrap();
    assert_eq!(again[0].as_ref().unwrap().read_at, read[1].as_ref().unwrap().read_at, "the first read_at stays");

    for (step, change) in [("unread", Change::Unread), ("archive", Change::Archive), ("unarchive", Change::Unarchive)] {
        let changed = store.change_many(u, vec![a, everyone], change).await.unwrap();
        assert!(changed.iter().all(Option::is_some), "{step}: {changed:?}");
        counts_match_rows(store, u, step).await;
    }
    assert_eq!(store.delete_many(u, vec![a, theirs, everyone]).await.unwrap(), [true, false, true]);
    let c = counts_match_rows(store, u, "a batch delete").await;
    assert_eq!(c.unread, start.unread, "b was read; a and the broadcast are gone");
    let left: Vec<i64> = everything(store, u).await.iter().map(|n| n.id).filter(|id| *id >= a).collect();
    assert_eq!(left, [b], "only b is left of the four");
    let theirs_left: Vec<i64> =
        everything(store, "bulk-other").await.iter().map(|n| n.id).filter(|id| *id >= a).collect();
    assert_eq!(theirs_left, [theirs, everyone], "theirs and the broadcast stay theirs");
}

async fn preferences_merge_and_a_change_over_the_cap_writes_nothing(store: &dyn Store) {
    let u = "prefs-merge";
    let set = |pairs: &[(&str, TypeSetting)]| -> std::collections::BTreeMap<String, TypeSetting> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    };
    store.set_preferences(u, set(&[("a", TypeSetting::Muted), ("b", TypeSetting::On)])).await.unwrap();
    let merge = PreferencesChange::Merge(
        [("b", Some(TypeSetting::Muted)), ("c", Some(TypeSetting::On)), ("a", None), ("never-set", None)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    );
    let after = store.change_preferences(u, merge, 10).await.unwrap();
    let expected = set(&[("b", TypeSetting::Muted), ("c", TypeSetting::On)]);
    assert_eq!(after.as_ref(), Some(&expected), "b changed, c added, a back to the default, the rest kept");
    assert_eq!(store.preferences(u).await.unwrap(), expected);

    let one_more = PreferencesChange::Merge([("d".to_string(), Some(TypeSetting::On))].into());
    assert_eq!(store.change_preferences(u, one_more, 2).await.unwrap(), None, "three types over a cap of two");
    let replace =
        PreferencesChange::Replace(set(&[("x", TypeSetting::On), ("y", TypeSetting::On), ("z", TypeSetting::On)]));
    assert_eq!(store.change_preferences(u, replace, 2).await.unwrap(), None);
    assert_eq!(store.preferences(u).await.unwrap(), expected, "a refused change writes nothing");
    let within = PreferencesChange::Merge([("b".to_string(), None), ("d".to_string(), Some(TypeSetting::On))].into());
    let after = store.change_preferences(u, within, 2).await.unwrap();
    assert_eq!(after, Some(set(&[("c", TypeSetting::On), ("d", TypeSetting::On)])), "the cap counts what is left");
}

pub fn retention_settings() -> StoreSettings {
    let mut s = crate::config::Settings::defaults().store;
    assert_eq!((s.retention_days, s.dedupe_window_days), (90, 7), "the defaults the tests below count on");
    s.max_per_user = 3;
    s.prune_batch = 2;
    s
}

/// Retention, on a fresh store opened with [`retention_settings`]. `now` is passed in, so days pass instantly.
pub async fn run_retention(store: &dyn Store) {
    let now = Utc::now();
    assert_eq!(store.history_floor("cap").await.unwrap(), (0, 0), "nothing pruned yet");
    let newest_capped = max_per_user_keeps_each_users_newest(store, now).await;
    dedupe_keys_expire_after_the_window(store, now).await;
    old_notifications_are_pruned_with_their_broadcast_state(store, now, newest_capped).await;
}

/// Returns the capped user's newest id.
async fn max_per_user_keeps_each_users_newest(store: &dyn Store, now: DateTime<Utc>) -> i64 {
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(stored(store, Write::Notify(draft(&format!("cap-{i}"), users(&["cap"])))).await[0].id);
    }
    let mut broadcasts = Vec::new();
    for i in 0..4 {
        broadcasts.push(stored(store, Write::Notify(draft(&format!("cap-b{i}"), Recipients::Everyone))).await[0].id);
    }
    stored(store, Write::Notify(draft("cap-other", users(&["under-cap"])))).await;

    let report = store.prune(now).await.unwrap();
    assert_eq!(report.notifications, 4, "{report:?}");
    let seen = store.list("cap", q(100, None, false)).await.unwrap();
    let targeted: Vec<i64> = seen.iter().filter(|n| n.user_id.is_some()).map(|n| n.id).collect();
    assert_eq!(targeted, ids[4..].iter().rev().copied().collect::<Vec<_>>(), "the newest 3 stay");
    let shared: Vec<i64> = seen.iter().filter(|n| n.user_id.is_none()).map(|n| n.id).collect();
    assert_eq!(shared.len(), 4, "broadcasts are pruned by age only");
    assert_eq!(store.history_floor("cap").await.unwrap(), (ids[3], 0));
    assert_eq!(store.history_floor("under-cap").await.unwrap(), (0, 0));
    // A replay page carries the floor of its snapshot, also when it has no rows: a replay from below it can tell
    // that ids it never read were pruned.
    let replay = |from| store.after("cap", from, PageLimit::rows(2), std::time::Instant::now());
    let page = replay(Position::default()).await.unwrap();
    assert_eq!(page.floor, Position { targeted: ids[3], broadcast: 0 });
    assert_eq!(page.items.iter().map(|r| r.notification.id).collect::<Vec<_>>(), ids[4..6], "rows above the floor");
    let empty = replay(store.latest("cap").await.unwrap()).await.unwrap();
    assert_eq!((empty.items.len(), empty.floor), (0, page.floor), "no rows, the floor still");
    counts_match_rows(store, "cap", "pruning beyond max_per_user").await;
    assert_eq!(store.prune(now).await.unwrap(), PruneReport::default(), "nothing more to do");
    ids[6]
}

async fn dedupe_keys_expire_after_the_window(store: &dyn Store, now: DateTime<Utc>) {
    let event = Write::Notify(draft("window-1", users(&["win"])));
    stored(store, event.clone()).await;
    store.prune(now + Duration::days(6)).await.unwrap();
    assert!(matches!(store.apply(vec![event.clone()]).await.unwrap()[0], WriteOutcome::Duplicate), "inside the window");
    let report = store.prune(now + Duration::days(8)).await.unwrap();
    assert!(report.dedupe_keys >= 1, "{report:?}");
    assert_eq!(report.notifications, 0, "the dedupe window is not the retention");
    assert_eq!(stored(store, event).await.len(), 1, "after the window the same event is stored again");
}

async fn old_notifications_are_pruned_with_their_broadcast_state(store: &dyn Store, now: DateTime<Utc>, capped: i64) {
    // Per-user broadcast state of every kind, for the counters to carry through the pruning.
    let kept_unread = stored(store, Write::Notify(draft("aged-b2", Recipients::Everyone))).await[0].id;
    let mine = stored(store, Write::Notify(draft("aged-1", users(&["aged"])))).await[0].id;
    let broadcast = stored(store, Write::Notify(draft("aged-b", Recipients::Everyone))).await[0].id;
    store.mark_read("aged", broadcast).await.unwrap().unwrap();
    store.mark_all_read("aged-wm").await.unwrap();
    store.change("aged-wm", kept_unread, Change::Unread).await.unwrap().unwrap();
    store.change("aged-arch", broadcast, Change::Archive).await.unwrap().unwrap();
    store.delete("aged-del", kept_unread).await.unwrap();
    for u in ["aged", "aged-wm", "aged-arch", "aged-del", "cap"] {
        counts_match_rows(store, u, "before pruning by age").await;
    }
    assert!(store.prune(now + Duration::days(89)).await.unwrap().notifications == 0, "younger than 90 days");

    let report = store.prune(now + Duration::days(91)).await.unwrap();
    assert!(report.notifications >= 2 && report.broadcast_states >= 1, "{report:?}");
    assert!(store.list("aged", q(100, None, false)).await.unwrap().is_empty());
    assert_eq!(store.unread_count("aged").await.unwrap(), 0);
    for u in ["aged", "aged-wm", "aged-arch", "aged-del", "cap", "never-here"] {
        assert_eq!(counts_match_rows(store, u, "pruning by age").await, Counts::default(), "{u}: all pruned");
    }
    assert_eq!(store.history_floor("aged").await.unwrap(), (mine, broadcast), "the newest pruned of each chain");
    assert_eq!(store.history_floor("cap").await.unwrap().0, capped, "age raised the capped user's floor too");
    // A chain pruned whole still reached its ids: `ready` must not tell a client at them that history went back.
    let latest = store.latest("aged").await.unwrap();
    assert_eq!(latest.targeted, mine, "the newest targeted id, though every row of it was pruned");
    assert!(latest.broadcast >= broadcast, "{latest:?}");

    // What comes after is kept and the floors stay where they were.
    let fresh = stored(store, Write::Notify(draft("aged-2", users(&["aged"])))).await[0].id;
    assert_eq!(store.prune(now).await.unwrap().notifications, 0);
    assert_eq!(store.list("aged", q(10, None, false)).await.unwrap()[0].id, fresh);
    assert_eq!(store.history_floor("aged").await.unwrap(), (mine, broadcast));
    stored(store, Write::Notify(draft("aged-b3", Recipients::Everyone))).await;
    for u in ["aged", "aged-wm", "never-here"] {
        counts_match_rows(store, u, "a broadcast after pruning").await;
    }
}

/// Broadcasts are pruned strictly oldest id first: one stamped later than a younger one (its node's clock ran
/// ahead) holds the younger one back until it expires itself, because the counts take the live broadcasts to be
/// exactly the ordinals above the newest pruned. Targeted rows are not held back. Run on a fresh store opened
/// with [`retention_settings`]; `stamp` sets a notification's `created_at` as a skewed node would have written it.
pub async fn broadcasts_are_pruned_oldest_first_whatever_their_clocks(
    store: &dyn Store,
    stamp: impl AsyncFn(i64, DateTime<Utc>),
) {
    let now = Utc::now();
    let ahead = stored(store, Write::Notify(draft("skew-b1", Recipients::Everyone))).await[0].id;
    let behind = stored(store, Write::Notify(draft("skew-b2", Recipients::Everyone))).await[0].id;
    let mine = stored(store, Write::Notify(draft("skew-t", users(&["skew"])))).await[0].id;
    store.mark_read("skew-reader", behind).await.unwrap().unwrap();
    stamp(ahead, now + Duration::days(10)).await;

    let report = store.prune(now + Duration::days(91)).await.unwrap();
    assert_eq!(report.notifications, 1, "the targeted row, not the younger broadcast: {report:?}");
    let left: Vec<i64> = store.list("skew", q(10, None, false)).await.unwrap().iter().map(|n| n.id).collect();
    assert_eq!(left, vec![behind, ahead], "both broadcasts stay while the older one has not expired");
    for u in ["skew", "skew-reader", "never-here"] {
        assert_eq!(
            counts_match_rows(store, u, "a broadcast held back").await.unread,
            2 - u64::from(u == "skew-reader")
        );
    }
    assert_eq!(store.history_floor("skew").await.unwrap(), (mine, 0));

    let report = store.prune(now + Duration::days(101)).await.unwrap();
    assert_eq!((report.notifications, report.broadcast_states), (2, 1), "{report:?}");
    for u in ["skew", "skew-reader", "never-here"] {
        assert_eq!(counts_match_rows(store, u, "both pruned").await, Counts::default(), "{u}");
    }
    assert_eq!(store.history_floor("skew").await.unwrap(), (mine, behind));
}

/// A broadcast read by many users is pruned in a step that deletes none of their state rows: their counters are
/// corrected in that step, in one statement, and the orphaned rows go `batch` at a time after, the counts right
/// throughout. Run on a fresh store.
pub(crate) async fn a_widely_read_broadcast_is_forgotten_a_batch_at_a_time<S: Store + PruneSteps>(store: &S) {
    let now = Utc::now();
    let b = stored(store, Write::Notify(draft("wide-b", Recipients::Everyone))).await[0].id;
    let mut everyone: Vec<String> = (0..5).map(|i| format!("wide-{i}")).collect();
    for reader in &everyone {
        store.mark_read(reader, b).await.unwrap().unwrap();
    }
    // One marked it unread after reading all (its state counts against the watermark), one never touched it.
    store.mark_all_read("wide-wm").await.unwrap();
    store.change("wide-wm", b, Change::Unread).await.unwrap().unwrap();
    everyone.extend(["wide-wm".to_string(), "wide-none".to_string()]);
    for u in &everyone {
        counts_match_rows(store, u, "before pruning").await;
    }

    let step = store.prune_expired(now + Duration::days(91), 2).await.unwrap();
    assert_eq!(step, PruneReport { notifications: 1, ..Default::default() }, "no state row in the pruning step");
    for u in &everyone {
        assert_eq!(counts_match_rows(store, u, "pruned, its states orphaned").await, Counts::default(), "{u}");
    }
    let mut steps = Vec::new();
    loop {
        let states = store.forget_pruned_broadcast_states(2).await.unwrap();
        steps.push(states);
        for u in &everyone {
            assert_eq!(counts_match_rows(store, u, "orphans forgotten").await, Counts::default(), "{u}");
        }
        if states < 2 {
            break;
        }
    }
    assert_eq!(steps, [2, 2, 2, 0], "six state rows, two a step");
    // A broadcast after it counts for everyone, its own state rows untouched by the sweep.
    let next = stored(store, Write::Notify(draft("wide-b2", Recipients::Everyone))).await[0].id;
    store.mark_read("wide-0", next).await.unwrap().unwrap();
    assert_eq!(store.forget_pruned_broadcast_states(2).await.unwrap(), 0);
    for u in &everyone {
        let unread = u64::from(u != "wide-0");
        assert_eq!(counts_match_rows(store, u, "a broadcast after").await.unread, unread, "{u}");
    }
}

async fn same_event_twice_is_stored_once(store: &dyn Store) {
    let n = draft("dup-1", users(&["dup-a", "dup-b"]));
    let out = store.apply(vec![Write::Notify(n.clone()), Write::Notify(n.clone())]).await.unwrap();
    assert!(matches!(&out[0], WriteOutcome::Stored(v) if v.len() == 2));
    assert!(matches!(out[1], WriteOutcome::Duplicate));
    assert!(matches!(store.apply(vec![Write::Notify(n)]).await.unwrap()[0], WriteOutcome::Duplicate));
    assert_eq!(store.list("dup-a", q(10, None, false)).await.unwrap().len(), 1);
    assert_eq!(store.unread_count("dup-b").await.unwrap(), 1);
}

async fn broadcasts_are_one_row_with_per_user_state(store: &dyn Store) {
    let before_a = store.unread_count("bc-a").await.unwrap();
    let before_b = store.unread_count("bc-b").await.unwrap();
    let b = stored(store, Write::Notify(draft("bc-1", Recipients::Everyone))).await;
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].user_id, None);
    assert_eq!(store.unread_count("bc-a").await.unwrap(), before_a + 1);
    assert_eq!(store.unread_count("bc-b").await.unwrap(), before_b + 1);

    let read = store.mark_read("bc-a", b[0].id).await.unwrap().expect("visible to bc-a");
    assert!(read.read_at.is_some());
    assert_eq!(store.unread_count("bc-a").await.unwrap(), before_a);
    assert_eq!(store.unread_count("bc-b").await.unwrap(), before_b + 1, "read state is per user");
    let seen_by_b = store.list("bc-b", q(50, None, false)).await.unwrap();
    assert!(seen_by_b.iter().any(|n| n.id == b[0].id && n.read_at.is_none()));
    assert!(store.delete("bc-b", b[0].id).await.unwrap());
    assert!(!store.list("bc-b", q(50, None, false)).await.unwrap().iter().any(|n| n.id == b[0].id));
    assert!(store.list("bc-a", q(50, None, false)).await.unwrap().iter().any(|n| n.id == b[0].id));
}

async fn list_pages_newest_first_with_before_cursor(store: &dyn Store) {
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(stored(store, Write::Notify(draft(&format!("page-{i}"), users(&["pager"])))).await[0].id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids only grow");
    let first = store.list("pager", q(2, None, false)).await.unwrap();
    let first_ids: Vec<_> = first.iter().map(|n| n.id).collect();
    // Broadcasts stored by other tests may be interleaved, so look at targeted ones only.
    let targeted: Vec<i64> = store
        .list("pager", q(100, None, false))
        .await
        .unwrap()
        .iter()
        .filter(|n| n.user_id.is_some())
        .map(|n| n.id)
        .collect();
    assert_eq!(targeted, ids.iter().rev().copied().collect::<Vec<_>>());
    assert!(first_ids[0] > first_ids[1]);
    let next = store.list("pager", q(2, Some(first_ids[1]), false)).await.unwrap();
    assert!(next.iter().all(|n| n.id < first_ids[1]));

    store.mark_read("pager", ids[4]).await.unwrap().unwrap();
    let unread = store.list("pager", q(100, None, true)).await.unwrap();
    assert!(unread.iter().all(|n| n.read_at.is_none()));
    assert!(!unread.iter().any(|n| n.id == ids[4]));
    assert!(store.mark_read("someone-else", ids[0]).await.unwrap().is_none(), "not in their inbox");
    assert!(!store.delete("someone-else", ids[0]).await.unwrap());
}

async fn read_all_and_delete_are_per_user(store: &dyn Store) {
    stored(store, Write::Notify(draft("ra-1", users(&["ra"])))).await;
    stored(store, Write::Notify(draft("ra-2", Recipients::Everyone))).await;
    assert!(store.unread_count("ra").await.unwrap() >= 2);
    let all = store.mark_all_read("ra").await.unwrap();
    assert_eq!(store.unread_count("ra").await.unwrap(), 0);
    assert!(all.up_to >= store.latest("ra").await.unwrap().max());
    assert!(store.unread_count("ra-other").await.unwrap() >= 1, "other users keep the broadcast unread");
    let newer = stored(store, Write::Notify(draft("ra-3", Recipients::Everyone))).await;
    assert_eq!(store.unread_count("ra").await.unwrap(), 1, "read_all covers what existed, not what comes after");
    assert_eq!(store.latest("ra").await.unwrap().broadcast, newer[0].id);
}

async fn after_replays_oldest_first_with_bodies(store: &dyn Store) {
    let start = store.latest("rp").await.unwrap();
    let a = stored(store, Write::Notify(draft("rp-1", users(&["rp"])))).await[0].id;
    let b = stored(store, Write::Notify(draft("rp-2", Recipients::Everyone))).await[0].id;
    let c = stored(store, Write::Notify(draft("rp-3", users(&["rp"])))).await[0].id;
    let got = store.after("rp", start, PageLimit::rows(100), std::time::Instant::now()).await.unwrap().items;
    assert_eq!(got.iter().map(|r| r.notification.id).collect::<Vec<_>>(), vec![a, b, c]);
    assert_eq!(got[1].body.get(), r#"{"event":"rp-2"}"#);
    let paged = store.after("rp", start, PageLimit::rows(2), std::time::Instant::now()).await.unwrap().items;
    assert_eq!(paged.len(), 2);
    let end = store.latest("rp").await.unwrap();
    assert_eq!(end, Position { targeted: c, broadcast: b });
    assert_eq!(store.after("rp", end, PageLimit::rows(100), std::time::Instant::now()).await.unwrap().items.len(), 0);
}

/// A replay page holds at most its bytes: it ends with the row that reaches them, a row larger than the whole
/// page comes alone, and the page says it may have been cut (so the session reads on from there).
async fn replay_pages_stop_at_their_bytes_and_a_larger_row_comes_alone(store: &dyn Store) {
    let start = store.latest("rb").await.unwrap();
    let mut ids = Vec::new();
    for (i, size) in [1_000, 1_000, 1_000, 1_000, 20_000, 1_000].into_iter().enumerate() {
        let mut d = draft(&format!("rb-{i}"), users(&["rb"]));
        d.body = Arc::from(RawValue::from_string(format!(r#"{{"pad":"{}"}}"#, "x".repeat(size))).unwrap());
        ids.push(stored(store, Write::Notify(d)).await[0].id);
    }
    let limit = PageLimit { rows: 100, bytes: 2_500 };
    let mut from = start;
    let mut pages = Vec::new();
    loop {
        let page = store.after("rb", from, limit, std::time::Instant::now()).await.unwrap().items;
        let full = limit.reached(&page);
        if let Some(last) = page.last() {
            from.targeted = last.notification.id;
        }
        pages.push(page.iter().map(|r| r.notification.id).collect::<Vec<_>>());
        if !full {
            break;
        }
    }
    // 1,000-byte bodies (with their texts) reach 2,500 bytes at the third row; the 20,000-byte one fills a page.
    let expected = vec![ids[0..3].to_vec(), vec![ids[3], ids[4]], vec![ids[5]]];
    assert_eq!(pages, expected, "pages cut at their bytes, every row once, in order");
    assert!(!limit.reached(&store.after("rb", from, limit, std::time::Instant::now()).await.unwrap().items));
    let by_rows = store.after("rb", start, PageLimit::rows(4), std::time::Instant::now()).await.unwrap().items;
    assert_eq!(by_rows.len(), 4, "bounded in rows only, the bytes do not cut it");
}

/// The store resolves alias recipients in the commit: an alias taught earlier in the same batch counts; an
/// unknown one writes nothing — not even the dedupe key — so the same event is stored once it is known. Aliases
/// are erased with their user.
async fn aliases_resolve_in_the_commit_and_an_unknown_one_writes_nothing(store: &dyn Store) {
    let to_student = |id: &str| Recipients::Alias { kind: "student".into(), aliases: vec![id.into()] };
    let early = Write::Notify(draft("al-stage-1", to_student("st-1")));
    match store.apply(vec![early.clone()]).await.unwrap().pop().unwrap() {
        WriteOutcome::Unresolved { kind, alias } => assert_eq!((kind.as_str(), alias.as_str()), ("student", "st-1")),
        other => panic!("expected Unresolved, got {other:?}"),
    }
    assert_eq!(store.alias("student", "st-1").await.unwrap(), None);

    let mut welcome = draft("al-welcome", users(&["al-user"]));
    welcome.aliases = vec![AliasRecord { kind: "student".into(), alias: "st-1".into(), user: "al-user".into() }];
    let later = Write::Notify(draft("al-stage-2", to_student("st-1")));
    let out = store.apply(vec![Write::Notify(welcome), later]).await.unwrap();
    match &out[1] {
        WriteOutcome::Stored(rows) => {
            assert_eq!(rows[0].user_id.as_deref(), Some("al-user"), "taught in the same batch")
        }
        other => panic!("expected Stored, got {other:?}"),
    }
    assert_eq!(store.alias("student", "st-1").await.unwrap().as_deref(), Some("al-user"));
    // The event that came too early is stored now: its first attempt left no dedupe key behind.
    assert_eq!(stored(store, early.clone()).await[0].user_id.as_deref(), Some("al-user"));
    assert!(matches!(store.apply(vec![early]).await.unwrap()[0], WriteOutcome::Duplicate));

    // Set over the API (not an event: never a duplicate), then erased with the user.
    let set = Write::Alias(AliasRecord { kind: "encadrant".into(), alias: "en-1".into(), user: "al-user".into() });
    for _ in 0..2 {
        assert!(matches!(store.apply(vec![set.clone()]).await.unwrap()[0], WriteOutcome::AliasSet));
    }
    store.apply(vec![Write::Purge { event_id: "al-gdpr".into(), users: vec!["al-user".into()] }]).await.unwrap();
    assert_eq!(store.alias("student", "st-1").await.unwrap(), None, "erased with the user");
    assert_eq!(store.alias("encadrant", "en-1").await.unwrap(), None);
    // The event applied before the erasure, delivered again (a lost ack): a duplicate, though its alias is gone
    // (it was an unresolved recipient, held and retried, then dead-lettered).
    let again = Write::Notify(draft("al-stage-2", to_student("st-1")));
    assert!(matches!(store.apply(vec![again]).await.unwrap()[0], WriteOutcome::Duplicate));
}

/// Each chain has its own cursor: a client that got the newer broadcast but not the older targeted row (they
/// crossed nodes in that order) gets exactly the targeted row back, and the other way round.
async fn after_takes_one_cursor_per_chain(store: &dyn Store) {
    let start = store.latest("cur").await.unwrap();
    let t = stored(store, Write::Notify(draft("cur-1", users(&["cur"])))).await[0].id;
    let x = stored(store, Write::Notify(draft("cur-2", Recipients::Everyone))).await[0].id;
    assert!(t < x);
    let missed_targeted = store
        .after(
            "cur",
            Position { targeted: start.targeted, broadcast: x },
            PageLimit::rows(100),
            std::time::Instant::now(),
        )
        .await
        .unwrap()
        .items;
    assert_eq!(missed_targeted.iter().map(|r| r.notification.id).collect::<Vec<_>>(), vec![t]);
    let missed_broadcast = store
        .after(
            "cur",
            Position { targeted: t, broadcast: start.broadcast },
            PageLimit::rows(100),
            std::time::Instant::now(),
        )
        .await
        .unwrap()
        .items;
    assert_eq!(missed_broadcast.iter().map(|r| r.notification.id).collect::<Vec<_>>(), vec![x]);
}

async fn purge_erases_only_that_user(store: &dyn Store) {
    stored(store, Write::Notify(draft("pg-1", users(&["gone", "stays"])))).await;
    let out =
        store.apply(vec![Write::Purge { event_id: "pg-purge".into(), users: vec!["gone".into()] }]).await.unwrap();
    assert!(matches!(out[0], WriteOutcome::Purged { rows: 1 }));
    assert!(store.list("gone", q(100, None, false)).await.unwrap().iter().all(|n| n.user_id.is_none()));
    assert_eq!(
        store.list("stays", q(100, None, false)).await.unwrap().iter().filter(|n| n.user_id.is_some()).count(),
        1
    );
}

/// A purge is never deduped: the same erasure request again (a producer's retry, a second request) erases what
/// was stored since, where it was answered `duplicate` and left it.
async fn an_erase_asked_again_erases_again(store: &dyn Store) {
    let erase = || Write::Purge { event_id: "erase-twice".into(), users: vec!["erased-twice".into()] };
    stored(store, Write::Notify(draft("erase-twice-1", users(&["erased-twice"])))).await;
    for round in 1..=2 {
        match store.apply(vec![erase()]).await.unwrap().pop().unwrap() {
            WriteOutcome::Purged { rows } => assert_eq!(rows, 1, "round {round}"),
            other => panic!("round {round}: expected Purged, got {other:?}"),
        }
        let left = everything(store, "erased-twice").await;
        assert!(left.iter().all(|n| n.user_id.is_none()), "round {round}: only broadcasts are left");
        stored(store, Write::Notify(draft(&format!("erase-twice-{}", round + 1), users(&["erased-twice"])))).await;
    }
}

/// Gap detection from the numbers alone: each item's `prev_id` is the previous id of its chain (the same user's
/// previous targeted row, or the previous broadcast).
async fn prev_id_links_each_users_stream(store: &dyn Store) {
    stored(store, Write::Notify(draft("chain-1", users(&["chain-a", "chain-b"])))).await;
    stored(store, Write::Notify(draft("chain-2", Recipients::Everyone))).await;
    stored(store, Write::Notify(draft("chain-3", users(&["chain-a"])))).await;
    stored(store, Write::Notify(draft("chain-4", users(&["chain-b"])))).await;
    stored(store, Write::Notify(draft("chain-5", Recipients::Everyone))).await;
    for user in ["chain-a", "chain-b"] {
        let all = store
            .after(user, Position::default(), PageLimit::rows(10_000), std::time::Instant::now())
            .await
            .unwrap()
            .items;
        let targeted: Vec<&Notification> =
            all.iter().map(|r| &r.notification).filter(|n| n.user_id.is_some()).collect();
        assert_eq!(targeted[0].prev_id, 0, "{user}: the first targeted row starts the chain");
        for w in targeted.windows(2) {
            assert_eq!(w[1].prev_id, w[0].id, "{user}: a targeted row links to this user's previous targeted row");
        }
    }
    let b = store
        .after("chain-a", Position::default(), PageLimit::rows(10_000), std::time::Instant::now())
        .await
        .unwrap()
        .items;
    let broadcasts: Vec<_> = b.iter().filter(|r| r.notification.user_id.is_none()).collect();
    for w in broadcasts.windows(2) {
        assert_eq!(w[1].notification.prev_id, w[0].notification.id, "broadcasts chain to each other");
    }
}

/// Several events for the same users in one commit (what group commit makes of concurrent requests): each row
/// links to the row before it in the same commit, a muted row is skipped by the next one, a key repeated in the
/// commit is stored once, and every other outcome keeps its write's position.
async fn one_commit_chains_its_own_rows_past_muted_ones(store: &dyn Store) {
    let (u, v) = ("batch-u", "batch-v");
    let types = [("digest".to_string(), TypeSetting::Muted)].into();
    store.set_preferences(u, types).await.unwrap();
    let before = stored(store, Write::Notify(draft("batch-0", users(&[u])))).await[0].id;
    let mut muted = draft("batch-2", users(&[u, v]));
    muted.kind = "digest".into();
    let writes = vec![
        Write::Notify(draft("batch-1", users(&[u, v]))),
        Write::Notify(muted),
        Write::Notify(draft("batch-1", users(&[u, v]))),
        Write::Notify(draft("batch-3", users(&[u]))),
    ];
    let out = store.apply(writes).await.unwrap();
    let rows = |i: usize| match &out[i] {
        WriteOutcome::Stored(rows) => rows.clone(),
        other => panic!("write {i}: expected Stored, got {other:?}"),
    };
    let (first, second, third) = (rows(0), rows(1), rows(3));
    assert!(matches!(out[2], WriteOutcome::Duplicate), "a key repeated in one commit is stored once: {out:?}");
    let of = |rows: &[Notification], user: &str| rows.iter().find(|n| n.user_id.as_deref() == Some(user)).cloned();
    let (u1, u2, u3) = (of(&first, u).unwrap(), of(&second, u).unwrap(), of(&third, u).unwrap());
    let (v1, v2) = (of(&first, v).unwrap(), of(&second, v).unwrap());
    assert_eq!(u1.prev_id, before, "the commit's first row links to the row committed before");
    assert!(u2.muted && !v2.muted, "muted for {u} only");
    assert_eq!(u2.prev_id, u1.id, "a muted row links to the previous unmuted one");
    assert_eq!(u3.prev_id, u1.id, "the next row skips the muted one");
    assert_eq!((v1.prev_id, v2.prev_id), (0, v1.id), "{v}'s chain is its own");
    assert!(u1.id < u2.id && u2.id < u3.id && v1.id < v2.id, "ids grow in write order");
    let replay =
        store.after(u, Position::both(before), PageLimit::rows(100), std::time::Instant::now()).await.unwrap().items;
    let replayed: Vec<i64> = replay.iter().map(|r| r.notification.id).filter(|id| *id > before).collect();
    assert_eq!(replayed, vec![u1.id, u3.id], "replayed as stored, without the muted row");
    assert_eq!(
        store.list(u, q(100, None, false)).await.unwrap().iter().filter(|n| n.user_id.is_some()).count(),
        4,
        "stored once each"
    );
    store.set_preferences(u, Default::default()).await.unwrap();
}

/// `prev_id` is the newest row of the chain that is still there: a deleted newest row or a purge moves it back.
async fn prev_id_follows_deletes_and_purges(store: &dyn Store) {
    let first = stored(store, Write::Notify(draft("head-1", users(&["head"])))).await[0].id;
    let second = stored(store, Write::Notify(draft("head-2", users(&["head"])))).await[0].id;
    let third = stored(store, Write::Notify(draft("head-3", users(&["head"])))).await[0].clone();
    assert_eq!(third.prev_id, second);
    let third = third.id;
    assert!(store.delete("head", third).await.unwrap());
    assert!(store.delete("head", second).await.unwrap());
    let fourth = stored(store, Write::Notify(draft("head-4", users(&["head"])))).await[0].clone();
    assert_eq!(fourth.prev_id, first, "after deleting the newest rows, the chain links to the newest one left");
    store.apply(vec![Write::Purge { event_id: "head-purge".into(), users: vec!["head".into()] }]).await.unwrap();
    let fifth = stored(store, Write::Notify(draft("head-5", users(&["head"])))).await[0].clone();
    assert_eq!(fifth.prev_id, 0, "purged: the chain starts again");
}

async fn unread_pages_are_not_crowded_out_by_read_broadcasts(store: &dyn Store) {
    let older = stored(store, Write::Notify(draft("crowd-1", Recipients::Everyone))).await[0].id;
    for i in 2..=4 {
        let id = stored(store, Write::Notify(draft(&format!("crowd-{i}"), Recipients::Everyone))).await[0].id;
        store.mark_read("crowd-user", id).await.unwrap().unwrap();
    }
    let page = store.list("crowd-user", q(1, None, true)).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, older, "the newest unread broadcast, past the read ones");
}
