//! The outbox: every encrypted stanza is stored before it is sent and leaves once the
//! server acknowledged it; unacknowledged ones are sent again after reconnects and restarts.

use super::*;

impl OmemoManager {
    /// Sends a message from the outbox; it leaves the outbox once the server acknowledged it.
    pub(super) async fn send_queued(
        &self,
        outbox_id: i64,
        message: Message,
    ) -> Result<(), OmemoError> {
        let delivery = self
            .connection
            .send_tracked(message.clone())
            .await
            .map_err(|_| OmemoError::Closed)?;
        self.watch(outbox_id, message, delivery);
        Ok(())
    }

    /// Waits in the background for the server to acknowledge an outbox message; a message lost
    /// with a stream that could not be resumed is sent again at once, up to [`LOST_RESENDS`]
    /// times.
    pub(super) fn watch(
        &self,
        outbox_id: i64,
        message: Message,
        mut delivery: crate::connection::Delivery,
    ) {
        let acknowledged = Arc::clone(&self.acknowledged);
        let connection = self.connection.clone();
        let store = Arc::clone(&self.store);
        tokio::spawn(async move {
            for resent in 0.. {
                // Without stream management no acknowledgement ever comes: stop waiting at
                // some point (the entry expires from the outbox later).
                match tokio::time::timeout(OUTBOX_MAX_AGE, delivery.acknowledged()).await {
                    Ok(true) => {
                        acknowledged.push(outbox_id);
                        return;
                    }
                    // Lost with a stream that could not be resumed. The next fresh session
                    // resends the outbox, but may have done so before this message was
                    // committed: send it again now (the recipient's ratchet drops a copy that
                    // did arrive), unless it was sent too often already.
                    Ok(false) if resent < LOST_RESENDS => {
                        let counted = count_send(Arc::clone(&store), outbox_id).await;
                        if !matches!(counted, Some(sends) if sends <= MAX_SENDS) {
                            return;
                        }
                        match connection.send_tracked(message.clone()).await {
                            Ok(again) => delivery = again,
                            Err(_) => return, // the connection was closed for good
                        }
                    }
                    _ => {
                        tracing::debug!(
                            outbox_id,
                            "message not acknowledged; it stays in the outbox"
                        );
                        return;
                    }
                }
            }
        });
    }

    /// Sends again what the outbox holds, on every fresh (not resumed) session: messages a
    /// previous process committed but may not have got to the server, and messages lost with
    /// a connection that could not be resumed. A copy that did arrive is dropped by the
    /// recipient's ratchet as a duplicate, so sending one too many is harmless.
    ///
    /// The messages go one at a time, each after the previous one was acknowledged, and a
    /// lost stream ends the round: a message the server refuses (it closes the stream for it)
    /// is then the only one whose sends are counted, and after [`MAX_SENDS`] it is dropped with
    /// a warning while the messages behind it go out.
    pub async fn resend_outbox(&self) -> Result<(), OmemoError> {
        // One round at a time; a round whose stream was lost ends soon.
        let _round = self.resending.lock().await;
        let before = now().saturating_sub(OUTBOX_MAX_AGE.as_secs());
        let (expired, rows) = self
            .with_store(move |store| {
                Ok::<_, StoreError>((store.outbox_expire(before)?, store.outbox()?))
            })
            .await??;
        if expired > 0 {
            tracing::warn!(
                expired,
                "dropped outbox messages the server never acknowledged"
            );
        }
        let mut resent = 0usize;
        let mut wait_for_acks = true;
        for (outbox_id, text) in rows {
            let parsed = text
                .parse::<Element>()
                .ok()
                .and_then(|element| Message::try_from(element).ok());
            let Some(message) = parsed.filter(|_| check_size(text.len()).is_ok()) else {
                tracing::warn!(
                    outbox_id,
                    bytes = text.len(),
                    "unreadable or oversized message in the outbox; dropping it"
                );
                self.with_store(move |store| store.outbox_remove(&[outbox_id]))
                    .await??;
                continue;
            };
            match count_send(Arc::clone(&self.store), outbox_id).await {
                Some(sends) if sends <= MAX_SENDS => {}
                _ => continue, // acknowledged meanwhile, or dropped
            }
            let delivery = self
                .connection
                .send_tracked(message)
                .await
                .map_err(|_| OmemoError::Closed)?;
            resent += 1;
            // Without stream management no acknowledgement ever comes: stop waiting at some
            // point (the entry expires from the outbox later).
            let acknowledged = Arc::clone(&self.acknowledged);
            let (tell, told) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let acked = matches!(
                    tokio::time::timeout(OUTBOX_MAX_AGE, delivery.acknowledged()).await,
                    Ok(true)
                );
                if acked {
                    acknowledged.push(outbox_id);
                }
                let _ = tell.send(acked);
            });
            if !wait_for_acks {
                continue;
            }
            match tokio::time::timeout(RESEND_ACK_WAIT, told).await {
                Ok(Ok(true)) => {}
                Ok(_) => {
                    tracing::info!(
                        outbox_id,
                        "the stream was lost while resending the outbox; the next session goes on"
                    );
                    return Ok(());
                }
                // No acknowledgement in time (a server without stream management): the rest
                // goes out without waiting.
                Err(_) => wait_for_acks = false,
            }
        }
        if resent > 0 {
            tracing::info!(resent, "sent unacknowledged messages from the outbox again");
        }
        Ok(())
    }
}

/// Counts one more send of an outbox message; drops it, with a warning, once it was sent more
/// than [`MAX_SENDS`] times. `None` when it is gone (acknowledged, expired, dropped) or the
/// store failed.
pub(super) async fn count_send(store: Arc<Mutex<Store>>, outbox_id: i64) -> Option<u32> {
    let counted = tokio::task::spawn_blocking(move || {
        let mut store = lock(&store);
        let sends = store.outbox_count_send(outbox_id)?;
        if sends.is_some_and(|n| n > MAX_SENDS) {
            store.outbox_remove(&[outbox_id])?;
        }
        Ok::<_, StoreError>(sends)
    })
    .await;
    match counted {
        Ok(Ok(Some(sends))) if sends > MAX_SENDS => {
            tracing::warn!(
                outbox_id,
                sends = MAX_SENDS,
                "dropping an outgoing message the server never acknowledged (it may have closed \
                 the stream for it)"
            );
            None
        }
        Ok(Ok(sends)) => sends,
        Ok(Err(e)) => {
            tracing::warn!(outbox_id, error = %e, "cannot count a send of an outbox message");
            None
        }
        Err(_) => None,
    }
}
