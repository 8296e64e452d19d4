import { DEFAULT_RECONNECT, reconnectDelay } from './backoff.js';
import { systemClock } from './clock.js';
import { Emitter } from './emitter.js';
import { PresenceError, isPermanent } from './errors.js';
import { browserWindow, watchPageInput } from './input.js';
import { NO_USERS, applyPresenceEvent, usersFromList } from './users.js';

export const ConnectionState = Object.freeze({
	IDLE: 'idle',
	CONNECTING: 'connecting',
	OPEN: 'open',
	RECONNECTING: 'reconnecting',
	FAILED: 'failed',
	CLOSED: 'closed',
});

const DEFAULT_HEARTBEAT_INTERVAL = 30_000;
const AUTH_REJECTED = 4001;
// Browsers only let a page close with 1000 or 3000-4999.
const CLOSE_NORMAL = 1000;
const CLOSE_ABANDONED = 4000;

const DEFAULTS = Object.freeze({
	protocols: undefined,
	awayAfter: 120_000,
	cursorThrottle: 50,
	requestTimeout: 10_000,
	connectTimeout: 10_000,
});

/**
 * A connection to a presence server (protocol version 1), see
 * docs/clients.md. One client serves any number of sessions.
 */
export class PresenceClient extends Emitter {
	#options;
	#clock;
	#WebSocket;
	#state = ConnectionState.IDLE;
	#welcome = null;
	#user = null;
	#socket = null;
	// Serial number of the current connection attempt. Callbacks of older
	// sockets and token lookups compare it to learn they are stale.
	#connection = 0;
	#failedAttempts = 0;
	#heartbeatInterval = DEFAULT_HEARTBEAT_INTERVAL;
	#heartbeatTimer = null;
	#reconnectTimer = null;
	#connectTimer = null;
	#openWaiters = [];
	#nextRef = 1;
	#pending = new Map();
	#sessions = new Map();
	#lastInputAt = 0;
	#autoAway = false;
	#awayTimer = null;
	#stopWatchingInput = null;

	/**
	 * @param {object} options see index.d.ts (PresenceClientOptions)
	 */
	constructor(options) {
		super();
		if (!options || typeof options.url !== 'string') throw new TypeError('options.url is required');
		if (typeof options.token !== 'string' && typeof options.token !== 'function') {
			throw new TypeError('options.token must be a string or a function returning one');
		}
		const WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
		if (typeof WebSocketImpl !== 'function') {
			throw new TypeError('no WebSocket available: pass options.WebSocket (for example the ws package)');
		}
		this.#options = {
			...DEFAULTS,
			...options,
			reconnect: { ...DEFAULT_RECONNECT, ...options.reconnect },
		};
		this.#clock = options.clock ?? systemClock;
		this.#WebSocket = WebSocketImpl;
	}

	/** One of ConnectionState's values. */
	get state() {
		return this.#state;
	}

	/** `{userId, username, connectionId}` from the last `welcome`, or null before it. */
	get user() {
		return this.#user;
	}

	/**
	 * Opens the connection (again, after close() or a terminal failure).
	 * Resolves with the `welcome` message once authenticated; rejects if the
	 * client fails for good or is closed first. Until then it keeps retrying
	 * with backoff.
	 */
	connect() {
		const state = this.#state;
		if (state === ConnectionState.OPEN) return Promise.resolve(this.#welcome);
		const opened = this.#whenOpen();
		if (state === ConnectionState.IDLE || state === ConnectionState.CLOSED || state === ConnectionState.FAILED) {
			this.#failedAttempts = 0;
			this.#startInputTracking();
			this.#setState(ConnectionState.CONNECTING);
			this.#openSocket();
		}
		return opened;
	}

	/**
	 * Closes the connection and stops reconnecting. Joined sessions stay
	 * registered and are joined again by the next connect().
	 */
	close() {
		if (this.#state === ConnectionState.CLOSED) return;
		this.#connection++;
		this.#dropSocket(CLOSE_NORMAL);
		this.#clearConnectionTimers();
		this.#clock.clearTimeout(this.#reconnectTimer);
		this.#reconnectTimer = null;
		this.#stopInputTracking();
		const closed = new PresenceError('disconnected', 'the client was closed');
		this.#connectionEnded(closed);
		this.#setState(ConnectionState.CLOSED);
		this.#settleOpenWaiters(closed);
	}

	/**
	 * Sends `message` with a fresh `ref` and resolves with the server's reply
	 * carrying that ref. Rejects with a PresenceError: the server's `error`
	 * reply, or `timeout`, `disconnected`, `not_connected`.
	 */
	request(message, { timeout = this.#options.requestTimeout } = {}) {
		if (this.#state !== ConnectionState.OPEN) {
			return Promise.reject(new PresenceError('not_connected', `cannot send ${message?.type}: the client is ${this.#state}`));
		}
		const ref = this.#nextRef++;
		return new Promise((resolve, reject) => {
			const timer = this.#clock.setTimeout(() => {
				this.#pending.delete(ref);
				reject(new PresenceError('timeout', `no reply to ${message.type} within ${timeout} ms`, { ref }));
			}, timeout);
			this.#pending.set(ref, { resolve, reject, timer });
			this.#send({ ...message, ref });
		});
	}

	/** Sends a message without waiting for a reply; false when not connected. */
	send(message) {
		if (this.#state !== ConnectionState.OPEN) return false;
		this.#send(message);
		return true;
	}

	/**
	 * Joins a session (waiting for the connection if needed) and resolves
	 * with its snapshot. Joins are counted: the session is left when leave()
	 * was called as often as join(). A joined session is joined again after
	 * every reconnect, with the current status, activity and cursor.
	 */
	async join(sessionId, { status, activity, cursor } = {}) {
		if (typeof sessionId !== 'string' || sessionId === '') throw new TypeError('sessionId must be a non-empty string');
		if (status !== undefined) checkStatus(status);
		if (cursor !== undefined) checkCursor(cursor);
		let session = this.#sessions.get(sessionId);
		if (!session) {
			session = newSession(sessionId);
			this.#sessions.set(sessionId, session);
		} else if (isStopped(session)) {
			// Asking again: the server decides whether the session can be joined now.
			session.joinedOn = 0;
			this.#updateSnapshot(session, { ended: null, removed: null });
		}
		session.holders++;
		if (status !== undefined) session.desiredStatus = status;
		if (activity !== undefined) session.activity = activity;
		if (cursor !== undefined) session.cursor = cursor;
		if (this.#state !== ConnectionState.OPEN) await this.#whenOpen({ waitForConnect: true });
		return this.#ensureJoined(session);
	}

	/** Undoes one join(); the last one sends `session_leave`. */
	async leave(sessionId) {
		const session = this.#sessions.get(sessionId);
		if (!session || --session.holders > 0) return;
		this.#sessions.delete(sessionId);
		this.#clock.clearTimeout(session.cursorTimer);
		// A join still in flight is left too: the server handles both in order.
		if (session.joinedOn !== this.#connection || this.#state !== ConnectionState.OPEN) return;
		try {
			await this.request({ type: 'session_leave', sessionId });
		} catch (error) {
			if (error.code !== 'disconnected' && error.code !== 'not_connected') throw error;
		}
	}

	/**
	 * The session's current snapshot `{sessionId, role, joined, ended, removed, users}`,
	 * replaced (never modified) on every change; undefined if not joined.
	 */
	session(sessionId) {
		return this.#sessions.get(sessionId)?.snapshot;
	}

	/** The session's users by userId (read-only; replaced on every change). */
	users(sessionId) {
		return this.#sessions.get(sessionId)?.snapshot.users ?? NO_USERS;
	}

	/**
	 * Moves this user's cursor in a session. Sent at most once per
	 * `cursorThrottle` ms, latest value wins; also carried by heartbeats and
	 * rejoins. Counts as user input. False for a session that join() was not
	 * called for.
	 */
	setCursor(sessionId, cursor) {
		checkCursor(cursor);
		const session = this.#sessions.get(sessionId);
		if (!session) return false;
		session.cursor = cursor;
		this.markActive();
		if (session.cursorTimer !== null) return true;
		const wait = session.cursorSentAt + this.#options.cursorThrottle - this.#clock.now();
		if (wait <= 0) {
			this.#flushCursor(session);
		} else {
			session.cursorTimer = this.#clock.setTimeout(() => {
				session.cursorTimer = null;
				this.#flushCursor(session);
			}, wait);
		}
		return true;
	}

	/**
	 * Sets the status this user chose for a session (`online` or `away`) and
	 * optionally the activity text. Away detection may still show `away`
	 * while there is no input. False for a session that join() was not called
	 * for.
	 */
	setStatus(sessionId, status, activity) {
		checkStatus(status);
		const session = this.#sessions.get(sessionId);
		if (!session) return false;
		session.desiredStatus = status;
		const activityChanged = activity !== undefined && activity !== session.activity;
		if (activity !== undefined) session.activity = activity;
		if (status === 'online') this.markActive();
		this.#syncStatus(session, activityChanged);
		return true;
	}

	/** Logs an activity (`activityType` like `comment`); resolves with `{activityId}` once committed. */
	logActivity(sessionId, activityType, details = {}) {
		this.markActive();
		return this.request({ type: 'activity', sessionId, activityType, details });
	}

	/**
	 * Records user input now: ends automatic away (sending `online` to every
	 * session that saw this user away) and restarts the away countdown.
	 * Browsers call it from pointer, keyboard and visibility events; Node
	 * programs call it themselves.
	 */
	markActive() {
		this.#lastInputAt = this.#clock.now();
		this.#autoAway = false;
		for (const session of this.#sessions.values()) this.#syncStatus(session, false);
		if (this.#awayTimer === null && this.#stopWatchingInput !== null) this.#scheduleAwayCheck(this.#options.awayAfter);
	}

	/** Shows this user as away in every session until the next input. */
	markAway() {
		this.#clock.clearTimeout(this.#awayTimer);
		this.#awayTimer = null;
		this.#autoAway = true;
		for (const session of this.#sessions.values()) this.#syncStatus(session, false);
	}

	// --- connection -------------------------------------------------------

	async #openSocket() {
		const connection = ++this.#connection;
		// An attempt that never gets a token, never opens or never
		// authenticates is given up on; the server itself closes
		// unauthenticated sockets only after its own auth_timeout.
		this.#connectTimer = this.#clock.setTimeout(() => {
			this.#abandonConnection(new PresenceError('timeout', `no welcome within ${this.#options.connectTimeout} ms`));
		}, this.#options.connectTimeout);
		let token;
		try {
			token = typeof this.#options.token === 'function' ? await this.#options.token() : this.#options.token;
			if (typeof token !== 'string' || token === '') throw new TypeError('the token provider returned no token');
		} catch (cause) {
			if (connection === this.#connection) {
				this.#connectionLost(new PresenceError('token_unavailable', `could not get a token: ${cause?.message ?? cause}`, { cause }));
			}
			return;
		}
		if (connection !== this.#connection) return;
		let socket;
		try {
			socket = new this.#WebSocket(this.#options.url, this.#options.protocols);
		} catch (cause) {
			this.#connectionLost(new PresenceError('disconnected', `cannot open ${this.#options.url}: ${cause?.message ?? cause}`, { cause }));
			return;
		}
		this.#socket = socket;
		socket.onopen = () => {
			if (connection === this.#connection) socket.send(JSON.stringify({ type: 'auth', token }));
		};
		socket.onmessage = (event) => {
			if (connection === this.#connection) this.#receive(event.data);
		};
		socket.onclose = (event) => {
			if (connection === this.#connection) this.#socketClosed(event.code, event.reason);
		};
		// Every error is followed by a close event, which carries what is
		// known; the ws package throws on errors nobody listens to.
		socket.onerror = ignore;
	}

	#socketClosed(code, reason) {
		this.#dropSocket();
		if (code === AUTH_REJECTED && typeof this.#options.token === 'string') {
			// A fixed token that was refused will be refused again.
			this.#fail(new PresenceError('unauthorized', reason || 'the server refused the token'));
			return;
		}
		const detail = reason ? `${code} ${reason}` : `${code}`;
		this.#connectionLost(new PresenceError(code === AUTH_REJECTED ? 'unauthorized' : 'disconnected', `connection closed (${detail})`));
	}

	#abandonConnection(error) {
		this.#connection++;
		this.#dropSocket(CLOSE_ABANDONED);
		this.#connectionLost(error);
	}

	#connectionLost(error) {
		this.#clearConnectionTimers();
		this.#connectionEnded(error);
		this.#failedAttempts++;
		const { maxAttempts } = this.#options.reconnect;
		if (this.#failedAttempts > maxAttempts) {
			this.#fail(new PresenceError('reconnect_failed', `gave up after ${maxAttempts} reconnection attempts: ${error.message}`, { cause: error }));
			return;
		}
		const delay = reconnectDelay(this.#failedAttempts, this.#options.reconnect, () => this.#clock.random());
		this.#setState(ConnectionState.RECONNECTING, { attempt: this.#failedAttempts, delay, error });
		this.#reconnectTimer = this.#clock.setTimeout(() => {
			this.#reconnectTimer = null;
			this.#openSocket();
		}, delay);
	}

	#fail(error) {
		this.#connection++;
		this.#clearConnectionTimers();
		this.#connectionEnded(error);
		this.#stopInputTracking();
		this.#setState(ConnectionState.FAILED, { error });
		this.emit('error', error);
		this.#settleOpenWaiters(error);
	}

	/** What every end of a connection shares: replies will not come, sessions are no longer joined. */
	#connectionEnded(error) {
		for (const [ref, { reject, timer }] of this.#pending) {
			this.#clock.clearTimeout(timer);
			reject(new PresenceError('disconnected', `connection lost before the reply: ${error.message}`, { ref }));
		}
		this.#pending.clear();
		for (const session of this.#sessions.values()) {
			session.joinedOn = 0;
			session.serverStatus = null;
			session.cursorSent = null;
			if (session.snapshot.joined) {
				this.#updateSnapshot(session, { joined: false });
				this.emit('session', session.snapshot);
			}
		}
	}

	#dropSocket(closeCode) {
		const socket = this.#socket;
		this.#socket = null;
		if (!socket) return;
		socket.onopen = socket.onmessage = socket.onclose = null;
		if (closeCode !== undefined) {
			try {
				socket.close(closeCode);
			} catch {
				// Already closing: nothing left to release.
			}
		}
	}

	#clearConnectionTimers() {
		this.#clock.clearTimeout(this.#connectTimer);
		this.#clock.clearTimeout(this.#heartbeatTimer);
		this.#connectTimer = this.#heartbeatTimer = null;
	}

	#setState(state, details = {}) {
		const previous = this.#state;
		this.#state = state;
		this.emit('state', { state, previous, ...details });
	}

	/**
	 * Resolves at the next `open` state. Rejects when the client fails or is
	 * closed, unless `waitForConnect` asks to wait for a later connect().
	 */
	#whenOpen({ waitForConnect = false } = {}) {
		return new Promise((resolve, reject) => this.#openWaiters.push({ resolve, reject, waitForConnect }));
	}

	#settleOpenWaiters(error) {
		const waiters = this.#openWaiters;
		this.#openWaiters = error ? waiters.filter((waiter) => waiter.waitForConnect) : [];
		for (const waiter of waiters) {
			if (!error) waiter.resolve(this.#welcome);
			else if (!waiter.waitForConnect) waiter.reject(error);
		}
	}

	#send(message) {
		this.#socket.send(JSON.stringify(message));
	}

	// --- inbound ----------------------------------------------------------

	#receive(data) {
		let message;
		try {
			message = JSON.parse(data);
		} catch {
			message = null;
		}
		if (message === null || typeof message !== 'object' || Array.isArray(message)) {
			this.emit('error', new PresenceError('protocol', 'the server sent a frame that is not a JSON object'));
			return;
		}
		this.emit('message', message);
		switch (message.type) {
			case 'welcome':
				this.#welcomed(message);
				break;
			case 'session_joined':
				this.#sessionJoined(message);
				break;
			case 'presence':
				this.#presence(message);
				break;
			case 'activity':
				if (this.#sessions.has(message.sessionId)) this.emit('activity', { sessionId: message.sessionId, activity: message.activity });
				break;
			case 'broadcast':
				if (this.#sessions.has(message.sessionId)) this.emit('broadcast', { sessionId: message.sessionId, payload: message.payload });
				break;
			case 'session_ended':
				this.#sessionEnded(message);
				break;
			case 'session_removed':
				this.#sessionRemoved(message);
				break;
			case 'error':
				if (!this.#pending.has(message.ref)) {
					this.emit('error', new PresenceError(message.code, message.message, { ref: message.ref, sessionId: message.sessionId }));
				}
				break;
		}
		if (message.ref !== undefined) this.#settleRequest(message);
	}

	#settleRequest(message) {
		const request = this.#pending.get(message.ref);
		if (!request) return;
		this.#pending.delete(message.ref);
		this.#clock.clearTimeout(request.timer);
		if (message.type === 'error') {
			request.reject(new PresenceError(message.code, message.message, { ref: message.ref, sessionId: message.sessionId }));
		} else {
			request.resolve(message);
		}
	}

	#welcomed(message) {
		if (this.#state === ConnectionState.OPEN) return;
		this.#clock.clearTimeout(this.#connectTimer);
		this.#connectTimer = null;
		this.#failedAttempts = 0;
		this.#welcome = message;
		this.#user = { userId: message.userId, username: message.username, connectionId: message.connectionId };
		this.#heartbeatInterval = message.heartbeatInterval > 0 ? message.heartbeatInterval : DEFAULT_HEARTBEAT_INTERVAL;
		this.#setState(ConnectionState.OPEN);
		this.emit('welcome', message);
		this.#scheduleHeartbeat();
		for (const session of this.#sessions.values()) {
			if (!isStopped(session)) this.#ensureJoined(session).catch((error) => this.emit('error', error));
		}
		this.#settleOpenWaiters(null);
	}

	#sessionJoined(message) {
		const session = this.#sessions.get(message.sessionId);
		if (!session || session.joinedOn !== this.#connection) return;
		const users = usersFromList(message.users);
		this.#updateSnapshot(session, { role: message.role ?? null, joined: true, ended: null, removed: null, users });
		const self = users.get(this.#user?.userId);
		if (self) session.serverStatus = self.status;
		this.emit('joined', session.snapshot);
		this.emit('session', session.snapshot);
		// Changes made while the join was in flight.
		this.#syncStatus(session, false);
		this.#flushCursor(session);
	}

	#presence(message) {
		const session = this.#sessions.get(message.sessionId);
		if (!session || !Array.isArray(message.events)) return;
		for (const event of message.events) {
			const users = applyPresenceEvent(session.snapshot.users, event ?? {});
			if (users === session.snapshot.users) continue;
			this.#updateSnapshot(session, { users });
			// The server's own changes to this user (away after its away_threshold) and
			// those of the user's other connections: remember what it now believes.
			if (event.user.userId === this.#user?.userId) session.serverStatus = users.get(event.user.userId)?.status ?? null;
			this.emit(event.kind, { sessionId: session.id, user: users.get(event.user.userId) ?? event.user });
		}
		this.emit('session', session.snapshot);
	}

	#sessionEnded(message) {
		const session = this.#stopSession(message.sessionId, { ended: message.status ?? 'completed' });
		if (!session) return;
		this.emit('session_ended', { sessionId: session.id, status: session.snapshot.ended });
		this.emit('session', session.snapshot);
	}

	/** presence.remove_participant() took this user out of the session. */
	#sessionRemoved(message) {
		const session = this.#stopSession(message.sessionId, { removed: message.reason ?? 'removed from the session' });
		if (!session) return;
		this.emit('session_removed', { sessionId: session.id, reason: session.snapshot.removed });
		this.emit('session', session.snapshot);
	}

	/** The server will take nothing more for this session: stop sending and rejoining it. */
	#stopSession(sessionId, outcome) {
		const session = this.#sessions.get(sessionId);
		if (!session) return null;
		this.#clock.clearTimeout(session.cursorTimer);
		session.cursorTimer = null;
		this.#updateSnapshot(session, { joined: false, ...outcome });
		return session;
	}

	// --- sessions ---------------------------------------------------------

	/** Resolves with the session's snapshot once joined on the current connection, sending session_join if needed. */
	#ensureJoined(session) {
		const connection = this.#connection;
		if (session.joinedOn !== connection) {
			const status = this.#effectiveStatus(session);
			const message = { type: 'session_join', sessionId: session.id, status };
			if (session.activity !== undefined) message.activity = session.activity;
			if (session.cursor) message.cursor = session.cursor;
			session.joinedOn = connection;
			session.serverStatus = status;
			session.cursorSent = session.cursor;
			if (session.cursor) session.cursorSentAt = this.#clock.now();
			session.joinRequest = this.request(message).catch((error) => {
				if (session.joinedOn === connection) session.joinedOn = 0;
				// A refused join will be refused again: stop rejoining it.
				if (isPermanent(error) && this.#sessions.get(session.id) === session) this.#sessions.delete(session.id);
				error.sessionId = session.id;
				throw error;
			});
		}
		return session.joinRequest.then(() => session.snapshot);
	}

	#effectiveStatus(session) {
		return this.#autoAway ? 'away' : session.desiredStatus;
	}

	/** Tells the server this user's status in `session` if it believes otherwise (or `force`). */
	#syncStatus(session, force) {
		if (!session.snapshot.joined || this.#state !== ConnectionState.OPEN) return;
		const status = this.#effectiveStatus(session);
		if (!force && status === session.serverStatus) return;
		session.serverStatus = status;
		const message = { type: 'presence_update', sessionId: session.id, status };
		if (session.activity !== undefined) message.activity = session.activity;
		this.#send(message);
		this.#echoSelf(session, session.activity === undefined ? { status } : { status, activity: session.activity });
	}

	#flushCursor(session) {
		if (!session.snapshot.joined || this.#state !== ConnectionState.OPEN) return;
		if (!session.cursor || session.cursor === session.cursorSent) return;
		session.cursorSent = session.cursor;
		session.cursorSentAt = this.#clock.now();
		this.#send({ type: 'cursor_update', sessionId: session.id, cursor: session.cursor });
		this.#echoSelf(session, { cursor: session.cursor });
	}

	/**
	 * The server never sends a connection the events it caused, so this
	 * user's own entry in the users map is updated here, as sent.
	 */
	#echoSelf(session, changes) {
		const userId = this.#user?.userId;
		const self = session.snapshot.users.get(userId);
		if (!self) return;
		const users = new Map(session.snapshot.users);
		users.set(userId, { ...self, ...changes });
		this.#updateSnapshot(session, { users });
		this.emit('session', session.snapshot);
	}

	#updateSnapshot(session, changes) {
		session.snapshot = Object.freeze({ ...session.snapshot, ...changes });
	}

	// --- heartbeats and away detection -------------------------------------

	#scheduleHeartbeat() {
		this.#heartbeatTimer = this.#clock.setTimeout(() => this.#heartbeat(), this.#heartbeatInterval);
	}

	/**
	 * One heartbeat per joined session, each carrying that session's latest
	 * cursor (or one bare heartbeat when none is joined). Heartbeats carry a
	 * ref: an unanswered one means the connection is dead even if the socket
	 * did not notice, so it is replaced.
	 */
	#heartbeat() {
		const connection = this.#connection;
		const joined = [...this.#sessions.values()].filter((session) => session.snapshot.joined);
		const beats = joined.length === 0 ? [{ type: 'heartbeat' }] : joined.map((session) => heartbeatFor(session));
		for (const beat of beats) {
			this.request(beat).catch((error) => {
				if (connection !== this.#connection) return;
				if (error.code === 'timeout') this.#abandonConnection(new PresenceError('timeout', 'heartbeat not acknowledged'));
				else if (error.code !== 'disconnected') this.emit('error', error);
			});
		}
		this.#scheduleHeartbeat();
	}

	#startInputTracking() {
		if (this.#stopWatchingInput !== null) return;
		const target = this.#options.inputTarget === undefined ? browserWindow() : this.#options.inputTarget;
		this.#stopWatchingInput = target
			? watchPageInput(target, { onInput: () => this.markActive(), onHidden: () => this.markAway() })
			: ignore;
		this.#lastInputAt = this.#clock.now();
		this.#scheduleAwayCheck(this.#options.awayAfter);
	}

	#stopInputTracking() {
		if (this.#stopWatchingInput === null) return;
		this.#stopWatchingInput();
		this.#stopWatchingInput = null;
		this.#clock.clearTimeout(this.#awayTimer);
		this.#awayTimer = null;
	}

	#scheduleAwayCheck(delay) {
		if (!Number.isFinite(this.#options.awayAfter)) return;
		this.#awayTimer = this.#clock.setTimeout(() => {
			this.#awayTimer = null;
			const idle = this.#clock.now() - this.#lastInputAt;
			if (idle >= this.#options.awayAfter) this.markAway();
			else this.#scheduleAwayCheck(this.#options.awayAfter - idle);
		}, delay);
	}
}

function newSession(id) {
	return {
		id,
		holders: 0,
		desiredStatus: 'online',
		activity: undefined,
		cursor: null,
		// What the server was last told or showed: status changes are sent only when they differ.
		serverStatus: null,
		cursorSent: null,
		cursorSentAt: -Infinity,
		cursorTimer: null,
		joinedOn: 0,
		joinRequest: null,
		snapshot: Object.freeze({ sessionId: id, role: null, joined: false, ended: null, removed: null, users: NO_USERS }),
	};
}

function isStopped(session) {
	return session.snapshot.ended !== null || session.snapshot.removed !== null;
}

function heartbeatFor(session) {
	return session.cursor
		? { type: 'heartbeat', sessionId: session.id, cursor: session.cursor }
		: { type: 'heartbeat', sessionId: session.id };
}

function checkStatus(status) {
	if (status !== 'online' && status !== 'away') throw new TypeError(`status must be 'online' or 'away', not ${JSON.stringify(status)}`);
}

function checkCursor(cursor) {
	if (
		cursor === null ||
		typeof cursor !== 'object' ||
		typeof cursor.eventId !== 'string' ||
		!Number.isInteger(cursor.position) ||
		cursor.position < 0
	) {
		throw new TypeError('cursor must be {eventId: string, position: integer >= 0}');
	}
}

function ignore() {}
