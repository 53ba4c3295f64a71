//! The `cccgate.v1.Admin` service: what is in force and why, and "reload now".

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cccgate_proto::v1::admin_server::Admin;
use cccgate_proto::v1::{
    CandidateInfo, CertificateCounts, DiscardCandidateRequest, DiscardCandidateResponse,
    GetStatusRequest, GetStatusResponse, PromoteCandidateRequest, PromoteCandidateResponse,
    ReloadOutcome as WireOutcome, ReloadRequest, ReloadResponse, SnapshotInfo,
};
use tonic::{Request, Response, Status};

use crate::decision_log::DecisionLog;
use crate::reload::{Refusal, ReloadOutcome, Reloader, Trigger};
use crate::shadow::Shadow;
use crate::store::Loaded;

/// The Admin service.
#[derive(Debug, Clone)]
pub(crate) struct AdminService {
    reloader: Arc<Reloader>,
    log: Option<DecisionLog>,
    passes: Arc<SharedPasses>,
    shadow: Option<Arc<Shadow>>,
}

impl AdminService {
    pub(crate) fn new(reloader: Arc<Reloader>, log: Option<DecisionLog>) -> Self {
        AdminService {
            reloader,
            log,
            passes: Arc::default(),
            shadow: None,
        }
    }

    /// With shadow evaluation of a candidate register.
    pub(crate) fn with_shadow(mut self, shadow: Option<Arc<Shadow>>) -> Self {
        self.shadow = shadow;
        self
    }

    /// The candidate register's shadow evaluation, when `--candidate-dir` is set.
    pub(crate) fn shadow(&self) -> Option<&Arc<Shadow>> {
        self.shadow.as_ref()
    }

    /// One reload pass, shared with the calls that arrive together.
    async fn reload_pass(&self) -> ReloadOutcome {
        let reloader = Arc::clone(&self.reloader);
        self.passes
            .run(|| async move { reloader.reload(Trigger::Explicit).await })
            .await
    }

    /// Puts the candidate in force (`expected`: the sequence the operator saw, 0: any), through
    /// a reload pass and its checks. For `Admin.PromoteCandidate` and the console's button.
    pub(crate) async fn promote(&self, expected: u64) -> Result<PromoteCandidateResponse, Status> {
        let (shadow, candidate) = self.candidate(expected)?;
        let sequence = candidate.snapshot.sequence();
        let reader = self.reloader.reader();
        let Some(dir) = self
            .reloader
            .snapshot_dir()
            .map(std::path::Path::to_path_buf)
        else {
            return Err(Status::failed_precondition(
                "no snapshot directory (the embedded sample is served): nowhere to put the candidate in force from",
            ));
        };
        if let Some(in_force) = reader.sequence()
            && sequence <= in_force
        {
            return Err(Status::failed_precondition(format!(
                "candidate {sequence} is not above the snapshot in force ({in_force}): a reload would not put it in force"
            )));
        }
        let from = std::path::PathBuf::from(&candidate.origin);
        let written = tokio::task::spawn_blocking(move || copy_candidate(&from, &dir, sequence))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::failed_precondition(format!("candidate {sequence}: {e}")))?;
        let outcome = self.reload_pass().await;
        let now = reader.load_full();
        if let Some(l) = now.as_ref().filter(|l| {
            l.snapshot.sequence() == sequence
                && l.snapshot.content_id() == candidate.snapshot.content_id()
        }) {
            shadow.promoted(&candidate);
            return Ok(PromoteCandidateResponse {
                snapshot_sequence: sequence,
                message: format!("candidate {sequence} is in force, from {}", l.origin),
            });
        }
        // Not in force: the files copied are taken back, and the refusal is the answer.
        for path in &written {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a refused candidate's copy");
            }
        }
        let in_force = now.map_or(0, |l| l.snapshot.sequence());
        let why = match outcome {
            ReloadOutcome::Refused(r) => r.reason,
            other => format!("the reload pass ended {other:?}"),
        };
        Err(Status::failed_precondition(format!(
            "candidate {sequence} refused: {why}; snapshot {in_force} stays in force"
        )))
    }

    /// Drops the candidate (`expected` as for [`AdminService::promote`]). For
    /// `Admin.DiscardCandidate` and the console's button.
    pub(crate) async fn discard(&self, expected: u64) -> Result<DiscardCandidateResponse, Status> {
        let (shadow, candidate) = self.candidate(expected)?;
        let sequence = candidate.snapshot.sequence();
        if !shadow.discard(&candidate) {
            return Err(Status::failed_precondition(
                "the candidate changed meanwhile; look at GetStatus and try again",
            ));
        }
        Ok(DiscardCandidateResponse {
            discarded_sequence: sequence,
            message: format!(
                "candidate {sequence} discarded; a newer file in {} becomes the candidate at the next Reload",
                shadow.dir().display()
            ),
        })
    }

    /// The candidate, checked against the sequence the caller expects (0: any).
    fn candidate(&self, expected: u64) -> Result<(&Arc<Shadow>, Arc<Loaded>), Status> {
        let shadow = self.shadow.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "no candidate register: start the gateway with --candidate-dir",
            )
        })?;
        let candidate = shadow.candidate().ok_or_else(|| {
            Status::failed_precondition(format!(
                "no candidate: no valid snapshot in {} newer than the last one discarded",
                shadow.dir().display()
            ))
        })?;
        let sequence = candidate.snapshot.sequence();
        if expected != 0 && expected != sequence {
            return Err(Status::failed_precondition(format!(
                "the candidate is sequence {sequence}, not {expected}"
            )));
        }
        Ok((shadow, candidate))
    }
}

/// Copies a candidate file (and its signature, first) into the snapshot directory with atomic
/// writes; returns the paths written.
fn copy_candidate(
    from: &std::path::Path,
    snapshot_dir: &std::path::Path,
    sequence: u64,
) -> Result<Vec<std::path::PathBuf>, String> {
    let to = cccgate_snapshot::SnapshotDir::new(snapshot_dir).snapshot_path(sequence);
    if to.exists() {
        return Err(format!(
            "{} already exists: Admin.Reload decides whether it is put in force",
            to.display()
        ));
    }
    let mut written = Vec::new();
    let sig = cccgate_loader::snapshot_signature_path(from);
    let pairs = [
        (sig.clone(), cccgate_loader::snapshot_signature_path(&to)),
        (from.to_path_buf(), to),
    ];
    for (src, dst) in pairs {
        if src == sig && !src.exists() {
            continue;
        }
        let bytes = std::fs::read(&src).map_err(|e| format!("{}: {e}", src.display()))?;
        cccgate_snapshot::write_file_atomic(&dst, &[&bytes]).map_err(|e| e.to_string())?;
        written.push(dst);
    }
    Ok(written)
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
            candidate: self.shadow.as_ref().and_then(|shadow| {
                shadow.candidate().map(|c| CandidateInfo {
                    snapshot: Some(snapshot_info(&c)),
                    sample: shadow.sample(),
                    shadow_checks: shadow.checks.load(Ordering::Relaxed),
                    disagreements: shadow.disagreements.load(Ordering::Relaxed),
                    dropped: shadow.dropped.load(Ordering::Relaxed),
                })
            }),
        }))
    }

    async fn promote_candidate(
        &self,
        req: Request<PromoteCandidateRequest>,
    ) -> Result<Response<PromoteCandidateResponse>, Status> {
        self.promote(req.into_inner().expected_sequence)
            .await
            .map(Response::new)
    }

    async fn discard_candidate(
        &self,
        req: Request<DiscardCandidateRequest>,
    ) -> Result<Response<DiscardCandidateResponse>, Status> {
        self.discard(req.into_inner().expected_sequence)
            .await
            .map(Response::new)
    }

    async fn reload(
        &self,
        _req: Request<ReloadRequest>,
    ) -> Result<Response<ReloadResponse>, Status> {
        let outcome = self.reload_pass().await;
        if let Some(shadow) = &self.shadow {
            let (shadow, reloader) = (Arc::clone(shadow), Arc::clone(&self.reloader));
            let _ = tokio::task::spawn_blocking(move || shadow.refresh(&reloader)).await;
        }
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
