/**
 * Items arriving from a socket, taken one at a time by a test. Taking waits
 * (in real time, bounded) for the next item, so a missing message fails the
 * test instead of hanging it.
 */
export class AsyncQueue {
	#items = [];
	#takers = [];

	push(item) {
		const taker = this.#takers.shift();
		if (taker) taker(item);
		else this.#items.push(item);
	}

	take(timeoutMs = 5000, what = 'item') {
		if (this.#items.length > 0) return Promise.resolve(this.#items.shift());
		return new Promise((resolve, reject) => {
			const taker = (item) => {
				clearTimeout(timer);
				resolve(item);
			};
			const timer = setTimeout(() => {
				this.#takers.splice(this.#takers.indexOf(taker), 1);
				reject(new Error(`no ${what} within ${timeoutMs} ms`));
			}, timeoutMs);
			this.#takers.push(taker);
		});
	}
}
