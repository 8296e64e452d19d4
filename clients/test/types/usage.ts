// Compiled with `tsc --noEmit` by test.sh: the declarations must describe
// the documented usage, and reject the misuse marked @ts-expect-error.
import { PresenceClient, PresenceError, type PresenceData, type SessionSnapshot, type WebSocketConstructor } from '@presence/client';
import { useCollaboration } from '@presence/react';

// What a Node program passes, e.g. the ws package's WebSocket.
declare const NodeWebSocket: WebSocketConstructor;

const client = new PresenceClient({
	url: 'ws://127.0.0.1:8765/ws',
	token: async () => 'jwt',
	WebSocket: NodeWebSocket,
	awayAfter: 60_000,
	reconnect: { maxAttempts: 5 },
});

// In browsers the default is the page's WebSocket; passing it must type-check too.
export const inBrowser = new PresenceClient({ url: 'wss://example.test/ws', token: 'jwt', WebSocket: window.WebSocket });

async function main(): Promise<void> {
	const welcome = await client.connect();
	const userId: string = welcome.userId;
	const snapshot: SessionSnapshot = await client.join('demo', { cursor: { eventId: 'e1', position: 0 } });
	const users: ReadonlyMap<string, PresenceData> = snapshot.users;
	client.on('cursor', ({ sessionId, user }) => console.log(sessionId, user.cursor?.eventId, userId, users.size));
	client.on('state', ({ state, delay }) => console.log(state, delay));
	client.setCursor('demo', { eventId: 'e2', position: 3 });
	// @ts-expect-error offline is shown by the server, not chosen
	client.setStatus('demo', 'offline');
	try {
		const { activityId } = await client.logActivity('demo', 'comment', { text: 'hi' });
		console.log(activityId);
	} catch (error) {
		if (error instanceof PresenceError) console.log(error.code, error.ref);
	}
	// @ts-expect-error unknown event
	client.on('nonsense', () => {});
}

export function Panel(): string {
	const { users, me, connectionState, setCursor, setStatus, logActivity } = useCollaboration(client, 'demo');
	setCursor({ eventId: 'e1', position: 1 });
	setStatus('away', 'lunch');
	void logActivity('comment');
	return `${users.length} ${me?.username} ${connectionState}`;
}

void main();
