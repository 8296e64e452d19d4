import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { startScriptedServer } from '../support/scripted-server.js';
import { assertNothingSent, closeClients, joinSession, nextState, openClient } from '../support/client-setup.js';

let server;
before(async () => (server = await startScriptedServer()));
afterEach(closeClients);
after(() => server.close());

test('heartbeats follow the interval from welcome, one per joined session, with its latest cursor', { timeout: 20_000 }, async () => {
	const { client, clock, connection } = await openClient(server, { welcome: { heartbeatInterval: 1000 } });
	await joinSession(client, connection, 's1');

	await clock.advance(999);
	await assertNothingSent(client, connection);
	await clock.advance(1);
	const first = await connection.expect('heartbeat');
	assert.deepEqual({ ...first, ref: 0 }, { type: 'heartbeat', sessionId: 's1', ref: 0 });
	connection.send({ type: 'heartbeat_ack', ref: first.ref, serverTime: 0 });

	client.setCursor('s1', { eventId: 'e3', position: 40 });
	await connection.expect('cursor_update');
	await clock.advance(999);
	await assertNothingSent(client, connection);
	await clock.advance(1);
	const second = await connection.expect('heartbeat');
	assert.deepEqual(second.cursor, { eventId: 'e3', position: 40 });
	connection.send({ type: 'heartbeat_ack', ref: second.ref, serverTime: 0 });
});

test('without a joined session one bare heartbeat is sent', { timeout: 20_000 }, async () => {
	const { client, clock, connection } = await openClient(server, { welcome: { heartbeatInterval: 5000 } });
	await clock.advance(5000);
	const beat = await connection.expect('heartbeat');
	assert.equal(beat.sessionId, undefined);
	await assertNothingSent(client, connection);
});

test('an unanswered heartbeat replaces the connection', { timeout: 20_000 }, async () => {
	const { client, clock, connection } = await openClient(server, {
		welcome: { heartbeatInterval: 1000 },
		requestTimeout: 3000,
	});
	await clock.advance(1000);
	await connection.expect('heartbeat');
	const reconnecting = nextState(client, 'reconnecting');
	await clock.advance(3000);
	const change = await reconnecting;
	assert.equal(change.error.code, 'timeout');
	assert.equal(await connection.closed, 4000);
});
