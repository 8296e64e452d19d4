/**
 * The time source and timers the client uses. Tests inject a fake one with
 * the same four members to drive heartbeats, away detection, throttling,
 * request timeouts and reconnect backoff without waiting.
 */
export const systemClock = Object.freeze({
	now: () => Date.now(),
	setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
	clearTimeout: (handle) => globalThis.clearTimeout(handle),
	random: () => Math.random(),
});
