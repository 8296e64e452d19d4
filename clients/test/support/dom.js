// A jsdom window as the global browser environment, for rendering React in
// Node. Import it before react-dom: react-dom decides at load time whether
// it runs in a browser.
import { JSDOM } from 'jsdom';

const { window } = new JSDOM('<!doctype html><html><body></body></html>', { url: 'http://127.0.0.1/' });
globalThis.window = window;
globalThis.document = window.document;
globalThis.navigator ??= window.navigator;
globalThis.HTMLElement = window.HTMLElement;
// Tells React that tests wrap updates in act().
globalThis.IS_REACT_ACT_ENVIRONMENT = true;
