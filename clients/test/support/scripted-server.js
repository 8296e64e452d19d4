import { once } from 'node:events';
import { WebSocketServer } from 'ws';
import { AsyncQueue } from './async-queue.js';

/**
 * A WebSocket server on 127.0.0.1 whose every reply is written by the test,
 * to play protocol exchanges with the client message by message.
 */
export async function startScriptedServer() {
	const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
	await once(server, 'listening');
	const connections = new AsyncQueue();
	server.on('connection', (socket, request) => connections.push(new ScriptedConnection(socket, request)));
	return {
		url: `ws://127.0.0.1:${server.address().port}/ws`,
		nextConnection: (timeoutMs) => connections.take(timeoutMs, 'connection'),
		async close() {
			for (const socket of server.clients) socket.terminate();
			await new Promise((resolve) => server.close(resolve));
		},
	};
}

class ScriptedConnection {
	#messages = new AsyncQueue();

	constructor(socket, request) {
		this.socket = socket;
		this.request = request;
		this.closed = once(socket, 'close').then(([code]) => code);
		socket.on('message', (data) => this.#messages.push(JSON.parse(String(data))));
	}

	/** The next message from the client. */
	next(timeoutMs) {
		return this.#messages.take(timeoutMs, 'message from the client');
	}

	/** The next message, which must be of `type`. */
	async expect(type, timeoutMs) {
		const message = await this.next(timeoutMs);
		if (message.type !== type) throw new Error(`expected ${type}, got ${JSON.stringify(message)}`);
		return message;
	}

	send(message) {
		this.socket.send(JSON.stringify(message));
	}

	/** Expects the auth message and answers it with a welcome. */
	async welcome(fields = {}) {
		const auth = await this.expect('auth');
		this.send({
			type: 'welcome',
			protocol: 1,
			connectionId: 'c-1',
			userId: 'u-self',
			username: 'Self',
			heartbeatInterval: 30_000,
			serverTime: Date.now(),
			...fields,
		});
		return auth;
	}

	/** Expects a session_join and answers it with session_joined listing `users`. */
	async acceptJoin(users = [], role = 'operator') {
		const join = await this.expect('session_join');
		this.send({ type: 'session_joined', ref: join.ref, sessionId: join.sessionId, role, users });
		return join;
	}

	close(code, reason) {
		this.socket.close(code, reason);
	}
}

export function presenceData(userId, fields = {}) {
	return { userId, username: userId, role: 'operator', status: 'online', lastSeen: 0, cursor: null, ...fields };
}
