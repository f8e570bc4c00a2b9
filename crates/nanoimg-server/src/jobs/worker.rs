//! The workers of a local queue: async tasks that take the next job, run its [`pipeline`],
//! record how it ended and tell its watchers. The engine's tensors run on a blocking thread
//! inside the pipeline; a panic anywhere in the pipeline fails that job, never the worker.

use super::queue::LocalQueue;
use super::{pipeline, shared, JobError, JobEvent, LiveJob, Output};
use nanoimg_store::JobStatus;
use std::sync::Arc;

/// Starts the queue's workers.
pub(super) fn spawn(q: &Arc<LocalQueue>) {
    let mut handles = q.workers.lock().expect("workers lock");
    for _ in 0..q.ctx.settings.workers {
        handles.push(tokio::spawn(work(q.clone())));
    }
}

async fn work(q: Arc<LocalQueue>) {
    while let Some(job) = q.next().await {
        let watchdog = stop_after(&job, q.ctx.settings.job_timeout);
        let outcome = pipeline::run(&q.ctx, &job).await;
        watchdog.abort();
        finish(&q, &job, outcome).await;
    }
}

/// Stops `job` once it has run for `limit`: its token is cancelled (the engine stops at the
/// next step, a plan before its next operation) and its end is recorded as a timeout.
fn stop_after(job: &Arc<LiveJob>, limit: std::time::Duration) -> tokio::task::JoinHandle<()> {
    let job = job.clone();
    tokio::spawn(async move {
        tokio::time::sleep(limit).await;
        job.timed_out.store(true, std::sync::atomic::Ordering::Relaxed);
        job.cancel.cancel();
    })
}

/// Records the end of a job, frees its slot and sends its final event.
async fn finish(q: &LocalQueue, job: &Arc<LiveJob>, outcome: Result<Vec<Output>, JobError>) {
    let outcome = match outcome {
        Err(JobError::Cancelled) if q.aborting() => Err(JobError::ShuttingDown(
            "interrupted: the server shut down while this job was running".into(),
        )),
        Err(JobError::Cancelled) if job.timed_out.load(std::sync::atomic::Ordering::Relaxed) => {
            Err(JobError::TimedOut(format!(
                "the job ran past its time limit of {} s (job_timeout_secs) and was stopped",
                q.ctx.settings.job_timeout.as_secs()
            )))
        }
        o => o,
    };
    let (status, event) = match outcome {
        Ok(outputs) => (JobStatus::Succeeded, JobEvent::Succeeded(Arc::new(outputs))),
        Err(JobError::Cancelled) => (JobStatus::Cancelled, JobEvent::Cancelled),
        Err(e) => (JobStatus::Failed, JobEvent::Failed(e)),
    };
    let result = match &event {
        JobEvent::Succeeded(outs) => Some(serde_json::json!({
            "images": outs.iter().map(|o| {
                let mut item = serde_json::json!({
                    "id": o.asset.id, "seed": o.seed, "text_tokens": o.text_tokens,
                });
                if let Some(v) = &o.version {
                    item["version"] = v.clone().into();
                }
                item
            }).collect::<Vec<_>>(),
        })),
        // The code, for an API node that reads the outcome from the store.
        JobEvent::Failed(e) if job.attempt.is_some() => Some(serde_json::json!({"code": e.code()})),
        _ => None,
    };
    let error = match &event {
        JobEvent::Failed(e) => Some(e.record_message()),
        JobEvent::Cancelled => Some(JobError::Cancelled.record_message()),
        _ => None,
    };
    if job.attempt.is_some() {
        shared::finish_claimed(&q.ctx, job, status, &event, result.as_ref(), error.as_deref()).await;
    } else if let Err(e) = q
        .ctx
        .store
        .system()
        .job_finished(&job.tenant_id, &job.id, status, result.as_ref(), error.as_deref())
        .await
    {
        tracing::error!(job = %job.id, error = %e, "recording a finished job failed");
    }
    q.ctx.count(job.kind, status.as_str());
    q.release(job);
    job.emit(event);
}
