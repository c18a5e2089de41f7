//! The `Store` conformance suite: the port's contract as executable cases.
//!
//! Written once, run against every adapter (the embedded store here; ScyllaDB from its
//! own tests). An adapter's test calls [`run_all`] (or [`run_all_with`]) with a function
//! that opens the store on the same storage every time it is called; each case panics
//! with a message naming the broken rule.
//!
//! # Concurrency model and invariants
//! Cases run one after another on the caller's tokio runtime (multi-threaded, as the
//! concurrency case spawns tasks). Each case works in its own collections (`conf-*`),
//! so cases never see each other's documents and can also be run one by one. Storage
//! must start empty of those collections (a fresh directory or keyspace per run).
//! [`run_all`] drops its store before the reopen case, so an adapter that locks its
//! storage can open it again. The compaction case reads the wall clock (tombstones are
//! aged by the time their delete was applied) and waits for it to move past a
//! millisecond boundary, never for a fixed time.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sluice_core::document::ContentHash;
use sluice_core::schema::Schema;
use sluice_core::store::{
    CollectionMeta, CollectionState, CompactionPage, DefinitionKind, DocVersion, Store, StoreWrite,
    StoredDoc, TombstoneHorizon, WriteOutcome,
};
use sluice_core::{CollectionName, DocId, Generation, Seq};
use tokio::task::JoinSet;

/// What an adapter can promise beyond the minimum contract.
#[derive(Clone, Copy, Debug)]
pub struct Expectations {
    /// Whether `apply` tells stale writes apart (`WriteOutcome::Stale`). Stores doing
    /// blind last-writer-wins writes (ScyllaDB `USING TIMESTAMP`) report `Applied` for
    /// them; the stored result must be the same either way.
    pub reports_stale: bool,
}

impl Default for Expectations {
    fn default() -> Self {
        Self {
            reports_stale: true,
        }
    }
}

/// Runs every case with the default (strict) [`Expectations`].
pub async fn run_all<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    run_all_with(Expectations::default(), open).await;
}

/// Runs every case. `open` must open the store on the same storage at every call.
pub async fn run_all_with<F, Fut>(expect: Expectations, open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let store = open().await;
    upsert_then_get(store.as_ref()).await;
    last_writer_wins_out_of_order(store.as_ref(), expect).await;
    tombstone_blocks_older_upsert(store.as_ref(), expect).await;
    same_id_twice_in_one_batch(store.as_ref(), expect).await;
    versions_of_present_absent_and_deleted(store.as_ref()).await;
    scan_pages_in_id_order_within_one_collection(store.as_ref()).await;
    drop_documents_empties_one_collection(store.as_ref()).await;
    tombstones_past_the_horizon_are_compacted(store.as_ref(), expect).await;
    catalog_crud(store.as_ref()).await;
    definitions_crud(store.as_ref()).await;
    writes_land_only_in_the_active_incarnation(store.as_ref()).await;
    concurrent_appliers_keep_the_highest_seq(Arc::clone(&store)).await;
    drop(store);
    data_survives_reopen(expect, &open).await;
}

fn collection(name: &str) -> CollectionName {
    CollectionName::new(name).expect("conformance collection names are valid")
}

fn doc_id(id: &str) -> DocId {
    DocId::new(id).expect("conformance ids are valid")
}

/// The canonical source of a test document: its id and a version tag.
fn source_of(id: &str, tag: &str) -> Bytes {
    Bytes::from(format!(r#"{{"id":"{id}","v":"{tag}"}}"#))
}

fn upsert(id: &str, seq: u64, tag: &str) -> StoreWrite {
    let source = source_of(id, tag);
    StoreWrite::Upsert {
        id: doc_id(id),
        seq: Seq(seq),
        hash: ContentHash::of(&source),
        source,
    }
}

fn delete(id: &str, seq: u64) -> StoreWrite {
    StoreWrite::Delete {
        id: doc_id(id),
        seq: Seq(seq),
    }
}

async fn apply(
    store: &dyn Store,
    c: &CollectionName,
    writes: Vec<StoreWrite>,
) -> Vec<WriteOutcome> {
    let count = writes.len();
    let outcomes = store
        .apply(c, Generation(0), writes)
        .await
        .unwrap_or_else(|e| panic!("apply to {c} failed: {e}"));
    assert_eq!(
        outcomes.len(),
        count,
        "apply must return one outcome per write"
    );
    outcomes
}

async fn get(store: &dyn Store, c: &CollectionName, id: &str) -> Option<StoredDoc> {
    store
        .get(c, &doc_id(id))
        .await
        .unwrap_or_else(|e| panic!("get {c}/{id} failed: {e}"))
}

/// Asserts `id` holds the live version written with `seq` and `tag`.
async fn assert_live(store: &dyn Store, c: &CollectionName, id: &str, seq: u64, tag: &str) {
    let source = source_of(id, tag);
    let expected = StoredDoc {
        id: doc_id(id),
        seq: Seq(seq),
        hash: ContentHash::of(&source),
        source: Some(source),
    };
    assert_eq!(get(store, c, id).await, Some(expected), "{c}/{id}");
}

/// Asserts `id` holds a tombstone written with `seq`.
async fn assert_tombstone(store: &dyn Store, c: &CollectionName, id: &str, seq: u64) {
    let expected = StoredDoc {
        id: doc_id(id),
        seq: Seq(seq),
        hash: ContentHash(0),
        source: None,
    };
    assert_eq!(
        get(store, c, id).await,
        Some(expected),
        "{c}/{id} should be a tombstone"
    );
}

/// Checks the outcome of a write that must not win.
fn assert_stale(expect: Expectations, outcome: WriteOutcome, what: &str) {
    if expect.reports_stale {
        assert_eq!(outcome, WriteOutcome::Stale, "{what}");
    }
}

/// Written documents read back exactly; absent ids and other collections read `None`.
pub async fn upsert_then_get(store: &dyn Store) {
    let c = collection("conf-get");
    let outcomes = apply(
        store,
        &c,
        vec![
            upsert("a", 1, "a1"),
            upsert("b", 2, "b1"),
            upsert("c", 3, "c1"),
        ],
    )
    .await;
    assert_eq!(outcomes, vec![WriteOutcome::Applied; 3]);
    assert_live(store, &c, "a", 1, "a1").await;
    assert_live(store, &c, "b", 2, "b1").await;
    assert_live(store, &c, "c", 3, "c1").await;
    assert_eq!(get(store, &c, "missing").await, None);
    assert_eq!(get(store, &collection("conf-get-other"), "a").await, None);
    assert!(
        apply(store, &c, Vec::new()).await.is_empty(),
        "an empty batch is a no-op"
    );
}

/// A newer write arriving first wins over an older one arriving later.
pub async fn last_writer_wins_out_of_order(store: &dyn Store, expect: Expectations) {
    let c = collection("conf-lww");
    assert_eq!(
        apply(store, &c, vec![upsert("x", 20, "new")]).await,
        vec![WriteOutcome::Applied]
    );
    let late = apply(store, &c, vec![upsert("x", 10, "old")]).await;
    assert_stale(expect, late[0], "an older write arriving later is stale");
    assert_live(store, &c, "x", 20, "new").await;

    // A redelivery of the winning op (same sequence, same content) changes nothing.
    let again = apply(store, &c, vec![upsert("x", 20, "new")]).await;
    assert_stale(expect, again[0], "a write at the stored sequence is stale");
    assert_live(store, &c, "x", 20, "new").await;

    assert_eq!(
        apply(store, &c, vec![upsert("x", 21, "newer")]).await,
        vec![WriteOutcome::Applied]
    );
    assert_live(store, &c, "x", 21, "newer").await;
}

/// A delete leaves a tombstone that an older upsert cannot resurrect; a newer one can.
pub async fn tombstone_blocks_older_upsert(store: &dyn Store, expect: Expectations) {
    let c = collection("conf-tombstone");
    apply(store, &c, vec![upsert("t", 5, "v5")]).await;
    assert_eq!(
        apply(store, &c, vec![delete("t", 10)]).await,
        vec![WriteOutcome::Applied]
    );
    assert_tombstone(store, &c, "t", 10).await;

    let late = apply(store, &c, vec![upsert("t", 7, "v7")]).await;
    assert_stale(expect, late[0], "an upsert older than the delete is stale");
    assert_tombstone(store, &c, "t", 10).await;

    // A delete of a document never written still blocks older upserts.
    apply(store, &c, vec![delete("never", 30)]).await;
    apply(store, &c, vec![upsert("never", 29, "v29")]).await;
    assert_tombstone(store, &c, "never", 30).await;

    assert_eq!(
        apply(store, &c, vec![upsert("t", 11, "v11")]).await,
        vec![WriteOutcome::Applied]
    );
    assert_live(store, &c, "t", 11, "v11").await;
}

/// Several writes to one id in one batch resolve as if applied one by one.
pub async fn same_id_twice_in_one_batch(store: &dyn Store, expect: Expectations) {
    let c = collection("conf-batch");
    let rising = apply(
        store,
        &c,
        vec![upsert("up", 10, "first"), upsert("up", 12, "second")],
    )
    .await;
    assert_eq!(rising, vec![WriteOutcome::Applied, WriteOutcome::Applied]);
    assert_live(store, &c, "up", 12, "second").await;

    let falling = apply(
        store,
        &c,
        vec![upsert("down", 20, "newer"), upsert("down", 15, "older")],
    )
    .await;
    assert_eq!(falling[0], WriteOutcome::Applied);
    assert_stale(
        expect,
        falling[1],
        "a lower sequence later in the batch is stale",
    );
    assert_live(store, &c, "down", 20, "newer").await;

    let mixed = apply(
        store,
        &c,
        vec![
            upsert("gone", 30, "v30"),
            upsert("kept", 31, "v31"),
            delete("gone", 32),
        ],
    )
    .await;
    assert_eq!(mixed, vec![WriteOutcome::Applied; 3]);
    assert_tombstone(store, &c, "gone", 32).await;
    assert_live(store, &c, "kept", 31, "v31").await;
}

/// `versions` answers in input order, `None` for absent ids, tombstones flagged.
pub async fn versions_of_present_absent_and_deleted(store: &dyn Store) {
    let c = collection("conf-versions");
    apply(
        store,
        &c,
        vec![
            upsert("live", 3, "v3"),
            upsert("dead", 4, "v4"),
            delete("dead", 5),
        ],
    )
    .await;
    let ids = [
        doc_id("dead"),
        doc_id("absent"),
        doc_id("live"),
        doc_id("live"),
    ];
    let versions = store
        .versions(&c, &ids)
        .await
        .unwrap_or_else(|e| panic!("versions failed: {e}"));
    let live = Some(DocVersion {
        seq: Seq(3),
        hash: ContentHash::of(&source_of("live", "v3")),
        deleted: false,
    });
    let dead = Some(DocVersion {
        seq: Seq(5),
        hash: ContentHash(0),
        deleted: true,
    });
    assert_eq!(versions, vec![dead, None, live, live]);
    let none = store
        .versions(&c, &[])
        .await
        .unwrap_or_else(|e| panic!("versions failed: {e}"));
    assert!(none.is_empty());
}

async fn scan_all_pages(store: &dyn Store, c: &CollectionName, page: usize) -> Vec<StoredDoc> {
    let mut all: Vec<StoredDoc> = Vec::new();
    loop {
        let after = all.last().map(|d| d.id.clone());
        let docs = store
            .scan(c, after.as_ref(), page)
            .await
            .unwrap_or_else(|e| panic!("scan of {c} failed: {e}"));
        assert!(docs.len() <= page, "scan returned more than its limit");
        if docs.is_empty() {
            return all;
        }
        all.extend(docs);
    }
}

/// `scan` pages through live documents in id order, strictly after `after`, and never
/// strays into another collection, even one whose name extends this one's.
pub async fn scan_pages_in_id_order_within_one_collection(store: &dyn Store) {
    let c = collection("conf-scan");
    let longer = collection("conf-scanb");
    let shorter = collection("conf-sca");
    let mut ids: Vec<String> = (0..25).map(|i| format!("d{i:02}")).collect();
    ids.extend(["D", "d1", "e", "é", "0"].map(String::from));
    let writes = ids
        .iter()
        .enumerate()
        .map(|(i, id)| upsert(id, 100 + i as u64, "v"))
        .collect();
    apply(store, &c, writes).await;
    apply(
        store,
        &c,
        vec![delete("d03", 200), delete("d10", 201), delete("é", 202)],
    )
    .await;
    apply(
        store,
        &longer,
        vec![
            upsert("d05x", 1, "v"),
            upsert("a", 2, "v"),
            upsert("zz", 3, "v"),
        ],
    )
    .await;
    apply(
        store,
        &shorter,
        vec![upsert("d00", 1, "v"), upsert("zz", 2, "v")],
    )
    .await;

    let mut expected: Vec<String> = ids
        .iter()
        .filter(|id| !["d03", "d10", "é"].contains(&id.as_str()))
        .cloned()
        .collect();
    expected.sort();
    for page in [1, 4, 100] {
        let scanned = scan_all_pages(store, &c, page).await;
        let scanned_ids: Vec<&str> = scanned.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(scanned_ids, expected, "scan of {c} with pages of {page}");
        for doc in &scanned {
            assert_eq!(
                doc.source,
                Some(source_of(doc.id.as_str(), "v")),
                "scan returns bodies"
            );
        }
    }

    // Starting after a tombstoned id, and after an id that was never written.
    let after_deleted = store
        .scan(&c, Some(&doc_id("d10")), 2)
        .await
        .unwrap_or_else(|e| panic!("scan failed: {e}"));
    let after_deleted: Vec<&str> = after_deleted.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(after_deleted, ["d11", "d12"]);
    let after_absent = store
        .scan(&c, Some(&doc_id("d105")), 1)
        .await
        .unwrap_or_else(|e| panic!("scan failed: {e}"));
    assert_eq!(after_absent.first().map(|d| d.id.as_str()), Some("d11"));
    let past_end = store
        .scan(&c, Some(&doc_id("zzz")), 10)
        .await
        .unwrap_or_else(|e| panic!("scan failed: {e}"));
    assert!(past_end.is_empty(), "nothing after the last id");
    let zero = store
        .scan(&c, None, 0)
        .await
        .unwrap_or_else(|e| panic!("scan failed: {e}"));
    assert!(zero.is_empty(), "a limit of 0 returns nothing");

    let longer_ids: Vec<String> = scan_all_pages(store, &longer, 2)
        .await
        .into_iter()
        .map(|d| d.id.to_string())
        .collect();
    assert_eq!(longer_ids, ["a", "d05x", "zz"]);
    let shorter_ids: Vec<String> = scan_all_pages(store, &shorter, 10)
        .await
        .into_iter()
        .map(|d| d.id.to_string())
        .collect();
    assert_eq!(shorter_ids, ["d00", "zz"]);
}

/// `drop_documents` removes every document (tombstones too) of one collection only.
pub async fn drop_documents_empties_one_collection(store: &dyn Store) {
    let c = collection("conf-drop");
    let neighbour = collection("conf-drop2");
    // More than one internal batch's worth, for adapters that drop in chunks.
    let writes: Vec<StoreWrite> = (0..2500)
        .map(|i| upsert(&format!("k{i:05}"), i + 1, "v"))
        .collect();
    apply(store, &c, writes).await;
    apply(store, &c, vec![delete("k00000", 5000)]).await;
    apply(
        store,
        &neighbour,
        vec![upsert("k00001", 1, "v"), upsert("other", 2, "v")],
    )
    .await;

    store
        .drop_documents(&c)
        .await
        .unwrap_or_else(|e| panic!("drop_documents failed: {e}"));
    assert!(
        scan_all_pages(store, &c, 1000).await.is_empty(),
        "{c} still has documents"
    );
    assert_eq!(get(store, &c, "k00001").await, None);
    assert_eq!(
        get(store, &c, "k00000").await,
        None,
        "tombstones are dropped too"
    );
    assert_eq!(
        scan_all_pages(store, &neighbour, 10).await.len(),
        2,
        "{neighbour} was touched"
    );
    store
        .drop_documents(&collection("conf-drop-empty"))
        .await
        .unwrap_or_else(|e| panic!("dropping an empty collection failed: {e}"));
}

/// Milliseconds since the Unix epoch, by the wall clock.
fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past the epoch")
        .as_millis() as u64
}

/// A wall-clock millisecond strictly after every write done so far and strictly before
/// every write done from now on: waits (polling the clock) for it to pass.
async fn clock_boundary() -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    let earlier = wall_clock_ms();
    while wall_clock_ms() <= earlier {
        assert!(Instant::now() < deadline, "the wall clock does not move");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let boundary = wall_clock_ms();
    while wall_clock_ms() <= boundary {
        assert!(Instant::now() < deadline, "the wall clock does not move");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    boundary
}

/// Pages `compact_tombstones` through a collection `limit` records at a time; the pages
/// summed up, and how many calls it took.
async fn compact_all(
    store: &dyn Store,
    c: &CollectionName,
    horizon: TombstoneHorizon,
    limit: usize,
) -> (CompactionPage, usize) {
    let mut total = CompactionPage::default();
    let mut after: Option<DocId> = None;
    for calls in 1.. {
        let page = store
            .compact_tombstones(c, horizon, after.as_ref(), limit)
            .await
            .unwrap_or_else(|e| panic!("compact_tombstones of {c} failed: {e}"));
        total.removed += page.removed;
        total.stamped += page.stamped;
        if page.next_after.is_none() {
            return (total, calls);
        }
        assert!(
            page.next_after > after,
            "compaction pages must move forward"
        );
        after = page.next_after;
    }
    unreachable!("the loop only ends by returning")
}

/// Tombstones deleted before the horizon's time and below its sequence are removed, in
/// pages of bounded size; newer ones (by time or by sequence), live documents and other
/// collections stay. Once a tombstone is gone its id is absent, so an older upsert
/// arriving later is applied (what `store.tombstone_retention` must make impossible,
/// short of replaying an old dead letter); one still kept refuses it.
pub async fn tombstones_past_the_horizon_are_compacted(store: &dyn Store, expect: Expectations) {
    let c = collection("conf-compact");
    let neighbour = collection("conf-compact2");
    // Old tombstones, interleaved with live documents, more than one page of them.
    let mut old_writes: Vec<StoreWrite> = Vec::new();
    for i in 0..30u64 {
        old_writes.push(upsert(&format!("live{i:02}"), 1 + i, "v"));
        old_writes.push(upsert(&format!("old{i:02}"), 100 + i, "v"));
    }
    apply(store, &c, old_writes).await;
    let deletes = (0..30u64)
        .map(|i| delete(&format!("old{i:02}"), 200 + i))
        .collect();
    apply(store, &c, deletes).await;
    // Old by time, but at or above the horizon's sequence: an op it races may still come.
    apply(store, &c, vec![delete("unsettled", 500)]).await;
    apply(store, &neighbour, vec![delete("old00", 201)]).await;
    let deleted_before_ms = clock_boundary().await;
    // Below the horizon's sequence, but deleted after its time.
    apply(
        store,
        &c,
        vec![upsert("recent", 300, "v"), delete("recent", 301)],
    )
    .await;

    let horizon = TombstoneHorizon {
        deleted_before_ms,
        seq_below: Seq(500),
    };
    let (page, calls) = compact_all(store, &c, horizon, 8).await;
    assert_eq!(page.removed, 30, "every old tombstone of {c} goes");
    assert_eq!(page.stamped, 0, "every tombstone here has its time");
    assert!(
        calls >= 8,
        "62 records in pages of 8 take 8 calls, took {calls}"
    );

    for i in 0..30u64 {
        assert_eq!(
            get(store, &c, &format!("old{i:02}")).await,
            None,
            "old{i:02}"
        );
        assert_live(store, &c, &format!("live{i:02}"), 1 + i, "v").await;
    }
    assert_tombstone(store, &c, "recent", 301).await;
    assert_tombstone(store, &c, "unsettled", 500).await;
    assert_tombstone(store, &neighbour, "old00", 201).await;
    let versions = store
        .versions(&c, &[doc_id("old00"), doc_id("live00")])
        .await
        .unwrap_or_else(|e| panic!("versions failed: {e}"));
    assert_eq!(versions[0], None, "a compacted id has no version");
    let scanned = scan_all_pages(store, &c, 100).await;
    assert_eq!(scanned.len(), 30, "scan sees the live documents only");

    // A second pass finds nothing more.
    let (again, _) = compact_all(store, &c, horizon, 1000).await;
    assert_eq!(again, CompactionPage::default());

    // An older upsert for a compacted id is a write to an absent id: it applies.
    assert_eq!(
        apply(store, &c, vec![upsert("old00", 150, "late")]).await,
        vec![WriteOutcome::Applied],
        "with its tombstone gone, an older upsert recreates the document"
    );
    assert_live(store, &c, "old00", 150, "late").await;
    // Where the tombstone was kept, the same late upsert is refused.
    let late = apply(store, &c, vec![upsert("recent", 299, "late")]).await;
    assert_stale(
        expect,
        late[0],
        "a kept tombstone still blocks older upserts",
    );
    assert_tombstone(store, &c, "recent", 301).await;

    // A limit of 0 looks at nothing and stays where it was.
    let idle = store
        .compact_tombstones(&c, horizon, Some(&doc_id("live05")), 0)
        .await
        .unwrap_or_else(|e| panic!("compact_tombstones failed: {e}"));
    assert_eq!(idle.removed, 0);
    assert_eq!(idle.next_after, Some(doc_id("live05")));
}

fn meta(name: &str, schema_version: u64) -> CollectionMeta {
    let mut schema = Schema::from_json(
        br#"{"description":"conformance","primary_key":"id","fields":[
            {"name":"id","type":"string"},{"name":"title","type":"text"},
            {"name":"tags","type":"keyword","array":true,"required":false},
            {"name":"price","type":"i64","required":false,"default":0}]}"#,
    )
    .expect("the conformance schema is valid");
    schema.shards = Some(3);
    CollectionMeta {
        name: collection(name),
        schema,
        dynamic: schema_version > 1,
        schema_version,
        created_at_ms: 1_767_225_600_000,
        generation: Generation(0),
        state: CollectionState::Active,
    }
}

/// Catalog entries are created, read, listed by name, replaced and deleted.
pub async fn catalog_crud(store: &dyn Store) {
    let (a, b) = (meta("conf-cat-b", 1), meta("conf-cat-a", 1));
    for entry in [&a, &b] {
        store
            .put_collection(entry)
            .await
            .unwrap_or_else(|e| panic!("put_collection failed: {e}"));
    }
    let read = |name: &'static str| async move {
        store
            .get_collection(&collection(name))
            .await
            .unwrap_or_else(|e| panic!("get_collection failed: {e}"))
    };
    let listed = || async {
        store
            .list_collections()
            .await
            .unwrap_or_else(|e| panic!("list_collections failed: {e}"))
            .into_iter()
            .filter(|m| m.name.as_str().starts_with("conf-cat-"))
            .collect::<Vec<_>>()
    };
    assert_eq!(read("conf-cat-b").await, Some(a.clone()));
    assert_eq!(read("conf-cat-missing").await, None);
    assert_eq!(listed().await, vec![b.clone(), a.clone()], "listed by name");

    let a2 = meta("conf-cat-b", 2);
    store
        .put_collection(&a2)
        .await
        .unwrap_or_else(|e| panic!("put_collection failed: {e}"));
    assert_eq!(read("conf-cat-b").await, Some(a2.clone()), "put replaces");

    store
        .delete_collection(&b.name)
        .await
        .unwrap_or_else(|e| panic!("delete_collection failed: {e}"));
    assert_eq!(read("conf-cat-a").await, None);
    assert_eq!(listed().await, vec![a2]);
    store
        .delete_collection(&collection("conf-cat-missing"))
        .await
        .unwrap_or_else(|e| panic!("deleting an absent entry must succeed: {e}"));
}

/// Appliers racing on the same ids end with the highest sequence stored.
pub async fn concurrent_appliers_keep_the_highest_seq(store: Arc<dyn Store>) {
    const TASKS: u64 = 8;
    const ROUNDS: u64 = 25;
    const IDS: usize = 10;
    let c = collection("conf-race");
    let mut appliers = JoinSet::new();
    for task in 0..TASKS {
        let (store, c) = (Arc::clone(&store), c.clone());
        appliers.spawn(async move {
            let mut applied = 0usize;
            for round in 0..ROUNDS {
                // Task t owns sequences t+1, t+1+8, ...: the tasks interleave. Even
                // tasks write theirs rising, odd ones falling, so the highest sequence
                // lands early and every later write races against it.
                let step = if task % 2 == 0 {
                    round
                } else {
                    ROUNDS - 1 - round
                };
                let seq = step * TASKS + task + 1;
                let writes = (0..IDS)
                    .map(|i| upsert(&format!("r{i}"), seq, &seq.to_string()))
                    .collect();
                let outcomes = store
                    .apply(&c, Generation(0), writes)
                    .await
                    .unwrap_or_else(|e| panic!("concurrent apply failed: {e}"));
                applied += outcomes
                    .iter()
                    .filter(|o| **o == WriteOutcome::Applied)
                    .count();
            }
            applied
        });
    }
    let mut applied = 0;
    while let Some(result) = appliers.join_next().await {
        applied += result.unwrap_or_else(|e| panic!("applier task failed: {e}"));
    }
    assert!(applied >= IDS, "at least one write per id is applied");
    let highest = TASKS * ROUNDS;
    for i in 0..IDS {
        let id = format!("r{i}");
        assert_live(store.as_ref(), &c, &id, highest, &highest.to_string()).await;
    }
}

/// Acknowledged documents, tombstones and catalog entries are there after a reopen, and
/// sequences still guard them.
pub async fn data_survives_reopen<F, Fut>(expect: Expectations, open: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let c = collection("conf-reopen");
    {
        let store = open().await;
        apply(
            store.as_ref(),
            &c,
            vec![upsert("kept", 40, "v40"), upsert("gone", 41, "v41")],
        )
        .await;
        apply(store.as_ref(), &c, vec![delete("gone", 42)]).await;
        store
            .put_collection(&meta("conf-reopen", 7))
            .await
            .unwrap_or_else(|e| panic!("put_collection failed: {e}"));
        store
            .put_definition(
                DefinitionKind::LifecyclePolicy,
                "conf-reopen",
                Bytes::from_static(b"{\"kept\":true}"),
            )
            .await
            .unwrap_or_else(|e| panic!("put_definition failed: {e}"));
    }
    let store = open().await;
    assert_live(store.as_ref(), &c, "kept", 40, "v40").await;
    assert_tombstone(store.as_ref(), &c, "gone", 42).await;
    let late = apply(store.as_ref(), &c, vec![upsert("gone", 39, "v39")]).await;
    assert_stale(
        expect,
        late[0],
        "a tombstone still blocks older upserts after a reopen",
    );
    assert_tombstone(store.as_ref(), &c, "gone", 42).await;
    let other_incarnation = store
        .apply(&c, Generation(5), vec![upsert("kept", 50, "v50")])
        .await
        .unwrap_or_else(|e| panic!("apply failed: {e}"));
    assert_eq!(
        other_incarnation,
        vec![WriteOutcome::Discarded],
        "the catalog entry's generation still fences writes after a reopen"
    );
    assert_live(store.as_ref(), &c, "kept", 40, "v40").await;
    let catalog_entry = store
        .get_collection(&c)
        .await
        .unwrap_or_else(|e| panic!("get_collection failed: {e}"));
    assert_eq!(catalog_entry, Some(meta("conf-reopen", 7)));
    let definition = store
        .get_definition(DefinitionKind::LifecyclePolicy, "conf-reopen")
        .await
        .unwrap_or_else(|e| panic!("get_definition failed: {e}"));
    assert_eq!(
        definition.as_deref(),
        Some(&b"{\"kept\":true}"[..]),
        "definitions survive a reopen"
    );
}

/// Definitions are put, read, listed by name within their kind only, replaced and
/// deleted; kinds are separate namespaces.
pub async fn definitions_crud(store: &dyn Store) {
    let put = |kind, name: &'static str, value: &'static str| async move {
        store
            .put_definition(kind, name, Bytes::from_static(value.as_bytes()))
            .await
            .unwrap_or_else(|e| panic!("put_definition failed: {e}"));
    };
    let template = DefinitionKind::IndexTemplate;
    let policy = DefinitionKind::LifecyclePolicy;
    put(template, "conf-def-b", "1").await;
    put(template, "conf-def-a", "2").await;
    put(policy, "conf-def-b", "3").await;
    let listed = |kind| async move {
        store
            .list_definitions(kind)
            .await
            .unwrap_or_else(|e| panic!("list_definitions failed: {e}"))
            .into_iter()
            .filter(|(name, _)| name.starts_with("conf-def-"))
            .map(|(name, value)| (name, String::from_utf8(value.to_vec()).unwrap()))
            .collect::<Vec<_>>()
    };
    let owned = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed(template).await,
        owned(&[("conf-def-a", "2"), ("conf-def-b", "1")]),
        "listed by name, one kind only"
    );
    assert_eq!(listed(policy).await, owned(&[("conf-def-b", "3")]));
    put(template, "conf-def-b", "4").await;
    let read = store
        .get_definition(template, "conf-def-b")
        .await
        .unwrap_or_else(|e| panic!("get_definition failed: {e}"));
    assert_eq!(read.as_deref(), Some(&b"4"[..]), "put replaces");
    let missing = store
        .get_definition(DefinitionKind::ComponentTemplate, "conf-def-b")
        .await
        .unwrap_or_else(|e| panic!("get_definition failed: {e}"));
    assert_eq!(missing, None, "kinds are separate namespaces");
    let delete = |kind, name: &'static str| async move {
        store
            .delete_definition(kind, name)
            .await
            .unwrap_or_else(|e| panic!("delete_definition failed: {e}"))
    };
    assert!(delete(template, "conf-def-b").await);
    assert!(!delete(template, "conf-def-b").await, "already gone");
    assert_eq!(listed(template).await, owned(&[("conf-def-a", "2")]));
    assert_eq!(listed(policy).await, owned(&[("conf-def-b", "3")]));
}

/// The incarnation fence of [`Store::apply`]: with a catalog entry, only writes of its
/// generation land, and none while it is being deleted or after; without one, any.
pub async fn writes_land_only_in_the_active_incarnation(store: &dyn Store) {
    let mut entry = meta("conf-fence", 1);
    let c = entry.name.clone();
    let put = |entry: CollectionMeta| async move {
        store
            .put_collection(&entry)
            .await
            .unwrap_or_else(|e| panic!("put_collection failed: {e}"));
    };
    let try_write = |generation: u64, seq: u64| {
        let c = c.clone();
        async move {
            store
                .apply(
                    &c,
                    Generation(generation),
                    vec![upsert("f", seq, &seq.to_string())],
                )
                .await
                .unwrap_or_else(|e| panic!("apply failed: {e}"))
        }
    };
    assert_eq!(
        try_write(7, 1).await,
        vec![WriteOutcome::Applied],
        "without a catalog entry any generation lands"
    );
    entry.generation = Generation(8);
    put(entry.clone()).await;
    assert_eq!(
        try_write(7, 2).await,
        vec![WriteOutcome::Discarded],
        "a write of an earlier incarnation is discarded"
    );
    assert_eq!(try_write(8, 3).await, vec![WriteOutcome::Applied]);
    entry.state = CollectionState::Deleting;
    put(entry.clone()).await;
    assert_eq!(
        try_write(8, 4).await,
        vec![WriteOutcome::Discarded],
        "nothing lands while the collection is being deleted"
    );
    entry.state = CollectionState::Retired { at_ms: 1 };
    put(entry.clone()).await;
    assert_eq!(
        try_write(8, 5).await,
        vec![WriteOutcome::Discarded],
        "nothing lands in a retired incarnation"
    );
    let stored = store
        .get(&c, &doc_id("f"))
        .await
        .unwrap_or_else(|e| panic!("get failed: {e}"))
        .expect("the admitted write is stored");
    assert_eq!(
        stored.seq,
        Seq(3),
        "only admitted writes changed the document"
    );
    entry.generation = Generation(9);
    entry.state = CollectionState::Active;
    put(entry).await;
    assert_eq!(try_write(9, 6).await, vec![WriteOutcome::Applied]);
    store
        .delete_collection(&c)
        .await
        .unwrap_or_else(|e| panic!("delete_collection failed: {e}"));
    assert_eq!(
        try_write(1, 7).await,
        vec![WriteOutcome::Applied],
        "with the entry removed, writes land again"
    );
}
