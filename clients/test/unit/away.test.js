import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { presenceData, startScriptedServer } from '../support/scripted-server.js';
import { assertNothingSent, closeClients, joinSession, openClient } from '../support/client-setup.js';
import { settle } from '../support/fake-clock.js';

// Heartbeats are not what these tests look at: keep them out of the way.
const welcome = { heartbeatInterval: 3_600_000 };

let server;
before(async () => (server = await startScriptedServer()));
afterEach(closeClients);
after(() => server.close());

function statusUpdates(connection, count) {
	return Promise.all(Array.from({ length: count }, () => connection.expect('presence_update')));
}

test('no input for awayAfter sends away to every session; the next input sends online', { timeout: 20_000 }, async () => {
	const { client, clock, connection } = await openClient(server, { welcome, awayAfter: 120_000 });
	await joinSession(client, connection, 's1');
	await joinSession(client, connection, 's2');

	await clock.advance(119_999);
	await assertNothingSent(client, connection);
	await clock.advance(1);
	const away = await statusUpdates(connection, 2);
	assert.deepEqual(
		away.map(({ sessionId, status }) => [sessionId, status]),
		[['s1', 'away'], ['s2', 'away']],
	);

	client.markActive();
	const back = await statusUpdates(connection, 2);
	assert.deepEqual(
		back.map(({ sessionId, status }) => [sessionId, status]),
		[['s1', 'online'], ['s2', 'online']],
	);
	client.markActive();
	await assertNothingSent(client, connection);
});

test('input restarts the away countdown', { timeout: 20_000 }, async () => {
	const { client, clock, connection } = await openClient(server, { welcome, awayAfter: 10_000 });
	await joinSession(client, connection, 's1');
	await clock.advance(6000);
	client.markActive();
	await clock.advance(6000);
	await assertNothingSent(client, connection);
	await clock.advance(4000);
	assert.equal((await connection.expect('presence_update')).status, 'away');
});

test('input after the server marked this user away sends online', { timeout: 20_000 }, async () => {
	const { client, connection } = await openClient(server, { welcome: { userId: 'me' } });
	await joinSession(client, connection, 's1', [presenceData('me')]);
	connection.send({ type: 'presence', sessionId: 's1', events: [{ kind: 'update', user: presenceData('me', { status: 'away' }) }] });
	await settle();
	await assertNothingSent(client, connection);
	client.markActive();
	assert.equal((await connection.expect('presence_update')).status, 'online');
});

test('a chosen away status survives input; choosing online again sends it', { timeout: 20_000 }, async () => {
	const { client, connection } = await openClient(server);
	await joinSession(client, connection, 's1');
	client.setStatus('s1', 'away', 'in a meeting');
	assert.deepEqual(await connection.next(), { type: 'presence_update', sessionId: 's1', status: 'away', activity: 'in a meeting' });
	client.markActive();
	await assertNothingSent(client, connection);
	client.setStatus('s1', 'online');
	assert.equal((await connection.expect('presence_update')).status, 'online');
});

test('in a browser, pointer input and visibility drive away and back', { timeout: 20_000 }, async () => {
	const page = fakeWindow();
	const { client, connection } = await openClient(server, { inputTarget: page });
	await joinSession(client, connection, 's1');

	page.document.visibilityState = 'hidden';
	page.document.dispatchEvent(new Event('visibilitychange'));
	assert.equal((await connection.expect('presence_update')).status, 'away');
	page.document.visibilityState = 'visible';
	page.document.dispatchEvent(new Event('visibilitychange'));
	assert.equal((await connection.expect('presence_update')).status, 'online');

	client.markAway();
	await connection.expect('presence_update');
	page.dispatchEvent(new Event('pointermove'));
	assert.equal((await connection.expect('presence_update')).status, 'online');

	client.close();
	assert.equal(page.listeners, 0, 'close() removes the input listeners');
	assert.equal(page.document.listeners, 0);
});

/** Enough of a browser window for the input watcher, counting its listeners. */
function fakeWindow() {
	const document = Object.assign(countingTarget(), { visibilityState: 'visible' });
	return Object.assign(countingTarget(), { document });
}

function countingTarget() {
	const target = new EventTarget();
	target.listeners = 0;
	const add = target.addEventListener.bind(target);
	const remove = target.removeEventListener.bind(target);
	target.addEventListener = (...args) => (target.listeners++, add(...args));
	target.removeEventListener = (...args) => (target.listeners--, remove(...args));
	return target;
}
