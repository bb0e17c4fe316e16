/** @messaging-service/client on Node: the browser entry plus `fileStorage`. */
export * from './index.browser.js';
export { fileStorage } from './storage/file.js';
