//! The store's own thread: every [`OmemoManager::with_store`] call runs there, and calls that
//! queue up while it is busy run together as one group commit.
//!
//! Each turn of the thread runs the calls waiting at that moment inside one
//! [`Store::begin_group`] transaction: one call when they come one at a time, several under
//! load (several contacts' messages at once), which then reach the disk with one commit and
//! one sync. Store rows waiting for deletion (acknowledged outbox messages, handled inbox
//! messages) are deleted in a turn that writes anyway, instead of costing a sync of their own. No result leaves the thread before the commit that
//! made it durable: a decrypted message reaches the program, and a stanza the wire, only
//! after it. If the group's commit fails, every call of the group gets an error and nothing
//! of it is stored.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};

use atm_trust::Store;
use tokio::sync::oneshot;

use super::{lock, OmemoError};
use crate::removal::Removals;

/// Hands its result to the caller once the commit it depends on is known: `Ok` when it is
/// durable, the error otherwise.
type Deliver = Box<dyn FnOnce(Result<(), OmemoError>) + Send>;

/// One call: runs on the store and returns how to hand its result over.
type Job = Box<dyn FnOnce(&mut Store) -> Deliver + Send>;

/// The most calls in one group commit (a bound on how long the first one waits).
pub(crate) const MAX_GROUP: usize = 64;

/// The sending side of the store thread. The thread ends when this is dropped.
pub(crate) struct StoreThread {
    jobs: mpsc::Sender<Job>,
    /// Calls queued and not yet taken by the thread.
    waiting: Arc<AtomicUsize>,
}

impl StoreThread {
    /// Starts the thread. It holds the store only while it runs calls, so the store closes
    /// when its other owners drop it.
    /// The ids waiting in `removals` are deleted inside the next commit that writes anyway.
    pub(crate) fn start(
        store: Weak<Mutex<Store>>,
        removals: Vec<Arc<Removals>>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let waiting = Arc::new(AtomicUsize::new(0));
        let taken = Arc::clone(&waiting);
        std::thread::Builder::new()
            .name("omemo-store".to_owned())
            .spawn(move || run(&store, &removals, &rx, &taken))?;
        Ok(Self { jobs: tx, waiting })
    }

    /// Calls queued and not yet started.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Runs `f` on the store thread; its result comes back once what it changed is committed.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T, OmemoError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> T + Send + 'static,
    {
        self.submit(f)?.await.map_err(|_| OmemoError::Task)?
    }

    /// Queues `f`; the receiver gets its result once what it changed is committed.
    fn submit<T, F>(&self, f: F) -> Result<oneshot::Receiver<Result<T, OmemoError>>, OmemoError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, OmemoError>>();
        let job: Job = Box::new(move |store: &mut Store| {
            let outcome = catch_unwind(AssertUnwindSafe(|| f(store)));
            Box::new(move |committed: Result<(), OmemoError>| {
                let result = match outcome {
                    Ok(value) => committed.map(|()| value),
                    Err(_) => Err(OmemoError::Task),
                };
                let _ = tx.send(result);
            })
        });
        self.waiting.fetch_add(1, Ordering::SeqCst);
        if self.jobs.send(job).is_err() {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(OmemoError::Task);
        }
        Ok(rx)
    }
}

fn run(
    store: &Weak<Mutex<Store>>,
    removals: &[Arc<Removals>],
    rx: &mpsc::Receiver<Job>,
    waiting: &AtomicUsize,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        waiting.fetch_sub(jobs.len(), Ordering::SeqCst);
        let Some(store) = store.upgrade() else {
            // The manager is gone: the callers get errors (their receivers are dropped).
            return;
        };
        let mut store = lock(&store);
        if let Err(e) = store.begin_group() {
            // Without a group each call commits its own transactions.
            tracing::debug!(error = %e, "cannot open a group commit; committing one by one");
            let delivers: Vec<Deliver> = jobs.into_iter().map(|job| job(&mut store)).collect();
            drop(store);
            delivers.into_iter().for_each(|deliver| deliver(Ok(())));
            continue;
        }
        let mut delivers = Vec::with_capacity(jobs.len());
        let mut jobs = jobs.into_iter();
        for job in jobs.by_ref() {
            delivers.push(job(&mut store));
            if !store.group_intact() {
                break;
            }
        }
        // Calls that did not run (the group was lost under them) fail without running.
        let not_run: Vec<Job> = jobs.collect();
        // Rows waiting for deletion ride along with a commit that syncs the disk anyway.
        let mut taken = Vec::new();
        if store.group_intact() && store.group_has_writes() {
            for removal in removals {
                let ids = removal.take();
                removal.remove_in(&mut store, ids.clone());
                taken.push((removal, ids));
            }
        }
        let committed = store.commit_group();
        drop(store);
        let failed =
            || OmemoError::Store(atm_trust::StoreError::GroupState("the group commit failed"));
        match committed {
            Ok(()) => delivers.into_iter().for_each(|deliver| deliver(Ok(()))),
            Err(e) => {
                tracing::warn!(error = %e, calls = delivers.len(), "a group commit failed; none of its calls took effect");
                for (removal, ids) in taken {
                    removal.requeue(ids);
                }
                delivers
                    .into_iter()
                    .for_each(|deliver| deliver(Err(failed())));
            }
        }
        drop(not_run);
    }
}

#[cfg(test)]
mod tests {
    use atm_trust::{Namespace, SessionUpdate};
    use omemo_crypto::DeviceId;

    use super::*;

    fn encrypt_for(device: u32) -> impl FnOnce(&mut Store) -> atm_trust::Result<()> + Send {
        move |store: &mut Store| {
            store.commit_encryption(
                Namespace::Omemo2,
                &[SessionUpdate {
                    jid: "a@example.org",
                    device_id: DeviceId::new(device).unwrap(),
                    session_state: b"state",
                }],
                1,
            )
        }
    }

    fn committed(observer: &Store, device: u32) -> bool {
        observer
            .load_session(
                Namespace::Omemo2,
                "a@example.org",
                DeviceId::new(device).unwrap(),
            )
            .unwrap()
            .is_some()
    }

    #[tokio::test]
    async fn calls_that_wait_together_share_one_commit_and_return_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let store = Arc::new(Mutex::new(Store::open(&path).unwrap()));
        // Another connection sees only what is committed.
        let observer = Store::open(&path).unwrap();
        let thread = StoreThread::start(Arc::downgrade(&store), Vec::new()).unwrap();

        // Control: calls made one after the other commit one by one.
        let before = lock(&store).commits();
        for device in 1..=3 {
            thread.call(encrypt_for(device)).await.unwrap().unwrap();
            assert!(committed(&observer, device));
        }
        assert_eq!(lock(&store).commits(), before + 3);

        // A call holds the thread until three more are queued behind it.
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let blocker = thread
            .submit(move |_store: &mut Store| {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            })
            .unwrap();
        started_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        assert_eq!(thread.waiting(), 0, "the running call is not waiting");
        let waiting: Vec<_> = (4..=6)
            .map(|device| thread.submit(encrypt_for(device)).unwrap())
            .collect();
        assert_eq!(thread.waiting(), 3);
        release_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        for result in waiting {
            result.await.unwrap().unwrap().unwrap();
            // Whichever result comes first, all three are on the disk by then.
            assert!((4..=6).all(|device| committed(&observer, device)));
        }
        assert_eq!(lock(&store).commits(), before + 4);
        assert_eq!(thread.waiting(), 0);
    }

    #[tokio::test]
    async fn a_panicking_call_fails_alone() {
        let store = Arc::new(Mutex::new(Store::open_in_memory().unwrap()));
        let thread = StoreThread::start(Arc::downgrade(&store), Vec::new()).unwrap();
        let failed = thread
            .call(|_store: &mut Store| -> u32 { panic!("boom") })
            .await;
        assert!(matches!(failed, Err(OmemoError::Task)));
        assert_eq!(thread.call(|_store: &mut Store| 7).await.unwrap(), 7);
    }

    #[test]
    fn waiting_removals_ride_along_with_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Mutex::new(
            Store::open(dir.path().join("s.sqlite")).unwrap(),
        ));
        let ids: Vec<i64> = (0..3)
            .map(|n| {
                lock(&store)
                    .commit_encryption_queued(Namespace::Omemo2, &[], n, "<message/>", &[])
                    .unwrap()
            })
            .collect();
        // Outside a runtime the removals wait for whoever deletes them (no timer).
        let removals = Arc::new(Removals::new(
            Arc::clone(&store),
            Store::outbox_remove,
            "test rows",
        ));
        let thread =
            StoreThread::start(Arc::downgrade(&store), vec![Arc::clone(&removals)]).unwrap();
        for id in &ids[..2] {
            removals.push(*id);
        }
        // A call that writes nothing leaves them queued.
        let before = lock(&store).commits();
        futures::executor::block_on(thread.call(|store: &mut Store| store.outbox().unwrap()))
            .unwrap();
        assert_eq!(lock(&store).outbox().unwrap().len(), 3);
        // A call that writes takes them along, in its one commit.
        futures::executor::block_on(thread.call(encrypt_for(1)))
            .unwrap()
            .unwrap();
        let outbox: Vec<i64> = lock(&store)
            .outbox()
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(outbox, [ids[2]]);
        assert_eq!(lock(&store).commits(), before + 1);
    }
}
