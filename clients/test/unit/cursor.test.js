import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { startScriptedServer } from '../support/scripted-server.js';
import { assertNothingSent, closeClients, joinSession, openClient } from '../support/client-setup.js';

let server;
before(async () => (server = await startScriptedServer()));
afterEach(closeClients);
after(() => server.close());

test('a burst of cursor moves sends the first at once and the latest after the throttle', { timeout: 20_000 }, async () => {
	const { client, clock, connection } = await openClient(server, { cursorThrottle: 50 });
	await joinSession(client, connection, 's1');

	for (let position = 0; position < 100; position++) client.setCursor('s1', { eventId: 'e1', position });
	assert.deepEqual(await connection.next(), { type: 'cursor_update', sessionId: 's1', cursor: { eventId: 'e1', position: 0 } });
	await assertNothingSent(client, connection);
	await clock.advance(49);
	await assertNothingSent(client, connection);
	await clock.advance(1);
	assert.deepEqual((await connection.expect('cursor_update')).cursor, { eventId: 'e1', position: 99 });
	await clock.advance(1000);
	await assertNothingSent(client, connection);

	client.setCursor('s1', { eventId: 'e2', position: 1 });
	assert.deepEqual((await connection.expect('cursor_update')).cursor, { eventId: 'e2', position: 1 });
});

test('each session has its own throttle', { timeout: 20_000 }, async () => {
	const { client, clock, connection } = await openClient(server, { cursorThrottle: 100 });
	await joinSession(client, connection, 's1');
	await joinSession(client, connection, 's2');
	await clock.advance(100);
	client.setCursor('s1', { eventId: 'e1', position: 1 });
	client.setCursor('s2', { eventId: 'e2', position: 2 });
	assert.equal((await connection.expect('cursor_update')).sessionId, 's1');
	assert.equal((await connection.expect('cursor_update')).sessionId, 's2');
});

test('cursors are validated and refused for sessions not joined', async () => {
	const { client } = await openClient(server);
	assert.throws(() => client.setCursor('s1', { eventId: 'e1', position: -1 }), TypeError);
	assert.throws(() => client.setCursor('s1', { eventId: 7, position: 1 }), TypeError);
	assert.equal(client.setCursor('nowhere', { eventId: 'e1', position: 1 }), false);
});
