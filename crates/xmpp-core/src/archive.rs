//! Catching up from the account's own message archive (XEP-0313) after a fresh session.
//!
//! Stream management acknowledges a stanza as soon as it is read off the socket, before it is
//! decrypted and answered. A process that dies in between (SIGKILL, power loss) therefore
//! loses what it had read but not handled, and the server has no reason to send it again.
//! Every fresh (not resumed) session asks the server's archive for the messages since shortly
//! before the last ratchet activity the store knows of, and feeds them through the normal
//! receive path: the Double Ratchet rejects those already handled as duplicates, so replaying
//! a window generously is safe.
//!
//! Results are only accepted from our own account (no `from`, or our bare JID) and for the
//! query id we sent; anything else that looks like an archive result is dropped.

use xmpp_parsers::data_forms::{DataForm, DataFormType, Field};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::BareJid;
use xmpp_parsers::mam;
use xmpp_parsers::message::Message;
use xmpp_parsers::minidom::Element;
use xmpp_parsers::ns;
use xmpp_parsers::rsm::SetQuery;

/// Results per page.
pub(crate) const PAGE: usize = 50;
/// How far before the last ratchet activity the replay starts (seconds): messages read
/// before the last commit but still queued, and clock skew between us and the server.
pub(crate) const MARGIN_SECS: u64 = 5 * 60;
/// How far before a clean stop the next catch-up starts (seconds): a message that was being
/// handled when the program stopped.
pub(crate) const CLOSE_SLACK_SECS: u64 = 2;
/// The most messages one catch-up replays.
pub(crate) const MAX_MESSAGES: usize = 5_000;

/// A query for one page of our archive, from `start` (Unix seconds) on, after the result
/// `after` of the previous page.
pub(crate) fn query(id: &str, queryid: &str, start: u64, after: Option<String>) -> Iq {
    let start = i64::try_from(start)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let form = DataForm::new(
        DataFormType::Submit,
        ns::MAM,
        vec![Field::text_single("start", &start)],
    );
    Iq::from_set(
        id,
        mam::Query {
            queryid: Some(mam::QueryId(queryid.to_owned())),
            node: None,
            form: Some(form),
            set: Some(SetQuery {
                max: Some(PAGE),
                after,
                before: None,
                index: None,
            }),
            flip_page: false,
        },
    )
}

/// Whether `message` is an archive result at all (whatever its origin).
pub(crate) fn is_result(message: &Message) -> bool {
    message.payloads.iter().any(|p| p.is("result", ns::MAM))
}

/// The archived message inside `message`, if it is a result of query `queryid` sent by our
/// own account.
pub(crate) fn unwrap_result(message: &Message, own: &BareJid, queryid: &str) -> Option<Message> {
    let from_us = match &message.from {
        None => true,
        Some(from) => from.is_bare() && from.to_bare() == *own,
    };
    if !from_us {
        return None;
    }
    let element: &Element = message.payloads.iter().find(|p| p.is("result", ns::MAM))?;
    let result = mam::Result_::try_from(element.clone()).ok()?;
    if result.queryid.as_ref().map(|q| q.0.as_str()) != Some(queryid) {
        return None;
    }
    Some(result.forwarded.message)
}

/// The end of a page: whether the archive is exhausted, and the id to continue after.
pub(crate) fn parse_fin(response: Iq) -> Option<(bool, Option<String>)> {
    let Iq::Result {
        payload: Some(payload),
        ..
    } = response
    else {
        return None;
    };
    let fin = mam::Fin::try_from(payload).ok()?;
    Some((fin.complete, fin.set.last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use xmpp_parsers::jid::Jid;

    fn own() -> BareJid {
        BareJid::new("bot@example.org").unwrap()
    }

    fn result(from: Option<&str>, queryid: &str) -> Message {
        let xml = format!(
            "<message xmlns='jabber:client' to='bot@example.org/r'>\
               <result xmlns='urn:xmpp:mam:2' queryid='{queryid}' id='a1'>\
                 <forwarded xmlns='urn:xmpp:forward:0'>\
                   <delay xmlns='urn:xmpp:delay' stamp='2026-11-23T07:00:00Z'/>\
                   <message xmlns='jabber:client' from='alice@example.org/phone' \
                            to='bot@example.org' type='chat' id='m1'><body>hi</body></message>\
                 </forwarded>\
               </result>\
             </message>"
        );
        let mut message = Message::try_from(xml.parse::<Element>().unwrap()).unwrap();
        message.from = from.map(|f| Jid::new(f).unwrap());
        message
    }

    #[test]
    fn results_of_our_query_from_our_account_are_unwrapped() {
        for from in [None, Some("bot@example.org")] {
            let inner = unwrap_result(&result(from, "q1"), &own(), "q1").unwrap();
            assert_eq!(
                inner.from,
                Some(Jid::new("alice@example.org/phone").unwrap())
            );
            assert_eq!(inner.bodies.values().next().map(String::as_str), Some("hi"));
        }
    }

    #[test]
    fn forged_or_foreign_results_are_refused() {
        for from in [
            "mallory@example.org",
            "mallory@example.org/x",
            "bot@example.org/another-resource",
            "example.org",
        ] {
            let message = result(Some(from), "q1");
            assert!(is_result(&message));
            assert!(unwrap_result(&message, &own(), "q1").is_none(), "{from}");
        }
        assert!(unwrap_result(&result(None, "other"), &own(), "q1").is_none());
    }

    #[test]
    fn the_query_asks_for_a_page_from_the_start_time() {
        let Iq::Set { payload, .. } = query("iq1", "q1", 1_795_000_000, Some("last".into())) else {
            panic!("not a set");
        };
        let xml = String::from(&payload);
        assert!(
            xml.contains("queryid=\"q1\"") || xml.contains("queryid='q1'"),
            "{xml}"
        );
        assert!(xml.contains("2026-11-18T"), "{xml}");
        assert!(xml.contains("<max>50</max>"), "{xml}");
        assert!(xml.contains("<after>last</after>"), "{xml}");
    }

    #[test]
    fn fin_reports_completion_and_the_last_id() {
        let fin: Element = "<fin xmlns='urn:xmpp:mam:2' complete='true'>\
                              <set xmlns='http://jabber.org/protocol/rsm'><last>z9</last></set>\
                            </fin>"
            .parse()
            .unwrap();
        let response = Iq::from_result("iq1", Some(mam::Fin::try_from(fin).unwrap()));
        assert_eq!(parse_fin(response), Some((true, Some("z9".to_owned()))));
        assert_eq!(parse_fin(Iq::from_result("iq1", None::<mam::Fin>)), None);
    }
}
