/**
 * A clock for PresenceClient whose time moves only when a test advances it.
 * Timers fire in due order; between two of them pending promise callbacks
 * and socket events already received get to run, as they would in real time.
 */
export class FakeClock {
	#now;
	#timers = new Map();
	#nextHandle = 1;
	#random;

	constructor({ now = 1_700_000_000_000, random = () => 0 } = {}) {
		this.#now = now;
		this.#random = random;
	}

	now() {
		return this.#now;
	}

	random() {
		return this.#random();
	}

	setTimeout(callback, ms) {
		const handle = this.#nextHandle++;
		this.#timers.set(handle, { callback, due: this.#now + Math.max(0, ms) });
		return handle;
	}

	clearTimeout(handle) {
		this.#timers.delete(handle);
	}

	/** Moves time forward by `ms`, firing every timer that falls due on the way. */
	async advance(ms) {
		const end = this.#now + ms;
		await settle();
		for (;;) {
			const [handle, timer] = this.#earliest() ?? [];
			if (handle === undefined || timer.due > end) break;
			this.#timers.delete(handle);
			this.#now = timer.due;
			timer.callback();
			await settle();
		}
		this.#now = end;
	}

	#earliest() {
		let earliest = null;
		for (const entry of this.#timers) {
			if (earliest === null || entry[1].due < earliest[1].due) earliest = entry;
		}
		return earliest;
	}
}

/** Lets queued promise callbacks and already-arrived I/O run. */
export function settle() {
	return new Promise((resolve) => setImmediate(resolve));
}
