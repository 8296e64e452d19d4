import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { PresenceClient } from '@presence/client';
import { FakeClock } from './fake-clock.js';

const openClients = new Set();

/** Closes every client openClient() made; test files run it afterEach, so a failed test leaves nothing running. */
export function closeClients() {
	for (const client of openClients) client.close();
	openClients.clear();
}

/**
 * A PresenceClient on a fake clock, connected to a scripted server and
 * welcomed. `welcome` overrides fields of the welcome message.
 */
export async function openClient(server, { welcome, clock = new FakeClock(), ...options } = {}) {
	const client = new PresenceClient({ url: server.url, token: 'token-1', WebSocket, clock, ...options });
	openClients.add(client);
	const connected = client.connect();
	const connection = await server.nextConnection();
	await connection.welcome(welcome);
	await connected;
	return { client, clock, connection };
}

/** Joins `sessionId` and lets the scripted server accept it with `users`. */
export async function joinSession(client, connection, sessionId, users = []) {
	const joined = client.join(sessionId);
	const join = await connection.acceptJoin(users);
	return { join, snapshot: await joined };
}

/**
 * Proves the client sent nothing since the last message the test took: a
 * probe sent now must be the next message the server sees.
 */
export async function assertNothingSent(client, connection) {
	client.send({ type: 'probe' });
	assert.deepEqual(await connection.next(), { type: 'probe' });
}

/**
 * The next `event` from the client whose payload passes `accept`, waiting
 * at most `timeoutMs` of real time.
 */
export function nextEvent(client, event, accept = () => true, timeoutMs = 5000) {
	return new Promise((resolve, reject) => {
		const timer = setTimeout(() => {
			off();
			reject(new Error(`no ${event} event within ${timeoutMs} ms`));
		}, timeoutMs);
		const off = client.on(event, (payload) => {
			if (!accept(payload)) return;
			clearTimeout(timer);
			off();
			resolve(payload);
		});
	});
}

export function nextState(client, state, timeoutMs) {
	return nextEvent(client, 'state', (change) => change.state === state, timeoutMs);
}
