//! Legacy PEP requests (`eu.siacs.conversations.axolotl.devicelist`, one bundle node per
//! device) and the interpretation of their answers and notifications.
// Test helpers outside #[test] fns: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::{field, legacy_vectors, xml};
use omemo_crypto::DeviceId;
use omemo_pep::legacy::{self, DeviceList};
use omemo_pep::pep::{self, Fetched, Publication, PublishFailure, PublishProgress};
use omemo_pep::{ns, Error};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::BareJid;
use xmpp_parsers::message::Message;
use xmpp_parsers::minidom::Element;

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";

fn bob() -> BareJid {
    BareJid::new("bob@example.net").unwrap()
}

fn id(value: u32) -> DeviceId {
    DeviceId::new(value).unwrap()
}

fn iq(text: &str) -> Iq {
    Iq::try_from(xml(text)).unwrap()
}

fn result_with_items(node: &str, items: &str) -> Iq {
    iq(&format!(
        "<iq xmlns='jabber:client' type='result' id='q1' from='bob@example.net'>
           <pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{node}'>{items}</items></pubsub>
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

fn ok() -> Iq {
    iq("<iq xmlns='jabber:client' type='result' id='q1'/>")
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

fn bob_bundle() -> omemo_crypto::legacy::Bundle {
    let v = legacy_vectors("xml.json");
    legacy::parse_bundle(xml(field(&v, &["bundle_bob"]))).unwrap()
}

#[test]
fn fetch_requests_ask_for_the_latest_item() {
    let request = Element::from(pep::fetch_legacy_device_list(&bob(), "q1"));
    assert_eq!(
        request,
        xml(
            "<iq xmlns='jabber:client' type='get' id='q1' to='bob@example.net'>
               <pubsub xmlns='http://jabber.org/protocol/pubsub'>
                 <items node='eu.siacs.conversations.axolotl.devicelist' max_items='1'/>
               </pubsub>
             </iq>"
        )
    );
    let request = Element::from(pep::fetch_legacy_bundle(&bob(), id(31415), "q2"));
    assert_eq!(
        request,
        xml(
            "<iq xmlns='jabber:client' type='get' id='q2' to='bob@example.net'>
               <pubsub xmlns='http://jabber.org/protocol/pubsub'>
                 <items node='eu.siacs.conversations.axolotl.bundles:31415' max_items='1'/>
               </pubsub>
             </iq>"
        )
    );
    assert!(pep::NOTIFY_FEATURES_WITH_LEGACY
        .contains(&"eu.siacs.conversations.axolotl.devicelist+notify"));
    let subscribe = Element::from(pep::subscribe_legacy_device_list(&bob(), &bob(), "q3"));
    let node = subscribe
        .get_child("pubsub", PUBSUB)
        .and_then(|p| p.get_child("subscribe", PUBSUB))
        .and_then(|s| s.attr("node"));
    assert_eq!(node, Some(ns::LEGACY_DEVICE_LIST));
    let delete = Element::from(pep::delete_legacy_bundle(id(31415), "q4"));
    let node = delete
        .get_child("pubsub", "http://jabber.org/protocol/pubsub#owner")
        .and_then(|p| p.get_child("delete", "http://jabber.org/protocol/pubsub#owner"))
        .and_then(|d| d.attr("node"));
    assert_eq!(node, Some("eu.siacs.conversations.axolotl.bundles:31415"));
}

#[test]
fn device_list_answers() {
    let v = legacy_vectors("xml.json");
    let list = field(&v, &["devicelist_bob"]);
    let found = pep::parse_legacy_device_list_response(&result_with_items(
        ns::LEGACY_DEVICE_LIST,
        &format!("<item id='current'>{list}</item>"),
    ));
    match found {
        Fetched::Found(list) => {
            assert_eq!(list.ids().collect::<Vec<_>>(), vec![id(31415), id(4223)])
        }
        other => panic!("{other:?}"),
    }
    // A single item with another id (some clients) is still the list.
    let found = pep::parse_legacy_device_list_response(&result_with_items(
        ns::LEGACY_DEVICE_LIST,
        &format!("<item id='5d1a7c3e'>{list}</item>"),
    ));
    assert!(matches!(found, Fetched::Found(l) if l.len() == 2));
    assert!(matches!(
        pep::parse_legacy_device_list_response(&result_with_items(ns::LEGACY_DEVICE_LIST, "")),
        Fetched::NotFound
    ));
    assert!(matches!(
        pep::parse_legacy_device_list_response(&error_iq("item-not-found", "")),
        Fetched::NotFound
    ));
    assert!(matches!(
        pep::parse_legacy_device_list_response(&error_iq("forbidden", "")),
        Fetched::Forbidden
    ));
    // The OMEMO 2 node's answer is not a legacy list.
    assert!(matches!(
        pep::parse_legacy_device_list_response(&result_with_items(
            ns::OMEMO2_DEVICES,
            &format!("<item id='current'>{list}</item>")
        )),
        Fetched::Malformed(Error::UnexpectedResponse(_))
    ));
    // A malformed list is reported, not taken as empty.
    assert!(matches!(
        pep::parse_legacy_device_list_response(&result_with_items(
            ns::LEGACY_DEVICE_LIST,
            "<item id='current'><list xmlns='eu.siacs.conversations.axolotl'><device id='0'/></list></item>"
        )),
        Fetched::Malformed(Error::IdOutOfRange(_))
    ));
}

#[test]
fn bundle_answers() {
    let v = legacy_vectors("xml.json");
    let bundle = field(&v, &["bundle_bob"]);
    let node = ns::legacy_bundle_node(id(31415));
    match pep::parse_legacy_bundle_response(
        &result_with_items(&node, &format!("<item id='current'>{bundle}</item>")),
        id(31415),
    ) {
        Fetched::Found(found) => assert_eq!(found, bob_bundle()),
        other => panic!("{other:?}"),
    }
    // The answer for another device's node is refused.
    assert!(matches!(
        pep::parse_legacy_bundle_response(
            &result_with_items(&node, &format!("<item id='current'>{bundle}</item>")),
            id(4223)
        ),
        Fetched::Malformed(Error::UnexpectedResponse(_))
    ));
    assert!(matches!(
        pep::parse_legacy_bundle_response(&error_iq("item-not-found", ""), id(31415)),
        Fetched::NotFound
    ));
}

#[test]
fn own_device_is_added_once() {
    let mut fetched = DeviceList::new();
    fetched.insert(id(4223)).unwrap();
    let list = pep::add_own_legacy_device(Some(&fetched), id(31415))
        .unwrap()
        .unwrap();
    assert_eq!(list.ids().collect::<Vec<_>>(), vec![id(4223), id(31415)]);
    assert_eq!(
        pep::add_own_legacy_device(Some(&list), id(31415)).unwrap(),
        None
    );
    let fresh = pep::add_own_legacy_device(None, id(7)).unwrap().unwrap();
    assert_eq!(fresh.ids().collect::<Vec<_>>(), vec![id(7)]);
}

#[test]
fn publications_use_publish_options_and_the_same_fallbacks() {
    let mut list = DeviceList::new();
    list.insert(id(31415)).unwrap();
    for (mut publication, node, item_child) in [
        (
            Publication::legacy_device_list(&list),
            ns::LEGACY_DEVICE_LIST.to_owned(),
            "list",
        ),
        (
            Publication::legacy_bundle(id(31415), &bob_bundle()),
            "eu.siacs.conversations.axolotl.bundles:31415".to_owned(),
            "bundle",
        ),
    ] {
        assert_eq!(publication.node(), node);
        let request = Element::from(publication.request("p1"));
        let publish = request
            .get_child("pubsub", PUBSUB)
            .and_then(|p| p.get_child("publish", PUBSUB))
            .unwrap();
        assert_eq!(publish.attr("node"), Some(node.as_str()));
        let item = publish.children().next().unwrap();
        assert_eq!(item.attr("id"), Some("current"));
        assert!(item.get_child(item_child, ns::LEGACY).is_some());
        assert_eq!(
            form_value(&request, "FORM_TYPE").as_deref(),
            Some(ns::PUBSUB_PUBLISH_OPTIONS)
        );
        assert_eq!(
            form_value(&request, "pubsub#access_model").as_deref(),
            Some("open")
        );
        assert_eq!(form_value(&request, "pubsub#max_items"), None);

        // precondition-not-met: reconfigure the node, publish again.
        let precondition = error_iq(
            "conflict",
            "<precondition-not-met xmlns='http://jabber.org/protocol/pubsub#errors'/>",
        );
        assert!(matches!(
            publication.handle_response(&precondition),
            PublishProgress::Continue
        ));
        let configure = Element::from(publication.request("p2"));
        let configured_node = configure
            .get_child("pubsub", "http://jabber.org/protocol/pubsub#owner")
            .and_then(|o| o.get_child("configure", "http://jabber.org/protocol/pubsub#owner"))
            .and_then(|c| c.attr("node"));
        assert_eq!(configured_node, Some(node.as_str()));
        assert!(matches!(
            publication.handle_response(&ok()),
            PublishProgress::Continue
        ));
        assert!(matches!(
            publication.handle_response(&ok()),
            PublishProgress::Done
        ));

        // A refusal with no fallback left ends the publication.
        let mut refused = publication.clone();
        assert!(matches!(
            refused.handle_response(&error_iq("forbidden", "")),
            PublishProgress::Failed(PublishFailure::Refused(_))
        ));
    }
}

#[test]
fn device_list_notifications() {
    let v = legacy_vectors("xml.json");
    let list = field(&v, &["devicelist_bob"]);
    let event = Message::try_from(xml(&format!(
        "<message xmlns='jabber:client' from='bob@example.net' to='alice@example.org'>
           <event xmlns='http://jabber.org/protocol/pubsub#event'>
             <items node='eu.siacs.conversations.axolotl.devicelist'>
               <item id='current'>{list}</item>
             </items>
           </event>
         </message>"
    )))
    .unwrap();
    let update = pep::parse_legacy_device_list_event(&event)
        .unwrap()
        .unwrap();
    assert_eq!(update.jid, bob());
    assert_eq!(update.devices.len(), 2);
    // The OMEMO 2 parser does not take it, and the legacy parser does not take an OMEMO 2
    // event.
    assert!(pep::parse_device_list_event(&event).is_none());
    let omemo2 = Message::try_from(xml("<message xmlns='jabber:client' from='bob@example.net'>
           <event xmlns='http://jabber.org/protocol/pubsub#event'>
             <items node='urn:xmpp:omemo:2:devices'><retract id='current'/></items>
           </event>
         </message>"))
    .unwrap();
    assert!(pep::parse_legacy_device_list_event(&omemo2).is_none());
    assert!(pep::parse_device_list_event(&omemo2).is_some());
    // A purge empties the list.
    let purge = Message::try_from(xml("<message xmlns='jabber:client' from='bob@example.net'>
           <event xmlns='http://jabber.org/protocol/pubsub#event'>
             <purge node='eu.siacs.conversations.axolotl.devicelist'/>
           </event>
         </message>"))
    .unwrap();
    let update = pep::parse_legacy_device_list_event(&purge)
        .unwrap()
        .unwrap();
    assert!(update.devices.is_empty());
}
