//! The `cccgate.v1.Admin` service: what is in force and why, and "reload now".

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cccgate_proto::v1::admin_server::Admin;
use cccgate_proto::v1::{
    CertificateCounts, GetStatusRequest, GetStatusResponse, ReloadOutcome as WireOutcome,
    ReloadRequest, ReloadResponse, SnapshotInfo,
};
use tonic::{Request, Response, Status};

use crate::decision_log::DecisionLog;
use crate::reload::{Refusal, ReloadOutcome, Reloader, Trigger};
use crate::store::Loaded;

/// The Admin service.
#[derive(Debug, Clone)]
pub(crate) struct AdminService {
    reloader: Arc<Reloader>,
    log: Option<DecisionLog>,
    passes: Arc<SharedPasses>,
}

impl AdminService {
    pub(crate) fn new(reloader: Arc<Reloader>, log: Option<DecisionLog>) -> Self {
        AdminService {
            reloader,
            log,
            passes: Arc::default(),
        }
    }
}

/// `Reload` calls that arrive together share one pass: a call waits for the pass in progress
/// (which may have started before it arrived) to end, then either takes the outcome of a pass
/// that started after it arrived, or runs one itself for every call waiting by then.
#[derive(Debug, Default)]
pub(crate) struct SharedPasses {
    /// Calls that have arrived, ever.
    arrived: AtomicU64,
    /// Serialises passes; holds the last pass's outcome and the arrivals it answers.
    last: tokio::sync::Mutex<(u64, Option<ReloadOutcome>)>,
    /// Passes run (for tests).
    pub(crate) runs: AtomicU64,
}

impl SharedPasses {
    /// Runs `pass`, or shares the outcome of one that started after this call arrived.
    pub(crate) async fn run<F, Fut>(&self, pass: F) -> ReloadOutcome
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ReloadOutcome>,
    {
        let me = self.arrived.fetch_add(1, Ordering::SeqCst) + 1;
        let mut last = self.last.lock().await;
        if let (answers, Some(outcome)) = &*last
            && *answers >= me
        {
            return outcome.clone();
        }
        // Every call that has arrived by now started waiting before this pass starts.
        let answers = self.arrived.load(Ordering::SeqCst);
        self.runs.fetch_add(1, Ordering::Relaxed);
        let outcome = pass().await;
        *last = (answers, Some(outcome.clone()));
        outcome
    }
}

fn snapshot_info(l: &Loaded) -> SnapshotInfo {
    let s = &l.snapshot;
    let c = s.counts();
    SnapshotInfo {
        sequence: s.sequence(),
        content_id: s.content_id().to_owned(),
        source: s.source().to_owned(),
        generated_at: s.generated_at().to_owned(),
        built_at_unix_ms: s.built_at_unix_ms(),
        loaded_at_unix_ms: l.loaded_at_unix_ms,
        origin: l.origin.clone(),
        byte_len: s.byte_len() as u64,
        counts: Some(CertificateCounts {
            total: c.total,
            valid: c.by_status[0],
            suspended: c.by_status[1],
            revoked: c.by_status[2],
            cancelled: c.by_status[3],
            expired: c.by_status[4],
        }),
    }
}

fn refusal_to_wire(r: &Refusal) -> cccgate_proto::v1::Refusal {
    cccgate_proto::v1::Refusal {
        path: r.path.display().to_string(),
        reason: r.reason.clone(),
        at_unix_ms: r.at_unix_ms,
        kind: r.kind.as_str().to_owned(),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn get_status(
        &self,
        _req: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        let state = &self.reloader.state;
        let loaded = self.reloader.reader().load_full();
        Ok(Response::new(GetStatusResponse {
            snapshot: loaded.as_deref().map(snapshot_info),
            last_refusal: state.last_refusal().as_ref().map(refusal_to_wire),
            uptime_seconds: state.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            reloads_loaded: state.loaded.load(Ordering::Relaxed),
            reloads_refused: state.refused.load(Ordering::Relaxed),
            decision_log_dropped: self.log.as_ref().map_or(0, DecisionLog::dropped),
        }))
    }

    async fn reload(
        &self,
        _req: Request<ReloadRequest>,
    ) -> Result<Response<ReloadResponse>, Status> {
        let reloader = Arc::clone(&self.reloader);
        let outcome = self
            .passes
            .run(|| async move { reloader.reload(Trigger::Explicit).await })
            .await;
        let sequence = self.reloader.reader().sequence().unwrap_or(0);
        let (outcome, message) = match outcome {
            ReloadOutcome::Loaded { sequence, origin } => (
                WireOutcome::Loaded,
                format!("snapshot {sequence} from {origin} is in force"),
            ),
            ReloadOutcome::Unchanged => (
                WireOutcome::Unchanged,
                format!("nothing newer than snapshot {sequence}"),
            ),
            ReloadOutcome::Refused(r) => (
                WireOutcome::Refused,
                format!(
                    "refused {} {}: {}; snapshot {sequence} stays in force",
                    r.kind.as_str(),
                    r.path.display(),
                    r.reason
                ),
            ),
            ReloadOutcome::NotWatching => (
                WireOutcome::NotWatching,
                "serving the embedded sample: no snapshot directory to look in".to_owned(),
            ),
        };
        Ok(Response::new(ReloadResponse {
            outcome: outcome as i32,
            snapshot_sequence: sequence,
            message,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_that_arrive_together_share_one_pass() {
        let passes = Arc::new(SharedPasses::default());
        let (release, gate) = tokio::sync::watch::channel(false);
        // The first pass is held open while 50 more calls arrive.
        let first = tokio::spawn({
            let passes = Arc::clone(&passes);
            let mut gate = gate.clone();
            async move {
                passes
                    .run(|| async move {
                        let _ = gate.wait_for(|g| *g).await;
                        ReloadOutcome::Unchanged
                    })
                    .await
            }
        });
        while passes.runs.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        let waiting: Vec<_> = (0..50)
            .map(|_| {
                let passes = Arc::clone(&passes);
                tokio::spawn(
                    async move { passes.run(|| async { ReloadOutcome::NotWatching }).await },
                )
            })
            .collect();
        while passes.arrived.load(Ordering::SeqCst) < 51 {
            tokio::task::yield_now().await;
        }
        release.send(true).unwrap();
        assert!(matches!(first.await.unwrap(), ReloadOutcome::Unchanged));
        for w in waiting {
            assert!(matches!(w.await.unwrap(), ReloadOutcome::NotWatching));
        }
        // The one in progress, and one more for all 50 that arrived during it.
        assert_eq!(passes.runs.load(Ordering::Relaxed), 2);
    }
}
