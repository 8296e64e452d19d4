const INPUT_EVENTS = ['pointermove', 'pointerdown', 'keydown', 'wheel', 'touchstart'];

/**
 * Watches a browser window for signs of a present user: pointer, keyboard,
 * wheel and touch input call `onInput`; the page becoming hidden calls
 * `onHidden`, becoming visible again counts as input. Returns the function
 * that removes every listener.
 */
export function watchPageInput(window, { onInput, onHidden }) {
	const document = window.document;
	const onVisibilityChange = () => (document.visibilityState === 'hidden' ? onHidden() : onInput());
	const options = { capture: true, passive: true };
	for (const type of INPUT_EVENTS) window.addEventListener(type, onInput, options);
	document.addEventListener('visibilitychange', onVisibilityChange);
	return () => {
		for (const type of INPUT_EVENTS) window.removeEventListener(type, onInput, options);
		document.removeEventListener('visibilitychange', onVisibilityChange);
	};
}

/** The page's window when running in a browser, else null. */
export function browserWindow() {
	const window = globalThis.window;
	return window && window.document && typeof window.addEventListener === 'function' ? window : null;
}
