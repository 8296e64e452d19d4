import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import WebSocket from 'ws';
import { PresenceClient, reconnectDelay, DEFAULT_RECONNECT } from '@presence/client';
import { presenceData, startScriptedServer } from '../support/scripted-server.js';
import { closeClients, joinSession, nextEvent, nextState, openClient } from '../support/client-setup.js';
import { FakeClock } from '../support/fake-clock.js';

let server;
before(async () => (server = await startScriptedServer()));
afterEach(closeClients);
after(() => server.close());

/** A WebSocket class that records the fake time of every connection attempt. */
function recordingWebSocket(clock, attempts) {
	return class extends WebSocket {
		constructor(...args) {
			super(...args);
			attempts.push(clock.now());
		}
	};
}

test('delays double from 1 s to the 30 s cap, reduced by jitter', () => {
	const delays = Array.from({ length: 8 }, (_, index) => reconnectDelay(index + 1, DEFAULT_RECONNECT, () => 0));
	assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
	assert.equal(reconnectDelay(3, DEFAULT_RECONNECT, () => 0.5), 3000);
	assert.equal(reconnectDelay(6, DEFAULT_RECONNECT, () => 0.999), 15015);
});

test('after a drop the client reconnects with a fresh token, rejoins and restores status and cursor', { timeout: 20_000 }, async () => {
	const clock = new FakeClock();
	const attempts = [];
	let tokensIssued = 0;
	const token = async () => `token-${++tokensIssued}`;
	const { client, connection } = await openClient(server, { clock, token, WebSocket: recordingWebSocket(clock, attempts) });
	const joined = await joinSession(client, connection, 's1', [presenceData('u-self'), presenceData('u-other')]);
	assert.equal(joined.snapshot.users.size, 2);
	client.setStatus('s1', 'away', 'reviewing');
	await connection.expect('presence_update');
	client.setCursor('s1', { eventId: 'e7', position: 12 });
	await connection.expect('cursor_update');

	const reconnecting = nextState(client, 'reconnecting');
	connection.close(1001, 'server shutting down');
	const change = await reconnecting;
	assert.deepEqual([change.attempt, change.delay], [1, 1000]);
	assert.equal(client.session('s1').joined, false);
	assert.equal(client.users('s1').size, 2, 'the last known users stay visible while reconnecting');

	const lostAt = clock.now();
	await clock.advance(999);
	assert.equal(attempts.length, 1);
	await clock.advance(1);
	assert.deepEqual(attempts.slice(1), [lostAt + 1000]);
	const second = await server.nextConnection();
	const auth = await second.welcome();
	assert.equal(auth.token, 'token-2');
	const rejoin = await second.expect('session_join');
	assert.deepEqual(
		{ ...rejoin, ref: 0 },
		{ type: 'session_join', sessionId: 's1', status: 'away', activity: 'reviewing', cursor: { eventId: 'e7', position: 12 }, ref: 0 },
	);
	const rejoined = nextEvent(client, 'joined');
	second.send({ type: 'session_joined', ref: rejoin.ref, sessionId: 's1', role: 'operator', users: [presenceData('u-self', { status: 'away' })] });
	assert.deepEqual([...(await rejoined).users.keys()], ['u-self']);
	assert.equal(client.state, 'open');

	// Success reset the backoff: the next loss waits 1 s again.
	const again = nextState(client, 'reconnecting');
	second.close(1001);
	assert.equal((await again).delay, 1000);
});

test('with the server gone the client retries 10 times, then fails for good', { timeout: 20_000 }, async () => {
	const gone = await startScriptedServer();
	await gone.close();
	const clock = new FakeClock();
	const attempts = [];
	const client = new PresenceClient({ url: gone.url, token: 't', clock, WebSocket: recordingWebSocket(clock, attempts) });
	const failed = nextState(client, 'failed');
	const connecting = client.connect();
	const delays = [];
	client.on('state', async (change) => {
		if (change.state !== 'reconnecting') return;
		delays.push(change.delay);
		await clock.advance(change.delay);
	});
	const { error } = await failed;
	await assert.rejects(connecting, { code: 'reconnect_failed' });
	assert.equal(error.code, 'reconnect_failed');
	assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000, 30000]);
	assert.equal(attempts.length, 11, 'the first attempt and 10 reconnections');
	client.close();
});

test('a fixed token the server refuses fails at once; a token provider is asked again', { timeout: 20_000 }, async () => {
	const fixed = new PresenceClient({ url: server.url, token: 'bad', WebSocket, clock: new FakeClock() });
	const refused = assert.rejects(fixed.connect(), { code: 'unauthorized' });
	(await server.nextConnection()).close(4001, 'invalid token');
	await refused;
	assert.equal(fixed.state, 'failed');

	const clock = new FakeClock();
	const tokens = ['expired', 'fresh'];
	const renewing = new PresenceClient({ url: server.url, token: () => tokens.shift(), WebSocket, clock });
	const connected = renewing.connect();
	(await server.nextConnection()).close(4001, 'token expired');
	await nextState(renewing, 'reconnecting');
	await clock.advance(1000);
	const retry = await server.nextConnection();
	assert.equal((await retry.welcome()).token, 'fresh');
	await connected;
	renewing.close();
});

test('a token provider that never answers is given up on after connectTimeout', { timeout: 20_000 }, async () => {
	const clock = new FakeClock();
	const tokens = [new Promise(() => {}), 'fresh'];
	const client = new PresenceClient({ url: server.url, token: () => tokens.shift(), WebSocket, clock, connectTimeout: 5000 });
	const connected = client.connect();
	const reconnecting = nextState(client, 'reconnecting');
	await clock.advance(5000);
	assert.equal((await reconnecting).error.code, 'timeout');
	await clock.advance(1000);
	assert.equal((await (await server.nextConnection()).welcome()).token, 'fresh');
	await connected;
	client.close();
});

test('a socket that never gets a welcome is abandoned after connectTimeout', { timeout: 20_000 }, async () => {
	const clock = new FakeClock();
	const client = new PresenceClient({ url: server.url, token: 't', WebSocket, clock, connectTimeout: 5000 });
	client.connect().catch(() => {});
	const silent = await server.nextConnection();
	await silent.expect('auth');
	const reconnecting = nextState(client, 'reconnecting');
	await clock.advance(5000);
	assert.equal((await reconnecting).error.code, 'timeout');
	assert.equal(await silent.closed, 4000);
	client.close();
});
