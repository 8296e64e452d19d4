import type {
	ChosenStatus,
	ConnectionStateName,
	Cursor,
	PresenceClient,
	PresenceData,
	PresenceError,
	SessionSnapshot,
} from '@presence/client';

export interface Collaboration {
	/** Users present in the session (this user included), in join order. */
	users: PresenceData[];
	usersById: ReadonlyMap<string, PresenceData>;
	/** This user's presence in the session, once joined. */
	me: PresenceData | null;
	connectionState: ConnectionStateName;
	/** The session snapshot, null before the first join. */
	session: SessionSnapshot | null;
	/** The last failure concerning this session (a refused join, a rejoin error), else null. */
	error: PresenceError | null;
	/** Throttled cursor update; false when the session is not joined. */
	setCursor(cursor: Cursor): boolean;
	setStatus(status: ChosenStatus, activity?: string): boolean;
	logActivity(activityType: string, details?: Record<string, unknown>): Promise<{ type: 'ack'; activityId: string }>;
}

/**
 * Joins `sessionId` with `client` while the component is mounted and
 * re-renders on every presence change of that session.
 */
export declare function useCollaboration(client: PresenceClient | null | undefined, sessionId: string | null | undefined): Collaboration;
