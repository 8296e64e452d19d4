export const DEFAULT_RECONNECT = Object.freeze({
	initialDelay: 1000,
	maxDelay: 30_000,
	maxAttempts: 10,
	jitter: 0.5,
});

/**
 * Delay in ms before reconnection attempt `attempt` (1 = the first after a
 * loss): doubling from `initialDelay` up to `maxDelay`, then shortened by a
 * random share of up to `jitter`, so that clients dropped by the same server
 * restart do not all come back in the same instant.
 */
export function reconnectDelay(attempt, { initialDelay, maxDelay, jitter }, random) {
	const base = Math.min(maxDelay, initialDelay * 2 ** (attempt - 1));
	return Math.round(base * (1 - jitter * random()));
}
