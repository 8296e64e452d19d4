import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState, useSyncExternalStore } from 'react';

const NO_USERS = new Map();
const NOT_CONNECTED = 'idle';

function unsubscribeNothing() {}

/**
 * Live presence of one session for a React component: joins `sessionId`
 * with `client` (a connected or connecting PresenceClient) while mounted,
 * leaves it on unmount or when either argument changes.
 *
 * The returned functions keep their identity for the component's lifetime
 * and always act on the current client and session, so handlers and effects
 * that captured them never act on a stale session.
 */
export function useCollaboration(client, sessionId) {
	const [error, setError] = useState(null);
	const current = useRef({ client, sessionId });
	useLayoutEffect(() => {
		current.current = { client, sessionId };
	}, [client, sessionId]);

	useEffect(() => {
		if (!client || !sessionId) return undefined;
		let mounted = true;
		setError(null);
		// A dropped connection is shown by connectionState and healed by the rejoin.
		const report = (failure) => {
			if (mounted && failure.sessionId === sessionId && failure.code !== 'disconnected') setError(failure);
		};
		const stopReporting = client.on('error', report);
		client.join(sessionId).catch(report);
		return () => {
			mounted = false;
			stopReporting();
			// Leaving fails only when the connection is gone, which leaves the session anyway.
			client.leave(sessionId).catch(unsubscribeNothing);
		};
	}, [client, sessionId]);

	const subscribeToSession = useCallback(
		(onChange) =>
			client ? client.on('session', (snapshot) => snapshot.sessionId === sessionId && onChange()) : unsubscribeNothing,
		[client, sessionId],
	);
	const session = useSyncExternalStore(subscribeToSession, () => client?.session(sessionId) ?? null);

	const subscribeToState = useCallback((onChange) => (client ? client.on('state', onChange) : unsubscribeNothing), [client]);
	const connectionState = useSyncExternalStore(subscribeToState, () => client?.state ?? NOT_CONNECTED);

	const usersById = session?.users ?? NO_USERS;
	const users = useMemo(() => [...usersById.values()], [usersById]);
	// client.user changes only with a welcome, which also changes connectionState and re-renders.
	const me = usersById.get(client?.user?.userId) ?? null;

	const setCursor = useCallback((cursor) => {
		const { client, sessionId } = current.current;
		return client ? client.setCursor(sessionId, cursor) : false;
	}, []);
	const setStatus = useCallback((status, activity) => {
		const { client, sessionId } = current.current;
		return client ? client.setStatus(sessionId, status, activity) : false;
	}, []);
	const logActivity = useCallback((activityType, details) => {
		const { client, sessionId } = current.current;
		return client ? client.logActivity(sessionId, activityType, details) : Promise.reject(new Error('no client'));
	}, []);

	return { users, usersById, me, connectionState, session, error, setCursor, setStatus, logActivity };
}
