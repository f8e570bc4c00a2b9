//! Why a job was refused or did not succeed: one enum from admission to the final event, turned
//! into the HTTP error once ([`From<JobError> for ApiError`](crate::error::ApiError)). A worker
//! on the shared queue records [`JobError::code`], so an API node answers with the same error.

use nanoimg_edit::EditError;
use nanoimg_engine::EngineError;
use nanoimg_store::StoreError;

/// A refused or failed job.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    /// The client (or an erasure) cancelled it.
    #[error("the job was cancelled")]
    Cancelled,
    /// The server is stopping: not admitted, or interrupted.
    #[error("{0}")]
    ShuttingDown(String),
    /// The tenant has `max` jobs queued or running already.
    #[error("this account already has {active} jobs queued or running; the limit is {max}")]
    TooManyJobs { active: usize, max: usize },
    /// The server's queue is at capacity.
    #[error("the server's queue is full ({0} jobs waiting); try again shortly")]
    QueueFull(usize),
    /// A parameter the engine or the plan refused when the job ran.
    #[error("{0}")]
    InvalidValue(String),
    /// An input image that does not decode within the upload limits.
    #[error("{0}")]
    InvalidImage(String),
    /// An input (image, mask, character, session) was deleted before the job read it.
    #[error("{0}")]
    InputUnavailable(String),
    /// An output refused by the image safety layer.
    #[error("{message}")]
    ModerationBlocked {
        message: String,
        categories: Vec<String>,
    },
    /// The job's model cannot be loaded.
    #[error("{0}")]
    ModelUnavailable(String),
    /// The worker running it stopped answering and the job was not handed on.
    #[error("{0}")]
    WorkerLost(String),
    /// It ran past `job_timeout_secs` and was stopped.
    #[error("{0}")]
    TimedOut(String),
    /// Anything else; the message is safe to show (it names no secret).
    #[error("{0}")]
    Internal(String),
}

impl JobError {
    /// The stable code clients see and the shared queue records.
    pub fn code(&self) -> &'static str {
        match self {
            JobError::Cancelled => "job_cancelled",
            JobError::ShuttingDown(_) => "shutting_down",
            JobError::TooManyJobs { .. } => "concurrent_jobs_exceeded",
            JobError::QueueFull(_) => "queue_full",
            JobError::InvalidValue(_) => "invalid_value",
            JobError::InvalidImage(_) => "invalid_image",
            JobError::InputUnavailable(_) => "input_unavailable",
            JobError::ModerationBlocked { .. } => "moderation_blocked",
            JobError::ModelUnavailable(_) => "model_unavailable",
            JobError::WorkerLost(_) => "worker_lost",
            JobError::TimedOut(_) => "job_timeout",
            JobError::Internal(_) => "internal_error",
        }
    }

    /// The error a job record stands for: its recorded code and message (a worker wrote them).
    /// Unknown codes read as internal errors.
    pub fn from_record(code: Option<&str>, message: String) -> Self {
        match code {
            Some("job_cancelled") => JobError::Cancelled,
            Some("shutting_down") => JobError::ShuttingDown(message),
            Some("invalid_value") => JobError::InvalidValue(message),
            Some("invalid_image") => JobError::InvalidImage(message),
            Some("input_unavailable") => JobError::InputUnavailable(message),
            Some("moderation_blocked") => JobError::ModerationBlocked {
                message,
                categories: vec!["sexual".into()],
            },
            Some("model_unavailable") => JobError::ModelUnavailable(message),
            Some("worker_lost") => JobError::WorkerLost(message),
            Some("job_timeout") => JobError::TimedOut(message),
            _ => JobError::Internal(message),
        }
    }

    /// An internal failure, logged with its detail.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "job failed");
        JobError::Internal(format!("the job failed: {e}"))
    }

    /// What the job record keeps as its error text.
    pub fn record_message(&self) -> String {
        match self {
            JobError::Cancelled => "cancelled by the client".into(),
            e => e.to_string(),
        }
    }
}

impl From<EngineError> for JobError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Cancelled => JobError::Cancelled,
            EngineError::InvalidParam(p) => JobError::InvalidValue(p.to_string()),
            e => JobError::internal(e),
        }
    }
}

impl From<EditError> for JobError {
    fn from(e: EditError) -> Self {
        match e {
            EditError::Cancelled => JobError::Cancelled,
            e => JobError::InvalidValue(e.to_string()),
        }
    }
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => JobError::InputUnavailable(format!("no such {what}")),
            e => JobError::internal(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_recorded_code_reads_back_as_the_same_error() {
        let all = [
            JobError::Cancelled,
            JobError::ShuttingDown("m".into()),
            JobError::InvalidValue("m".into()),
            JobError::InvalidImage("m".into()),
            JobError::InputUnavailable("m".into()),
            JobError::ModerationBlocked {
                message: "m".into(),
                categories: vec!["sexual".into()],
            },
            JobError::ModelUnavailable("m".into()),
            JobError::WorkerLost("m".into()),
            JobError::TimedOut("m".into()),
            JobError::Internal("m".into()),
        ];
        for e in all {
            let back = JobError::from_record(Some(e.code()), "m".into());
            assert_eq!(back, e, "{}", e.code());
        }
        assert_eq!(
            JobError::from_record(Some("made_up"), "x".into()).code(),
            "internal_error"
        );
    }
}
