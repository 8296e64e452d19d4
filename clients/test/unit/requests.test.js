import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import WebSocket from 'ws';
import { PresenceClient, PresenceError } from '@presence/client';
import { startScriptedServer } from '../support/scripted-server.js';
import { closeClients, nextEvent, openClient } from '../support/client-setup.js';

let server;
before(async () => (server = await startScriptedServer()));
afterEach(closeClients);
after(() => server.close());

test('replies are matched to requests by ref, whatever their order', { timeout: 20_000 }, async () => {
	const { client, connection } = await openClient(server);
	const first = client.request({ type: 'session_create', target: 'a' });
	const second = client.request({ type: 'session_create', target: 'b' });
	const [a, b] = [await connection.next(), await connection.next()];
	assert.notEqual(a.ref, b.ref);
	connection.send({ type: 'session_created', ref: b.ref, session: { target: 'b' } });
	connection.send({ type: 'session_created', ref: a.ref, session: { target: 'a' } });
	assert.equal((await first).session.target, 'a');
	assert.equal((await second).session.target, 'b');
});

test('an error reply rejects with the server code and message', { timeout: 20_000 }, async () => {
	const { client, connection } = await openClient(server);
	const reply = client.logActivity('s1', 'comment', { text: 'hi' });
	const sent = await connection.expect('activity');
	assert.deepEqual(sent, { type: 'activity', sessionId: 's1', activityType: 'comment', details: { text: 'hi' }, ref: sent.ref });
	connection.send({ type: 'error', ref: sent.ref, code: 'forbidden', message: 'viewers cannot comment' });
	await assert.rejects(reply, (error) => {
		assert.ok(error instanceof PresenceError);
		assert.deepEqual([error.code, error.message, error.ref], ['forbidden', 'viewers cannot comment', sent.ref]);
		return true;
	});
});

test('a request without reply rejects with timeout; a late reply is ignored', { timeout: 20_000 }, async () => {
	const { client, clock, connection } = await openClient(server, { requestTimeout: 2000 });
	const reply = client.request({ type: 'session_create' });
	const sent = await connection.next();
	const timedOut = assert.rejects(reply, { code: 'timeout', ref: sent.ref });
	await clock.advance(2000);
	await timedOut;
	const errors = [];
	client.on('error', (error) => errors.push(error));
	connection.send({ type: 'session_created', ref: sent.ref, session: {} });
	connection.send({ type: 'ack', ref: 'unknown' });
	client.send({ type: 'probe' });
	await connection.expect('probe');
	assert.deepEqual(errors, []);
});

test('errors without a pending request become error events', { timeout: 20_000 }, async () => {
	const { client, connection } = await openClient(server);
	const rateLimited = nextEvent(client, 'error');
	connection.send({ type: 'error', code: 'rate_limited', message: 'slow down' });
	assert.deepEqual(pick(await rateLimited), { code: 'rate_limited', message: 'slow down' });

	const malformed = nextEvent(client, 'error');
	connection.socket.send('not json');
	assert.equal((await malformed).code, 'protocol');
});

test('requests fail fast when not connected and when the connection drops', { timeout: 20_000 }, async () => {
	const offline = new PresenceClient({ url: server.url, token: 't', WebSocket });
	await assert.rejects(offline.request({ type: 'heartbeat' }), { code: 'not_connected' });

	const { client, connection } = await openClient(server);
	const reply = client.request({ type: 'session_create' });
	await connection.next();
	connection.close(1011, 'boom');
	await assert.rejects(reply, { code: 'disconnected' });
});

function pick({ code, message }) {
	return { code, message };
}
