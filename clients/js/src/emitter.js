/**
 * A minimal event emitter that works the same in browsers and Node. A
 * listener that throws does not stop the others nor the client's own
 * processing; its exception is rethrown asynchronously so it still shows up
 * (console in browsers, uncaughtException in Node).
 */
export class Emitter {
	#listeners = new Map();

	/** Adds a listener; returns the function that removes it. */
	on(event, listener) {
		if (typeof listener !== 'function') throw new TypeError('listener must be a function');
		let set = this.#listeners.get(event);
		if (!set) this.#listeners.set(event, (set = new Set()));
		set.add(listener);
		return () => this.off(event, listener);
	}

	/** Adds a listener that is removed after its first call. */
	once(event, listener) {
		const off = this.on(event, (payload) => {
			off();
			listener(payload);
		});
		return off;
	}

	off(event, listener) {
		const set = this.#listeners.get(event);
		if (!set) return;
		set.delete(listener);
		if (set.size === 0) this.#listeners.delete(event);
	}

	listenerCount(event) {
		return this.#listeners.get(event)?.size ?? 0;
	}

	emit(event, payload) {
		const set = this.#listeners.get(event);
		if (!set) return;
		for (const listener of [...set]) {
			try {
				listener(payload);
			} catch (error) {
				queueMicrotask(() => {
					throw error;
				});
			}
		}
	}
}
