//! The local queue's state: waiting jobs per tenant, taken in turn (round robin), so one
//! tenant's burst never starves another; the counts admission checks; the live jobs.

use super::LiveJob;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

#[derive(Default)]
pub(super) struct QueueState {
    pub(super) waiting: HashMap<String, VecDeque<Arc<LiveJob>>>,
    /// Tenants with waiting jobs, in round-robin order.
    pub(super) turn: VecDeque<String>,
    pub(super) queued: usize,
    pub(super) running: usize,
    /// Queued + running, per tenant.
    pub(super) active: HashMap<String, usize>,
    pub(super) live: HashMap<String, Arc<LiveJob>>,
    pub(super) stopping: bool,
    /// Set when the grace period is over: running jobs are being cancelled.
    pub(super) aborting: bool,
}

impl QueueState {
    pub(super) fn push(&mut self, job: Arc<LiveJob>) {
        let q = self.waiting.entry(job.tenant_id.clone()).or_default();
        if q.is_empty() {
            self.turn.push_back(job.tenant_id.clone());
        }
        q.push_back(job);
    }

    /// The next job, taking tenants in turn.
    pub(super) fn pop(&mut self) -> Option<Arc<LiveJob>> {
        let tenant = self.turn.pop_front()?;
        let q = self.waiting.get_mut(&tenant)?;
        let job = q.pop_front();
        if q.is_empty() {
            self.waiting.remove(&tenant);
        } else {
            self.turn.push_back(tenant);
        }
        job
    }

    pub(super) fn remove_waiting(&mut self, id: &str, tenant: &str) -> Option<Arc<LiveJob>> {
        let q = self.waiting.get_mut(tenant)?;
        let i = q.iter().position(|j| j.id == id)?;
        let job = q.remove(i);
        if q.is_empty() {
            self.waiting.remove(tenant);
            self.turn.retain(|t| t != tenant);
        }
        job
    }

    pub(super) fn release(&mut self, tenant: &str) {
        if let Some(n) = self.active.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                self.active.remove(tenant);
            }
        }
    }
}
