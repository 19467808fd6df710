//! PEP request builders and answer interpretation.
// Test helpers outside #[test] fns: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::{field, vectors, xml};
use omemo_crypto::DeviceId;
use omemo_pep::omemo2::{DeviceEntry, DeviceList, Label};
use omemo_pep::pep::{
    self, add_own_device, Fetched, MaxItems, Publication, PublishFailure, PublishProgress,
};
use omemo_pep::{ns, Error};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::BareJid;
use xmpp_parsers::message::Message;
use xmpp_parsers::minidom::Element;

fn bob() -> BareJid {
    BareJid::new("bob@example.net").unwrap()
}

fn iq(text: &str) -> Iq {
    Iq::try_from(xml(text)).unwrap()
}

fn result_with_item(node: &str, id: &str, payload: &str) -> Iq {
    iq(&format!(
        "<iq xmlns='jabber:client' type='result' id='q1' from='bob@example.net'>
           <pubsub xmlns='http://jabber.org/protocol/pubsub'>
             <items node='{node}'><item id='{id}'>{payload}</item></items>
           </pubsub>
         </iq>"
    ))
}

fn error_iq(condition: &str, app: &str) -> Iq {
    iq(&format!(
        "<iq xmlns='jabber:client' type='error' id='q1'>
           <error type='cancel'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>{app}</error>
         </iq>"
    ))
}

#[test]
fn fetch_requests_have_the_xep_shape() {
    let request = Element::from(pep::fetch_device_list(&bob(), "q1"));
    let expected = xml(
        "<iq xmlns='jabber:client' type='get' id='q1' to='bob@example.net'>
           <pubsub xmlns='http://jabber.org/protocol/pubsub'>
             <items node='urn:xmpp:omemo:2:devices'><item id='current'/></items>
           </pubsub>
         </iq>",
    );
    assert_eq!(request, expected);
    let request = Element::from(pep::fetch_bundle(
        &bob(),
        DeviceId::new(31415).unwrap(),
        "q2",
    ));
    let expected = xml(
        "<iq xmlns='jabber:client' type='get' id='q2' to='bob@example.net'>
           <pubsub xmlns='http://jabber.org/protocol/pubsub'>
             <items node='urn:xmpp:omemo:2:bundles'><item id='31415'/></items>
           </pubsub>
         </iq>",
    );
    assert_eq!(request, expected);
    assert_eq!(pep::NOTIFY_FEATURES, &["urn:xmpp:omemo:2:devices+notify"]);
}

#[test]
fn device_list_answers() {
    let v = vectors("xml.json");
    let devices = field(&v, &["devices_bob"]);
    let found =
        pep::parse_device_list_response(&result_with_item(ns::OMEMO2_DEVICES, "current", devices));
    match found {
        Fetched::Found(list) => assert_eq!(list.len(), 2),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        pep::parse_device_list_response(&error_iq("item-not-found", "")),
        Fetched::NotFound
    ));
    assert!(matches!(
        pep::parse_device_list_response(&error_iq("forbidden", "")),
        Fetched::Forbidden
    ));
    assert!(matches!(
        pep::parse_device_list_response(&error_iq("internal-server-error", "")),
        Fetched::Failed(_)
    ));
    // An empty node (no item) means no OMEMO 2 either.
    let empty = iq("<iq xmlns='jabber:client' type='result' id='q1'>
        <pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:omemo:2:devices'/></pubsub></iq>");
    assert!(matches!(
        pep::parse_device_list_response(&empty),
        Fetched::NotFound
    ));
    // Malformed item payloads are their own outcome.
    let bad = result_with_item(
        ns::OMEMO2_DEVICES,
        "current",
        "<devices xmlns='urn:xmpp:omemo:2'><device id='zero'/></devices>",
    );
    assert!(matches!(
        pep::parse_device_list_response(&bad),
        Fetched::Malformed(Error::InvalidNumber)
    ));
    let legacy = result_with_item(
        ns::OMEMO2_DEVICES,
        "current",
        "<list xmlns='eu.siacs.conversations.axolotl'/>",
    );
    assert!(matches!(
        pep::parse_device_list_response(&legacy),
        Fetched::Malformed(Error::UnexpectedElement { .. })
    ));
    let other_node = result_with_item("urn:example", "current", devices);
    assert!(matches!(
        pep::parse_device_list_response(&other_node),
        Fetched::Malformed(Error::UnexpectedResponse(_))
    ));
}

#[test]
fn bundle_answers() {
    let v = vectors("xml.json");
    let bundle = field(&v, &["bundle_bob"]);
    let id = DeviceId::new(31415).unwrap();
    let answer = result_with_item(ns::OMEMO2_BUNDLES, "31415", bundle);
    assert!(matches!(
        pep::parse_bundle_response(&answer, id),
        Fetched::Found(_)
    ));
    // An item for another device is not this device's bundle.
    assert!(matches!(
        pep::parse_bundle_response(&answer, DeviceId::new(1).unwrap()),
        Fetched::NotFound
    ));
    let broken = bundle.replace("<spks>oCUU", "<spks>oCUV");
    assert!(matches!(
        pep::parse_bundle_response(&result_with_item(ns::OMEMO2_BUNDLES, "31415", &broken), id),
        Fetched::Malformed(Error::InvalidBundle(_))
    ));
}

#[test]
fn own_device_is_added_and_others_kept() {
    let v = vectors("xml.json");
    let fetched = DeviceList::try_from(xml(field(&v, &["devices_bob"]))).unwrap();
    let identity = omemo_crypto::hazmat::identity_from_seed(&[7; 32]);
    let me = DeviceId::new(99).unwrap();
    let own = DeviceEntry::with_signed_label(me, "echo-bot", &identity).unwrap();

    let list = add_own_device(Some(&fetched), own.clone())
        .unwrap()
        .unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list.get(me).unwrap().label(), Label::Verified("echo-bot"));
    for entry in fetched.devices() {
        assert_eq!(list.get(entry.id()), Some(entry));
    }
    // Our label signature verifies for others.
    let mut reparsed = DeviceList::try_from(list.to_element()).unwrap();
    reparsed.verify_labels(|id| (id == me).then(|| identity.public_key()));
    assert_eq!(
        reparsed.get(me).unwrap().label().verified(),
        Some("echo-bot")
    );

    // Nothing to publish when we are already there unchanged.
    assert!(add_own_device(Some(&list), own.clone()).unwrap().is_none());
    // A missing list starts a new one.
    let fresh = add_own_device(None, own).unwrap().unwrap();
    assert_eq!(fresh.ids().collect::<Vec<_>>(), vec![me]);
    // Labels are capped at 53 code points when we create them.
    assert!(DeviceEntry::with_signed_label(me, &"é".repeat(53), &identity).is_ok());
    assert!(matches!(
        DeviceEntry::with_signed_label(me, &"é".repeat(54), &identity),
        Err(Error::LabelTooLong { limit: 53 })
    ));
}

#[test]
fn retired_own_devices_leave_the_list() {
    let v = vectors("xml.json");
    let fetched = DeviceList::try_from(xml(field(&v, &["devices_bob"]))).unwrap();
    let ids: Vec<DeviceId> = fetched.ids().collect();
    let identity = omemo_crypto::hazmat::identity_from_seed(&[7; 32]);
    let me = DeviceId::new(99).unwrap();
    let own = DeviceEntry::with_signed_label(me, "echo-bot", &identity).unwrap();
    let with_me = add_own_device(Some(&fetched), own.clone())
        .unwrap()
        .unwrap();

    // Our old device id goes; the other devices and ours stay.
    let list = pep::own_device_list(Some(&with_me), own.clone(), &[ids[0]])
        .unwrap()
        .unwrap();
    assert!(!list.contains(ids[0]));
    assert!(list.contains(ids[1]) && list.contains(me));
    assert_eq!(list.len(), 2);
    // Nothing to publish once it is gone, or for an id that was never listed; our own
    // current id is never taken out.
    assert!(pep::own_device_list(Some(&list), own.clone(), &[ids[0]])
        .unwrap()
        .is_none());
    let unlisted = DeviceId::new(12345).unwrap();
    assert!(
        pep::own_device_list(Some(&list), own.clone(), &[unlisted, me])
            .unwrap()
            .is_none()
    );
}

fn form_value(request: &Element, var: &str) -> Option<String> {
    fn walk(e: &Element, var: &str) -> Option<String> {
        if e.name() == "field" && e.attr("var") == Some(var) {
            return e.children().next().map(Element::text);
        }
        e.children().find_map(|c| walk(c, var))
    }
    walk(request, var)
}

fn ok() -> Iq {
    iq("<iq xmlns='jabber:client' type='result' id='q1'/>")
}

fn precondition() -> Iq {
    error_iq(
        "conflict",
        "<precondition-not-met xmlns='http://jabber.org/protocol/pubsub#errors'/>",
    )
}

fn own_bundle() -> omemo_crypto::Bundle {
    let v = vectors("xml.json");
    omemo_pep::omemo2::parse_bundle(xml(field(&v, &["bundle_bob"]))).unwrap()
}

#[test]
fn bundle_publication_uses_publish_options() {
    let mut publication = Publication::bundle(DeviceId::new(31415).unwrap(), &own_bundle());
    let request = Element::from(publication.request("p1"));
    let pubsub = request
        .get_child("pubsub", "http://jabber.org/protocol/pubsub")
        .unwrap();
    let publish = pubsub
        .get_child("publish", "http://jabber.org/protocol/pubsub")
        .unwrap();
    assert_eq!(publish.attr("node"), Some(ns::OMEMO2_BUNDLES));
    let item = publish.children().next().unwrap();
    assert_eq!(item.attr("id"), Some("31415"));
    assert!(item.get_child("bundle", ns::OMEMO2).is_some());
    assert_eq!(
        form_value(&request, "FORM_TYPE").as_deref(),
        Some(ns::PUBSUB_PUBLISH_OPTIONS)
    );
    assert_eq!(
        form_value(&request, "pubsub#access_model").as_deref(),
        Some("open")
    );
    assert_eq!(
        form_value(&request, "pubsub#max_items").as_deref(),
        Some("max")
    );
    assert!(matches!(
        publication.handle_response(&ok()),
        PublishProgress::Done
    ));
}

#[test]
fn precondition_not_met_reconfigures_then_republishes() {
    let mut publication = Publication::bundle(DeviceId::new(31415).unwrap(), &own_bundle());
    assert!(matches!(
        publication.handle_response(&precondition()),
        PublishProgress::Continue
    ));
    let configure = Element::from(publication.request("p2"));
    let owner = configure
        .get_child("pubsub", "http://jabber.org/protocol/pubsub#owner")
        .unwrap();
    assert_eq!(
        owner
            .get_child("configure", "http://jabber.org/protocol/pubsub#owner")
            .unwrap()
            .attr("node"),
        Some(ns::OMEMO2_BUNDLES)
    );
    assert_eq!(
        form_value(&configure, "FORM_TYPE").as_deref(),
        Some(ns::PUBSUB_NODE_CONFIG)
    );
    assert_eq!(
        form_value(&configure, "pubsub#max_items").as_deref(),
        Some("max")
    );
    assert!(matches!(
        publication.handle_response(&ok()),
        PublishProgress::Continue
    ));
    let again = Element::from(publication.request("p3"));
    assert!(again
        .get_child("pubsub", "http://jabber.org/protocol/pubsub")
        .is_some());
    assert!(matches!(
        publication.handle_response(&ok()),
        PublishProgress::Done
    ));
}

#[test]
fn refused_max_falls_back_to_numeric_limits_then_gives_up() {
    let mut publication = Publication::bundle(DeviceId::new(31415).unwrap(), &own_bundle());
    let refused = error_iq("not-acceptable", "");
    let mut seen = vec![publication.max_items()];
    for _ in 0..3 {
        assert!(matches!(
            publication.handle_response(&refused),
            PublishProgress::Continue
        ));
        seen.push(publication.max_items());
    }
    assert_eq!(
        seen,
        vec![
            Some(MaxItems::Max),
            Some(MaxItems::Limit(1000)),
            Some(MaxItems::Limit(100)),
            Some(MaxItems::Limit(10)),
        ]
    );
    assert_eq!(
        form_value(&Element::from(publication.request("p")), "pubsub#max_items").as_deref(),
        Some("10")
    );
    assert!(matches!(
        publication.handle_response(&refused),
        PublishProgress::Failed(PublishFailure::Refused(_))
    ));
}

#[test]
fn publication_terminates_whatever_the_server_says() {
    let answers = [precondition(), error_iq("not-acceptable", ""), ok()];
    // Every sequence of answers ends within 12 requests.
    for seed in 0..50u32 {
        let mut publication = Publication::bundle(DeviceId::new(1).unwrap(), &own_bundle());
        let mut state = seed;
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps <= 12, "seed {seed}");
            let _ = publication.request("x");
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let answer = &answers[(state >> 16) as usize % 2 + usize::from(seed % 7 == 0)];
            match publication.handle_response(answer) {
                PublishProgress::Continue => continue,
                _ => break,
            }
        }
    }
}

#[test]
fn device_list_publication_and_forbidden() {
    let list = DeviceList::try_from(xml(
        "<devices xmlns='urn:xmpp:omemo:2'><device id='5'/></devices>",
    ))
    .unwrap();
    let mut publication = Publication::device_list(&list);
    assert_eq!(publication.max_items(), None);
    let request = Element::from(publication.request("d1"));
    assert_eq!(
        form_value(&request, "pubsub#access_model").as_deref(),
        Some("open")
    );
    assert_eq!(form_value(&request, "pubsub#max_items"), None);
    assert!(matches!(
        publication.handle_response(&error_iq("forbidden", "")),
        PublishProgress::Failed(PublishFailure::Refused(_))
    ));
}

#[test]
fn device_list_notifications() {
    let v = vectors("xml.json");
    let devices = field(&v, &["devices_bob"]);
    let message = Message::try_from(xml(&format!(
        "<message xmlns='jabber:client' from='bob@example.net' to='alice@example.org'>
           <event xmlns='http://jabber.org/protocol/pubsub#event'>
             <items node='urn:xmpp:omemo:2:devices'><item id='current'>{devices}</item></items>
           </event>
         </message>"
    )))
    .unwrap();
    let update = pep::parse_device_list_event(&message).unwrap().unwrap();
    assert_eq!(update.jid, bob());
    assert_eq!(update.devices.len(), 2);

    let retracted = Message::try_from(xml("<message xmlns='jabber:client' from='bob@example.net'>
           <event xmlns='http://jabber.org/protocol/pubsub#event'>
             <items node='urn:xmpp:omemo:2:devices'><retract id='current'/></items>
           </event>
         </message>"))
    .unwrap();
    assert!(pep::parse_device_list_event(&retracted)
        .unwrap()
        .unwrap()
        .devices
        .is_empty());

    let other = Message::try_from(xml("<message xmlns='jabber:client' from='bob@example.net'>
           <event xmlns='http://jabber.org/protocol/pubsub#event'>
             <items node='urn:xmpp:bookmarks:1'><retract id='x'/></items>
           </event>
         </message>"))
    .unwrap();
    assert!(pep::parse_device_list_event(&other).is_none());

    let hostile: String = (1..=10_000)
        .map(|i| format!("<device id='{i}'/>"))
        .collect();
    let flood = Message::try_from(xml(&format!(
        "<message xmlns='jabber:client' from='bob@example.net'>
           <event xmlns='http://jabber.org/protocol/pubsub#event'>
             <items node='urn:xmpp:omemo:2:devices'><item id='current'>
               <devices xmlns='urn:xmpp:omemo:2'>{hostile}</devices></item></items>
           </event>
         </message>"
    )))
    .unwrap();
    assert!(matches!(
        pep::parse_device_list_event(&flood),
        Some(Err(Error::TooMany { .. }))
    ));
}
