//! Metric series that live as long as what they describe.
//!
//! The Prometheus exporter cannot drop one label set on request; what it can do is drop a
//! series nobody updated for `server.metrics_idle_timeout` (its idle timeout, on counters
//! and gauges). [`LiveSeriesRecorder`] sits in front of it and remembers every counter
//! and gauge registered; [`LiveSeries::refresh`] touches each of them (adds zero: the
//! value is unchanged, the exporter sees an update) several times per timeout, so no live
//! series ever expires, however idle. When a collection is deleted its series are
//! forgotten ([`LiveSeries::retire_collection`]): nothing touches them any more and the
//! exporter drops them one timeout later, which bounds the `collection` label set by the
//! collections that exist (and the memory behind it).
//!
//! Invariants:
//! - A series without a `collection` label, or of a collection in the catalog, is
//!   touched at least every quarter timeout, so it never expires.
//! - A retired collection's series registered again by a straggler (a worker finishing a
//!   batch of the deleted collection) are not remembered: they expire too. Creating the
//!   collection again ([`LiveSeries::revive_collection`]) lifts that.
//!
//! Concurrency: registration takes a read lock (a write lock the first time a series is
//! seen); the metric macros register on each call, so this is one extra map lookup per
//! metric update, on per-batch paths only.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use sluice_core::catalog::{Catalog, CatalogChange};
use tokio::sync::broadcast::error::RecvError;

/// The label that ties a series to a collection.
const COLLECTION_LABEL: &str = "collection";
/// How long a deleted collection's name is remembered as retired (stragglers come
/// within seconds of the deletion).
const RETIRED_MEMORY: Duration = Duration::from_secs(600);

static INSTALLED: OnceLock<Arc<LiveSeries>> = OnceLock::new();

/// The series the process keeps alive.
pub struct LiveSeries {
    idle_timeout: Duration,
    tracked: RwLock<Tracked>,
}

#[derive(Default)]
struct Tracked {
    counters: HashMap<Key, Counter>,
    gauges: HashMap<Key, Gauge>,
    /// Deleted collections, with when they were deleted.
    retired: HashMap<String, Instant>,
}

fn collection_of(key: &Key) -> Option<&str> {
    key.labels()
        .find(|label| label.key() == COLLECTION_LABEL)
        .map(|label| label.value())
}

impl Tracked {
    fn is_retired(&self, key: &Key) -> bool {
        collection_of(key).is_some_and(|c| self.retired.contains_key(c))
    }
}

impl LiveSeries {
    /// Installs `inner` behind a [`LiveSeriesRecorder`] as the process's global recorder.
    /// `idle_timeout` must be the exporter's idle timeout.
    pub fn install<R: Recorder + Sync + Send + 'static>(
        inner: R,
        idle_timeout: Duration,
    ) -> anyhow::Result<Arc<LiveSeries>> {
        let live = Arc::new(LiveSeries::new(idle_timeout));
        metrics::set_global_recorder(LiveSeriesRecorder {
            inner,
            live: live.clone(),
        })
        .map_err(|_| anyhow::anyhow!("a metrics recorder is installed already"))?;
        let _ = INSTALLED.set(live.clone());
        Ok(live)
    }

    /// The installed instance, if [`LiveSeries::install`] ran in this process.
    pub fn installed() -> Option<Arc<LiveSeries>> {
        INSTALLED.get().cloned()
    }

    fn new(idle_timeout: Duration) -> Self {
        Self {
            idle_timeout,
            tracked: RwLock::new(Tracked::default()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tracked> {
        self.tracked
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tracked> {
        self.tracked
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn track_counter(&self, key: &Key, counter: &Counter) {
        {
            let tracked = self.read();
            if tracked.counters.contains_key(key) || tracked.is_retired(key) {
                return;
            }
        }
        let mut tracked = self.write();
        if !tracked.is_retired(key) {
            tracked
                .counters
                .entry(key.clone())
                .or_insert_with(|| counter.clone());
        }
    }

    fn track_gauge(&self, key: &Key, gauge: &Gauge) {
        {
            let tracked = self.read();
            if tracked.gauges.contains_key(key) || tracked.is_retired(key) {
                return;
            }
        }
        let mut tracked = self.write();
        if !tracked.is_retired(key) {
            tracked
                .gauges
                .entry(key.clone())
                .or_insert_with(|| gauge.clone());
        }
    }

    /// Touches every remembered series (their values do not change), and forgets
    /// retired names older than [`RETIRED_MEMORY`].
    pub fn refresh(&self) {
        {
            let tracked = self.read();
            for counter in tracked.counters.values() {
                counter.increment(0);
            }
            for gauge in tracked.gauges.values() {
                gauge.increment(0.0);
            }
        }
        self.write()
            .retired
            .retain(|_, since| since.elapsed() < RETIRED_MEMORY);
    }

    /// Stops keeping `collection`'s series alive: they leave `/metrics` one idle timeout
    /// from now.
    pub fn retire_collection(&self, collection: &str) {
        let mut tracked = self.write();
        tracked
            .counters
            .retain(|key, _| collection_of(key) != Some(collection));
        tracked
            .gauges
            .retain(|key, _| collection_of(key) != Some(collection));
        tracked
            .retired
            .insert(collection.to_owned(), Instant::now());
    }

    /// `collection` exists (again): its series are kept alive from their next update.
    pub fn revive_collection(&self, collection: &str) {
        self.write().retired.remove(collection);
    }

    /// Number of series kept alive (for tests).
    pub fn tracked_series(&self) -> usize {
        let tracked = self.read();
        tracked.counters.len() + tracked.gauges.len()
    }

    /// Follows the catalog (retiring deleted collections, reviving created ones) and
    /// refreshes the remembered series, until the catalog's change feed closes.
    pub async fn keep_alive(self: Arc<Self>, catalog: Arc<Catalog>) {
        let mut changes = catalog.subscribe();
        let mut refresh =
            tokio::time::interval((self.idle_timeout / 4).max(Duration::from_millis(10)));
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = refresh.tick() => self.refresh(),
                change = changes.recv() => match change {
                    Ok(CatalogChange::Deleted(name)) => self.retire_collection(name.as_str()),
                    Ok(CatalogChange::Upserted(meta)) => self.revive_collection(meta.name.as_str()),
                    Err(RecvError::Lagged(_)) => self.reconcile(&catalog),
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }

    /// Retires every remembered collection the catalog no longer has (after missed
    /// changes).
    fn reconcile(&self, catalog: &Catalog) {
        let remembered: Vec<String> = {
            let tracked = self.read();
            tracked
                .counters
                .keys()
                .chain(tracked.gauges.keys())
                .filter_map(collection_of)
                .map(str::to_owned)
                .collect()
        };
        let live: std::collections::HashSet<String> = catalog
            .list()
            .iter()
            .map(|meta| meta.name.to_string())
            .collect();
        for collection in remembered {
            if !live.contains(&collection) {
                self.retire_collection(&collection);
            }
        }
    }
}

/// A recorder that hands every call to `inner` and remembers counters and gauges for
/// [`LiveSeries`].
pub struct LiveSeriesRecorder<R> {
    inner: R,
    live: Arc<LiveSeries>,
}

impl<R: Recorder> Recorder for LiveSeriesRecorder<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        let counter = self.inner.register_counter(key, metadata);
        self.live.track_counter(key, &counter);
        counter
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        let gauge = self.inner.register_gauge(key, metadata);
        self.live.track_gauge(key, &gauge);
        gauge
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.inner.register_histogram(key, metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use metrics_util::MetricKindMask;

    /// The exporter's idle timeout drops what nobody touches: a retired collection's
    /// series go, a live collection's and global ones stay however idle.
    #[test]
    fn retired_collections_expire_and_live_series_stay() {
        let idle = Duration::from_millis(200);
        let prometheus = PrometheusBuilder::new()
            .idle_timeout(MetricKindMask::COUNTER | MetricKindMask::GAUGE, Some(idle))
            .build_recorder();
        let handle = prometheus.handle();
        let live = Arc::new(LiveSeries::new(idle));
        let recorder = LiveSeriesRecorder {
            inner: prometheus,
            live: live.clone(),
        };
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("events_total", "collection" => "kept").increment(3);
            metrics::counter!("events_total", "collection" => "gone").increment(5);
            metrics::gauge!("documents", "collection" => "gone").set(7.0);
            metrics::gauge!("documents", "collection" => "kept").set(2.0);
            metrics::counter!("requests_total").increment(1);
        });
        assert_eq!(live.tracked_series(), 5);
        let first = handle.render();
        assert!(
            first.contains(r#"events_total{collection="gone"} 5"#),
            "{first}"
        );
        live.retire_collection("gone");
        assert_eq!(live.tracked_series(), 3);
        // A straggler's update of the retired collection is not kept alive either.
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("events_total", "collection" => "gone").increment(1);
        });
        assert_eq!(live.tracked_series(), 3);
        let deadline = Instant::now() + Duration::from_secs(20);
        let rendered = loop {
            live.refresh();
            let rendered = handle.render();
            if !rendered.contains(r#"collection="gone""#) {
                break rendered;
            }
            assert!(
                Instant::now() < deadline,
                "retired series stayed: {rendered}"
            );
            std::thread::sleep(idle / 4);
        };
        // Several timeouts passed without updates: live series are still there, unchanged.
        assert!(
            rendered.contains(r#"events_total{collection="kept"} 3"#),
            "{rendered}"
        );
        assert!(
            rendered.contains(r#"documents{collection="kept"} 2"#),
            "{rendered}"
        );
        assert!(rendered.contains("requests_total 1"), "{rendered}");

        // Created again: its series are kept alive from their next update.
        live.revive_collection("gone");
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("events_total", "collection" => "gone").increment(1);
        });
        assert_eq!(live.tracked_series(), 4);
    }
}
