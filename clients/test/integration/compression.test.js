// Node's `ws` with its default permessage-deflate (a 15-bit window and
// context takeover both ways) against the real server, for a whole
// session: bursts of small messages, large frames both ways, every
// activity row written (issue 8).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';
import { startCluster } from '../support/cluster.js';

const WAIT_MS = 15_000;

let cluster;
let alice;
let bob;

before(async () => {
	cluster = await startCluster('compression', {
		'presence.rate_limit': '1000',
		'presence.max_message_bytes': '65536',
	});
	alice = await cluster.createUser('alice');
	bob = await cluster.createUser('bob');
});
after(() => cluster?.destroy());

/** A socket whose messages wait in an inbox until a test takes the one it wants. */
class Peer {
	inbox = [];
	#waiters = [];

	static async open(user) {
		const peer = new Peer();
		// no options: perMessageDeflate is on by default
		peer.ws = new WebSocket(cluster.wsUrl, { headers: { Authorization: `Bearer ${user.token}` } });
		peer.ws.on('message', (data) => peer.#arrived(JSON.parse(data.toString())));
		peer.closed = new Promise((resolve) => peer.ws.on('close', (code) => resolve(code)));
		await new Promise((resolve, reject) => {
			peer.ws.once('open', resolve);
			peer.ws.once('error', reject);
		});
		await peer.expect((m) => m.type === 'welcome');
		return peer;
	}

	#arrived(message) {
		const i = this.#waiters.findIndex((w) => w.accept(message));
		if (i < 0) this.inbox.push(message);
		else this.#waiters.splice(i, 1)[0].resolve(message);
	}

	send(message) {
		this.ws.send(JSON.stringify(message));
	}

	/** The first message (inbox first) that accept() takes; fails on a close or after WAIT_MS. */
	expect(accept) {
		const i = this.inbox.findIndex(accept);
		if (i >= 0) return Promise.resolve(this.inbox.splice(i, 1)[0]);
		return new Promise((resolve, reject) => {
			const waiter = { accept, resolve };
			const fail = (why) => {
				this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
				reject(new Error(why));
			};
			const timer = setTimeout(() => fail(`no matching message within ${WAIT_MS} ms`), WAIT_MS);
			this.closed.then((code) => fail(`closed with ${code}`));
			waiter.resolve = (message) => {
				clearTimeout(timer);
				resolve(message);
			};
			this.#waiters.push(waiter);
		});
	}

	reply(ref) {
		return this.expect((m) => m.ref === ref);
	}
}

async function joinedPeers() {
	const sessionId = `compression-${process.pid}-${Date.now()}`;
	await cluster.createSession(sessionId, alice, [{ user: bob, role: 'operator' }]);
	const peers = [];
	for (const user of [alice, bob]) {
		const peer = await Peer.open(user);
		peer.send({ type: 'session_join', sessionId, ref: 'join' });
		assert.equal((await peer.reply('join')).type, 'session_joined');
		peers.push(peer);
	}
	return { sessionId, peers };
}

test('bursts of small messages keep a compressed connection', { timeout: 120_000 }, async () => {
	const { sessionId, peers: [a, b] } = await joinedPeers();
	assert.equal(a.ws.extensions, 'permessage-deflate');
	const sent = [];
	for (let round = 0; round < 3; round++) {
		const refs = [];
		for (let i = 0; i < 80; i++) {
			const ref = `${round}-${i}`;
			refs.push(ref);
			if (i % 2) {
				const details = { round, i, note: `cursor moved to line ${i * 7} of the timeline, review ${round}` };
				sent.push(details);
				a.send({ type: 'activity', sessionId, activityType: 'burst', details, ref });
			} else {
				a.send({ type: 'cursor_update', sessionId, cursor: { eventId: `e${i}`, position: i * 31 + round }, ref });
			}
		}
		for (const ref of refs) assert.equal((await a.reply(ref)).type, 'ack');
	}
	const rows = JSON.parse(await cluster.sql(
		`SELECT coalesce(json_agg(a.details ORDER BY a.chain_seq), '[]') FROM presence.activity_log a
		   JOIN presence.collaboration_sessions s ON s.id = a.session_id
		  WHERE s.session_id = '${sessionId}' AND a.activity_type = 'burst'`));
	assert.deepEqual(rows, sent);
	// bob received every activity, compressed or not
	for (const details of sent) await b.expect((m) => m.type === 'activity' && m.activity.details.i === details.i && m.activity.details.round === details.round);
	a.ws.close();
	b.ws.close();
});

test('large frames both ways, random and repetitive', { timeout: 120_000 }, async () => {
	const { sessionId, peers: [a, b] } = await joinedPeers();
	for (const size of [4000, 12_000, 40_000]) {
		for (const body of [randomBytes(size * 3 / 4).toString('base64'), 'timeline review '.repeat(size / 16)]) {
			const ref = `large-${size}-${body.length}-${body[0]}`;
			a.send({ type: 'activity', sessionId, activityType: 'large', details: { body }, ref });
			assert.equal((await a.reply(ref)).type, 'ack');
			await b.expect((m) => m.type === 'activity' && m.activity.details.body === body);
			const payload = { notice: body };
			await cluster.sql(`SELECT presence.broadcast('${sessionId}', '${JSON.stringify(payload)}'::jsonb)`);
			for (const peer of [a, b]) await peer.expect((m) => m.type === 'broadcast' && m.payload.notice === body);
		}
	}
	for (const peer of [a, b]) {
		peer.send({ type: 'heartbeat', ref: 'alive' });
		assert.equal((await peer.reply('alive')).type, 'heartbeat_ack');
		peer.ws.close();
	}
});
