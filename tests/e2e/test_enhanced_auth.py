"""MQTT 5 enhanced authentication with iothubd's IOTHUBD-HMAC-SHA256 method
(iothubd only; skipped on mosquitto).

Exchange:  CONNECT(method, user name, no data) -> AUTH 0x18(data = 16-byte nonce)
           -> AUTH 0x18(data = HMAC-SHA256(key=password, msg=nonce)) -> CONNACK 0x00
Re-auth:   AUTH 0x19(method) -> AUTH 0x18(new nonce) -> AUTH 0x18(HMAC) -> AUTH 0x00
"""

import hashlib
import hmac

import pytest

import mqtt5raw as raw
from e2e_util import (assert_broker_healthy, assert_server_closes, iothubd_only, raw_client,
                      raw_publish_qos, uid, utopic)

pytestmark = iothubd_only

METHOD = "IOTHUBD-HMAC-SHA256"
USERS = {"alice": "s3cret-alice", "bob": "bob-pw:with:colons"}


def mac(password, nonce):
    return hmac.new(password.encode(), nonce, hashlib.sha256).digest()


@pytest.fixture
def auth_broker(broker_factory):
    return broker_factory(passwords=USERS)


def start_auth(broker, user="alice", method=METHOD):
    c = raw_client(broker)
    first = c.connect(client_id=uid("ea"), username=user, expect_rc=None,
                      properties={"AuthenticationMethod": method})
    return c, first


def check_challenge(p):
    assert p.type == raw.AUTH, p
    assert p.reason_code == raw.RC_CONTINUE_AUTHENTICATION
    assert p.properties.get("AuthenticationMethod") == METHOD  # MQTT-4.12.0-5
    nonce = p.properties.get("AuthenticationData")
    assert nonce is not None and len(nonce) == 16, p
    return nonce


def authenticate(broker, user="alice", password=None):
    c, first = start_auth(broker, user)
    nonce = check_challenge(first)
    c.auth(raw.RC_CONTINUE_AUTHENTICATION, {"AuthenticationMethod": METHOD,
                                             "AuthenticationData": mac(password or USERS[user], nonce)})
    return c, nonce, c.recv()


def test_enhanced_auth_hmac_sha256_success(auth_broker):
    c, nonce, ack = authenticate(auth_broker)
    assert ack.type == raw.CONNACK and ack.reason_code == 0, ack
    assert ack.properties.get("AuthenticationMethod") == METHOD  # MQTT-4.12.0-5
    topic = utopic("ea")
    assert c.subscribe(topic, qos=1).reason_codes == [1]
    raw_publish_qos(c, topic, b"authed", 1)
    assert c.expect(raw.PUBLISH, stash=True).payload == b"authed"


def test_enhanced_auth_password_with_colons(auth_broker):
    c, nonce, ack = authenticate(auth_broker, user="bob")
    assert ack.type == raw.CONNACK and ack.reason_code == 0, ack


def test_enhanced_auth_nonce_is_random(auth_broker):
    nonces = set()
    for _ in range(3):
        c, first = start_auth(auth_broker)
        nonces.add(check_challenge(first))
        c.close()
    assert len(nonces) == 3


def test_enhanced_auth_wrong_hmac_connack_not_authorized(auth_broker):
    c, nonce, ack = authenticate(auth_broker, password="wrong-password")
    assert ack.type == raw.CONNACK and ack.reason_code == raw.RC_NOT_AUTHORIZED, ack
    assert c.is_closed(5)
    assert_broker_healthy(auth_broker)


def test_enhanced_auth_hmac_of_wrong_nonce_rejected(auth_broker):
    c, first = start_auth(auth_broker)
    nonce = check_challenge(first)
    c.auth(raw.RC_CONTINUE_AUTHENTICATION, {"AuthenticationMethod": METHOD,
                                             "AuthenticationData": mac(USERS["alice"], nonce[::-1])})
    ack = c.recv()
    assert ack.type == raw.CONNACK and ack.reason_code == raw.RC_NOT_AUTHORIZED, ack


def test_enhanced_auth_unknown_method_connack_bad_authentication_method(auth_broker):
    c, first = start_auth(auth_broker, method="SCRAM-SHA-1")
    assert first.type == raw.CONNACK and first.reason_code == raw.RC_BAD_AUTHENTICATION_METHOD, first
    assert c.is_closed(5)
    assert_broker_healthy(auth_broker)


def test_enhanced_auth_unknown_user_rejected(auth_broker):
    c, first = start_auth(auth_broker, user="mallory")
    if first.type == raw.AUTH:  # server may hide whether the user exists
        nonce = check_challenge(first)
        c.auth(raw.RC_CONTINUE_AUTHENTICATION, {"AuthenticationMethod": METHOD,
                                                 "AuthenticationData": mac("guess", nonce)})
        first = c.recv()
    assert first.type == raw.CONNACK and first.reason_code in (0x86, 0x87), first
    assert c.is_closed(5)


def test_enhanced_auth_client_closes_mid_exchange(auth_broker):
    c, first = start_auth(auth_broker)
    check_challenge(first)
    c.close()
    assert_broker_healthy(auth_broker)


def test_reauthentication_success(auth_broker):
    c, nonce1, ack = authenticate(auth_broker)
    assert ack.reason_code == 0
    c.auth(raw.RC_REAUTHENTICATE, {"AuthenticationMethod": METHOD})
    challenge = c.recv()
    nonce2 = check_challenge(challenge)
    assert nonce2 != nonce1
    c.auth(raw.RC_CONTINUE_AUTHENTICATION, {"AuthenticationMethod": METHOD,
                                             "AuthenticationData": mac(USERS["alice"], nonce2)})
    done = c.recv()
    assert done.type == raw.AUTH and done.reason_code == raw.RC_SUCCESS, done
    assert done.properties.get("AuthenticationMethod") == METHOD
    # the connection keeps working, and can re-authenticate again
    c.pingreq()
    c.expect(raw.PINGRESP)
    c.auth(raw.RC_REAUTHENTICATE, {"AuthenticationMethod": METHOD})
    nonce3 = check_challenge(c.recv())
    c.auth(raw.RC_CONTINUE_AUTHENTICATION, {"AuthenticationMethod": METHOD,
                                             "AuthenticationData": mac(USERS["alice"], nonce3)})
    assert c.expect(raw.AUTH).reason_code == 0


def test_reauthentication_wrong_hmac_disconnect_not_authorized(auth_broker):
    c, nonce1, ack = authenticate(auth_broker)
    assert ack.reason_code == 0
    c.auth(raw.RC_REAUTHENTICATE, {"AuthenticationMethod": METHOD})
    nonce2 = check_challenge(c.recv())
    c.auth(raw.RC_CONTINUE_AUTHENTICATION, {"AuthenticationMethod": METHOD,
                                             "AuthenticationData": mac("not-the-password", nonce2)})
    d = assert_server_closes(c, [raw.RC_NOT_AUTHORIZED])
    assert d is not None
    assert_broker_healthy(auth_broker)


def test_reauthentication_with_different_method_is_protocol_error(auth_broker):
    """MQTT-4.12.1-1: re-authentication must use the original method."""
    c, nonce1, ack = authenticate(auth_broker)
    assert ack.reason_code == 0
    c.auth(raw.RC_REAUTHENTICATE, {"AuthenticationMethod": "OTHER-METHOD"})
    assert_server_closes(c, [raw.RC_PROTOCOL_ERROR, raw.RC_BAD_AUTHENTICATION_METHOD])


def test_reauthentication_without_enhanced_auth_is_protocol_error(auth_broker):
    """MQTT-4.12.0-7: no AUTH if the CONNECT had no Authentication Method."""
    c = raw_client(auth_broker)
    c.connect(client_id=uid(), username="alice", password=USERS["alice"])
    c.auth(raw.RC_REAUTHENTICATE, {"AuthenticationMethod": METHOD})
    assert_server_closes(c, [raw.RC_PROTOCOL_ERROR])


def test_plain_password_login_still_works(auth_broker):
    c = raw_client(auth_broker)
    assert c.connect(client_id=uid(), username="alice", password=USERS["alice"]).reason_code == 0
