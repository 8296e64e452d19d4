"""presence.trusted_proxies (issue 11): behind a reverse proxy the activity
log records the client the proxy forwards (the rightmost X-Forwarded-For
entry that is not a trusted proxy) and the proxy is not bounded as one
address; from any other peer the header is ignored."""

import asyncio

import pytest

from conftest import SCALE, Client
from test_admission import GUCS, is_closed, trickler


async def joined_address(cluster, forwarded_for, source=None):
    """The ip_address of the user_joined row of a client sending forwarded_for."""
    owner = cluster.create_user()
    sid = cluster.create_session(owner)
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else {}
    client = await Client.open(cluster, token=owner.token(), headers=headers)
    await client.expect("welcome")
    await client.request({"type": "session_join", "sessionId": sid})
    rows = cluster.wait_activity(sid, "user_joined")
    await client.close()
    return rows[0][3]


@pytest.mark.parametrize("trusted, forwarded_for, logged", [
    ("", "203.0.113.7", "127.0.0.1"),                               # no proxy trusted: the header is the client's word
    ("127.0.0.1", "203.0.113.7", "203.0.113.7"),
    ("127.0.0.1", "10.9.9.9, 203.0.113.7", "203.0.113.7"),          # what the client wrote itself is left of it
    ("127.0.0.0/8", "198.51.100.1, 127.0.0.5", "198.51.100.1"),     # a chain of trusted proxies
    ("127.0.0.1", "2001:db8::5", "2001:db8::5"),
    ("127.0.0.1", "not-an-address", "127.0.0.1"),
    ("127.0.0.1", None, "127.0.0.1"),
    ("192.0.2.0/24", "203.0.113.7", "127.0.0.1"),                   # the peer is not the trusted proxy
    # too long to be read whole: its left part is the client's, so none of it is believed
    ("127.0.0.1", ", ".join(["10.1.1.1"] * 200) + ", 6.6.6.6, 203.0.113.7", "127.0.0.1"),
])
async def test_the_logged_address_is_the_forwarded_client(cluster, gucs, trusted, forwarded_for, logged):
    gucs({"presence.trusted_proxies": trusted})
    assert await joined_address(cluster, forwarded_for) == logged


async def test_a_malformed_list_is_refused(cluster):
    with pytest.raises(Exception, match="not an IP address or CIDR range"):
        cluster.sql("ALTER SYSTEM SET presence.trusted_proxies = '127.0.0.1, 10.0.0.0/33'")


async def test_a_trusted_proxy_is_not_bounded_as_one_address(fresh_cluster):
    c = fresh_cluster(dict(GUCS, **{"presence.max_unauthenticated_per_address": "5",
                                    "presence.trusted_proxies": "127.0.0.40"}))
    # twenty clients' upgrades through the proxy at once, none authenticated yet
    proxied = [trickler(c, "127.0.0.40", complete=True) for _ in range(20)]
    direct = [trickler(c, "127.0.0.41", complete=True) for _ in range(20)]
    await asyncio.sleep(0.5 * SCALE)
    assert sum(is_closed(s) for s in proxied) == 0
    assert sum(is_closed(s) for s in direct) == 15
    for s in proxied + direct:
        s.close()
