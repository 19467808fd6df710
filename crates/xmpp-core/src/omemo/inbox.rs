//! The inbox: decrypted messages wait there, with a [`Receipt`], until the program has
//! handled them.

use super::*;

impl OmemoManager {
    pub(super) fn receipt(
        &self,
        id: i64,
        namespace: Namespace,
        sender: BareJid,
        device: DeviceId,
    ) -> Receipt {
        Receipt(Arc::new(ReceiptInner {
            id,
            namespace,
            device,
            handled: Arc::clone(&self.handled),
            _with_program: self.with_program.hold(sender),
        }))
    }

    /// The messages a previous process decrypted but had not finished handling when it
    /// stopped, oldest first, to hand to the program again. Their trust messages are applied
    /// again (the same decisions), and the trust level is the device's current one.
    pub(crate) async fn take_inbox(&self) -> Vec<DecryptedMessage> {
        let rows = self
            .with_store(|store| store.inbox())
            .await
            .and_then(|rows| rows.map_err(OmemoError::from));
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the inbox");
                return Vec::new();
            }
        };
        let mut messages = Vec::new();
        for row in rows {
            let parsed = (
                BareJid::new(&row.sender),
                Jid::new(&row.from),
                message_type_from_str(&row.message_type),
                sce::Envelope::from_bytes(&row.envelope),
            );
            let (Ok(sender), Ok(from), Some(type_), Ok(envelope)) = parsed else {
                tracing::warn!(id = row.id, "unreadable message in the inbox; dropping it");
                self.handled.push(row.id);
                continue;
            };
            let receipt = self.receipt(row.id, row.namespace, sender.clone(), row.device_id);
            let key = row.identity_key;
            let jid = sender.clone();
            let trust = self
                .with_store(move |store| store.trust_level(jid.as_str(), &key))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
                .unwrap_or(TrustLevel::Undecided);
            let e2ee = E2eeMetadata {
                sender,
                device: row.device_id,
                identity_key: key,
                trust,
                key_exchange: row.key_exchange,
                version: row.namespace.version(),
            };
            let header = Header {
                from,
                id: row.stanza_id,
                type_,
            };
            if let Received::Message(message) =
                self.open(envelope, header, e2ee, true, Some(receipt)).await
            {
                messages.push(*message);
            }
        }
        messages
    }

    /// Takes a handled message out of the inbox now (dropping its receipt does it soon after).
    pub async fn mark_handled(&self, receipt: &Receipt) -> Result<(), OmemoError> {
        let id = receipt.0.id;
        self.with_store(move |store| store.inbox_remove(&[id]))
            .await??;
        Ok(())
    }

    /// Deletes what the outbox and inbox removals have queued, before a clean stop. Inbox
    /// messages whose receipts are dropped after this were not handled: they stay.
    pub(crate) fn flush_removals(&self) {
        self.acknowledged.flush();
        self.handled.stop();
    }
}
