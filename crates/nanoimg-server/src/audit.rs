//! Audit events from the server. Admin actions are written before the response
//! ([`Auditor::record`]); high-volume events such as rejections go through a bounded queue to a
//! background writer ([`Auditor::record_later`]) so that under a flood refusing stays cheap. Both
//! end in the store's one audit writer. A timer signs the chain's head while there are new
//! events ([`Store::audit_checkpoint`]) and logs each checkpoint, so the log is a witness too.

use crate::metrics::Metrics;
use nanoimg_store::{AuditEvent, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Clone)]
pub struct Auditor {
    store: Store,
    later: mpsc::Sender<AuditEvent>,
    metrics: Arc<Metrics>,
}

impl Auditor {
    /// Starts the background writer and the checkpoint timer on the current runtime.
    pub fn start(store: Store, metrics: Arc<Metrics>, checkpoint_every: Duration) -> Self {
        let (tx, mut rx) = mpsc::channel::<AuditEvent>(1024);
        let writer = store.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if let Err(e) = writer.system().audit(ev).await {
                    tracing::error!(error = %e, "audit write failed");
                }
            }
        });
        let auditor = Self {
            store,
            later: tx,
            metrics,
        };
        let timer = auditor.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(checkpoint_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                timer.checkpoint().await;
            }
        });
        auditor
    }

    /// Signs the chain's head if there are events since the last checkpoint, and logs it.
    pub async fn checkpoint(&self) {
        match self.store.system().audit_checkpoint().await {
            Ok(Some(c)) => {
                tracing::info!(seq = c.seq, hash = %c.hash, signature = %c.signature, "audit checkpoint")
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "audit checkpoint failed"),
        }
    }

    /// Writes an event now; a failure is logged (the action itself already happened).
    pub async fn record(&self, ev: AuditEvent) {
        if let Err(e) = self.store.system().audit(ev).await {
            tracing::error!(error = %e, "audit write failed");
        }
    }

    /// Queues an event for the background writer; counted and dropped if it is saturated.
    pub fn record_later(&self, ev: AuditEvent) {
        if self.later.try_send(ev).is_err() {
            self.metrics.audit_dropped.inc();
        }
    }
}
