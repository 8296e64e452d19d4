// Whole sessions in real Chromium with the browser's default WebSocket
// (permessage-deflate negotiated) and the server's default settings: a
// user who keeps moving the pointer and logging activity for a quarter of a
// minute stays connected, every activity is acknowledged and logged, and the
// audit log has one join per user, not a join/leave pair per reconnect.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { connectionOpen, markerOf, openDemo, participant, pointAt, STEP_TIMEOUT_MS, withDemoServer } from '../support/browser.js';
import { artifacts } from '../support/cluster.js';

const RUN_MS = 16_000;
const CURSOR_EVERY_MS = 25; // 40 cursor updates a second, under the default rate_limit of 50
const ACTIVITY_EVERY_MS = 1000;
const BROADCAST_EVERY_MS = 1000;
const BROADCAST_PAD_BYTES = 8000; // several KiB server->client frames (payload limit: max_message_bytes, 16 KiB)
const PROBE_PAGE = 'probe.html';
const SETTLE_MS = 20_000; // for the last acks, rows and cursor events after the traffic stops

let cluster;
let browser;
let alice;
let bob;

// Default settings but for the served demo page: compression is on by default.
withDemoServer('whole-session', (ready) => ({ cluster, browser, alice, bob } = ready), {
	prepare: (assembled) => writeFile(path.join(assembled.dir, PROBE_PAGE), '<!doctype html><title>probe</title>\n', { mode: 0o644 }),
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function eventually(what, check, timeoutMs = SETTLE_MS) {
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		const value = await check();
		if (value) return value;
		if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
		await sleep(250);
	}
}

/** The session's user_joined / user_left / user_timeout rows per user: {userId: {user_joined: n, ...}}. */
async function membershipRows(sessionId) {
	const counts = {};
	for (const row of await cluster.activityLog(sessionId, ['user_joined', 'user_left', 'user_timeout'])) {
		const forUser = (counts[row.userId] ??= {});
		forUser[row.activityType] = (forUser[row.activityType] ?? 0) + 1;
	}
	return counts;
}

// --- a hand-written client in the page: the browser's own WebSocket, nothing disabled

/**
 * A blank page from the server (a page fulfilled by playwright instead
 * counts as public, and Chromium's local network access checks then
 * refuse its WebSocket to 127.0.0.1), whose JS holds one raw WebSocket in
 * window.probe.
 */
async function openProbePage(sockets) {
	const context = await browser.newContext();
	const page = await context.newPage();
	page.setDefaultTimeout(STEP_TIMEOUT_MS);
	page.on('websocket', (socket) => sockets.push(socket));
	await page.goto(`${cluster.httpUrl}/${PROBE_PAGE}`);
	return page;
}

/**
 * In the page: opens the socket, authenticates with the first message and
 * joins; records every close, socket error and received message (without
 * big payloads) in window.probe; sends a heartbeat every 5 s.
 */
function probeConnect({ url, token, sessionId }) {
	const probe = {
		closes: [],
		socketErrors: 0,
		received: [],
		sent: { cursor: 0, activity: 0, heartbeat: 0 },
		lastCursor: null,
	};
	window.probe = probe;
	const ws = new WebSocket(url, 'presence.v1');
	probe.send = (message) => {
		if (ws.readyState !== WebSocket.OPEN) return false;
		ws.send(JSON.stringify(message));
		return true;
	};
	ws.addEventListener('close', (event) =>
		probe.closes.push({ code: event.code, reason: event.reason, afterSeconds: (performance.now() - probe.openedAt) / 1000, sent: { ...probe.sent } }),
	);
	ws.addEventListener('error', () => probe.socketErrors++);
	ws.addEventListener('message', (event) => {
		const message = JSON.parse(event.data);
		const entry = { type: message.type, bytes: event.data.length, ref: message.ref ?? null };
		if (message.type === 'error') Object.assign(entry, { code: message.code, message: message.message });
		if (message.type === 'ack') entry.activityId = message.activityId ?? null;
		if (message.type === 'presence') {
			entry.events = message.events.map(({ kind, user }) => ({ kind, userId: user.userId, cursor: user.cursor ?? null }));
		}
		if (message.type === 'broadcast') entry.seq = message.payload.seq;
		if (message.type === 'activity') entry.seq = message.activity.details?.seq ?? null;
		probe.received.push(entry);
	});
	const reply = (ref) =>
		new Promise((resolve, reject) => {
			const onMessage = (event) => {
				const message = JSON.parse(event.data);
				if (message.ref !== ref) return;
				ws.removeEventListener('message', onMessage);
				if (message.type === 'error') reject(new Error(`${ref}: ${message.code} ${message.message}`));
				else resolve(message);
			};
			ws.addEventListener('message', onMessage);
			ws.addEventListener('close', (event) => reject(new Error(`${ref}: closed ${event.code} ${event.reason}`)));
		});
	return new Promise((resolve, reject) => {
		ws.addEventListener('error', () => reject(new Error('the WebSocket failed to open')));
		ws.addEventListener('open', async () => {
			probe.openedAt = performance.now();
			try {
				const welcome = reply('auth');
				probe.send({ type: 'auth', token, ref: 'auth' });
				await welcome;
				const joined = reply('join');
				probe.send({ type: 'session_join', sessionId, ref: 'join' });
				const { users } = await joined;
				setInterval(() => probe.send({ type: 'heartbeat', sessionId, ref: `h${++probe.sent.heartbeat}` }), 5000);
				resolve({ extensions: ws.extensions, protocol: ws.protocol, users: users.map((user) => user.userId) });
			} catch (error) {
				reject(error);
			}
		});
	});
}

/**
 * In the page: for `runMs` sends a cursor update every `cursorEveryMs` (a new
 * position each time) and an activity with a `ref` and a few KiB of random
 * details every `activityEveryMs`; stops early if the socket closes.
 */
function probeRun({ sessionId, runMs, cursorEveryMs, activityEveryMs }) {
	const probe = window.probe;
	const randomHex = (bytes) => Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, '0')).join('');
	return new Promise((resolve) => {
		const timers = [];
		const done = () => {
			for (const timer of timers) clearInterval(timer);
			resolve({ sent: { ...probe.sent }, lastCursor: probe.lastCursor, closes: probe.closes });
		};
		timers.push(
			setInterval(() => {
				const n = probe.sent.cursor + 1;
				const cursor = { eventId: `e${1 + (n % 10)}`, position: n };
				if (probe.send({ type: 'cursor_update', sessionId, cursor })) {
					probe.sent.cursor = n;
					probe.lastCursor = cursor;
				}
			}, cursorEveryMs),
			setInterval(() => {
				const seq = probe.sent.activity + 1;
				const details = { seq, note: 'whole-session probe activity', pad: randomHex(1536) };
				if (probe.send({ type: 'activity', sessionId, activityType: 'probe.tick', details, ref: `act${seq}` })) probe.sent.activity = seq;
			}, activityEveryMs),
			setInterval(() => {
				if (probe.closes.length > 0) done();
			}, 100),
		);
		setTimeout(done, runMs);
	});
}

const probeState = (page) => page.evaluate(() => ({ received: window.probe.received, closes: window.probe.closes, socketErrors: window.probe.socketErrors }));

const presenceEventsAbout = (received, userId) =>
	received.filter((m) => m.type === 'presence').flatMap((m) => m.events.filter((e) => e.userId === userId));

test('a Chromium WebSocket with permessage-deflate stays up through a busy session', { timeout: 240_000 }, async () => {
	const sessionId = await cluster.createSession('whole-raw', alice, [{ user: bob, role: 'operator' }]);
	const aliceSockets = [];
	const bobSockets = [];
	const pageA = await openProbePage(aliceSockets);
	const pageB = await openProbePage(bobSockets);
	const connect = (user) => ({ url: cluster.wsUrl, token: user.token, sessionId });
	const openedA = await pageA.evaluate(probeConnect, connect(alice));
	const openedB = await pageB.evaluate(probeConnect, connect(bob));

	// Chromium offered compression and the server took it: this is the setting users have.
	assert.match(openedA.extensions, /permessage-deflate/, 'Alice\'s socket negotiated permessage-deflate');
	assert.match(openedB.extensions, /permessage-deflate/, 'Bob\'s socket negotiated permessage-deflate');
	assert.equal(openedA.protocol, 'presence.v1');
	assert.ok(openedB.users.includes(alice.id), 'Bob joins with Alice present');

	// While Alice's page sends, SQL broadcasts several-KiB payloads to both pages.
	let broadcasting = true;
	let broadcasts = 0;
	const broadcaster = (async () => {
		while (broadcasting) {
			const seq = broadcasts + 1;
			await cluster.broadcast(sessionId, { seq, pad: randomBytes(BROADCAST_PAD_BYTES / 2).toString('hex') });
			broadcasts = seq;
			await sleep(BROADCAST_EVERY_MS);
		}
	})();
	const run = await pageA.evaluate(probeRun, { sessionId, runMs: RUN_MS, cursorEveryMs: CURSOR_EVERY_MS, activityEveryMs: ACTIVITY_EVERY_MS });
	broadcasting = false;
	await broadcaster;

	// The first thing that went wrong before the fix: the socket closed (1006) after a few messages.
	assert.deepEqual(run.closes, [], `Alice's socket closed during the run (sent ${JSON.stringify(run.sent)})`);
	assert.ok(run.sent.cursor >= (RUN_MS / CURSOR_EVERY_MS) * 0.5, `the page kept up its 40/s cursor updates (${run.sent.cursor} sent)`);
	assert.ok(run.sent.activity >= (RUN_MS / ACTIVITY_EVERY_MS) * 0.75, `the page logged an activity a second (${run.sent.activity} sent)`);
	assert.ok(broadcasts >= 5, `SQL broadcast during the run (${broadcasts} sent)`);

	// Every activity is acknowledged, Bob's view of Alice's cursor catches up, both get every broadcast.
	const refs = Array.from({ length: run.sent.activity }, (_, i) => `act${i + 1}`);
	let a;
	let b;
	await eventually('every activity is acknowledged and both pages have every broadcast, every activity and Alice\'s last cursor', async () => {
		[a, b] = [await probeState(pageA), await probeState(pageB)];
		const answered = new Set(a.received.filter((m) => m.ref?.startsWith?.('act')).map((m) => m.ref));
		const lastSeen = presenceEventsAbout(b.received, alice.id).filter((e) => e.kind === 'cursor').at(-1)?.cursor;
		const hasAll = (state) =>
			state.received.filter((m) => m.type === 'broadcast').length >= broadcasts &&
			state.received.filter((m) => m.type === 'activity').length >= run.sent.activity;
		return (a.closes.length > 0 || b.closes.length > 0) ||
			(refs.every((ref) => answered.has(ref)) && lastSeen?.position === run.lastCursor.position && hasAll(a) && hasAll(b));
	});
	assert.deepEqual(a.closes, [], 'Alice\'s socket never closed');
	assert.deepEqual(b.closes, [], 'Bob\'s socket never closed');
	assert.equal(a.socketErrors + b.socketErrors, 0, 'no socket error events');
	assert.equal(aliceSockets.length, 1, 'Alice\'s page opened one WebSocket');
	assert.equal(bobSockets.length, 1, 'Bob\'s page opened one WebSocket');
	assert.deepEqual(a.received.filter((m) => m.type === 'error'), [], 'Alice got no errors (no rate_limited, no bad_request)');
	assert.deepEqual(b.received.filter((m) => m.type === 'error'), [], 'Bob got no errors');

	const acks = new Map(a.received.filter((m) => m.type === 'ack' && m.ref?.startsWith?.('act')).map((m) => [m.ref, m.activityId]));
	assert.deepEqual([...acks.keys()].sort(), [...refs].sort(), 'every activity got exactly its ack');
	for (const [ref, activityId] of acks) assert.match(String(activityId), /^[0-9a-f-]{36}$/, `the ack of ${ref} names the activity row`);

	// Server->client compressed traffic: Bob got Alice's cursors, both got every several-KiB broadcast.
	const cursorsSeen = presenceEventsAbout(b.received, alice.id).filter((e) => e.kind === 'cursor');
	assert.ok(cursorsSeen.length >= RUN_MS / 1000, `Bob saw Alice's cursor move (${cursorsSeen.length} cursor events)`);
	assert.equal(cursorsSeen.at(-1).cursor.position, run.lastCursor.position, 'Bob ends up seeing Alice\'s last cursor');
	for (const [who, state] of [['Alice', a], ['Bob', b]]) {
		const got = state.received.filter((m) => m.type === 'broadcast');
		assert.deepEqual(got.map((m) => m.seq), Array.from({ length: broadcasts }, (_, i) => i + 1), `${who} got every broadcast, in order`);
		assert.ok(got.every((m) => m.bytes > BROADCAST_PAD_BYTES), `${who}'s broadcast frames are several KiB`);
		assert.equal(state.received.filter((m) => m.type === 'activity').length, run.sent.activity, `${who} got every activity event`);
	}

	// No churn: Bob never saw Alice leave or come back, and Alice saw nothing of the sort about Bob.
	const churn = (received, userId) => presenceEventsAbout(received, userId).filter((e) => e.kind !== 'cursor' && e.kind !== 'update').map((e) => e.kind);
	assert.deepEqual(churn(b.received, alice.id), [], 'Bob saw no join/leave/timeout of Alice');
	assert.deepEqual(churn(a.received, bob.id), ['join'], 'Alice saw Bob join once');

	// The log: every acked activity is a row, and one user_joined per user, no user_left.
	const rows = await cluster.activityLog(sessionId, ['probe.tick']);
	assert.deepEqual(rows.map((row) => row.id).sort(), [...acks.values()].sort(), 'the acked activities are exactly the rows in presence.activity_log');
	assert.deepEqual(rows.map((row) => row.details.seq), Array.from({ length: run.sent.activity }, (_, i) => i + 1), 'in the order sent');
	assert.ok(rows.every((row) => row.userId === alice.id && row.details.pad.length === 3072), 'with their details intact');
	assert.deepEqual(await membershipRows(sessionId), { [alice.id]: { user_joined: 1 }, [bob.id]: { user_joined: 1 } });

	// Closing the page ends the session's one join/leave pair for Alice.
	await pageA.context().close();
	await eventually('Alice\'s user_left is logged', async () => (await membershipRows(sessionId))[alice.id]?.user_left);
	assert.deepEqual(await membershipRows(sessionId), { [alice.id]: { user_joined: 1, user_left: 1 }, [bob.id]: { user_joined: 1 } });
});

// --- the demo page

/** Init script of a demo page: window.demoLog records every connection state and every participant's status changes. */
function recordDemo() {
	const log = { states: [], statuses: {} };
	window.demoLog = log;
	new MutationObserver(() => {
		const state = document.querySelector('[data-testid="connection-state"]')?.dataset.state;
		if (state && state !== log.states.at(-1)) log.states.push(state);
		for (const item of document.querySelectorAll('[data-testid="participant"]')) {
			const seen = (log.statuses[item.dataset.userId] ??= []);
			if (seen.at(-1) !== item.dataset.status) seen.push(item.dataset.status);
		}
	}).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-state', 'data-status'] });
}

test('Alice moves her pointer over the demo timeline for a quarter of a minute without a reconnect', { timeout: 240_000 }, async () => {
	const sessionId = await cluster.createSession('whole-demo', alice, [{ user: bob, role: 'operator' }]);
	const errors = [];
	const aliceSockets = [];
	const bobSockets = [];
	const handshakes = [];
	const pageA = await openDemo(browser, cluster, { user: alice, sessionId, errors, sockets: aliceSockets, handshakes, initScript: recordDemo });
	const pageB = await openDemo(browser, cluster, { user: bob, sessionId, errors, sockets: bobSockets, initScript: recordDemo });
	await connectionOpen(pageA).waitFor();
	await connectionOpen(pageB).waitFor();
	await participant(pageB, alice).and(pageB.locator('[data-status="online"]')).waitFor();
	await participant(pageA, bob).and(pageA.locator('[data-status="online"]')).waitFor();
	const aliceWs = aliceSockets[0];
	assert.ok(aliceWs, 'Alice\'s page opened a WebSocket');
	let cursorFrames = 0;
	aliceWs.on('framesent', ({ payload }) => {
		if (String(payload).includes('"cursor_update"')) cursorFrames++;
	});
	assert.match(handshakes[0]?.['sec-websocket-extensions'] ?? '', /permessage-deflate/, 'the demo page\'s socket negotiated permessage-deflate');

	// Back and forth along the timeline, one small move every 25 ms.
	const track = await pageA.locator('[data-role="track"]').boundingBox();
	const y = track.y + track.height / 2;
	const xs = Array.from({ length: 60 }, (_, i) => track.x + 2 + ((track.width - 4) * i) / 59);
	const sweep = [...xs, ...xs.slice(1, -1).reverse()];
	const started = Date.now();
	let moves = 0;
	while (Date.now() - started < RUN_MS) {
		await pageA.mouse.move(sweep[moves % sweep.length], y);
		moves++;
		await sleep(CURSOR_EVERY_MS);
	}
	await pointAt(pageA, 'e7', 0.5);

	const assertSteady = async (when) => {
		const logA = await pageA.evaluate(() => window.demoLog);
		const logB = await pageB.evaluate(() => window.demoLog);
		assert.deepEqual(logA.states.filter((state) => state !== 'idle'), ['connecting', 'open'], `${when}: Alice's page connected once and never left the open state`);
		assert.equal(aliceSockets.length, 1, `${when}: Alice's page opened one WebSocket`);
		assert.equal(handshakes.length, 1, `${when}: one WebSocket handshake`);
		assert.equal(aliceWs.isClosed(), false, `${when}: Alice's WebSocket is open`);
		assert.deepEqual(logB.states.filter((state) => state !== 'idle'), ['connecting', 'open'], `${when}: Bob's page stayed connected`);
		assert.equal(bobSockets.length, 1, `${when}: Bob's page opened one WebSocket`);
		assert.deepEqual(logB.statuses[alice.id], ['online'], `${when}: Bob saw Alice online throughout`);
		assert.equal(await pageB.locator('[data-testid="feed-item"][data-kind="leave"], [data-testid="feed-item"][data-kind="timeout"]').count(), 0,
			`${when}: Bob's feed has no leave or timeout`);
		assert.equal(await pageA.locator('[data-testid="feed-item"][data-kind="connection"]').count(), 0, `${when}: Alice's feed has no lost connection`);
	};
	await assertSteady('after the pointer stopped');
	assert.ok(moves >= RUN_MS / CURSOR_EVERY_MS / 4, `the pointer kept moving (${moves} moves)`);
	assert.ok(cursorFrames >= (RUN_MS / 1000) * 5, `Alice's page sent cursor updates all along (${cursorFrames})`);

	// Bob's marker for Alice follows her to where she stopped.
	await markerOf(pageB, alice).and(pageB.locator('[data-event-id="e7"]')).waitFor();
	await pageB.screenshot({ path: path.join(artifacts, 'whole-session-demo.png') });
	await assertSteady('at the end');
	assert.deepEqual((await membershipRows(sessionId))[alice.id], { user_joined: 1 }, 'one user_joined for Alice and no user_left');
	assert.deepEqual(errors, []);
});
