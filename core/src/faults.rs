//! Fault injection for tests of failure paths: errors and latency at named points.
//!
//! A node started with `[faults] enabled = true` (test configuration only; never in
//! production) lets a test set a [`FaultPlan`] per [`FaultPoint`] at run time, through
//! `PUT /_internal_/faults/{point}`, and clear it with `DELETE`. The code at each point
//! calls [`Faults::inject`] first: with no plan (and always when disabled) that is one
//! atomic load; with a plan it sleeps the plan's latency and then fails with the plan's
//! error at the plan's rate. Points are few and fixed so tests name them exactly.
//!
//! Concurrency: plans are behind a `RwLock` read on every injected call only when the
//! node was started with faults enabled; a set or clear is visible to the next call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where a fault can be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultPoint {
    /// Every store read and write (the fault-injecting store wrapper).
    Store,
    /// Searching one index shard (`shards` narrows it to some).
    IndexSearch,
    /// Each append of a batch of documents by the ingest path (native ingest and
    /// `_bulk`), before it reaches the log.
    LogAppend,
}

impl FaultPoint {
    /// Parses the `{point}` of the control route.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "store" => Some(FaultPoint::Store),
            "index_search" => Some(FaultPoint::IndexSearch),
            "log_append" => Some(FaultPoint::LogAppend),
            _ => None,
        }
    }
}

/// The error an injected fault produces; each point maps it to its own error type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The dependency cannot be reached (transient).
    #[default]
    Unavailable,
    /// The call timed out (transient).
    Timeout,
    /// Local storage failed (unavailable: counts against the breaker).
    Storage,
}

/// What to inject at one point.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultPlan {
    /// Delay added before every call at this point.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// Fraction of calls that fail, `0.0..=1.0` (1.0: the dependency is down).
    pub error_rate: f64,
    /// The error the failing calls get.
    pub error: FaultKind,
    /// For [`FaultPoint::IndexSearch`]: only these shard numbers (all when empty).
    pub shards: Vec<u32>,
}

impl FaultPlan {
    /// Checks a plan a test sent.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err("error_rate must be within 0.0..=1.0".to_owned());
        }
        Ok(())
    }
}

/// The fault plans of one node. Cheap to share; inert unless built with [`Faults::enabled`].
#[derive(Debug, Default)]
pub struct Faults {
    enabled: bool,
    any_plan: AtomicBool,
    plans: RwLock<HashMap<FaultPoint, FaultPlan>>,
}

impl Faults {
    /// Faults off: [`Faults::inject`] never fails or waits, and plans cannot be set.
    pub fn disabled() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Faults on: plans may be set at run time.
    pub fn enabled() -> Arc<Self> {
        Arc::new(Self {
            enabled: true,
            ..Self::default()
        })
    }

    /// Whether this node accepts fault plans.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Sets (`Some`) or clears (`None`) the plan of `point`. Refused when disabled.
    pub fn set(&self, point: FaultPoint, plan: Option<FaultPlan>) -> Result<(), String> {
        if !self.enabled {
            return Err("fault injection is not enabled on this node".to_owned());
        }
        if let Some(plan) = &plan {
            plan.validate()?;
        }
        let mut plans = self.plans.write().unwrap_or_else(|e| e.into_inner());
        match plan {
            Some(plan) => plans.insert(point, plan),
            None => plans.remove(&point),
        };
        self.any_plan.store(!plans.is_empty(), Ordering::Release);
        Ok(())
    }

    /// The current plan of `point`, if any.
    pub fn plan(&self, point: FaultPoint) -> Option<FaultPlan> {
        if !self.any_plan.load(Ordering::Acquire) {
            return None;
        }
        let plans = self.plans.read().unwrap_or_else(|e| e.into_inner());
        plans.get(&point).cloned()
    }

    /// Applies the plan of `point` (for `shard`, where the point has shards): waits its
    /// latency, then fails with its error at its rate. `Ok` when there is no plan.
    pub async fn inject(&self, point: FaultPoint, shard: Option<u32>) -> Result<(), FaultKind> {
        let Some(plan) = self.plan(point) else {
            return Ok(());
        };
        if let Some(shard) = shard {
            if !plan.shards.is_empty() && !plan.shards.contains(&shard) {
                return Ok(());
            }
        }
        if !plan.latency.is_zero() {
            tokio::time::sleep(plan.latency).await;
        }
        if plan.error_rate > 0.0 && rand::random::<f64>() < plan.error_rate {
            return Err(plan.error);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn disabled_faults_refuse_plans_and_never_fail() {
        let faults = Faults::disabled();
        let plan = FaultPlan {
            error_rate: 1.0,
            ..FaultPlan::default()
        };
        assert!(faults.set(FaultPoint::Store, Some(plan)).is_err());
        assert_eq!(faults.inject(FaultPoint::Store, None).await, Ok(()));
    }

    #[tokio::test]
    async fn plans_apply_to_their_point_and_shards_until_cleared() {
        let faults = Faults::enabled();
        let down = FaultPlan {
            error_rate: 1.0,
            error: FaultKind::Timeout,
            shards: vec![1],
            ..FaultPlan::default()
        };
        faults.set(FaultPoint::IndexSearch, Some(down)).unwrap();
        assert_eq!(
            faults.inject(FaultPoint::IndexSearch, Some(1)).await,
            Err(FaultKind::Timeout)
        );
        assert_eq!(
            faults.inject(FaultPoint::IndexSearch, Some(0)).await,
            Ok(())
        );
        assert_eq!(faults.inject(FaultPoint::Store, None).await, Ok(()));
        faults.set(FaultPoint::IndexSearch, None).unwrap();
        assert_eq!(
            faults.inject(FaultPoint::IndexSearch, Some(1)).await,
            Ok(())
        );
    }

    #[test]
    fn error_rate_is_validated() {
        let faults = Faults::enabled();
        let bad = FaultPlan {
            error_rate: 1.5,
            ..FaultPlan::default()
        };
        assert!(faults.set(FaultPoint::Store, Some(bad)).is_err());
    }
}
