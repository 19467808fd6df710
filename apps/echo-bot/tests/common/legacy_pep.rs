//! Reading a contact's OMEMO PEP nodes with our own request builders and parsers
//! (`omemo_pep::pep`) over a [`RawClient`]: how the tests check what real clients and the
//! Python reference published, in both namespaces.

use omemo_crypto::{legacy, Bundle, DeviceId};
use omemo_pep::pep::{self, Fetched};
use xmpp_core::jid::BareJid;
use xmpp_core::minidom::Element;

use super::raw::RawClient;

/// Sends `request` (an `<iq>` with id `id`) and returns the server's `<iq>` answer.
async fn query(raw: &mut RawClient, request: Element, id: &str) -> Element {
    raw.send(String::from(&request)).await;
    let marker = format!("id='{id}'");
    loop {
        let text = raw.read_until("</iq>").await;
        let Some(start) = text.rfind("<iq ") else {
            continue;
        };
        let iq = &text[start..];
        let open_tag = &iq[..iq.find('>').unwrap_or(iq.len())];
        if !open_tag.contains(&marker) {
            continue;
        }
        // The stream's default namespace is not repeated on its children.
        let iq = if open_tag.contains("xmlns=") {
            iq.to_owned()
        } else {
            iq.replacen("<iq ", "<iq xmlns='jabber:client' ", 1)
        };
        return iq
            .parse()
            .unwrap_or_else(|e| panic!("unparsable answer {iq}: {e}"));
    }
}

/// The legacy device list of `jid` (`eu.siacs.conversations.axolotl.devicelist`).
pub(crate) async fn legacy_device_list(
    raw: &mut RawClient,
    jid: &BareJid,
) -> Fetched<omemo_pep::legacy::DeviceList> {
    let request = pep::fetch_legacy_device_list(jid, "legacy-list");
    let answer = query(raw, request.into(), "legacy-list").await;
    pep::parse_legacy_device_list_response(&answer.try_into().unwrap())
}

/// The legacy bundle of one device (`eu.siacs.conversations.axolotl.bundles:<id>`).
pub(crate) async fn legacy_bundle(
    raw: &mut RawClient,
    jid: &BareJid,
    device: DeviceId,
) -> Fetched<legacy::Bundle> {
    let request = pep::fetch_legacy_bundle(jid, device, "legacy-bundle");
    let answer = query(raw, request.into(), "legacy-bundle").await;
    pep::parse_legacy_bundle_response(&answer.try_into().unwrap(), device)
}

/// The OMEMO 2 device ids of `jid` (`urn:xmpp:omemo:2:devices`).
pub(crate) async fn omemo2_device_ids(raw: &mut RawClient, jid: &BareJid) -> Vec<DeviceId> {
    let request = pep::fetch_device_list(jid, "omemo2-list");
    let answer = query(raw, request.into(), "omemo2-list").await;
    match pep::parse_device_list_response(&answer.try_into().unwrap()) {
        Fetched::Found(list) => list.devices().iter().map(|d| d.id()).collect(),
        other => panic!("no OMEMO 2 device list for {jid}: {other:?}"),
    }
}

/// The OMEMO 2 bundle of one device.
pub(crate) async fn omemo2_bundle(raw: &mut RawClient, jid: &BareJid, device: DeviceId) -> Bundle {
    let request = pep::fetch_bundle(jid, device, "omemo2-bundle");
    let answer = query(raw, request.into(), "omemo2-bundle").await;
    match pep::parse_bundle_response(&answer.try_into().unwrap(), device) {
        Fetched::Found(bundle) => bundle,
        other => panic!("no OMEMO 2 bundle for {jid}/{device}: {other:?}"),
    }
}

/// Publishes `list` as our legacy device list (`eu.siacs.conversations.axolotl.devicelist`,
/// access model `open`), the way our client does it.
pub(crate) async fn publish_legacy_device_list(
    raw: &mut RawClient,
    list: &omemo_pep::legacy::DeviceList,
) {
    let mut publication = pep::Publication::legacy_device_list(list);
    for attempt in 0..12 {
        let id = format!("publish-{attempt}");
        let answer = query(raw, publication.request(&id).into(), &id).await;
        match publication.handle_response(&answer.try_into().unwrap()) {
            pep::PublishProgress::Done => return,
            pep::PublishProgress::Failed(error) => panic!("publishing failed: {error:?}"),
            _ => {}
        }
    }
    panic!("publishing did not finish");
}

/// Checks that `jid` publishes `device` as one device in both namespaces: the only id of
/// both device lists, one identity (the same fingerprint) in both bundles, and a signed
/// pre-key of its own per version. Returns the OMEMO 2 and the legacy bundle.
pub(crate) async fn assert_one_device_in_both_versions(
    raw: &mut RawClient,
    jid: &BareJid,
    device: DeviceId,
) -> (Bundle, legacy::Bundle) {
    assert_eq!(omemo2_device_ids(raw, jid).await, vec![device]);
    match legacy_device_list(raw, jid).await {
        Fetched::Found(list) => assert_eq!(list.ids().collect::<Vec<_>>(), vec![device]),
        other => panic!("no legacy device list for {jid}: {other:?}"),
    }
    let omemo2 = omemo2_bundle(raw, jid, device).await;
    let legacy = match legacy_bundle(raw, jid, device).await {
        Fetched::Found(bundle) => bundle,
        other => panic!("no legacy bundle for {jid}/{device}: {other:?}"),
    };
    assert_eq!(legacy.identity_key(), omemo2.identity_key());
    assert_eq!(
        legacy.legacy_identity_key().fingerprint(),
        omemo2.identity_key().fingerprint()
    );
    assert_ne!(
        legacy.signed_pre_key().as_bytes(),
        omemo2.signed_pre_key().as_bytes()
    );
    (omemo2, legacy)
}
