//! Store rows deleted once they are done with, many per transaction when they come fast (one
//! commit per row would cost a disk sync each): outbox messages the server acknowledged and
//! inbox messages the program has handled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use atm_trust::{Store, StoreError};
use tokio::sync::mpsc;

/// Deletes rows by id.
pub(crate) type Remove = fn(&mut Store, &[i64]) -> Result<(), StoreError>;

/// Ids waiting for deletion, and the task that deletes them.
pub(crate) struct Removals {
    store: Arc<Mutex<Store>>,
    remove: Remove,
    /// What the rows are, for the log.
    what: &'static str,
    pending: Arc<Mutex<Vec<i64>>>,
    /// Wakes the task; started on the first id.
    wake: OnceLock<Option<mpsc::UnboundedSender<()>>>,
    /// Set by [`Removals::stop`]: ids pushed later are not deleted.
    stopped: AtomicBool,
}

/// How long the task gathers ids before one commit.
const GATHER: Duration = Duration::from_millis(50);

fn take(pending: &Mutex<Vec<i64>>) -> Vec<i64> {
    std::mem::take(
        &mut *pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// Whether a removal's own commit waits for the disk.
#[derive(Debug, Clone, Copy)]
enum Commit {
    /// It does not ([`Store::unsynced`]): the task's removals between messages. A removal
    /// lost in a power failure repeats a send or a hand-over, as a crash just before it
    /// would; the next message's synced commit makes it durable. Without this, a contact
    /// writing every few seconds would cost the bot a third sync per echo.
    Lazy,
    /// It does: at a stop, the last commit before the store closes.
    Synced,
}

/// Deletes what is queued, taking the queue with the store locked. Every path that takes ids
/// (this, and the store thread's group commits) does so under that lock, so once this has the
/// lock, ids taken earlier are committed and none is on its way.
fn drain(
    store: &Mutex<Store>,
    pending: &Mutex<Vec<i64>>,
    remove: Remove,
    what: &'static str,
    commit: Commit,
) {
    let mut store = store
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ids = take(pending);
    if ids.is_empty() {
        return;
    }
    let removed = match commit {
        Commit::Lazy => store.unsynced(|store| remove(store, &ids)).and_then(|r| r),
        Commit::Synced => remove(&mut store, &ids),
    };
    if let Err(e) = removed {
        tracing::warn!(error = %e, count = ids.len(), "cannot remove {what}");
    }
}

impl Removals {
    pub(crate) fn new(store: Arc<Mutex<Store>>, remove: Remove, what: &'static str) -> Self {
        Self {
            store,
            remove,
            what,
            pending: Arc::default(),
            wake: OnceLock::new(),
            stopped: AtomicBool::new(false),
        }
    }

    /// Queues `id` for deletion. Outside a Tokio runtime it waits for [`Removals::flush`].
    pub(crate) fn push(&self, id: i64) {
        if self.stopped.load(Ordering::SeqCst) {
            tracing::debug!(id, "stopped: keeping one of the {}", self.what);
            return;
        }
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(id);
        let wake = self.wake.get_or_init(|| {
            let runtime = tokio::runtime::Handle::try_current().ok()?;
            let (tx, mut rx) = mpsc::unbounded_channel::<()>();
            let (store, remove, what) = (Arc::clone(&self.store), self.remove, self.what);
            let pending = Arc::clone(&self.pending);
            runtime.spawn(async move {
                // Ends when the owner (and with it the sender) is dropped.
                while rx.recv().await.is_some() {
                    tokio::time::sleep(GATHER).await;
                    while rx.try_recv().is_ok() {}
                    let store = Arc::clone(&store);
                    let pending = Arc::clone(&pending);
                    let _ = tokio::task::spawn_blocking(move || {
                        drain(&store, &pending, remove, what, Commit::Lazy);
                    })
                    .await;
                }
            });
            Some(tx)
        });
        if let Some(wake) = wake {
            let _ = wake.send(());
        }
    }

    /// Takes the ids queued now, to delete them inside a commit that happens anyway (see
    /// [`Removals::remove_in`]). Nothing once stopped.
    pub(crate) fn take(&self) -> Vec<i64> {
        if self.stopped.load(Ordering::SeqCst) {
            return Vec::new();
        }
        take(&self.pending)
    }

    /// Deletes `ids` (from [`Removals::take`]) with the store already locked, inside the
    /// caller's transaction. A failure is logged and the ids go back into the queue.
    pub(crate) fn remove_in(&self, store: &mut Store, ids: Vec<i64>) {
        if ids.is_empty() {
            return;
        }
        if let Err(e) = (self.remove)(store, &ids) {
            tracing::debug!(error = %e, "cannot remove {} in a group; queued again", self.what);
            self.requeue(ids);
        }
    }

    /// Puts ids back into the queue (a group that would have deleted them failed).
    pub(crate) fn requeue(&self, ids: Vec<i64>) {
        if ids.is_empty() {
            return;
        }
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(ids);
    }

    /// Deletes what is queued now, before a clean stop; ids a group commit already took are
    /// committed by the time this returns (see [`drain`]).
    pub(crate) fn flush(&self) {
        drain(
            &self.store,
            &self.pending,
            self.remove,
            self.what,
            Commit::Synced,
        );
    }

    /// Deletes what is queued now and nothing after: at a stop, what is dropped from then on
    /// (events the program never got to) was not done with, and stays for the next start.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.flush();
    }
}
