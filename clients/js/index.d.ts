// Type declarations for @presence/client (presence WebSocket protocol v1).

export type PresenceStatus = 'online' | 'away' | 'offline';
export type ChosenStatus = 'online' | 'away';
export type Role = 'viewer' | 'commenter' | 'operator';

export interface Cursor {
	eventId: string;
	/** Integer >= 0. */
	position: number;
}

/** One user's live presence in one session (the protocol's PresenceData). */
export interface PresenceData {
	userId: string;
	username: string;
	role: Role;
	status: PresenceStatus;
	/** Milliseconds since the epoch. */
	lastSeen: number;
	cursor?: Cursor | null;
	activity?: string | null;
}

export type PresenceEventKind = 'join' | 'leave' | 'update' | 'cursor' | 'timeout';

export interface PresenceEvent {
	kind: PresenceEventKind;
	user: PresenceData;
}

/** A session as this client knows it; replaced, never modified, on every change. */
export interface SessionSnapshot {
	readonly sessionId: string;
	readonly role: Role | null;
	/** True while joined on the current connection. */
	readonly joined: boolean;
	/** The status from `session_ended` once the session ended, else null. */
	readonly ended: string | null;
	/** The reason from `session_removed` once this user was removed from the session, else null. */
	readonly removed: string | null;
	readonly users: ReadonlyMap<string, PresenceData>;
}

export interface Welcome {
	type: 'welcome';
	protocol: number;
	connectionId: string;
	userId: string;
	username: string;
	heartbeatInterval: number;
	serverTime: number;
}

export interface CurrentUser {
	userId: string;
	username: string;
	connectionId: string;
}

export interface Activity {
	id: string;
	userId: string | null;
	activityType: string;
	details: Record<string, unknown>;
	createdAt: string | number;
}

export type ConnectionStateName = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'failed' | 'closed';

export declare const ConnectionState: {
	readonly IDLE: 'idle';
	readonly CONNECTING: 'connecting';
	readonly OPEN: 'open';
	readonly RECONNECTING: 'reconnecting';
	readonly FAILED: 'failed';
	readonly CLOSED: 'closed';
};

export type ServerErrorCode =
	| 'bad_request'
	| 'unauthorized'
	| 'forbidden'
	| 'not_found'
	| 'session_full'
	| 'rate_limited'
	| 'unavailable'
	| 'internal';

export type ClientErrorCode = 'timeout' | 'disconnected' | 'not_connected' | 'protocol' | 'token_unavailable' | 'reconnect_failed';

export declare class PresenceError extends Error {
	constructor(code: string, message: string, options?: { ref?: string | number; sessionId?: string; cause?: unknown });
	readonly name: 'PresenceError';
	code: ServerErrorCode | ClientErrorCode | (string & {});
	ref?: string | number;
	sessionId?: string;
}

/** The time source and timers; inject a fake one in tests. */
export interface Clock {
	now(): number;
	setTimeout(callback: () => void, ms: number): unknown;
	clearTimeout(handle: unknown): void;
	/** A number in [0, 1), used for reconnect jitter. */
	random(): number;
}

export declare const systemClock: Clock;

export interface ReconnectOptions {
	/** Delay before the first reconnection attempt, ms. Default 1000. */
	initialDelay?: number;
	/** Upper bound of the doubling delay, ms. Default 30000. */
	maxDelay?: number;
	/** Attempts after a loss before the client fails for good. Default 10. */
	maxAttempts?: number;
	/** Share of each delay removed at random, 0..1. Default 0.5. */
	jitter?: number;
}

export declare const DEFAULT_RECONNECT: Readonly<Required<ReconnectOptions>>;

export declare function reconnectDelay(
	attempt: number,
	options: Required<Pick<ReconnectOptions, 'initialDelay' | 'maxDelay' | 'jitter'>>,
	random: () => number,
): number;

export declare function applyPresenceEvent(
	users: ReadonlyMap<string, PresenceData>,
	event: PresenceEvent,
): ReadonlyMap<string, PresenceData>;

/**
 * The part of the WebSocket API the client uses (browsers' WebSocket and the
 * ws package fit). Handler parameters are `any` because each implementation
 * types its own event classes; the client reads `data`, `code` and `reason`.
 */
export interface WebSocketLike {
	send(data: string): void;
	close(code?: number, reason?: string): void;
	onopen: ((event: any) => void) | null;
	onmessage: ((event: any) => void) | null;
	onclose: ((event: any) => void) | null;
	onerror: ((event: any) => void) | null;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Window-like target watched for user input (browsers). */
export interface InputTarget {
	document: { visibilityState: string; addEventListener: Function; removeEventListener: Function };
	addEventListener: Function;
	removeEventListener: Function;
}

export interface PresenceClientOptions {
	/** `ws://host:port/ws` or `wss://…`. */
	url: string;
	/** A JWT, or a function returning one (sync or async), called before every connection attempt. */
	token: string | (() => string | Promise<string>);
	/** WebSocket constructor; default `globalThis.WebSocket`. In Node 20 pass the ws package's. */
	WebSocket?: WebSocketConstructor;
	/** Subprotocols to offer, for example 'presence.v1'. Default: none. */
	protocols?: string | string[];
	/** Milliseconds without input before the user is shown away; Infinity disables. Default 120000. */
	awayAfter?: number;
	/** Minimum ms between two cursor updates of one session. Default 50. */
	cursorThrottle?: number;
	/** Time a request waits for its reply, ms. Default 10000. */
	requestTimeout?: number;
	/** Time to open the socket and receive `welcome`, ms. Default 10000. */
	connectTimeout?: number;
	reconnect?: ReconnectOptions;
	/** Window watched for input; default the page's window in browsers, none in Node; null disables. */
	inputTarget?: InputTarget | null;
	clock?: Clock;
}

export interface StateChange {
	state: ConnectionStateName;
	previous: ConnectionStateName;
	/** Reconnecting: the number of this attempt (1-based). */
	attempt?: number;
	/** Reconnecting: ms until the attempt. */
	delay?: number;
	/** Reconnecting or failed: what ended the connection. */
	error?: PresenceError;
}

export interface UserEvent {
	sessionId: string;
	user: PresenceData;
}

export interface PresenceClientEvents {
	state: StateChange;
	welcome: Welcome;
	/** A session was joined (or rejoined after a reconnect). */
	joined: SessionSnapshot;
	join: UserEvent;
	leave: UserEvent;
	timeout: UserEvent;
	update: UserEvent;
	cursor: UserEvent;
	/** Anything in a session snapshot changed; once per server frame. */
	session: SessionSnapshot;
	activity: { sessionId: string; activity: Activity };
	broadcast: { sessionId: string; payload: unknown };
	session_ended: { sessionId: string; status: string };
	/** presence.remove_participant() removed this user; the session is no longer joined nor rejoined. */
	session_removed: { sessionId: string; reason: string };
	/** Failures not tied to a pending request: server errors without ref, rejoin failures, the terminal failure. */
	error: PresenceError;
	/** Every message from the server, before the client handles it. */
	message: { type: string; [field: string]: unknown };
}

export type Unsubscribe = () => void;

export interface JoinOptions {
	status?: ChosenStatus;
	activity?: string;
	cursor?: Cursor;
}

export declare class PresenceClient {
	constructor(options: PresenceClientOptions);
	readonly state: ConnectionStateName;
	readonly user: CurrentUser | null;

	connect(): Promise<Welcome>;
	close(): void;

	join(sessionId: string, options?: JoinOptions): Promise<SessionSnapshot>;
	leave(sessionId: string): Promise<void>;
	session(sessionId: string): SessionSnapshot | undefined;
	users(sessionId: string): ReadonlyMap<string, PresenceData>;

	setCursor(sessionId: string, cursor: Cursor): boolean;
	setStatus(sessionId: string, status: ChosenStatus, activity?: string): boolean;
	logActivity(sessionId: string, activityType: string, details?: Record<string, unknown>): Promise<{ type: 'ack'; activityId: string }>;
	markActive(): void;
	markAway(): void;

	request<Reply = { type: string; [field: string]: unknown }>(
		message: { type: string; [field: string]: unknown },
		options?: { timeout?: number },
	): Promise<Reply>;
	send(message: { type: string; [field: string]: unknown }): boolean;

	on<E extends keyof PresenceClientEvents>(event: E, listener: (payload: PresenceClientEvents[E]) => void): Unsubscribe;
	once<E extends keyof PresenceClientEvents>(event: E, listener: (payload: PresenceClientEvents[E]) => void): Unsubscribe;
	off<E extends keyof PresenceClientEvents>(event: E, listener: (payload: PresenceClientEvents[E]) => void): void;
	listenerCount(event: keyof PresenceClientEvents): number;
}
