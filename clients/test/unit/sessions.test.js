import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { applyPresenceEvent } from '@presence/client';
import { presenceData, startScriptedServer } from '../support/scripted-server.js';
import { assertNothingSent, closeClients, joinSession, nextEvent, openClient } from '../support/client-setup.js';

let server;
before(async () => (server = await startScriptedServer()));
afterEach(closeClients);
after(() => server.close());

test('presence events apply in order: join, update, cursor, timeout, leave', () => {
	const alice = presenceData('alice');
	let users = new Map();
	users = applyPresenceEvent(users, { kind: 'join', user: alice });
	const afterJoin = users;
	users = applyPresenceEvent(users, { kind: 'update', user: { ...alice, status: 'away' } });
	users = applyPresenceEvent(users, { kind: 'cursor', user: { ...alice, status: 'away', cursor: { eventId: 'e2', position: 3 } } });
	assert.deepEqual(users.get('alice'), { ...alice, status: 'away', cursor: { eventId: 'e2', position: 3 } });
	assert.equal(afterJoin.get('alice').status, 'online', 'earlier maps are never modified');
	users = applyPresenceEvent(users, { kind: 'timeout', user: alice });
	assert.equal(users.get('alice').status, 'offline');
	users = applyPresenceEvent(users, { kind: 'leave', user: alice });
	assert.equal(users.has('alice'), false);
	assert.equal(applyPresenceEvent(users, { kind: 'teleport', user: alice }), users, 'unknown kinds change nothing');
});

test('a presence frame updates the users map and emits each event in order, then one session event', { timeout: 20_000 }, async () => {
	const { client, connection } = await openClient(server);
	const { snapshot } = await joinSession(client, connection, 's1', [presenceData('u-self')]);
	assert.deepEqual([snapshot.sessionId, snapshot.role, snapshot.joined, [...snapshot.users.keys()]], ['s1', 'operator', true, ['u-self']]);

	const seen = [];
	for (const kind of ['join', 'update', 'cursor', 'leave', 'timeout']) {
		client.on(kind, ({ sessionId, user }) => seen.push([kind, sessionId, user.userId, user.status]));
	}
	const changed = nextEvent(client, 'session');
	connection.send({
		type: 'presence',
		sessionId: 's1',
		events: [
			{ kind: 'join', user: presenceData('bob') },
			{ kind: 'join', user: presenceData('carol') },
			{ kind: 'update', user: presenceData('bob', { status: 'away' }) },
			{ kind: 'cursor', user: presenceData('carol', { cursor: { eventId: 'e5', position: 50 } }) },
			{ kind: 'leave', user: presenceData('bob') },
			{ kind: 'timeout', user: presenceData('carol', { cursor: { eventId: 'e5', position: 50 } }) },
		],
	});
	const session = await changed;
	assert.deepEqual(seen, [
		['join', 's1', 'bob', 'online'],
		['join', 's1', 'carol', 'online'],
		['update', 's1', 'bob', 'away'],
		['cursor', 's1', 'carol', 'online'],
		['leave', 's1', 'bob', 'online'],
		['timeout', 's1', 'carol', 'offline'],
	]);
	assert.deepEqual([...session.users.keys()], ['u-self', 'carol']);
	assert.deepEqual(session.users.get('carol').cursor, { eventId: 'e5', position: 50 });
	assert.equal(client.users('s1'), session.users);
	assert.notEqual(session, snapshot, 'snapshots are replaced, not modified');
});

test('activity, broadcast and session_ended reach listeners; other sessions are ignored', { timeout: 20_000 }, async () => {
	const { client, connection } = await openClient(server);
	await joinSession(client, connection, 's1');
	const activity = nextEvent(client, 'activity');
	const broadcast = nextEvent(client, 'broadcast');
	const ended = nextEvent(client, 'session_ended');
	const stranger = { type: 'activity', sessionId: 'not-mine', activity: { id: 'x' } };
	connection.send(stranger);
	connection.send({ type: 'activity', sessionId: 's1', activity: { id: 'a1', userId: 'bob', activityType: 'comment', details: {}, createdAt: 1 } });
	connection.send({ type: 'broadcast', sessionId: 's1', payload: { hello: 'world' } });
	connection.send({ type: 'session_ended', sessionId: 's1', status: 'completed' });
	assert.equal((await activity).activity.id, 'a1');
	assert.deepEqual(await broadcast, { sessionId: 's1', payload: { hello: 'world' } });
	assert.deepEqual(await ended, { sessionId: 's1', status: 'completed' });
	assert.deepEqual([client.session('s1').joined, client.session('s1').ended], [false, 'completed']);
});

test('joins are counted: only the last leave sends session_leave', { timeout: 20_000 }, async () => {
	const { client, connection } = await openClient(server);
	await joinSession(client, connection, 's1');
	connection.send({ type: 'presence', sessionId: 's1', events: [{ kind: 'join', user: presenceData('bob') }] });
	await nextEvent(client, 'join');
	const second = await client.join('s1');
	assert.deepEqual([second.joined, [...second.users.keys()]], [true, ['bob']], 'a second join resolves with the current snapshot');
	await client.leave('s1');
	await assertNothingSent(client, connection);
	const left = client.leave('s1');
	const leave = await connection.expect('session_leave');
	connection.send({ type: 'ack', ref: leave.ref });
	await left;
	assert.equal(client.session('s1'), undefined);
});

test('a session joined before connecting is joined once the connection opens', { timeout: 20_000 }, async () => {
	const { client } = await openClient(server);
	client.close();
	const joining = client.join('s2', { cursor: { eventId: 'e1', position: 0 } });
	client.connect();
	const next = await server.nextConnection();
	await next.welcome();
	const join = await next.acceptJoin([presenceData('u-self')]);
	assert.deepEqual(join.cursor, { eventId: 'e1', position: 0 });
	assert.equal((await joining).joined, true);
	await assertNothingSent(client, next);
});

test('a refused join rejects with the server error and is not retried', { timeout: 20_000 }, async () => {
	const { client, connection } = await openClient(server);
	const joining = client.join('secret');
	const join = await connection.expect('session_join');
	connection.send({ type: 'error', ref: join.ref, code: 'forbidden', message: 'not a participant' });
	await assert.rejects(joining, { code: 'forbidden', sessionId: 'secret' });
	assert.equal(client.session('secret'), undefined);
});

test('session_removed stops the session; a later join asks the server again', { timeout: 20_000 }, async () => {
	const { client, connection } = await openClient(server);
	await joinSession(client, connection, 's1');
	const removed = nextEvent(client, 'session_removed');
	connection.send({ type: 'session_removed', sessionId: 's1', reason: 'removed from the session' });
	assert.deepEqual(await removed, { sessionId: 's1', reason: 'removed from the session' });
	assert.deepEqual([client.session('s1').joined, client.session('s1').removed], [false, 'removed from the session']);
	client.setCursor('s1', { eventId: 'e1', position: 1 });
	client.markAway();
	await assertNothingSent(client, connection);

	const joining = client.join('s1');
	const join = await connection.expect('session_join');
	connection.send({ type: 'error', ref: join.ref, code: 'forbidden', message: 'not a participant' });
	await assert.rejects(joining, { code: 'forbidden' });
	assert.equal(client.session('s1'), undefined);
});

test('this user\'s own entry follows what the client sent, since the server does not echo it', { timeout: 20_000 }, async () => {
	const { client, connection } = await openClient(server, { welcome: { userId: 'me' } });
	await joinSession(client, connection, 's1', [presenceData('me')]);
	client.setCursor('s1', { eventId: 'e6', position: 7 });
	await connection.expect('cursor_update');
	client.setStatus('s1', 'away', 'lunch');
	await connection.expect('presence_update');
	assert.deepEqual(pickPresence(client.users('s1').get('me')), { status: 'away', activity: 'lunch', cursor: { eventId: 'e6', position: 7 } });
});

function pickPresence({ status, activity, cursor }) {
	return { status, activity, cursor };
}
