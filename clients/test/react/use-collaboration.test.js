import '../support/dom.js';
import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { StrictMode, act, createElement } from 'react';
import { createRoot } from 'react-dom/client';
import { useCollaboration } from '@presence/react';
import { presenceData, startScriptedServer } from '../support/scripted-server.js';
import { closeClients, openClient } from '../support/client-setup.js';
import { settle } from '../support/fake-clock.js';

let server;
let root;
let container;
before(async () => (server = await startScriptedServer()));
afterEach(async () => {
	seen.renders = [];
	if (root) await act(() => root.unmount());
	root = null;
	container?.remove();
	closeClients();
});
after(() => server.close());

/** What the component saw at its latest render, plus every render's returned functions. */
const seen = { latest: null, renders: [] };

function Session({ client, sessionId }) {
	const collaboration = useCollaboration(client, sessionId);
	seen.latest = collaboration;
	seen.renders.push(collaboration);
	return createElement(
		'ul',
		{ 'data-state': collaboration.connectionState },
		collaboration.users.map((user) => createElement('li', { key: user.userId }, `${user.username}:${user.status}`)),
	);
}

async function render(element) {
	container ??= document.body.appendChild(document.createElement('div'));
	root ??= createRoot(container);
	await act(() => root.render(element));
}

/** Runs `event` inside act() and lets the resulting socket traffic and renders settle. */
async function actAndSettle(event = () => {}) {
	await act(async () => {
		event();
		await settle();
	});
}

/** Lets socket traffic arrive and React render until `check` passes (bounded). */
async function eventually(check, timeoutMs = 5000) {
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		await actAndSettle();
		try {
			return check();
		} catch (failure) {
			if (Date.now() > deadline) throw failure;
			await new Promise((resolve) => setTimeout(resolve, 10));
		}
	}
}

function listedUsers() {
	return [...container.querySelectorAll('li')].map((item) => item.textContent);
}

test('renders the users, this user and the connection state, and follows presence events', { timeout: 20_000 }, async () => {
	const { client, connection } = await openClient(server, { inputTarget: null, welcome: { userId: 'me', username: 'Me' } });
	await render(createElement(Session, { client, sessionId: 's1' }));
	assert.equal(container.querySelector('ul').dataset.state, 'open');

	await connection.acceptJoin([presenceData('me', { username: 'Me' })]);
	await eventually(() => assert.deepEqual(listedUsers(), ['Me:online']));
	assert.equal(seen.latest.me.userId, 'me');

	connection.send({
		type: 'presence',
		sessionId: 's1',
		events: [
			{ kind: 'join', user: presenceData('bob', { username: 'Bob' }) },
			{ kind: 'update', user: presenceData('bob', { username: 'Bob', status: 'away' }) },
		],
	});
	await eventually(() => assert.deepEqual(listedUsers(), ['Me:online', 'Bob:away']));

	connection.close(1001);
	await eventually(() => assert.equal(container.querySelector('ul').dataset.state, 'reconnecting'));
});

test('the returned functions keep their identity and act on the current session', { timeout: 20_000 }, async () => {
	const { client, connection } = await openClient(server, { inputTarget: null });
	await render(createElement(Session, { client, sessionId: 's1' }));
	await connection.acceptJoin();
	await eventually(() => assert.equal(seen.latest.session.joined, true));
	const { setCursor, setStatus, logActivity } = seen.latest;

	await render(createElement(Session, { client, sessionId: 's2' }));
	const leave = await connection.expect('session_leave');
	assert.equal(leave.sessionId, 's1');
	assert.equal((await connection.acceptJoin()).sessionId, 's2');
	await eventually(() => assert.equal(seen.latest.session.sessionId, 's2'));
	assert.ok(seen.renders.every((render) => render.setCursor === setCursor && render.setStatus === setStatus && render.logActivity === logActivity));

	await actAndSettle(() => setCursor({ eventId: 'e4', position: 10 }));
	const cursor = await connection.expect('cursor_update');
	assert.equal(cursor.sessionId, 's2');
	setStatus('away');
	assert.equal((await connection.expect('presence_update')).sessionId, 's2');
});

test('unmounting leaves the session and removes every listener it added', { timeout: 20_000 }, async () => {
	const { client, connection } = await openClient(server, { inputTarget: null });
	const events = ['session', 'state', 'error'];
	const before = events.map((event) => client.listenerCount(event));
	await render(createElement(Session, { client, sessionId: 's1' }));
	await connection.acceptJoin();
	await eventually(() => assert.equal(seen.latest.session.joined, true));
	await render(createElement(Session, { client, sessionId: 's1' }));
	assert.ok(client.listenerCount('session') > 0);

	await act(() => root.unmount());
	root = null;
	assert.equal((await connection.expect('session_leave')).sessionId, 's1');
	assert.deepEqual(events.map((event) => client.listenerCount(event)), before);
	assert.equal(client.session('s1'), undefined);
});

test('in StrictMode the session ends up joined once and is left on unmount', { timeout: 20_000 }, async () => {
	const { client, connection } = await openClient(server, { inputTarget: null });
	await render(createElement(StrictMode, null, createElement(Session, { client, sessionId: 's1' })));
	// StrictMode mounts, unmounts and mounts again: join, leave, join.
	const first = await connection.expect('session_join');
	await connection.expect('session_leave');
	await connection.acceptJoin([presenceData('u-self')]);
	connection.send({ type: 'session_joined', ref: first.ref, sessionId: 's1', role: 'operator', users: [] });
	await eventually(() => assert.equal(seen.latest.session.joined, true));
	await act(() => root.unmount());
	root = null;
	assert.equal((await connection.expect('session_leave')).sessionId, 's1');
});

test('a refused join is reported in error', { timeout: 20_000 }, async () => {
	const { client, connection } = await openClient(server, { inputTarget: null });
	await render(createElement(Session, { client, sessionId: 'secret' }));
	const join = await connection.expect('session_join');
	connection.send({ type: 'error', ref: join.ref, code: 'forbidden', message: 'not a participant' });
	await eventually(() => assert.equal(seen.latest.error?.code, 'forbidden'));
});

test('without a client the hook renders an empty, idle session', { timeout: 20_000 }, async () => {
	await render(createElement(Session, { client: null, sessionId: 's1' }));
	assert.deepEqual([seen.latest.users, seen.latest.me, seen.latest.connectionState], [[], null, 'idle']);
	assert.equal(seen.latest.setCursor({ eventId: 'e1', position: 0 }), false);
});
