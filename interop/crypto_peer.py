#!/usr/bin/env python3
"""OMEMO crypto peer backed by the Python reference implementation.

Drives python-omemo's `twomemo.Twomemo` backend (X3DH through `twomemo.StateImpl`, the Double
Ratchet through `twomemo.DoubleRatchetImpl`/`AEADImpl`, wire formats through `twomemo_pb2`) over
stdin/stdout so that another implementation can exchange real messages with it. With
`"legacy": true` in the `identity` command it drives `oldmemo.Oldmemo` instead (legacy OMEMO,
`eu.siacs.conversations.axolotl`): bundles and key exchanges then use the legacy wire forms
(33-byte `0x05` keys, the identity's sign bit in byte 63 of the signed pre-key signature, as
`oldmemo.etree` writes them), and payloads are AES-128-GCM with an IV.

Protocol: one JSON object per line in, one JSON object per line out. Bytes are lowercase hex.
Every request has a "cmd"; an optional "id" is echoed back. Failures are reported as
{"error": "..."} (plus "id"), never by exiting. Sessions are addressed by "jid" and "device"
(the remote side's bare JID and device id).

Commands:
  identity        {"seed"?: hex32, "legacy"?: bool} -> {"ik": hex (Ed25519), "ik_x25519": hex}
  bundle          {"jid"?, "device"?, "min_pre_keys"?: int}
                  -> {"ik", "spk_id", "spk", "spks", "pre_keys": [{"id", "pub"}]}
  initiate        {"jid", "device", "bundle": <as returned by "bundle">, "plaintext": hex | "empty": true}
                  -> {"kex": true, "message": hex, "pre_key_id": int}
  encrypt         {"jid", "device", "plaintext": hex | "empty": true}  -> {"kex": bool, "message": hex}
  decrypt         {"jid", "device", "message": hex, "kex": bool, "payload"?: hex, "identity_key"?: hex}
                  -> {"plaintext": hex, "payload"?: hex, "new_session": bool, "receiving_chain_length": int}
  payload_encrypt {"plaintext": hex}                  -> {"ciphertext": hex, "key_material": hex, "iv"?: hex}
  payload_decrypt {"ciphertext": hex, "key_material": hex, "iv"?: hex} -> {"plaintext": hex}

Legacy XML commands (oldmemo.etree, schema-validated; `<encrypted>` as XML text):
  bundle_xml      {"jid"?, "device"?}                 -> {"xml": "<bundle …>"}
  initiate_xml    {"jid", "device", "bundle_xml", "body": hex}   -> {"xml": "<encrypted …>"}
  encrypt_xml     {"jid", "device", "body": hex | "empty": true} -> {"xml": "<encrypted …>"}
  decrypt_xml     {"jid", "device", "xml", "identity_key": hex (sender's Ed25519), "own_device"?}
                  -> {"body"?: hex, "key_material": hex, "new_session": bool}

Legacy differences: "bundle"/"initiate" use the wire forms of `oldmemo.etree` ("ik", "spk" and
the pre keys are 33-byte `0x05` keys, "spks" carries the sign bit); "decrypt" takes the
sender's Ed25519 "identity_key" (needed to restore the sign bit, as python-omemo takes it from
the sender's bundle) and an "iv" next to "payload"; an empty message's key material is a
random 16-byte key.
  session_info    {"jid", "device"}  -> {"exists", "initiation", "confirmed", "sending_chain_length", ...}
  versions        {}                                  -> {package: version}
  quit            {}                                  -> {"ok": true}, then exits

The state lives in an in-memory `omemo.storage.Storage` that keeps JSON text only, so every
operation round-trips the session through python-omemo's own serialization, and a failed
decryption leaves the stored session untouched (the session is stored only after success,
as python-omemo's SessionManager does). Key-exchange handling mirrors
`SessionManager._decrypt`: a key exchange reuses an existing passive session that it built,
otherwise it builds (or replaces) the session passively; the used pre-key is then deleted.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import sys
import traceback
from typing import Any, Dict, Optional

import x3dh
from omemo.identity_key_pair import IdentityKeyPair
from omemo.session import Initiation
from omemo.storage import Just, Maybe, Nothing, Storage
from omemo.types import JSONType
from twomemo.twomemo import (
    BundleImpl,
    ContentImpl,
    EncryptedKeyMaterialImpl,
    KeyExchangeImpl,
    PlainKeyMaterialImpl,
    SessionImpl,
    Twomemo,
)
import xeddsa
from oldmemo import oldmemo as old
import omemo
import oldmemo.etree
import types
import xml.etree.ElementTree as ET

DEFAULT_JID = "rust@example.org"
DEFAULT_DEVICE = 1


class PeerError(Exception):
    """A request that cannot be served; reported as {"error": ...}."""


class JsonTextStorage(Storage):
    """In-memory storage that keeps serialized JSON text, like a database would."""

    def __init__(self) -> None:
        super().__init__(disable_cache=True)
        self.__data: Dict[str, str] = {}

    async def _load(self, key: str) -> Maybe[JSONType]:
        if key in self.__data:
            return Just(json.loads(self.__data[key]))
        return Nothing()

    async def _store(self, key: str, value: JSONType) -> None:
        self.__data[key] = json.dumps(value)

    async def _delete(self, key: str) -> None:
        self.__data.pop(key, None)


def unhex(request: Dict[str, Any], field: str) -> bytes:
    value = request.get(field)
    if not isinstance(value, str):
        raise PeerError(f"missing or non-string field {field!r}")
    try:
        return bytes.fromhex(value)
    except ValueError as e:
        raise PeerError(f"field {field!r} is not hex") from e


def address(request: Dict[str, Any]) -> tuple[str, int]:
    jid = request.get("jid", DEFAULT_JID)
    device = request.get("device", DEFAULT_DEVICE)
    if not isinstance(jid, str) or not isinstance(device, int):
        raise PeerError("bad jid/device")
    return jid, device


class Peer:
    def __init__(self) -> None:
        self.storage: Optional[JsonTextStorage] = None
        self.backend: Optional[Any] = None
        self.legacy = False

    def need_backend(self) -> Any:
        if self.backend is None:
            raise PeerError("no identity yet: send {\"cmd\": \"identity\"} first")
        return self.backend

    def impl(self) -> Any:
        """The module holding the backend's *Impl classes."""
        return old if self.legacy else sys.modules["twomemo.twomemo"]

    async def plain_key_material(self, request: Dict[str, Any]) -> Any:
        if request.get("empty"):
            _, material = await self.need_backend().encrypt_empty()
            return material
        plaintext = unhex(request, "plaintext")
        material_cls = self.impl().PlainKeyMaterialImpl
        key_len = material_cls.KEY_LENGTH
        return material_cls(plaintext[:key_len], plaintext[key_len:])

    def serialize_key_exchange(self, session: Any, authenticated: bytes) -> bytes:
        serialized = session.key_exchange.serialize(authenticated)
        # oldmemo also returns the sign bit of the Ed25519 identity, which is not sent.
        return serialized[0] if self.legacy else serialized

    async def load_session(self, jid: str, device: int) -> Optional[SessionImpl]:
        return await self.need_backend().load_session(jid, device)

    # ------------------------------------------------------------------ commands

    async def cmd_identity(self, request: Dict[str, Any]) -> Dict[str, Any]:
        self.storage = JsonTextStorage()
        if "seed" in request:
            seed = unhex(request, "seed")
            if len(seed) != 32:
                raise PeerError("seed must be 32 bytes")
            await self.storage.store("/ikp/is_seed", True)
            await self.storage.store_bytes("/ikp/key", seed)
        self.legacy = bool(request.get("legacy", False))
        self.backend = old.Oldmemo(self.storage) if self.legacy else Twomemo(self.storage)
        ikp = await IdentityKeyPair.get(self.storage)
        ik = ikp.identity_key
        return {"ik": ik.hex(), "ik_x25519": xeddsa.ed25519_pub_to_curve25519_pub(ik).hex()}

    async def cmd_bundle(self, request: Dict[str, Any]) -> Dict[str, Any]:
        backend = self.need_backend()
        jid = request.get("jid", "python@example.net")
        device = request.get("device", 2)
        wanted = int(request.get("min_pre_keys", 20))
        visible = await backend.get_num_visible_pre_keys()
        if visible < wanted:
            await backend.generate_pre_keys(wanted - visible)
        bundle = await backend.get_bundle(jid, device)
        if self.legacy:
            # The wire forms oldmemo.etree.serialize_bundle writes.
            ser = old.StateImpl.serialize_public_key
            ik = bundle.bundle.identity_key
            spks = bytearray(bundle.bundle.signed_pre_key_sig)
            spks[63] |= ik[31] & 0x80
            return {
                "ik": ser(xeddsa.ed25519_pub_to_curve25519_pub(ik)).hex(),
                "ik_ed25519": ik.hex(),
                "spk_id": bundle.signed_pre_key_id,
                "spk": ser(bundle.bundle.signed_pre_key).hex(),
                "spks": bytes(spks).hex(),
                "pre_keys": sorted(
                    ({"id": pk_id, "pub": ser(pk).hex()} for pk, pk_id in bundle.pre_key_ids.items()),
                    key=lambda e: e["id"],
                ),
            }
        return {
            "ik": bundle.bundle.identity_key.hex(),
            "spk_id": bundle.signed_pre_key_id,
            "spk": bundle.bundle.signed_pre_key.hex(),
            "spks": bundle.bundle.signed_pre_key_sig.hex(),
            "pre_keys": sorted(
                ({"id": pk_id, "pub": pk.hex()} for pk, pk_id in bundle.pre_key_ids.items()),
                key=lambda e: e["id"],
            ),
        }

    async def cmd_initiate(self, request: Dict[str, Any]) -> Dict[str, Any]:
        backend = self.need_backend()
        jid, device = address(request)
        b = request.get("bundle")
        if not isinstance(b, dict):
            raise PeerError("missing bundle")
        if self.legacy:
            # As oldmemo.etree.parse_bundle: the Ed25519 identity from u and the sign bit of the
            # signature, which is then cleared; keys without their 0x05 type byte.
            parse = old.StateImpl.parse_public_key
            spks = bytearray(unhex(b, "spks"))
            if len(spks) != 64:
                raise PeerError("spks must be 64 bytes")
            ik = xeddsa.curve25519_pub_to_ed25519_pub(parse(unhex(b, "ik")), bool(spks[63] >> 7))
            spks[63] &= 0x7F
            pre_keys = {parse(unhex(pk, "pub")): int(pk["id"]) for pk in b.get("pre_keys", [])}
            bundle = old.BundleImpl(
                jid,
                device,
                x3dh.Bundle(ik, parse(unhex(b, "spk")), bytes(spks), frozenset(pre_keys)),
                int(b["spk_id"]),
                pre_keys,
            )
        else:
            pre_keys = {unhex(pk, "pub"): int(pk["id"]) for pk in b.get("pre_keys", [])}
            bundle = BundleImpl(
                jid,
                device,
                x3dh.Bundle(unhex(b, "ik"), unhex(b, "spk"), unhex(b, "spks"), frozenset(pre_keys)),
                int(b["spk_id"]),
                pre_keys,
            )
        session, encrypted = await backend.build_session_active(
            jid, device, bundle, await self.plain_key_material(request)
        )
        await backend.store_session(session)
        message = self.serialize_key_exchange(session, encrypted.serialize())
        return {"kex": True, "message": message.hex(), "pre_key_id": session.key_exchange.pre_key_id}

    async def cmd_encrypt(self, request: Dict[str, Any]) -> Dict[str, Any]:
        backend = self.need_backend()
        jid, device = address(request)
        session = await self.load_session(jid, device)
        if session is None:
            raise PeerError(f"no session with {jid}/{device}")
        encrypted = await backend.encrypt_key_material(session, await self.plain_key_material(request))
        await backend.store_session(session)
        # As SessionManager does: keep sending the key exchange until the session is confirmed.
        if session.initiation is Initiation.ACTIVE and not session.confirmed:
            return {"kex": True, "message": self.serialize_key_exchange(session, encrypted.serialize()).hex()}
        return {"kex": False, "message": encrypted.serialize().hex()}

    async def cmd_decrypt(self, request: Dict[str, Any]) -> Dict[str, Any]:
        backend = self.need_backend()
        jid, device = address(request)
        raw = unhex(request, "message")
        is_kex = bool(request.get("kex", False))
        new_session = False
        impl = self.impl()
        if is_kex:
            try:
                if self.legacy:
                    # python-omemo restores the sign bit from the sender's known identity key.
                    expected = unhex(request, "identity_key") if "identity_key" in request else b"\0" * 32
                    key_exchange, authenticated = impl.KeyExchangeImpl.parse(raw, bool(expected[31] >> 7))
                else:
                    key_exchange, authenticated = KeyExchangeImpl.parse(raw)
                encrypted = impl.EncryptedKeyMaterialImpl.parse(authenticated, jid, device)
            except ValueError as e:
                raise PeerError("malformed OMEMOKeyExchange") from e
            if "identity_key" in request and key_exchange.identity_key != unhex(request, "identity_key"):
                raise PeerError("identity key of the key exchange does not match the expected one")
            session = await self.load_session(jid, device)
            if session is not None and not (
                session.initiation is Initiation.PASSIVE
                and session.key_exchange.builds_same_session(key_exchange)
            ):
                session = None
            if session is None:
                session, plain = await backend.build_session_passive(jid, device, key_exchange, encrypted)
                new_session = True
            else:
                plain = await backend.decrypt_key_material(session, encrypted)
        else:
            try:
                encrypted = impl.EncryptedKeyMaterialImpl.parse(raw, jid, device)
            except ValueError as e:
                raise PeerError("malformed OMEMOAuthenticatedMessage") from e
            session = await self.load_session(jid, device)
            if session is None:
                raise PeerError(f"no session with {jid}/{device}")
            plain = await backend.decrypt_key_material(session, encrypted)

        response: Dict[str, Any] = {"plaintext": (plain.key + plain.auth_tag).hex()}
        if "payload" in request:
            response["payload"] = (
                await backend.decrypt_plaintext(self.content(request), plain)
            ).hex()

        # Persist only after everything succeeded, then retire the used pre-key.
        await backend.store_session(session)
        if new_session:
            await backend.delete_pre_key(session)
        response["new_session"] = new_session
        response["receiving_chain_length"] = session.receiving_chain_length or 0
        return response

    def content(self, request: Dict[str, Any], field: str = "payload") -> Any:
        if self.legacy:
            return old.ContentImpl(unhex(request, field), unhex(request, "iv"))
        return ContentImpl(unhex(request, field))

    async def cmd_payload_encrypt(self, request: Dict[str, Any]) -> Dict[str, Any]:
        content, material = await self.need_backend().encrypt_plaintext(unhex(request, "plaintext"))
        response = {"ciphertext": content.ciphertext.hex(), "key_material": (material.key + material.auth_tag).hex()}
        if self.legacy:
            response["iv"] = content.initialization_vector.hex()
        return response

    async def cmd_payload_decrypt(self, request: Dict[str, Any]) -> Dict[str, Any]:
        material = unhex(request, "key_material")
        ciphertext = unhex(request, "ciphertext")
        if not ciphertext:
            raise PeerError("empty ciphertext (empty OMEMO messages have no payload)")
        material_cls = self.impl().PlainKeyMaterialImpl
        key_len = material_cls.KEY_LENGTH
        plaintext = await self.need_backend().decrypt_plaintext(
            self.content(request, "ciphertext"), material_cls(material[:key_len], material[key_len:])
        )
        return {"plaintext": plaintext.hex()}

    # ------------------------------------------------------------------ legacy XML

    def need_legacy(self) -> old.Oldmemo:
        if not self.legacy:
            raise PeerError("XML commands need a legacy identity")
        return self.need_backend()

    async def cmd_bundle_xml(self, request: Dict[str, Any]) -> Dict[str, Any]:
        backend = self.need_legacy()
        await self.cmd_bundle(request)  # tops up the pre-keys
        bundle = await backend.get_bundle(request.get("jid", "python@example.net"), request.get("device", 2))
        return {"xml": ET.tostring(oldmemo.etree.serialize_bundle(bundle), encoding="unicode")}

    async def message_xml(self, session: Any, content: Any, encrypted: Any) -> str:
        kex = None
        if session.initiation is Initiation.ACTIVE and not session.confirmed:
            kex = session.key_exchange
        message = omemo.Message(
            old.NAMESPACE, "python@example.net", 2, content, frozenset({(encrypted, kex)})
        )
        return ET.tostring(oldmemo.etree.serialize_message(message), encoding="unicode")

    async def content_and_material(self, request: Dict[str, Any]) -> tuple[Any, Any]:
        backend = self.need_legacy()
        if request.get("empty"):
            return await backend.encrypt_empty()
        return await backend.encrypt_plaintext(unhex(request, "body"))

    async def cmd_initiate_xml(self, request: Dict[str, Any]) -> Dict[str, Any]:
        backend = self.need_legacy()
        jid, device = address(request)
        text = request.get("bundle_xml")
        if not isinstance(text, str):
            raise PeerError("missing bundle_xml")
        bundle = oldmemo.etree.parse_bundle(ET.fromstring(text), jid, device)
        content, material = await self.content_and_material(request)
        session, encrypted = await backend.build_session_active(jid, device, bundle, material)
        await backend.store_session(session)
        return {"xml": await self.message_xml(session, content, encrypted)}

    async def cmd_encrypt_xml(self, request: Dict[str, Any]) -> Dict[str, Any]:
        backend = self.need_legacy()
        jid, device = address(request)
        session = await self.load_session(jid, device)
        if session is None:
            raise PeerError(f"no session with {jid}/{device}")
        content, material = await self.content_and_material(request)
        encrypted = await backend.encrypt_key_material(session, material)
        await backend.store_session(session)
        return {"xml": await self.message_xml(session, content, encrypted)}

    async def cmd_decrypt_xml(self, request: Dict[str, Any]) -> Dict[str, Any]:
        backend = self.need_legacy()
        jid, device = address(request)
        text = request.get("xml")
        if not isinstance(text, str):
            raise PeerError("missing xml")
        identity = unhex(request, "identity_key")

        class Devices:
            """parse_message only asks for the sender's identity key (for its sign bit)."""

            async def get_device_information(self, bare_jid: str) -> Any:
                if bare_jid != jid:
                    return ()
                return (types.SimpleNamespace(device_id=device, identity_key=identity),)

            async def refresh_device_list(self, namespace: str, bare_jid: str) -> None:
                raise PeerError("unknown sender device")

        message = await oldmemo.etree.parse_message(ET.fromstring(text), jid, "python@example.net", Devices())
        own_device = int(request.get("own_device", 2))
        mine = [(ekm, kex) for ekm, kex in message.keys if ekm.device_id == own_device]
        if len(mine) != 1:
            raise PeerError(f"{len(mine)} keys for device {own_device}")
        encrypted, key_exchange = mine[0]
        # parse_message files every key under our own JID; the session is the sender's.
        encrypted = old.EncryptedKeyMaterialImpl(jid, device, encrypted.encrypted_message)
        new_session = False
        session = await self.load_session(jid, device)
        if key_exchange is not None:
            if key_exchange.identity_key != identity:
                raise PeerError("identity key of the key exchange does not match")
            if session is not None and not (
                session.initiation is Initiation.PASSIVE
                and session.key_exchange.builds_same_session(key_exchange)
            ):
                session = None
            if session is None:
                session, plain = await backend.build_session_passive(jid, device, key_exchange, encrypted)
                new_session = True
            else:
                plain = await backend.decrypt_key_material(session, encrypted)
        else:
            if session is None:
                raise PeerError(f"no session with {jid}/{device}")
            plain = await backend.decrypt_key_material(session, encrypted)
        response: Dict[str, Any] = {"key_material": (plain.key + plain.auth_tag).hex()}
        if not message.content.empty:
            response["body"] = (await backend.decrypt_plaintext(message.content, plain)).hex()
        await backend.store_session(session)
        if new_session:
            await backend.delete_pre_key(session)
        response["new_session"] = new_session
        return response

    async def cmd_session_info(self, request: Dict[str, Any]) -> Dict[str, Any]:
        session = await self.load_session(*address(request))
        if session is None:
            return {"exists": False}
        return {
            "exists": True,
            "initiation": session.initiation.name,
            "confirmed": session.confirmed,
            "sending_chain_length": session.sending_chain_length,
            "receiving_chain_length": session.receiving_chain_length or 0,
            "associated_data": session.associated_data.hex(),
        }

    async def cmd_versions(self, _request: Dict[str, Any]) -> Dict[str, Any]:
        out = {}
        for pkg in ["omemo", "twomemo", "oldmemo", "x3dh", "doubleratchet", "xeddsa", "protobuf", "cryptography"]:
            try:
                out[pkg] = importlib.metadata.version(pkg)
            except importlib.metadata.PackageNotFoundError:
                out[pkg] = "?"
        return out

    async def handle(self, request: Dict[str, Any]) -> Dict[str, Any]:
        cmd = request.get("cmd")
        handler = getattr(self, f"cmd_{cmd}", None) if isinstance(cmd, str) else None
        if handler is None:
            raise PeerError(f"unknown command {cmd!r}")
        return await handler(request)


def main() -> int:
    peer = Peer()
    loop = asyncio.new_event_loop()
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        request_id = None
        quitting = False
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise PeerError("request is not a JSON object")
            request_id = request.get("id")
            if request.get("cmd") == "quit":
                quitting = True
                response: Dict[str, Any] = {"ok": True}
            else:
                response = loop.run_until_complete(peer.handle(request))
        except Exception as e:  # pylint: disable=broad-except
            detail = f"{type(e).__name__}: {e}"
            cause = e.__cause__ or e.__context__
            if cause is not None:
                detail += f" (caused by {type(cause).__name__}: {cause})"
            response = {"error": detail}
            if "--trace" in sys.argv[1:]:
                traceback.print_exc(file=sys.stderr)
        if request_id is not None:
            response["id"] = request_id
        sys.stdout.write(json.dumps(response) + "\n")
        sys.stdout.flush()
        if quitting:
            break
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
