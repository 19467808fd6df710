//! PEP (XEP-0163 / XEP-0060) requests for the OMEMO 2 and legacy OMEMO nodes and the
//! interpretation of their answers (XEP-0384 §devices, §bundles; XEP-0384 0.3 §4.2–4.3).
//! Pure functions: the caller picks IQ ids, sends the returned [`Iq`]s and feeds the
//! answers back.
//!
//! The legacy functions carry `legacy` in their names. Legacy nodes hold one item,
//! `current`: the device list on [`ns::LEGACY_DEVICE_LIST`], and each device's bundle on
//! its own node [`ns::legacy_bundle_node`]. They are fetched with `max_items='1'` and no
//! item id (what python-oldmemo and Gajim do), so a node whose single item has another id
//! is still read. Publishing uses the same publish-options and fallbacks as OMEMO 2
//! (`pubsub#access_model=open`; node reconfiguration on `precondition-not-met` or when
//! publish-options are unsupported).

use omemo_crypto::DeviceId;
use xmpp_parsers::data_forms::{DataForm, DataFormType, Field};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::message::Message;
use xmpp_parsers::minidom::Element;
use xmpp_parsers::pubsub::pubsub::{Item, Items, Publish, PublishOptions, Retract, Subscribe};
use xmpp_parsers::pubsub::{self, ItemId, NodeName, PubSub};
use xmpp_parsers::stanza_error::{DefinedCondition, StanzaError};

use crate::omemo2::{self, DeviceEntry, DeviceList};
use crate::{legacy, ns, Error};

/// The item id of the device list (XEP-0384 §devices).
pub const DEVICE_LIST_ITEM: &str = "current";

/// Disco/caps features to announce so that the server pushes device-list updates
/// (XEP-0163 §4 `+notify`).
pub const NOTIFY_FEATURES: &[&str] = &[ns::OMEMO2_DEVICES_NOTIFY];

/// The same for a device that speaks both versions (OMEMO 2 and legacy).
pub const NOTIFY_FEATURES_WITH_LEGACY: &[&str] =
    &[ns::OMEMO2_DEVICES_NOTIFY, ns::LEGACY_DEVICE_LIST_NOTIFY];

/// The item id of the legacy device list and of every legacy bundle.
pub const LEGACY_ITEM: &str = "current";

/// Numeric `pubsub#max_items` values tried, in order, when a server refuses `max` for the
/// bundles node (QXmpp's `PUBSUB_NODE_MAX_ITEMS_1..3`).
pub const MAX_ITEMS_FALLBACK: [u32; 3] = [1000, 100, 10];

/// The outcome of fetching a device list or a bundle.
#[derive(Debug)]
#[non_exhaustive]
pub enum Fetched<T> {
    /// The item was there and checked out.
    Found(T),
    /// `item-not-found`, or no matching item: the JID does not use OMEMO 2 (device list) or
    /// the device published no bundle.
    NotFound,
    /// `forbidden` (or another access refusal): the node is not open to us.
    Forbidden,
    /// The item exists but its payload is malformed or fails the checks.
    Malformed(Error),
    /// Any other error the server returned.
    Failed(StanzaError),
}

fn node(name: &str) -> NodeName {
    NodeName(name.to_owned())
}

fn items_request(to: &BareJid, node_name: &str, item: &str, iq_id: &str) -> Iq {
    let items = Items {
        max_items: None,
        node: node(node_name),
        subid: None,
        items: vec![Item {
            id: Some(ItemId(item.to_owned())),
            publisher: None,
            payload: None,
        }],
    };
    Iq::from_get(iq_id, PubSub::Items(items)).with_to(Jid::from(to.clone()))
}

/// `<items node max_items='1'/>`: the newest item of a single-item node, whatever its id.
fn latest_item_request(to: &BareJid, node_name: &str, iq_id: &str) -> Iq {
    let items = Items {
        max_items: Some(1),
        node: node(node_name),
        subid: None,
        items: Vec::new(),
    };
    Iq::from_get(iq_id, PubSub::Items(items)).with_to(Jid::from(to.clone()))
}

/// Legacy: `<iq type='get'>` for the device list of `jid`
/// (`eu.siacs.conversations.axolotl.devicelist`, `max_items='1'`).
pub fn fetch_legacy_device_list(jid: &BareJid, iq_id: &str) -> Iq {
    latest_item_request(jid, ns::LEGACY_DEVICE_LIST, iq_id)
}

/// Legacy: `<iq type='get'>` for the bundle of one device
/// (`eu.siacs.conversations.axolotl.bundles:<id>`, `max_items='1'`).
pub fn fetch_legacy_bundle(jid: &BareJid, device: DeviceId, iq_id: &str) -> Iq {
    latest_item_request(jid, &ns::legacy_bundle_node(device), iq_id)
}

/// Legacy: `<iq type='set'>` subscribing `subscriber` to the legacy device list of `jid`.
pub fn subscribe_legacy_device_list(jid: &BareJid, subscriber: &BareJid, iq_id: &str) -> Iq {
    let subscribe = PubSub::Subscribe {
        subscribe: Some(Subscribe {
            jid: Jid::from(subscriber.clone()),
            node: Some(node(ns::LEGACY_DEVICE_LIST)),
        }),
        options: None,
    };
    Iq::from_set(iq_id, subscribe).with_to(Jid::from(jid.clone()))
}

/// Legacy: `<iq type='set'>` deleting our bundle node (when deactivating legacy OMEMO on a
/// device; python-omemo's purge does this and removes the id from the list).
pub fn delete_legacy_bundle(device: DeviceId, iq_id: &str) -> Iq {
    let owner = pubsub::Owner {
        payload: pubsub::owner::Payload::Delete {
            node: node(&ns::legacy_bundle_node(device)),
            redirect_uri: None,
        },
    };
    Iq::from_set(iq_id, owner)
}

/// `<iq type='get'>` for the device list of `jid` (item `current` of
/// `urn:xmpp:omemo:2:devices`).
pub fn fetch_device_list(jid: &BareJid, iq_id: &str) -> Iq {
    items_request(jid, ns::OMEMO2_DEVICES, DEVICE_LIST_ITEM, iq_id)
}

/// `<iq type='get'>` for the bundle of one device (item id = device id on
/// `urn:xmpp:omemo:2:bundles`).
pub fn fetch_bundle(jid: &BareJid, device: DeviceId, iq_id: &str) -> Iq {
    items_request(jid, ns::OMEMO2_BUNDLES, &device.to_string(), iq_id)
}

/// `<iq type='set'>` subscribing `subscriber` to the device list of `jid`, for contacts whose
/// updates do not arrive through `+notify` (no presence subscription).
pub fn subscribe_device_list(jid: &BareJid, subscriber: &BareJid, iq_id: &str) -> Iq {
    let subscribe = PubSub::Subscribe {
        subscribe: Some(Subscribe {
            jid: Jid::from(subscriber.clone()),
            node: Some(node(ns::OMEMO2_DEVICES)),
        }),
        options: None,
    };
    Iq::from_set(iq_id, subscribe).with_to(Jid::from(jid.clone()))
}

/// `<iq type='set'>` retracting our bundle item (when deactivating OMEMO on a device).
pub fn retract_bundle(device: DeviceId, iq_id: &str) -> Iq {
    let retract = Retract {
        node: node(ns::OMEMO2_BUNDLES),
        notify: true,
        items: vec![Item {
            id: Some(ItemId(device.to_string())),
            publisher: None,
            payload: None,
        }],
    };
    Iq::from_set(iq_id, PubSub::Retract(retract))
}

fn is_access_refusal(condition: &DefinedCondition) -> bool {
    matches!(
        condition,
        DefinedCondition::Forbidden
            | DefinedCondition::NotAuthorized
            | DefinedCondition::NotAllowed
            | DefinedCondition::RegistrationRequired
            | DefinedCondition::SubscriptionRequired
    )
}

/// Finds the payload of item `item_id` of `node_name` in a fetch answer.
fn fetched_item(response: &Iq, node_name: &str, item_id: &str) -> Fetched<Element> {
    match response {
        Iq::Error { error, .. } => match error.defined_condition {
            DefinedCondition::ItemNotFound => Fetched::NotFound,
            ref c if is_access_refusal(c) => Fetched::Forbidden,
            _ => Fetched::Failed(error.clone()),
        },
        Iq::Result { payload: None, .. } => Fetched::NotFound,
        Iq::Result {
            payload: Some(payload),
            ..
        } => {
            let items = match PubSub::try_from(payload.clone()) {
                Ok(PubSub::Items(items)) => items,
                Ok(_) => {
                    return Fetched::Malformed(Error::UnexpectedResponse(
                        "not a pubsub items answer",
                    ))
                }
                Err(e) => return Fetched::Malformed(Error::from_xso("pubsub", ns_pubsub(), e)),
            };
            if items.node.0 != node_name {
                return Fetched::Malformed(Error::UnexpectedResponse("answer names another node"));
            }
            // Servers may ignore the requested item id and send the whole node.
            let exact = items
                .items
                .iter()
                .find(|i| i.id.as_ref().is_some_and(|id| id.0 == item_id));
            let item = match exact {
                Some(item) => item,
                None => return Fetched::NotFound,
            };
            match &item.payload {
                Some(payload) => Fetched::Found(payload.clone()),
                None => Fetched::Malformed(Error::UnexpectedResponse("item without payload")),
            }
        }
        Iq::Get { .. } | Iq::Set { .. } => {
            Fetched::Malformed(Error::UnexpectedResponse("a request instead of an answer"))
        }
    }
}

/// Finds the single item of a legacy node in a fetch answer: item `current`, or else the last
/// item the server sent.
fn fetched_latest_item(response: &Iq, node_name: &str) -> Fetched<Element> {
    let Iq::Result {
        payload: Some(payload),
        ..
    } = response
    else {
        return fetched_item(response, node_name, LEGACY_ITEM);
    };
    let items = match PubSub::try_from(payload.clone()) {
        Ok(PubSub::Items(items)) => items,
        Ok(_) => return Fetched::Malformed(Error::UnexpectedResponse("not a pubsub items answer")),
        Err(e) => return Fetched::Malformed(Error::from_xso("pubsub", ns_pubsub(), e)),
    };
    if items.node.0 != node_name {
        return Fetched::Malformed(Error::UnexpectedResponse("answer names another node"));
    }
    let item = items
        .items
        .iter()
        .find(|i| i.id.as_ref().is_some_and(|id| id.0 == LEGACY_ITEM))
        .or_else(|| items.items.last());
    match item {
        None => Fetched::NotFound,
        Some(Item {
            payload: Some(payload),
            ..
        }) => Fetched::Found(payload.clone()),
        Some(_) => Fetched::Malformed(Error::UnexpectedResponse("item without payload")),
    }
}

const fn ns_pubsub() -> &'static str {
    xmpp_parsers::ns::PUBSUB
}

fn map_fetched<T>(
    fetched: Fetched<Element>,
    convert: impl FnOnce(Element) -> Result<T, Error>,
) -> Fetched<T> {
    match fetched {
        Fetched::Found(elem) => match convert(elem) {
            Ok(value) => Fetched::Found(value),
            Err(e) => Fetched::Malformed(e),
        },
        Fetched::NotFound => Fetched::NotFound,
        Fetched::Forbidden => Fetched::Forbidden,
        Fetched::Malformed(e) => Fetched::Malformed(e),
        Fetched::Failed(e) => Fetched::Failed(e),
    }
}

/// Interprets the answer to [`fetch_device_list`].
pub fn parse_device_list_response(response: &Iq) -> Fetched<DeviceList> {
    map_fetched(
        fetched_item(response, ns::OMEMO2_DEVICES, DEVICE_LIST_ITEM),
        DeviceList::try_from,
    )
}

/// Interprets the answer to [`fetch_bundle`] for `device`.
pub fn parse_bundle_response(response: &Iq, device: DeviceId) -> Fetched<omemo_crypto::Bundle> {
    map_fetched(
        fetched_item(response, ns::OMEMO2_BUNDLES, &device.to_string()),
        omemo2::parse_bundle,
    )
}

/// Legacy: interprets the answer to [`fetch_legacy_device_list`].
pub fn parse_legacy_device_list_response(response: &Iq) -> Fetched<legacy::DeviceList> {
    map_fetched(
        fetched_latest_item(response, ns::LEGACY_DEVICE_LIST),
        legacy::DeviceList::try_from,
    )
}

/// Legacy: interprets the answer to [`fetch_legacy_bundle`] for `device`.
pub fn parse_legacy_bundle_response(
    response: &Iq,
    device: DeviceId,
) -> Fetched<omemo_crypto::legacy::Bundle> {
    map_fetched(
        fetched_latest_item(response, &ns::legacy_bundle_node(device)),
        legacy::parse_bundle,
    )
}

/// Legacy: adds our device to the fetched list (`None` if there is none yet). Returns the
/// list to publish, or `None` if our device is already listed (XEP-0384 0.3 §4.2: re-add it
/// whenever it is missing).
pub fn add_own_legacy_device(
    fetched: Option<&legacy::DeviceList>,
    own: DeviceId,
) -> Result<Option<legacy::DeviceList>, Error> {
    let mut list = fetched.cloned().unwrap_or_default();
    if list.insert(own)? {
        Ok(Some(list))
    } else {
        Ok(None)
    }
}

/// Adds our device to the fetched list (`None` if we have none yet), keeping every other
/// device as it was. Returns the list to publish, or `None` if our entry is already there
/// unchanged (XEP-0384 §usecases-setup: re-add our device whenever it is missing).
pub fn add_own_device(
    fetched: Option<&DeviceList>,
    own: DeviceEntry,
) -> Result<Option<DeviceList>, Error> {
    own_device_list(fetched, own, &[])
}

/// Like [`add_own_device`], and also takes the `retired` device ids out of the list: ids
/// this account gave up when it started over with a new identity, whose keys are gone.
/// Returns the list to publish, or `None` if nothing changed.
pub fn own_device_list(
    fetched: Option<&DeviceList>,
    own: DeviceEntry,
    retired: &[DeviceId],
) -> Result<Option<DeviceList>, Error> {
    let mut list = fetched.cloned().unwrap_or_default();
    let mut changed = false;
    for id in retired.iter().filter(|id| **id != own.id()) {
        changed |= list.remove(*id).is_some();
    }
    changed |= list.upsert(own)?;
    Ok(changed.then_some(list))
}

/// A device-list update pushed as a PEP notification (XEP-0163 §4, XEP-0060 §7.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceListNotification {
    /// Whose list it is (the notification's `from`, bare).
    pub jid: BareJid,
    /// The new list; empty if the item was retracted or the node purged or deleted.
    pub devices: DeviceList,
}

/// Reads a device-list notification from a `<message>`. `None` if the message is not a PEP
/// event for `urn:xmpp:omemo:2:devices`.
pub fn parse_device_list_event(message: &Message) -> Option<Result<DeviceListNotification, Error>> {
    let payload = match device_list_event_payload(message, ns::OMEMO2_DEVICES)? {
        Ok(payload) => payload,
        Err(e) => return Some(Err(e)),
    };
    Some(
        device_list_from_event(message, payload, DeviceList::new, |elem| {
            DeviceList::try_from(elem)
        })
        .map(|(jid, devices)| DeviceListNotification { jid, devices }),
    )
}

/// A legacy device-list update pushed as a PEP notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyDeviceListNotification {
    /// Whose list it is (the notification's `from`, bare).
    pub jid: BareJid,
    /// The new list; empty if the item was retracted or the node purged or deleted.
    pub devices: legacy::DeviceList,
}

/// Legacy: reads a device-list notification from a `<message>`. `None` if the message is
/// not a PEP event for `eu.siacs.conversations.axolotl.devicelist`.
pub fn parse_legacy_device_list_event(
    message: &Message,
) -> Option<Result<LegacyDeviceListNotification, Error>> {
    let payload = match device_list_event_payload(message, ns::LEGACY_DEVICE_LIST)? {
        Ok(payload) => payload,
        Err(e) => return Some(Err(e)),
    };
    Some(
        device_list_from_event(
            message,
            payload,
            legacy::DeviceList::new,
            legacy::DeviceList::try_from,
        )
        .map(|(jid, devices)| LegacyDeviceListNotification { jid, devices }),
    )
}

/// The PEP event payload of `message` if it is about `node_name`.
fn device_list_event_payload(
    message: &Message,
    node_name: &str,
) -> Option<Result<pubsub::event::Payload, Error>> {
    let event_elem = message
        .payloads
        .iter()
        .find(|p| p.is("event", xmpp_parsers::ns::PUBSUB_EVENT))?;
    let event = match pubsub::Event::try_from(event_elem.clone()) {
        Ok(event) => event,
        Err(e) => {
            return Some(Err(Error::from_xso(
                "event",
                xmpp_parsers::ns::PUBSUB_EVENT,
                e,
            )))
        }
    };
    if event.payload.node_name().0 != node_name {
        return None;
    }
    Some(Ok(event.payload))
}

fn device_list_from_event<L>(
    message: &Message,
    payload: pubsub::event::Payload,
    empty: impl FnOnce() -> L,
    parse: impl FnOnce(Element) -> Result<L, Error>,
) -> Result<(BareJid, L), Error> {
    use pubsub::event::Payload;
    let jid = message
        .from
        .as_ref()
        .map(Jid::to_bare)
        .ok_or(Error::UnexpectedResponse("notification without a sender"))?;
    let devices = match payload {
        Payload::Items { published, .. } if !published.is_empty() => {
            // Prefer item `current`; a node holding one item without id is tolerated.
            let item = published
                .iter()
                .find(|i| i.id.as_ref().is_some_and(|id| id.0 == DEVICE_LIST_ITEM))
                .or_else(|| published.last())
                .ok_or(Error::UnexpectedResponse("no item"))?;
            let payload = item
                .payload
                .clone()
                .ok_or(Error::UnexpectedResponse("item without payload"))?;
            parse(payload)?
        }
        Payload::Items { .. } | Payload::Purge { .. } | Payload::Delete { .. } => empty(),
        Payload::Configuration { .. } | Payload::Subscription { .. } => {
            return Err(Error::UnexpectedResponse("not an item notification"))
        }
    };
    Ok((jid, devices))
}

/// The `pubsub#max_items` value asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxItems {
    /// `max` (XEP-0060 §12.21), which XEP-0384 requires for the bundles node.
    Max,
    /// A numeric fallback.
    Limit(u32),
}

impl MaxItems {
    fn value(self) -> String {
        match self {
            MaxItems::Max => "max".to_owned(),
            MaxItems::Limit(n) => n.to_string(),
        }
    }
}

/// Where a [`Publication`] stands after an answer.
#[derive(Debug)]
#[non_exhaustive]
pub enum PublishProgress {
    /// The item is published.
    Done,
    /// Send [`Publication::request`] again: the node is being reconfigured or a fallback is
    /// being tried.
    Continue,
    /// Publishing failed for good; the server's last error is attached if there was one.
    Failed(PublishFailure),
}

/// Why a [`Publication`] gave up.
#[derive(Debug)]
#[non_exhaustive]
pub enum PublishFailure {
    /// The server refused with this error and no fallback is left.
    Refused(Box<StanzaError>),
    /// The answer was not a result or error IQ.
    Unexpected(Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Publish,
    Configure,
}

/// Publishing one item with publish-options, with the fallbacks XEP-0384 and QXmpp use:
///
/// 1. publish with `pubsub#access_model=open` (and `pubsub#max_items=max` for bundles);
/// 2. on `precondition-not-met`, or if the server does not support publish-options,
///    reconfigure the node (XEP-0060 §8.2) and publish again;
/// 3. when the server refuses `max` (`not-acceptable`, `bad-request`, `policy-violation`,
///    `invalid-options`), try [`MAX_ITEMS_FALLBACK`] in turn.
///
/// Call [`Publication::request`] with a fresh IQ id, send it, and pass the answer to
/// [`Publication::handle_response`] until it says [`PublishProgress::Done`] or
/// [`PublishProgress::Failed`]. At most 12 requests are produced.
#[derive(Debug, Clone)]
pub struct Publication {
    node: String,
    item_id: String,
    payload: Element,
    /// The `max_items` values to try; empty if the node gets no `max_items` option.
    limits: Vec<MaxItems>,
    limit_index: usize,
    step: Step,
    configured: bool,
    with_options: bool,
}

impl Publication {
    /// Publishes `list` as item `current` of the devices node (access model `open`).
    pub fn device_list(list: &DeviceList) -> Self {
        Self::new(
            ns::OMEMO2_DEVICES.to_owned(),
            DEVICE_LIST_ITEM.to_owned(),
            list.to_element(),
            Vec::new(),
        )
    }

    /// Legacy: publishes `list` as item `current` of
    /// `eu.siacs.conversations.axolotl.devicelist` (access model `open`).
    pub fn legacy_device_list(list: &legacy::DeviceList) -> Self {
        Self::new(
            ns::LEGACY_DEVICE_LIST.to_owned(),
            LEGACY_ITEM.to_owned(),
            list.to_element(),
            Vec::new(),
        )
    }

    /// Legacy: publishes our bundle as item `current` of our own node
    /// `eu.siacs.conversations.axolotl.bundles:<device>` (access model `open`; the node
    /// holds one item, so no `max_items` is asked for).
    pub fn legacy_bundle(device: DeviceId, bundle: &omemo_crypto::legacy::Bundle) -> Self {
        Self::new(
            ns::legacy_bundle_node(device),
            LEGACY_ITEM.to_owned(),
            legacy::bundle_element(bundle),
            Vec::new(),
        )
    }

    /// The node this publication writes to.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Publishes our bundle as item `device` of the bundles node (access model `open`,
    /// `max_items=max` with numeric fallbacks).
    pub fn bundle(device: DeviceId, bundle: &omemo_crypto::Bundle) -> Self {
        let mut limits = vec![MaxItems::Max];
        limits.extend(MAX_ITEMS_FALLBACK.iter().map(|&n| MaxItems::Limit(n)));
        Self::new(
            ns::OMEMO2_BUNDLES.to_owned(),
            device.to_string(),
            omemo2::bundle_element(bundle),
            limits,
        )
    }

    fn new(node: String, item_id: String, payload: Element, limits: Vec<MaxItems>) -> Self {
        Self {
            node,
            item_id,
            payload,
            limits,
            limit_index: 0,
            step: Step::Publish,
            configured: false,
            with_options: true,
        }
    }

    /// The `max_items` value currently asked for (`None` for the devices node).
    pub fn max_items(&self) -> Option<MaxItems> {
        self.limits.get(self.limit_index).copied()
    }

    fn option_fields(&self) -> Vec<Field> {
        let mut fields = vec![Field::text_single("pubsub#access_model", "open")];
        if let Some(max) = self.max_items() {
            fields.push(Field::text_single("pubsub#max_items", &max.value()));
        }
        fields
    }

    /// The request for the current step.
    pub fn request(&self, iq_id: &str) -> Iq {
        match self.step {
            Step::Publish => {
                let publish_options = self.with_options.then(|| PublishOptions {
                    form: Some(DataForm::new(
                        DataFormType::Submit,
                        ns::PUBSUB_PUBLISH_OPTIONS,
                        self.option_fields(),
                    )),
                });
                let publish = PubSub::Publish {
                    publish: Publish {
                        node: node(&self.node),
                        items: vec![Item {
                            id: Some(ItemId(self.item_id.clone())),
                            publisher: None,
                            payload: Some(self.payload.clone()),
                        }],
                    },
                    publish_options,
                };
                Iq::from_set(iq_id, publish)
            }
            Step::Configure => {
                let owner = pubsub::Owner {
                    payload: pubsub::owner::Payload::Configure {
                        node: Some(node(&self.node)),
                        form: Some(DataForm::new(
                            DataFormType::Submit,
                            ns::PUBSUB_NODE_CONFIG,
                            self.option_fields(),
                        )),
                    },
                };
                Iq::from_set(iq_id, owner)
            }
        }
    }

    /// Moves to the next numeric `max_items`, if any.
    fn next_limit(&mut self) -> bool {
        if self.limit_index + 1 < self.limits.len() {
            self.limit_index += 1;
            self.configured = false;
            true
        } else {
            false
        }
    }

    /// Feeds the answer to the last [`Publication::request`].
    pub fn handle_response(&mut self, response: &Iq) -> PublishProgress {
        let error = match response {
            Iq::Result { .. } => {
                return match self.step {
                    Step::Publish => PublishProgress::Done,
                    Step::Configure => {
                        self.configured = true;
                        self.step = Step::Publish;
                        PublishProgress::Continue
                    }
                };
            }
            Iq::Error { error, .. } => error,
            Iq::Get { .. } | Iq::Set { .. } => {
                return PublishProgress::Failed(PublishFailure::Unexpected(
                    Error::UnexpectedResponse("a request instead of an answer"),
                ))
            }
        };
        let refused = || PublishProgress::Failed(PublishFailure::Refused(Box::new(error.clone())));
        match (self.step, classify(error)) {
            (
                Step::Publish,
                PublishError::PreconditionNotMet | PublishError::OptionsUnsupported,
            ) => {
                if matches!(classify(error), PublishError::OptionsUnsupported) {
                    self.with_options = false;
                }
                // Configure at the current limit first; if that did not help, at the next.
                if !self.configured || self.next_limit() {
                    self.step = Step::Configure;
                    PublishProgress::Continue
                } else {
                    refused()
                }
            }
            (_, PublishError::ValueRefused) => {
                if self.next_limit() {
                    PublishProgress::Continue
                } else {
                    refused()
                }
            }
            _ => refused(),
        }
    }
}

enum PublishError {
    PreconditionNotMet,
    OptionsUnsupported,
    ValueRefused,
    Other,
}

fn pubsub_condition(error: &StanzaError) -> Option<&str> {
    error
        .other
        .as_ref()
        .filter(|e| e.ns() == ns::PUBSUB_ERRORS)
        .map(|e| e.name())
}

fn classify(error: &StanzaError) -> PublishError {
    match pubsub_condition(error) {
        Some("precondition-not-met") => return PublishError::PreconditionNotMet,
        Some("invalid-options") => return PublishError::ValueRefused,
        Some("unsupported")
            if error.other.as_ref().and_then(|e| e.attr("feature")) == Some("publish-options") =>
        {
            return PublishError::OptionsUnsupported;
        }
        _ => {}
    }
    match error.defined_condition {
        DefinedCondition::NotAcceptable
        | DefinedCondition::BadRequest
        | DefinedCondition::PolicyViolation => PublishError::ValueRefused,
        _ => PublishError::Other,
    }
}
