#!/usr/bin/env python3
"""Independent OMEMO 2 and legacy OMEMO XMPP peer backed by the Python reference implementation.

Used by the Rust integration tests as the "other side" on a live server. It drives python-omemo's
`SessionManager` with the `twomemo` backend (OMEMO 2, `urn:xmpp:omemo:2`) and/or the `oldmemo` backend
(legacy OMEMO, `eu.siacs.conversations.axolotl`), chosen with --versions, and uses slixmpp for XMPP.
The slixmpp-omemo plugin is deliberately not used: it cannot decrypt OMEMO 2 (it raises for SCE),
so this peer implements the SessionManager's PEP hooks with XEP-0060 calls itself and writes and
parses the XEP-0420 (SCE) envelope itself.

Output: one JSON object per line on stdout (`{"event": ...}`); logs go to stderr.

Versions: --versions omemo2 (default), legacy, or omemo2,legacy (one device, one identity, both
namespaces, as python-omemo's dual stack: a bundle and a device-list entry per namespace). Legacy messages
carry only the body (no SCE), with the plaintext fallback <body> real legacy clients add. The echo modes
answer each message in the version it came in; the client sends in --send-version (default: the first of
--versions) and requires the answer in that version. Two peers on one account with --versions omemo2 and
--versions legacy are one OMEMO 2 device and one legacy device of that account.

Modes (all need --jid, --password; usually --server HOST:PORT and --ca-file PEM):

  echo            Publish the device and bundle, print {"event":"ready",...}, then answer every
                  OMEMO 2 message that has a body with an OMEMO 2 encrypted "Your message: <body>"
                  to the sender's bare JID ({"event":"echoed",...} per answer). Empty OMEMO messages
                  and plaintext messages are never answered. Runs until SIGTERM/SIGINT, until stdin
                  reaches EOF when stdin is a pipe (stdin on /dev/null or a tty is not watched), or
                  until --lifetime seconds have passed.
  plaintext-echo  Like echo, but answers every message (decrypting OMEMO 2 first) in PLAINTEXT.
                  A deliberately misbehaving peer.
  client          Send --count encrypted messages to --to one after another, wait for each
                  encrypted answer "Your message: <body>" and check it; print
                  {"event":"summary",...}. Exit 0 only if every message was answered correctly.
  send            Send --count encrypted messages (or each --body) to --to in --send-version, print
                  {"event":"sent",...} per message, wait until the server has them, and exit (for a
                  receiver that does not answer, e.g. a real client in a terminal).
  check-bot       Fetch --to's devices node and each device's bundle, validate them with the
                  reference code, print {"event":"check",...}. Exit 0 only if valid.

Examples (venv from interop/requirements.txt; Prosody on 127.0.0.1:5222 with the domain example.test):

  .venv/bin/python interop/xmpp_peer.py --mode echo --jid pybot@example.test --password-file pw \\
      --server 127.0.0.1:5222 --ca-file ca.pem --data-dir /tmp/pybot --timeout 20
  .venv/bin/python interop/xmpp_peer.py --mode plaintext-echo --jid pybot@example.test ...
  .venv/bin/python interop/xmpp_peer.py --mode client --jid alice@example.test ... \\
      --to rustbot@example.test --count 20 [--expect-device-id 1234]
  .venv/bin/python interop/xmpp_peer.py --mode check-bot --jid alice@example.test ... \\
      --to rustbot@example.test [--min-pre-keys 25]

Events: ready {mode, jid, device_id, identity_key (Ed25519 hex)[, to, to_device_ids]};
echoed {to, sender_device_id, id, ...}; ignored/rejected/decryption_failed/bad_envelope/echo_failed;
answer {n, ok, rtt_ms, encrypt_ms, decrypt_ms, sender_device_id[, errors]} and
summary {sent, answered, failures, warnings, bot_device_ids, device_id, rtt_ms{min,median,mean,max}};
check {valid, errors, warnings, jid, devices[...], device_ids, access}; error {error}; stopped.

Exit codes: 0 success, 1 check failed, 2 usage or setup error (connection, login, publishing).

Trust: blind trust (every device is trusted on first sight), good enough for tests.
State: --data-dir DIR keeps the OMEMO storage as JSON (DIR/omemo-<bare jid>.json), so a peer can be
restarted with the same identity, device id and sessions. Without it the state lives in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import datetime
import json
import logging
import os
import re
import secrets
import signal
import stat
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Optional, Tuple
from xml.sax.saxutils import escape, quoteattr

import omemo
import slixmpp
import xeddsa
from omemo.storage import Just, Maybe, Nothing, Storage
from omemo.types import DeviceInformation, JSONType, TrustLevel
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath
from twomemo import Twomemo
from twomemo import etree as twomemo_etree
from twomemo.twomemo import NAMESPACE as NS_OMEMO
from oldmemo import Oldmemo
from oldmemo import etree as oldmemo_etree

log = logging.getLogger("xmpp_peer")

NODE_DEVICES = f"{NS_OMEMO}:devices"
NODE_BUNDLES = f"{NS_OMEMO}:bundles"
NS_SCE = "urn:xmpp:sce:1"
NS_CLIENT = "jabber:client"
NS_EME = "urn:xmpp:eme:0"
NS_HINTS = "urn:xmpp:hints"
NS_LEGACY_OMEMO = "eu.siacs.conversations.axolotl"
NODE_LEGACY_DEVICES = f"{NS_LEGACY_OMEMO}.devicelist"
VERSIONS = {"omemo2": NS_OMEMO, "legacy": NS_LEGACY_OMEMO}
VERSION_OF = {ns: name for name, ns in VERSIONS.items()}
LEGACY_FALLBACK_BODY = "I sent you an OMEMO encrypted message but your client doesn't seem to support that."


def legacy_bundle_node(device_id: int) -> str:
    """Legacy OMEMO keeps one bundle node per device (LEGACY-NOTES §1)."""
    return f"{NS_LEGACY_OMEMO}.bundles:{device_id}"
NS_PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"
NS_DATA = "jabber:x:data"

ECHO_PREFIX = "Your message: "
TRUSTED = "BLINDLY_TRUSTED"
# Publish-options as XEP-0384 asks for them (plus what slixmpp-omemo sends).
DEVICES_OPTIONS = {"pubsub#access_model": "open", "pubsub#persist_items": "true", "pubsub#max_items": "1"}
# A legacy bundle node holds one item, "current".
LEGACY_BUNDLE_OPTIONS = DEVICES_OPTIONS
BUNDLES_OPTIONS = {"pubsub#access_model": "open", "pubsub#persist_items": "true", "pubsub#max_items": "max"}
# Servers that refuse max_items=max get these, in order (as QXmpp does).
MAX_ITEMS_FALLBACKS = ["1000", "100", "10"]
TIME_SKEW_WARN = datetime.timedelta(minutes=5)

EXIT_OK, EXIT_FAILED, EXIT_SETUP = 0, 1, 2


def emit(event: str, **fields: Any) -> None:
    """Print one JSON line on stdout."""
    print(json.dumps({"event": event, **fields}), flush=True)


class SetupError(Exception):
    """Connecting, logging in or publishing failed; exit code 2."""


# ---------------------------------------------------------------------------------------------- storage


class JsonFileStorage(Storage):
    """python-omemo storage kept as one JSON object, written through to a file when a path is given.

    Every write rewrites the file atomically (temp file + rename), so the file always holds a state
    python-omemo had persisted. python-omemo stores a session only after a message decrypted
    successfully, so a restarted peer never lags behind what the other side has used.
    """

    def __init__(self, path: Optional[Path]) -> None:
        super().__init__(disable_cache=True)
        self.__path = path
        # Values are kept as JSON text, as a database would, so python-omemo never shares objects with us.
        self.__data: Dict[str, str] = {}
        if path is not None and path.exists():
            self.__data = {k: json.dumps(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}

    def __flush(self) -> None:
        if self.__path is None:
            return
        tmp = self.__path.with_name(self.__path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in self.__data.items()) + "}")
        os.replace(tmp, self.__path)

    async def _load(self, key: str) -> Maybe[JSONType]:
        return Just(json.loads(self.__data[key])) if key in self.__data else Nothing()

    async def _store(self, key: str, value: JSONType) -> None:
        self.__data[key] = json.dumps(value)
        self.__flush()

    async def _delete(self, key: str) -> None:
        if self.__data.pop(key, None) is not None:
            self.__flush()


# ---------------------------------------------------------------------------------------------- SCE


class EnvelopeError(Exception):
    """The decrypted payload is not a usable SCE envelope."""


@dataclasses.dataclass
class Envelope:
    body: Optional[str]
    content_children: List[str]  # Clark-notation tags of the elements inside <content>
    rpad: Optional[str]
    time: Optional[str]
    to: Optional[str]
    from_: Optional[str]


def xep0082_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_envelope(body: str, to_bare: str, from_bare: str) -> bytes:
    """Serialize `<envelope xmlns='urn:xmpp:sce:1'>` for a message body (XEP-0420, XEP-0384 §sce).

    Written by hand so that namespaces are default namespaces (ElementTree would emit ns0: prefixes).
    rpad is 1..200 random URL-safe characters.
    """
    rpad = secrets.token_urlsafe(200)[: 1 + secrets.randbelow(200)]
    return (
        f"<envelope xmlns='{NS_SCE}'>"
        f"<content><body xmlns='{NS_CLIENT}'>{escape(body)}</body></content>"
        f"<rpad>{rpad}</rpad>"
        f"<time stamp={quoteattr(xep0082_now())}/>"
        f"<to jid={quoteattr(to_bare)}/>"
        f"<from jid={quoteattr(from_bare)}/>"
        f"</envelope>"
    ).encode("utf-8")


def parse_envelope(data: bytes) -> Envelope:
    """Parse a decrypted SCE envelope. Invalid XML is rejected (XEP-0420)."""
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise EnvelopeError("envelope contains a DTD")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise EnvelopeError(f"envelope is not well-formed XML: {e}") from e
    if root.tag != f"{{{NS_SCE}}}envelope":
        raise EnvelopeError(f"root element is {root.tag!r}, not {{{NS_SCE}}}envelope")
    content = root.find(f"{{{NS_SCE}}}content")
    if content is None:
        raise EnvelopeError("envelope has no <content>")
    body_elt = content.find(f"{{{NS_CLIENT}}}body")

    def affix(name: str, attr: Optional[str]) -> Optional[str]:
        elt = root.find(f"{{{NS_SCE}}}{name}")
        if elt is None:
            return None
        return (elt.text or "") if attr is None else elt.get(attr, "")

    return Envelope(
        body=None if body_elt is None else (body_elt.text or ""),
        content_children=[child.tag for child in content],
        rpad=affix("rpad", None),
        time=affix("time", "stamp"),
        to=affix("to", "jid"),
        from_=affix("from", "jid"),
    )


def bare(jid: str) -> str:
    return str(slixmpp.JID(jid).bare)


def check_affixes(env: Envelope, sender_bare: str, own_bare: str) -> Tuple[List[str], List[str]]:
    """XEP-0420 affix checks. Returns (errors, warnings).

    Errors: <from>/<to> present but naming someone else, unparsable <time>, missing <rpad> (a MUST
    in XEP-0384 §sce). Warnings: missing <from>/<to>/<time>, clock skew over 5 minutes.
    """
    errors: List[str] = []
    warnings: List[str] = []
    if env.rpad is None:
        errors.append("SCE envelope has no <rpad> (XEP-0384 requires it)")
    if env.from_ is None:
        warnings.append("SCE envelope has no <from>")
    elif bare(env.from_) != sender_bare:
        errors.append(f"SCE <from jid={env.from_!r}> does not match the sender {sender_bare!r}")
    if env.to is None:
        warnings.append("SCE envelope has no <to>")
    elif bare(env.to) != own_bare:
        errors.append(f"SCE <to jid={env.to!r}> does not match us ({own_bare!r})")
    if env.time is None:
        warnings.append("SCE envelope has no <time>")
    else:
        try:
            stamp = datetime.datetime.fromisoformat(env.time.replace("Z", "+00:00"))
            if stamp.tzinfo is None:
                raise ValueError("no time zone")
            skew = abs(datetime.datetime.now(datetime.timezone.utc) - stamp)
            if skew > TIME_SKEW_WARN:
                warnings.append(f"SCE <time> is {skew} away from our clock")
        except ValueError as e:
            errors.append(f"SCE <time stamp={env.time!r}> is not an XEP-0082 DateTime: {e}")
    return errors, warnings


# ---------------------------------------------------------------------------------------------- PEP


def iq_error_text(e: Exception) -> str:
    if isinstance(e, IqTimeout):
        return "timeout"
    if isinstance(e, IqError):
        err = e.iq["error"]
        text = f"{err['type']}/{err['condition']}"
        if err["text"]:
            text += f" ({err['text']})"
        app = [child.tag.split("}")[-1] for child in err.xml if child.tag.startswith(f"{{{NS_PUBSUB_ERRORS}}}")]
        if app:
            text += f" [{', '.join(app)}]"
        return text
    return repr(e)


def is_item_not_found(e: Exception) -> bool:
    return isinstance(e, IqError) and e.iq["error"]["condition"] == "item-not-found"


def is_precondition_not_met(e: Exception) -> bool:
    return isinstance(e, IqError) and e.iq.xml.find(f".//{{{NS_PUBSUB_ERRORS}}}precondition-not-met") is not None


class Pep:
    """The few XEP-0060/0163 operations OMEMO needs, with XEP-0384's publish-options handling."""

    def __init__(self, xmpp: slixmpp.ClientXMPP, timeout: float) -> None:
        self.xmpp = xmpp
        self.timeout = timeout

    def _form(self, ftype: str, form_type: str, options: Dict[str, str]) -> Any:
        form = self.xmpp.plugin["xep_0004"].make_form(ftype=ftype)
        form.add_field(var="FORM_TYPE", ftype="hidden", value=form_type)
        for var, value in options.items():
            form.add_field(var=var, value=value)
        return form

    async def _publish_once(self, node: str, item_id: str, payload: ET.Element, options: Dict[str, str]) -> None:
        form = self._form("submit", "http://jabber.org/protocol/pubsub#publish-options", options)
        await self.xmpp.plugin["xep_0060"].publish(
            self.xmpp.boundjid.bare, node, id=item_id, payload=payload, options=form, timeout=self.timeout
        )

    async def _reconfigure(self, node: str, options: Dict[str, str]) -> None:
        """XEP-0060 §8.2: make the node's configuration match the publish-options."""
        form = self._form("submit", "http://jabber.org/protocol/pubsub#node_config", options)
        await self.xmpp.plugin["xep_0060"].set_node_config(self.xmpp.boundjid.bare, node, form, timeout=self.timeout)

    async def publish(self, node: str, item_id: str, payload: ET.Element, options: Dict[str, str]) -> None:
        candidates = [options]
        if options.get("pubsub#max_items") == "max":
            candidates += [{**options, "pubsub#max_items": n} for n in MAX_ITEMS_FALLBACKS]
        last: Optional[Exception] = None
        for opts in candidates:
            try:
                await self._publish_once(node, item_id, payload, opts)
                return
            except (IqError, IqTimeout) as e:
                last = e
                if not is_precondition_not_met(e):
                    # A server that does not know "max" answers bad-request/not-acceptable: try a number.
                    if isinstance(e, IqError) and e.iq["error"]["condition"] in ("bad-request", "not-acceptable"):
                        log.warning("publish to %s refused with %s, trying the next max_items", node, iq_error_text(e))
                        continue
                    raise
            log.warning("publish to %s: precondition-not-met, reconfiguring the node", node)
            try:
                await self._reconfigure(node, opts)
                await self._publish_once(node, item_id, payload, opts)
                return
            except (IqError, IqTimeout) as e:
                last = e
                log.warning("reconfigure/publish of %s with %s failed: %s", node, opts, iq_error_text(e))
        assert last is not None
        raise last

    async def items(self, jid: str, node: str, item_ids: Optional[List[str]] = None) -> List[Tuple[str, ET.Element]]:
        """(item id, payload) pairs; an absent node gives []."""
        try:
            iq = await self.xmpp.plugin["xep_0060"].get_items(jid, node, item_ids=item_ids, timeout=self.timeout)
        except IqError as e:
            if is_item_not_found(e):
                return []
            raise
        result = []
        for item in iq["pubsub"]["items"]:
            payload = item.xml[0] if len(item.xml) else None
            if payload is not None:
                result.append((item["id"], payload))
        return result

    async def retract(self, node: str, item_id: str) -> None:
        try:
            await self.xmpp.plugin["xep_0060"].retract(self.xmpp.boundjid.bare, node, item_id, notify=True, timeout=self.timeout)
        except IqError as e:
            if not is_item_not_found(e):
                raise

    async def node_access_model(self, jid: str, node: str) -> Tuple[Optional[str], str]:
        """(access model, where it came from) via node config (owner only) or disco#info meta-data."""
        if bare(jid) == self.xmpp.boundjid.bare:
            try:
                iq = await self.xmpp.plugin["xep_0060"].get_node_config(jid, node, timeout=self.timeout)
                form = iq["pubsub_owner"]["configure"]["form"]
                value = form.get_values().get("pubsub#access_model")
                if value:
                    return str(value), "node configuration"
            except (IqError, IqTimeout) as e:
                log.info("node configuration of %s not available: %s", node, iq_error_text(e))
        try:
            iq = self.xmpp.Iq(stype="get", sto=jid)
            iq["disco_info"]["node"] = node
            result = await iq.send(timeout=self.timeout)
            for x in result.xml.iter(f"{{{NS_DATA}}}x"):
                for field in x.iter(f"{{{NS_DATA}}}field"):
                    if field.get("var") == "pubsub#access_model":
                        value = field.find(f"{{{NS_DATA}}}value")
                        if value is not None and value.text:
                            return value.text, "disco#info meta-data"
            return None, "disco#info has no pubsub#access_model"
        except (IqError, IqTimeout) as e:
            return None, f"disco#info: {iq_error_text(e)}"


# ---------------------------------------------------------------------------------------------- OMEMO


class PeerSessionManager(omemo.SessionManager):
    """python-omemo SessionManager whose XMPP hooks go through `Peer`. Subclassed per peer by
    `Peer.set_up_omemo`, because `create()` calls the hooks before it returns an instance."""

    peer: "Peer"

    def _check_namespace(self, namespace: str) -> None:
        if namespace not in self.peer.namespaces:
            raise omemo.UnknownNamespace(f"only {self.peer.namespaces} are loaded, not {namespace}")

    async def _upload_bundle(self, bundle: omemo.Bundle) -> None:  # type: ignore[override]
        self._check_namespace(bundle.namespace)
        if bundle.namespace == NS_LEGACY_OMEMO:
            try:
                await self.peer.pep.publish(
                    legacy_bundle_node(bundle.device_id), "current", oldmemo_etree.serialize_bundle(bundle),
                    LEGACY_BUNDLE_OPTIONS,
                )
            except (IqError, IqTimeout) as e:
                raise omemo.BundleUploadFailed(iq_error_text(e)) from e
            log.info("legacy bundle published for device %d", bundle.device_id)
            return
        try:
            await self.peer.pep.publish(
                NODE_BUNDLES, str(bundle.device_id), twomemo_etree.serialize_bundle(bundle), BUNDLES_OPTIONS
            )
        except (IqError, IqTimeout) as e:
            raise omemo.BundleUploadFailed(iq_error_text(e)) from e
        log.info("bundle published for device %d", bundle.device_id)

    async def _download_bundle(self, namespace: str, bare_jid: str, device_id: int) -> omemo.Bundle:  # type: ignore[override]
        self._check_namespace(namespace)
        if namespace == NS_LEGACY_OMEMO:
            try:
                items = await self.peer.pep.items(bare_jid, legacy_bundle_node(device_id))
            except (IqError, IqTimeout) as e:
                raise omemo.BundleDownloadFailed(iq_error_text(e)) from e
            if not items:
                raise omemo.BundleNotFound(f"no legacy bundle for {bare_jid}/{device_id}")
            payload = next((p for i, p in items if i == "current"), items[-1][1])
            try:
                return oldmemo_etree.parse_bundle(payload, bare_jid, device_id)
            except Exception as e:  # schema violation, bad base64, bad signature
                raise omemo.BundleDownloadFailed(f"malformed legacy bundle {bare_jid}/{device_id}: {e}") from e
        try:
            items = await self.peer.pep.items(bare_jid, NODE_BUNDLES, [str(device_id)])
        except (IqError, IqTimeout) as e:
            raise omemo.BundleDownloadFailed(iq_error_text(e)) from e
        for item_id, payload in items:
            if item_id == str(device_id):
                try:
                    return twomemo_etree.parse_bundle(payload, bare_jid, device_id)
                except Exception as e:  # schema violation, bad base64
                    raise omemo.BundleDownloadFailed(f"malformed bundle {bare_jid}/{device_id}: {e}") from e
        raise omemo.BundleNotFound(f"no bundle item {device_id} on {bare_jid}")

    async def _delete_bundle(self, namespace: str, device_id: int) -> None:  # type: ignore[override]
        self._check_namespace(namespace)
        node, item = (
            (legacy_bundle_node(device_id), "current") if namespace == NS_LEGACY_OMEMO else (NODE_BUNDLES, str(device_id))
        )
        try:
            await self.peer.pep.retract(node, item)
        except (IqError, IqTimeout) as e:
            raise omemo.BundleDeletionFailed(iq_error_text(e)) from e

    async def _upload_device_list(self, namespace: str, device_list: omemo.DeviceList) -> None:  # type: ignore[override]
        self._check_namespace(namespace)
        legacy = namespace == NS_LEGACY_OMEMO
        payload = (oldmemo_etree if legacy else twomemo_etree).serialize_device_list(device_list)
        try:
            await self.peer.pep.publish(
                NODE_LEGACY_DEVICES if legacy else NODE_DEVICES, "current", payload, DEVICES_OPTIONS
            )
        except (IqError, IqTimeout) as e:
            raise omemo.DeviceListUploadFailed(iq_error_text(e)) from e
        log.info("%s device list published: %s", VERSION_OF[namespace], sorted(device_list))

    async def _download_device_list(self, namespace: str, bare_jid: str) -> omemo.DeviceList:  # type: ignore[override]
        self._check_namespace(namespace)
        legacy = namespace == NS_LEGACY_OMEMO
        try:
            items = await self.peer.pep.items(bare_jid, NODE_LEGACY_DEVICES if legacy else NODE_DEVICES)
        except (IqError, IqTimeout) as e:
            raise omemo.DeviceListDownloadFailed(iq_error_text(e)) from e
        if not items:
            return {}
        # The item is "current"; take the last one if a client used another id.
        payload = next((p for i, p in items if i == "current"), items[-1][1])
        try:
            return (oldmemo_etree if legacy else twomemo_etree).parse_device_list(payload)
        except Exception as e:
            raise omemo.DeviceListDownloadFailed(f"malformed device list of {bare_jid}: {e}") from e

    async def _evaluate_custom_trust_level(self, device: DeviceInformation) -> TrustLevel:
        return {
            TRUSTED: TrustLevel.TRUSTED,
            "TRUSTED": TrustLevel.TRUSTED,
            "DISTRUSTED": TrustLevel.DISTRUSTED,
            "UNDECIDED": TrustLevel.UNDECIDED,
        }.get(device.trust_level_name, TrustLevel.UNDECIDED)

    async def _make_trust_decision(self, undecided: FrozenSet[DeviceInformation], identifier: Optional[str]) -> None:
        for device in undecided:  # blind trust
            await self.set_trust(device.bare_jid, device.identity_key, TRUSTED)

    async def _send_message(self, message: omemo.Message, bare_jid: str) -> None:  # type: ignore[override]
        # Empty OMEMO messages (key exchange completion, heartbeats): python-omemo decides when.
        self._check_namespace(message.namespace)
        self.peer.send_omemo(bare_jid, message)
        log.info("sent empty %s message to %s", VERSION_OF[message.namespace], bare_jid)


@dataclasses.dataclass
class Incoming:
    """A received message after decryption."""

    sender: str  # bare JID
    encrypted: bool  # decrypted OMEMO (in `version`)
    legacy: bool = False  # an <encrypted> of a version this peer does not load, not decrypted
    version: Optional[str] = None  # "omemo2" or "legacy" for OMEMO messages
    device_id: Optional[int] = None  # OMEMO sender device
    empty: bool = False  # empty OMEMO message (no payload)
    body: Optional[str] = None
    fallback_body: Optional[str] = None  # plaintext <body> next to <encrypted>
    has_eme: bool = False
    errors: List[str] = dataclasses.field(default_factory=list)
    warnings: List[str] = dataclasses.field(default_factory=list)
    received: float = 0.0  # time.monotonic() when the stanza arrived
    decrypt_ms: float = 0.0  # python-omemo decrypt, including its storage writes


class Peer(slixmpp.ClientXMPP):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args.jid, args.password)
        self.args = args
        self.own_bare = str(self.boundjid.bare)
        # Loaded OMEMO namespaces, in priority order.
        self.namespaces: List[str] = [VERSIONS[v] for v in args.versions]
        self.enable_direct_tls = False  # StartTLS only
        self.enable_plaintext = False
        if args.ca_file:
            self.ca_certs = Path(args.ca_file)
        for plugin in ("xep_0004", "xep_0030", "xep_0060"):
            self.register_plugin(plugin)
        self.pep = Pep(self, args.timeout)
        self.sm: Optional[PeerSessionManager] = None
        self.device_id = 0
        self.lock = asyncio.Lock()  # one OMEMO operation at a time
        self.incoming: "asyncio.Queue[Incoming]" = asyncio.Queue()
        self.session_started = asyncio.Event()
        self.failed_auth = False
        self.connect_problem: Optional[str] = None
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("failed_auth", self._on_failed_auth)
        self.add_event_handler("ssl_invalid_chain", self._on_tls_failure)
        self.add_event_handler("connection_failed", self._on_connection_failed)
        self.add_event_handler("disconnected", self._on_disconnected)
        self.stopping = False
        self.link_lost = asyncio.Event()
        # slixmpp's "message" event only fires for stanzas with a <body>; OMEMO messages have none.
        self.register_handler(CoroutineCallback(
            "OMEMO 2 message",
            MatchXPath(f"{{{NS_CLIENT}}}message/{{{NS_OMEMO}}}encrypted"),
            self._on_message,
        ))
        self.register_handler(CoroutineCallback(
            "legacy OMEMO message",
            MatchXPath(f"{{{NS_CLIENT}}}message/{{{NS_LEGACY_OMEMO}}}encrypted"),
            self._on_legacy_message,
        ))
        self.add_event_handler("message", self._on_plain_message)

    # ------------------------------------------------------------------ connection

    async def _on_session_start(self, _event: Any) -> None:
        # No presence yet: until set_up_omemo() announces us, messages to the bare JID wait offline
        # on the server instead of reaching a peer that cannot decrypt them yet.
        self.session_started.set()

    def _on_failed_auth(self, _event: Any) -> None:
        self.failed_auth = True

    def _on_tls_failure(self, error: Any) -> None:
        self.connect_problem = f"TLS certificate not accepted: {error}"
        log.error("%s", self.connect_problem)

    def _on_connection_failed(self, error: Any) -> None:
        self.connect_problem = f"connection failed: {error}"
        log.warning("%s", self.connect_problem)

    def _on_disconnected(self, reason: Any) -> None:
        if self.session_started.is_set() and not self.stopping:
            log.error("connection lost: %s", reason)
            self.link_lost.set()

    async def start(self) -> None:
        host, port = None, None
        if self.args.server:
            host, _, port_text = self.args.server.rpartition(":")
            host, port = host.strip("[]"), int(port_text)
        self.connect(host, port)
        try:
            await asyncio.wait_for(self.session_started.wait(), self.args.timeout)
        except asyncio.TimeoutError:
            reason = "authentication failed" if self.failed_auth else (
                self.connect_problem or "no session within the timeout")
            raise SetupError(f"could not log in as {self.own_bare} via {self.args.server or 'DNS'}: {reason}")

    async def set_up_omemo(self) -> None:
        storage_path = None
        if self.args.data_dir:
            data_dir = Path(self.args.data_dir)
            data_dir.mkdir(parents=True, exist_ok=True)
            storage_path = data_dir / f"omemo-{self.own_bare}.json"
        storage = JsonFileStorage(storage_path)
        cls = type("BoundSessionManager", (PeerSessionManager,), {"peer": self})
        try:
            backends = [Twomemo(storage) if ns == NS_OMEMO else Oldmemo(storage) for ns in self.namespaces]
            # python-omemo 2.1.0 signs the label with every backend, and oldmemo cannot (legacy device
            # lists have no labels): with legacy loaded the device has no label.
            label = None if NS_LEGACY_OMEMO in self.namespaces else self.args.label
            self.sm = await cls.create(backends, storage, self.own_bare, label, TRUSTED)
            # Leave history-sync mode: delete used pre-keys and send empty messages right away.
            await self.sm.after_history_sync()
            # Make sure our device is (still) on the server's list, e.g. after a restart.
            await self.sm.refresh_device_lists(self.own_bare)
        except omemo.OMEMOException as e:
            raise SetupError(f"OMEMO set-up failed: {type(e).__name__}: {e}") from e
        own, _ = await self.sm.get_own_device_information()
        self.device_id = own.device_id
        # Available presence: messages to the bare JID (and stored offline ones) now come to us.
        self.send_presence()

    async def stop(self) -> None:
        self.stopping = True
        if self.sm is not None:
            await self.sm.shutdown()
        self.disconnect()

    async def own_identity_key(self) -> bytes:
        assert self.sm is not None
        own, _ = await self.sm.get_own_device_information()
        return own.identity_key

    # ------------------------------------------------------------------ sending

    def send_omemo(self, to_bare: str, message: omemo.Message) -> str:
        msg = self.make_message(mto=to_bare, mtype="chat")
        msg["id"] = self.new_id()
        if message.namespace == NS_LEGACY_OMEMO:
            encrypted = oldmemo_etree.serialize_message(message)
            if encrypted.find(f"{{{NS_LEGACY_OMEMO}}}payload") is not None:
                # What Conversations, Gajim and slixmpp-omemo put next to a legacy message.
                msg["body"] = LEGACY_FALLBACK_BODY
            msg.append(encrypted)
            msg.append(ET.Element(f"{{{NS_EME}}}encryption", {"namespace": NS_LEGACY_OMEMO, "name": "OMEMO"}))
        else:
            msg.append(twomemo_etree.serialize_message(message))
            msg.append(ET.Element(f"{{{NS_EME}}}encryption", {"namespace": NS_OMEMO, "name": "OMEMO 2"}))
        msg.append(ET.Element(f"{{{NS_HINTS}}}store"))
        msg.send()
        return str(msg["id"])

    async def send_encrypted_body(self, to_bare: str, body: str, namespace: str = NS_OMEMO) -> Tuple[str, List[str]]:
        """Encrypt `body` in `namespace` (OMEMO 2: inside an SCE envelope; legacy: the body alone) for
        all of to_bare's devices (and our other devices) listed in that namespace.
        Returns the stanza id and the non-critical encryption errors."""
        assert self.sm is not None
        if namespace == NS_OMEMO:
            plaintext = build_envelope(body, to_bare, self.own_bare)
        else:
            plaintext = body.encode("utf-8")
        async with self.lock:
            messages, errors = await self.sm.encrypt(
                frozenset([to_bare]), {namespace: plaintext}, backend_priority_order=[namespace]
            )
        message = next(m for m in messages if m.namespace == namespace)
        return self.send_omemo(to_bare, message), [f"{e.bare_jid}/{e.device_id}: {e.exception!r}" for e in errors]

    def send_plain(self, to: str, body: str) -> None:
        self.make_message(mto=to, mbody=body, mtype="chat").send()

    # ------------------------------------------------------------------ receiving

    async def _on_plain_message(self, msg: slixmpp.Message) -> None:
        if msg.xml.find(f"{{{NS_OMEMO}}}encrypted") is None and msg.xml.find(f"{{{NS_LEGACY_OMEMO}}}encrypted") is None:
            await self._on_message(msg)

    def _has_key_for_us(self, encrypted: ET.Element) -> bool:
        """Whether an <encrypted> element (either version) carries a <key rid> for our device."""
        return any(k.get("rid") == str(self.device_id) for k in encrypted.iter() if k.tag.endswith("}key"))

    def _preferred(self, msg: slixmpp.Message) -> Optional[str]:
        """The namespace to decrypt a stanza in: the first loaded namespace (in priority order) whose
        <encrypted> has a key for our device, else the first loaded one present (LEGACY-NOTES §10)."""
        present = [ns for ns in self.namespaces if msg.xml.find(f"{{{ns}}}encrypted") is not None]
        for ns in present:
            if self._has_key_for_us(msg.xml.find(f"{{{ns}}}encrypted")):
                return ns
        return present[0] if present else None

    async def _report_unloaded(self, msg: slixmpp.Message, namespace: str) -> None:
        """An <encrypted> of a version we do not load: reported (so a wrong answer is not just a timeout)
        when it addresses our device, ignored otherwise (another device of our account speaks it)."""
        if msg["type"] not in ("chat", "normal") or self._preferred(msg) is not None:
            return
        encrypted = msg.xml.find(f"{{{namespace}}}encrypted")
        sender = str(msg["from"].bare)
        if not self._has_key_for_us(encrypted):
            emit("ignored", sender=sender, reason=f"{VERSION_OF[namespace]} message for another device")
            return
        await self.handle(Incoming(
            sender=sender, encrypted=False, legacy=True, received=time.monotonic(),
            errors=[f"{VERSION_OF[namespace]} OMEMO ({namespace}) message, but this peer speaks {self.args.versions}"],
        ))

    async def _on_legacy_message(self, msg: slixmpp.Message) -> None:
        if NS_LEGACY_OMEMO not in self.namespaces:
            await self._report_unloaded(msg, NS_LEGACY_OMEMO)
        elif self._preferred(msg) == NS_LEGACY_OMEMO:
            await self._decrypt(msg, NS_LEGACY_OMEMO)

    async def _on_message(self, msg: slixmpp.Message) -> None:
        if msg.xml.find(f"{{{NS_OMEMO}}}encrypted") is None:
            await self._decrypt(msg, NS_OMEMO)  # plaintext
        elif NS_OMEMO not in self.namespaces:
            await self._report_unloaded(msg, NS_OMEMO)
        elif self._preferred(msg) == NS_OMEMO:
            await self._decrypt(msg, NS_OMEMO)

    async def _decrypt(self, msg: slixmpp.Message, namespace: str) -> None:
        if msg["type"] not in ("chat", "normal"):
            return
        if self.sm is None:
            log.warning("dropped a message from %s that arrived before the OMEMO set-up", msg["from"])
            return
        started = time.monotonic()
        sender = str(msg["from"].bare)
        encrypted = msg.xml.find(f"{{{namespace}}}encrypted")
        plain_body = msg.xml.find(f"{{{NS_CLIENT}}}body")
        plain_text = None if plain_body is None else (plain_body.text or "")
        if encrypted is None:
            if plain_text is not None:
                await self.handle(Incoming(sender=sender, encrypted=False, body=plain_text, received=started))
            return
        legacy = namespace == NS_LEGACY_OMEMO
        incoming = Incoming(
            sender=sender,
            encrypted=True,
            version=VERSION_OF[namespace],
            fallback_body=plain_text,
            has_eme=msg.xml.find(f"{{{NS_EME}}}encryption[@namespace='{namespace}']") is not None,
            received=started,
        )
        try:
            if legacy:
                header = encrypted.find(f"{{{NS_LEGACY_OMEMO}}}header")
                sid = None if header is None else header.get("sid")
                incoming.device_id = int(sid) if sid is not None and sid.isdigit() else None
                # oldmemo looks the sender up (and may fetch its list and bundle) to restore the sign bit.
                message = await oldmemo_etree.parse_message(encrypted, sender, self.own_bare, self.sm)
            else:
                message = twomemo_etree.parse_message(encrypted, sender)
            incoming.device_id = message.device_id
            async with self.lock:
                t0 = time.monotonic()
                plaintext, device, _ = await self.sm.decrypt(message)
                incoming.decrypt_ms = round((time.monotonic() - t0) * 1000, 1)
        except omemo.MessageNotForUs:
            # Encrypted for other devices of our account only (e.g. a second peer on this account).
            log.info("OMEMO message from %s/%s has no key for our device", sender, incoming.device_id)
            emit("ignored", sender=sender, device_id=incoming.device_id, reason="no key for our device")
            return
        except Exception as e:  # python-omemo raises many types; report them all
            log.warning("cannot decrypt message from %s: %s: %s", sender, type(e).__name__, e)
            emit("decryption_failed", sender=sender, device_id=incoming.device_id, error=f"{type(e).__name__}: {e}")
            incoming.errors.append(f"decryption failed: {type(e).__name__}: {e}")
            await self.handle(incoming)
            return
        incoming.device_id = device.device_id
        if plaintext is None:
            incoming.empty = True
            log.info("empty %s message from %s/%d", incoming.version, sender, device.device_id)
            await self.handle(incoming)
            return
        if legacy:
            # No SCE in legacy OMEMO: the plaintext is the body, and nothing binds sender or recipient.
            try:
                incoming.body = plaintext.decode("utf-8")
            except UnicodeDecodeError as e:
                incoming.errors.append(f"legacy body is not UTF-8: {e}")
            await self.handle(incoming)
            return
        try:
            envelope = parse_envelope(plaintext)
        except EnvelopeError as e:
            incoming.errors.append(str(e))
            emit("bad_envelope", sender=sender, device_id=device.device_id, error=str(e))
            await self.handle(incoming)
            return
        errors, warnings = check_affixes(envelope, sender, self.own_bare)
        incoming.errors += errors
        incoming.warnings += warnings
        incoming.body = envelope.body
        for warning in warnings:
            log.warning("from %s/%d: %s", sender, device.device_id, warning)
        for error in errors:
            log.error("from %s/%d: %s", sender, device.device_id, error)
        await self.handle(incoming)

    async def handle(self, incoming: Incoming) -> None:
        """Mode-specific reaction; the client mode only queues."""
        await self.incoming.put(incoming)


class EchoPeer(Peer):
    async def handle(self, incoming: Incoming) -> None:
        if self.args.mode == "plaintext-echo":
            if incoming.body is None or incoming.errors or incoming.sender == self.own_bare:
                return
            self.send_plain(incoming.sender, ECHO_PREFIX + incoming.body)
            emit("echoed", to=incoming.sender, plaintext=True, encrypted_request=incoming.encrypted,
                 sender_device_id=incoming.device_id)
            return
        if incoming.sender == self.own_bare:
            return  # our own other devices: answering them could loop
        if not incoming.encrypted:
            emit("ignored", sender=incoming.sender,
                 reason="OMEMO version not loaded" if incoming.legacy else "plaintext message")
            return
        if incoming.empty or incoming.body is None:
            if not incoming.errors:
                emit("ignored", sender=incoming.sender, device_id=incoming.device_id,
                     reason="empty OMEMO message" if incoming.empty else "no body in the envelope")
            return
        if incoming.errors:
            emit("rejected", sender=incoming.sender, device_id=incoming.device_id, errors=incoming.errors)
            return
        try:
            stanza_id, errors = await self.send_encrypted_body(
                incoming.sender, ECHO_PREFIX + incoming.body, VERSIONS[incoming.version or "omemo2"]
            )
        except Exception as e:
            log.error("cannot answer %s: %s: %s", incoming.sender, type(e).__name__, e)
            emit("echo_failed", to=incoming.sender, error=f"{type(e).__name__}: {e}")
            return
        emit("echoed", to=incoming.sender, sender_device_id=incoming.device_id, id=stanza_id, version=incoming.version,
             encryption_errors=errors, warnings=incoming.warnings,
             handling_ms=round((time.monotonic() - incoming.received) * 1000, 1))


# ---------------------------------------------------------------------------------------------- modes


async def run_echo(peer: Peer) -> int:
    await peer.set_up_omemo()
    emit("ready", mode=peer.args.mode, jid=peer.own_bare, device_id=peer.device_id,
         identity_key=(await peer.own_identity_key()).hex(), versions=peer.args.versions)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Stop on stdin EOF only when stdin is a pipe/socket: a test harness that drops our stdin stops us,
    # while stdin on /dev/null (e.g. CI) does not end the peer at once.
    mode = os.fstat(sys.stdin.fileno()).st_mode if not sys.stdin.closed else 0
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        def on_stdin() -> None:
            if not os.read(sys.stdin.fileno(), 4096):
                loop.remove_reader(sys.stdin.fileno())
                stop.set()
        loop.add_reader(sys.stdin.fileno(), on_stdin)
    lost = asyncio.ensure_future(peer.link_lost.wait())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait([lost, stopped], timeout=peer.args.lifetime or None, return_when=asyncio.FIRST_COMPLETED)
    for task in (lost, stopped):
        task.cancel()
    if peer.link_lost.is_set():
        emit("error", error="connection to the server lost")
        return EXIT_SETUP
    emit("stopped")
    return EXIT_OK


def make_bodies(count: int, style: str) -> List[str]:
    run = secrets.token_hex(3)
    bodies = []
    for i in range(1, count + 1):
        body = f"interop {run} message {i}"
        if style == "mixed" and i % 4 == 0:
            body += " — Grüße & <xml> 'quotes' \"too\" 🦀"
        if style == "mixed" and i % 7 == 0:
            body += "\nsecond line"
        bodies.append(body)
    return bodies


async def run_client(peer: Peer) -> int:
    args = peer.args
    to = bare(args.to)
    await peer.set_up_omemo()
    assert peer.sm is not None
    try:
        await peer.sm.refresh_device_lists(to)
    except omemo.OMEMOException as e:
        raise SetupError(f"cannot fetch the device list of {to}: {e}") from e
    send_ns = VERSIONS[args.send_version]

    async def listed() -> List[int]:
        assert peer.sm is not None
        return sorted(d.device_id for d in await peer.sm.get_device_information(to) if dict(d.active).get(send_ns))

    published = await listed()
    emit("ready", mode="client", jid=peer.own_bare, device_id=peer.device_id, to=to, to_device_ids=published,
         versions=args.versions, send_version=args.send_version)

    failures: List[Dict[str, Any]] = []
    warnings: List[str] = []
    rtts: List[float] = []
    answered = 0
    bot_devices: set = set()
    bodies = make_bodies(args.count, args.bodies)
    for n, body in enumerate(bodies, 1):
        expected = ECHO_PREFIX + body
        started = time.monotonic()
        try:
            _, enc_errors = await peer.send_encrypted_body(to, body, send_ns)
        except Exception as e:
            failures.append({"n": n, "errors": [f"encryption failed: {type(e).__name__}: {e}"]})
            continue
        encrypt_ms = round((time.monotonic() - started) * 1000, 1)
        if enc_errors:
            warnings += [f"message {n}: {e}" for e in enc_errors]
        deadline = started + args.timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                incoming = await asyncio.wait_for(peer.incoming.get(), max(remaining, 0.001))
            except asyncio.TimeoutError:
                failures.append({"n": n, "errors": [f"no answer within {args.timeout}s"]})
                break
            if incoming.sender != to:
                warnings.append(f"message {n}: ignored a message from {incoming.sender}")
                continue
            if incoming.encrypted and incoming.empty and not incoming.errors:
                continue  # key-exchange completion / heartbeat
            if incoming.encrypted and incoming.body is None and incoming.errors:
                # Undecryptable or no usable envelope: we cannot tell which message it answers.
                failures.append({"n": n, "sender_device_id": incoming.device_id, "errors": incoming.errors,
                                 "note": "received while waiting for this answer"})
                continue
            late = next((k for k, b in enumerate(bodies[: n - 1], 1) if incoming.body == ECHO_PREFIX + b), None)
            if late is not None:
                failures.append({"n": late, "errors": [f"late answer, arrived while waiting for message {n}"]})
                continue
            problems = list(incoming.errors)
            if not incoming.encrypted and not incoming.legacy:
                problems.append("answer was not encrypted (plaintext <body>)")
            else:
                if incoming.version != args.send_version:
                    problems.append(f"answer in {incoming.version}, expected {args.send_version}")
                if incoming.device_id not in published:
                    # The sender may have just published itself; look again once.
                    await peer.sm.refresh_device_lists(to)
                    published = await listed()
                if incoming.device_id not in published:
                    problems.append(f"sender device {incoming.device_id} is not in {to}'s device list {published}")
                if args.expect_device_id is not None and incoming.device_id != args.expect_device_id:
                    problems.append(f"sender device {incoming.device_id} != expected {args.expect_device_id}")
                # Legacy messages carry a fallback body by convention (LEGACY-NOTES §8).
                if incoming.fallback_body is not None and not args.allow_fallback_body and incoming.version != "legacy":
                    problems.append("answer carries a plaintext <body> next to <encrypted>")
                if not incoming.has_eme:
                    warnings.append(f"message {n}: answer has no EME <encryption namespace='{send_ns}'/>")
            warnings += [f"message {n}: {w}" for w in incoming.warnings]
            if incoming.body != expected:
                problems.append(f"body {incoming.body!r} != expected {expected!r}")
            rtt = (incoming.received - started) * 1000  # sent -> answer stanza arrived
            if problems:
                failures.append({"n": n, "sender_device_id": incoming.device_id, "errors": problems})
            else:
                answered += 1
                rtts.append(rtt)
                bot_devices.add(incoming.device_id)
            emit("answer", n=n, ok=not problems, rtt_ms=round(rtt, 1), encrypt_ms=encrypt_ms,
                 decrypt_ms=incoming.decrypt_ms, sender_device_id=incoming.device_id,
                 **({"errors": problems} if problems else {}))
            break

    summary: Dict[str, Any] = {
        "sent": args.count,
        "answered": answered,
        "failures": failures,
        "warnings": warnings,
        "bot_device_ids": sorted(bot_devices),
        "device_id": peer.device_id,
        "send_version": args.send_version,
    }
    if rtts:
        summary["rtt_ms"] = {
            "min": round(min(rtts), 1),
            "median": round(statistics.median(rtts), 1),
            "mean": round(statistics.fmean(rtts), 1),
            "max": round(max(rtts), 1),
        }
    emit("summary", **summary)
    return EXIT_OK if answered == args.count and not failures else EXIT_FAILED


async def run_send(peer: Peer) -> int:
    """Send bodies without waiting for answers; exit once the server has received them all."""
    args = peer.args
    to = bare(args.to)
    await peer.set_up_omemo()
    assert peer.sm is not None
    try:
        await peer.sm.refresh_device_lists(to)
    except omemo.OMEMOException as e:
        raise SetupError(f"cannot fetch the device list of {to}: {e}") from e
    emit("ready", mode="send", jid=peer.own_bare, device_id=peer.device_id, to=to, send_version=args.send_version)
    bodies = args.body or make_bodies(args.count, args.bodies)
    failures = 0
    for n, body in enumerate(bodies, 1):
        try:
            stanza_id, errors = await peer.send_encrypted_body(to, body, VERSIONS[args.send_version])
        except Exception as e:
            failures += 1
            emit("send_failed", n=n, error=f"{type(e).__name__}: {e}")
            continue
        emit("sent", n=n, id=stanza_id, body=body, encryption_errors=errors)
    # The server answers in order: once it answered this query it has every message sent before.
    await peer.plugin["xep_0030"].get_info(jid=peer.boundjid.domain, timeout=args.timeout)
    emit("summary", sent=len(bodies) - failures, failures=failures)
    return EXIT_OK if failures == 0 else EXIT_FAILED


async def run_check_bot(peer: Peer) -> int:
    """Validate --to's published OMEMO 2 data without publishing anything ourselves."""
    args = peer.args
    to = bare(args.to)
    errors: List[str] = []
    warnings: List[str] = []
    report: Dict[str, Any] = {"jid": to}

    try:
        items = await peer.pep.items(to, NODE_DEVICES)
    except (IqError, IqTimeout) as e:
        errors.append(f"cannot fetch {NODE_DEVICES}: {iq_error_text(e)}")
        items = []
    device_list: Dict[int, Any] = {}
    payload: Optional[ET.Element] = None
    if not items and not errors:
        errors.append(f"{to} has no {NODE_DEVICES} item")
    elif items:
        ids = [i for i, _ in items]
        if "current" not in ids:
            warnings.append(f"device list item id is {ids}, XEP-0384 says 'current'")
        payload = next((p for i, p in items if i == "current"), items[-1][1])
        try:
            device_list = twomemo_etree.parse_device_list(payload)
        except Exception as e:
            errors.append(f"device list does not validate: {e}")
    if items and not device_list and not errors:
        errors.append("device list is empty")

    devices = []
    for device_id, signed_label in sorted(device_list.items()):
        d: Dict[str, Any] = {"id": device_id, "errors": []}
        devices.append(d)
        if not 1 <= device_id <= 2**31 - 1:
            d["errors"].append(f"device id {device_id} outside 1..2^31-1")
        if signed_label is not None:
            d["label"] = signed_label.label
            if len(signed_label.label) >= 53:
                warnings.append(f"device {device_id}: label has {len(signed_label.label)} code points (keep < 53)")
        try:
            bundle_items = await peer.pep.items(to, NODE_BUNDLES, [str(device_id)])
        except (IqError, IqTimeout) as e:
            d["errors"].append(f"cannot fetch bundle: {iq_error_text(e)}")
            continue
        match = [p for i, p in bundle_items if i == str(device_id)]
        if not match:
            d["errors"].append(f"no bundle item with id {device_id} (got ids {[i for i, _ in bundle_items]})")
            continue
        try:
            bundle = twomemo_etree.parse_bundle(match[0], to, device_id)
        except Exception as e:
            d["errors"].append(f"bundle does not validate: {e}")
            continue
        b = bundle.bundle
        ik, spk, spks = b.identity_key, b.signed_pre_key, b.signed_pre_key_sig
        for name, value, size in (("ik", ik, 32), ("spk", spk, 32), ("spks", spks, 64)):
            if len(value) != size:
                d["errors"].append(f"<{name}> is {len(value)} bytes, expected {size}")
        bad_pks = [pk_id for pk, pk_id in bundle.pre_key_ids.items() if len(pk) != 32]
        if bad_pks:
            d["errors"].append(f"pre-keys with a length other than 32: {bad_pks}")
        pk_elts = list(match[0].iter(f"{{{NS_OMEMO}}}pk"))
        pk_ids = [pk.get("id") for pk in pk_elts]
        if len(set(pk_ids)) != len(pk_ids):
            d["errors"].append("duplicate pre-key ids")
        # The reference keeps pre-keys in a set: duplicates by value collapse.
        d["pre_keys"] = len(bundle.pre_key_ids)
        if len(pk_elts) != len(bundle.pre_key_ids):
            d["errors"].append(f"{len(pk_elts)} <pk> elements but only {len(bundle.pre_key_ids)} distinct keys")
        if d["pre_keys"] < args.min_pre_keys:
            d["errors"].append(f"{d['pre_keys']} pre-keys, need at least {args.min_pre_keys}")
        elif d["pre_keys"] < 25:
            warnings.append(f"device {device_id}: only {d['pre_keys']} pre-keys (XEP-0384: at least 25)")
        d["spk_id"] = bundle.signed_pre_key_id
        d["identity_key"] = ik.hex()
        try:
            d["identity_key_x25519"] = xeddsa.ed25519_pub_to_curve25519_pub(ik).hex()
        except Exception as e:
            d["errors"].append(f"<ik> is not a valid Ed25519 public key: {e}")
        # Same check x3dh does before an active key agreement (twomemo: Ed25519 identity keys, raw spk).
        d["spk_signature_valid"] = bool(len(spks) == 64 and len(ik) == 32 and xeddsa.ed25519_verify(spks, ik, spk))
        if not d["spk_signature_valid"]:
            d["errors"].append("signed pre-key signature does not verify")
        if signed_label is not None:
            d["label_signature_valid"] = bool(
                len(signed_label.signature) == 64
                and xeddsa.ed25519_verify(signed_label.signature, ik, signed_label.label.encode("utf-8"))
            )
            if not d["label_signature_valid"]:
                d["errors"].append("label signature does not verify")
        elif payload is not None:
            raw = next((e for e in payload.iter(f"{{{NS_OMEMO}}}device") if e.get("id") == str(device_id)), None)
            if raw is not None and raw.get("label") is not None:
                warnings.append(f"device {device_id}: label without labelsig (receivers ignore it)")
    report["devices"] = devices
    report["device_ids"] = [d["id"] for d in devices]
    if args.expect_device_id is not None and args.expect_device_id not in report["device_ids"]:
        errors.append(f"expected device {args.expect_device_id} is not in the list {report['device_ids']}")

    access: Dict[str, Any] = {}
    for node in (NODE_DEVICES, NODE_BUNDLES):
        model, source = await peer.pep.node_access_model(to, node)
        access[node] = {"access_model": model, "source": source}
        if model is not None and model != "open":
            errors.append(f"{node} has access model {model!r}, XEP-0384 requires 'open'")
    # We read the nodes from another account without a presence subscription, which only an open
    # (or world-readable) node allows: report it, it is the evidence when the model itself is hidden.
    access["readable_by_other_account"] = bool(items) and to != peer.own_bare
    report["access"] = access

    valid = not errors and bool(devices) and all(not d["errors"] for d in devices)
    emit("check", valid=valid, errors=errors, warnings=warnings, **report)
    return EXIT_OK if valid else EXIT_FAILED


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See the module docstring for details.")
    p.add_argument("--mode", required=True, choices=["echo", "plaintext-echo", "client", "send", "check-bot"])
    p.add_argument("--jid", required=True, help="own account JID")
    p.add_argument("--password", default=os.environ.get("XMPP_PASSWORD"),
                   help="account password (default: $XMPP_PASSWORD)")
    p.add_argument("--password-file", help="read the password from this file instead")
    p.add_argument("--server", help="HOST:PORT to connect to (default: DNS lookup of the JID's domain)")
    p.add_argument("--ca-file", help="PEM CA certificate(s) to trust for the server's StartTLS certificate")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds for log-in, each IQ and each awaited answer (default 30)")
    p.add_argument("--data-dir", help="persist the OMEMO state as JSON in this directory")
    p.add_argument("--label", default="python-omemo interop peer", help="own device label (signed)")
    p.add_argument("--versions", default="omemo2",
                   help="comma-separated OMEMO versions of this device, in priority order: omemo2, legacy")
    p.add_argument("--send-version", help="version the client sends in (default: the first of --versions)")
    p.add_argument("--to", help="bot JID (client, check-bot)")
    p.add_argument("--count", type=int, default=1, help="messages to send (client, send)")
    p.add_argument("--body", action="append", help="send: the bodies to send (default: --count generated ones)")
    p.add_argument("--bodies", choices=["mixed", "simple"], default="mixed",
                   help="mixed: some bodies carry XML special characters, non-ASCII and newlines (client)")
    p.add_argument("--expect-device-id", type=int, help="the bot's device id must be this (client, check-bot)")
    p.add_argument("--allow-fallback-body", action="store_true",
                   help="accept a plaintext <body> next to <encrypted> in answers (client)")
    p.add_argument("--min-pre-keys", type=int, default=1, help="minimum pre-keys per bundle (check-bot)")
    p.add_argument("--lifetime", type=float, default=0, help="echo modes: stop after this many seconds (0: never)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v: debug log of this peer, -vv: also slixmpp/omemo")
    args = p.parse_args(argv)
    if args.password_file:
        args.password = Path(args.password_file).read_text(encoding="utf-8").strip()
    if not args.password:
        p.error("a password is required (--password, --password-file or $XMPP_PASSWORD)")
    args.versions = [v.strip() for v in args.versions.split(",") if v.strip()]
    if not args.versions or any(v not in VERSIONS for v in args.versions) or len(set(args.versions)) != len(args.versions):
        p.error(f"--versions takes a comma-separated subset of {sorted(VERSIONS)}")
    args.send_version = args.send_version or args.versions[0]
    if args.send_version not in args.versions:
        p.error("--send-version must be one of --versions")
    if args.mode in ("client", "send", "check-bot") and not args.to:
        p.error(f"--mode {args.mode} needs --to")
    if args.mode == "client" and args.count < 1:
        p.error("--count must be at least 1")
    if args.server and not re.fullmatch(r"\[?[^\s\]]+\]?:\d+", args.server):
        p.error("--server must be HOST:PORT")
    return args


async def amain(args: argparse.Namespace) -> int:
    peer: Peer = EchoPeer(args) if args.mode in ("echo", "plaintext-echo") else Peer(args)
    try:
        await peer.start()
        if args.mode in ("echo", "plaintext-echo"):
            return await run_echo(peer)
        if args.mode == "client":
            return await run_client(peer)
        if args.mode == "send":
            return await run_send(peer)
        return await run_check_bot(peer)
    except SetupError as e:
        emit("error", error=str(e))
        log.error("%s", e)
        return EXIT_SETUP
    finally:
        try:
            await asyncio.wait_for(peer.stop(), 5)
        except Exception:  # best effort on the way out
            pass


def main() -> int:
    args = parse_args()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose >= 2 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.verbose < 2:
        for name in ("slixmpp", "omemo", "omemo.core", "twomemo"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if args.verbose >= 1:
        log.setLevel(logging.DEBUG)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
