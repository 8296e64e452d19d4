// @presence/client against the real server: a throwaway cluster from
// test/cluster.sh with short heartbeat timings.
import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import WebSocket from 'ws';
import { PresenceClient } from '@presence/client';
import { startCluster } from '../support/cluster.js';
import { nextEvent, nextState } from '../support/client-setup.js';

const HEARTBEAT_INTERVAL_MS = 1000;
// Long enough for a restart of the cluster, which takes a few seconds.
const RECONNECT = { initialDelay: 250, maxDelay: 2000, maxAttempts: 30 };

let cluster;
let alice;
let bob;
let carol;
const clients = new Set();
let sessionCount = 0;

before(async () => {
	cluster = await startCluster('integration', {
		'presence.heartbeat_interval': `${HEARTBEAT_INTERVAL_MS}ms`,
		'presence.heartbeat_timeout': '1s',
		// Tokens expire when they say, so the expiry test need not wait for the leeway.
		'presence.jwt_leeway': '0',
	});
	alice = await cluster.createUser('alice');
	bob = await cluster.createUser('bob');
	carol = await cluster.createUser('carol');
});
afterEach(() => {
	for (const client of clients) client.close();
	clients.clear();
});
after(() => cluster?.destroy());

function clientFor(user, options = {}) {
	const client = new PresenceClient({ url: cluster.wsUrl, token: user.token, WebSocket, reconnect: RECONNECT, ...options });
	clients.add(client);
	return client;
}

/** A fresh session owned by alice, with bob an operator and carol a viewer. */
function newSession() {
	return cluster.createSession(`clients-${process.pid}-${++sessionCount}`, alice, [
		{ user: bob, role: 'operator' },
		{ user: carol, role: 'viewer' },
	]);
}

async function joined(user, sessionId, options) {
	const client = clientFor(user, options);
	await client.connect();
	await client.join(sessionId);
	return client;
}

function userEvent(client, kind, userId, accept = () => true, timeoutMs = 10_000) {
	return nextEvent(client, kind, (event) => event.user.userId === userId && accept(event.user), timeoutMs);
}

test('a token provider authenticates; joined users see each other', { timeout: 60_000 }, async () => {
	const sessionId = await newSession();
	let tokenRequests = 0;
	const aliceClient = clientFor(alice, { token: async () => (tokenRequests++, alice.token) });
	const welcome = await aliceClient.connect();
	assert.equal(tokenRequests, 1);
	assert.deepEqual([welcome.userId, welcome.username, welcome.protocol], [alice.id, 'alice', 1]);
	assert.equal(welcome.heartbeatInterval, HEARTBEAT_INTERVAL_MS);
	const snapshot = await aliceClient.join(sessionId);
	assert.equal(snapshot.role, 'operator');
	assert.deepEqual([...snapshot.users.keys()], [alice.id]);

	const bobJoins = userEvent(aliceClient, 'join', bob.id);
	const bobClient = await joined(bob, sessionId);
	assert.equal((await bobJoins).user.username, 'bob');
	assert.deepEqual(new Set(bobClient.users(sessionId).keys()), new Set([alice.id, bob.id]));
	assert.equal(aliceClient.users(sessionId).get(bob.id).status, 'online');
});

test('offering the presence.v1 subprotocol is accepted', { timeout: 60_000 }, async () => {
	const client = clientFor(alice, { protocols: 'presence.v1' });
	assert.equal((await client.connect()).userId, alice.id);
});

test('when the token expires the provider is asked for a fresh one and the session is rejoined', { timeout: 60_000 }, async () => {
	const sessionId = await newSession();
	const shortLived = await cluster.sql(`SELECT presence.issue_token('${bob.id}', '2 seconds', 'bob')`);
	const tokens = [shortLived, bob.token];
	const bobClient = clientFor(bob, { token: () => tokens.shift() });
	await bobClient.connect();
	await bobClient.join(sessionId);
	const expired = await nextState(bobClient, 'reconnecting', 30_000);
	assert.equal(expired.error.code, 'unauthorized');
	assert.match(expired.error.message, /4001/);
	const rejoined = await nextEvent(bobClient, 'joined', () => true, 30_000);
	assert.equal(rejoined.sessionId, sessionId);
	assert.deepEqual(tokens, [], 'the provider was asked once per connection');
});

test('cursor moves reach the other user, latest wins', { timeout: 60_000 }, async () => {
	const sessionId = await newSession();
	const aliceClient = await joined(alice, sessionId);
	const bobClient = await joined(bob, sessionId);
	const last = { eventId: 'e9', position: 29 };
	const arrived = userEvent(bobClient, 'cursor', alice.id, (user) => user.cursor?.eventId === last.eventId && user.cursor.position === last.position);
	for (let position = 0; position < 30; position++) aliceClient.setCursor(sessionId, { eventId: 'e9', position });
	await arrived;
	assert.deepEqual(bobClient.users(sessionId).get(alice.id).cursor, last);
});

test('requests get their own reply or the server error', { timeout: 60_000 }, async () => {
	const sessionId = await newSession();
	const aliceClient = await joined(alice, sessionId);
	const carolClient = await joined(carol, sessionId);

	const seenByCarol = nextEvent(carolClient, 'activity', (event) => event.activity.activityType === 'comment');
	const { activityId } = await aliceClient.logActivity(sessionId, 'comment', { text: 'looks right' });
	assert.match(activityId, /\S/);
	const { activity } = await seenByCarol;
	assert.deepEqual([activity.id, activity.userId, activity.details.text], [activityId, alice.id, 'looks right']);

	await assert.rejects(carolClient.logActivity(sessionId, 'comment', { text: 'viewers may not' }), { code: 'forbidden' });
	await assert.rejects(aliceClient.request({ type: 'cursor_update', sessionId, cursor: { eventId: 'e1', position: -1 } }), { code: 'bad_request' });
	await assert.rejects(aliceClient.join(`${sessionId}-missing`), (error) => ['not_found', 'forbidden'].includes(error.code));
});

test('heartbeats keep a quiet client present while a silent socket times out', { timeout: 60_000 }, async () => {
	const sessionId = await newSession();
	const aliceClient = await joined(alice, sessionId);
	let acks = 0;
	const bobClient = await joined(bob, sessionId);
	bobClient.on('message', (message) => message.type === 'heartbeat_ack' && acks++);
	const timedOut = [];
	aliceClient.on('timeout', ({ user }) => timedOut.push(user.userId));

	const silent = await rawJoin(carol, sessionId);
	await userEvent(aliceClient, 'join', carol.id);
	const carolTimeout = userEvent(aliceClient, 'timeout', carol.id, () => true, 20_000);
	await carolTimeout;
	silent.close();
	assert.equal(aliceClient.users(sessionId).get(carol.id).status, 'offline');
	assert.deepEqual(timedOut, [carol.id], 'bob, who only heartbeats, never timed out');
	assert.ok(acks > 0, 'the server acknowledged bob\'s heartbeats');
	assert.equal(aliceClient.users(sessionId).get(bob.id).status, 'online');
});

test('no input for awayAfter shows away to others; the next input shows online', { timeout: 60_000 }, async () => {
	const sessionId = await newSession();
	const aliceClient = await joined(alice, sessionId);
	const wentAway = userEvent(aliceClient, 'update', bob.id, (user) => user.status === 'away');
	const bobClient = await joined(bob, sessionId, { awayAfter: 1500 });
	await wentAway;
	const back = userEvent(aliceClient, 'update', bob.id, (user) => user.status === 'online');
	bobClient.markActive();
	await back;
});

test('after a server restart clients reconnect, rejoin and restore status and cursor', { timeout: 120_000 }, async () => {
	const sessionId = await newSession();
	const aliceClient = await joined(alice, sessionId);
	const bobClient = await joined(bob, sessionId);
	const bobSettled = userEvent(aliceClient, 'cursor', bob.id, (user) => user.cursor?.eventId === 'e5');
	bobClient.setStatus(sessionId, 'away', 'reviewing');
	bobClient.setCursor(sessionId, { eventId: 'e5', position: 40 });
	await bobSettled;

	const aliceLost = nextState(aliceClient, 'reconnecting', 30_000);
	const aliceRejoined = nextEvent(aliceClient, 'joined', () => true, 60_000);
	const bobRejoined = nextEvent(bobClient, 'joined', () => true, 60_000);
	await cluster.restart();
	await aliceLost;
	await Promise.all([aliceRejoined, bobRejoined]);
	const bobBack = aliceClient.users(sessionId).get(bob.id)
		?? (await userEvent(aliceClient, 'join', bob.id, () => true, 30_000)).user;
	assert.equal(bobBack.status, 'away');
	assert.deepEqual(bobBack.cursor, { eventId: 'e5', position: 40 });
	assert.equal(bobBack.activity, 'reviewing');
	assert.equal(aliceClient.state, 'open');
});

test('broadcast and end_session from SQL reach joined clients', { timeout: 60_000 }, async () => {
	const sessionId = await newSession();
	const bobClient = await joined(bob, sessionId);
	const broadcast = nextEvent(bobClient, 'broadcast');
	await cluster.sql(`SELECT presence.broadcast('${sessionId}', '{"notice":"deploy at 5"}')`);
	assert.deepEqual((await broadcast).payload, { notice: 'deploy at 5' });

	const ended = nextEvent(bobClient, 'session_ended');
	await cluster.sql(`SELECT presence.end_session('${sessionId}', 'completed')`);
	assert.deepEqual(await ended, { sessionId, status: 'completed' });
	assert.equal(bobClient.session(sessionId).ended, 'completed');
});

test('a participant removed from SQL is told so and stops being joined', { timeout: 60_000 }, async () => {
	const sessionId = await newSession();
	const aliceClient = await joined(alice, sessionId);
	const bobClient = await joined(bob, sessionId);
	const removed = nextEvent(bobClient, 'session_removed');
	const bobLeaves = userEvent(aliceClient, 'leave', bob.id);
	await cluster.sql(`SELECT presence.remove_participant('${sessionId}', '${bob.id}')`);
	assert.equal((await removed).sessionId, sessionId);
	await bobLeaves;
	assert.equal(bobClient.session(sessionId).joined, false);
	await assert.rejects(bobClient.join(sessionId), { code: 'not_found' });
});

/** A bare socket that authenticates, joins and then says nothing. */
async function rawJoin(user, sessionId) {
	const socket = new WebSocket(cluster.wsUrl);
	await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
	socket.send(JSON.stringify({ type: 'auth', token: user.token }));
	socket.send(JSON.stringify({ type: 'session_join', sessionId, ref: 1 }));
	return socket;
}
