/**
 * The demo's service worker: shows a notification for each Web Push the service sends.
 * A push carries only `{ conversationId, messageId }` (the service never puts content in
 * one), so the notification says "New message"; clicking it opens the chat.
 */
/// <reference lib="webworker" />
export {};

declare const self: ServiceWorkerGlobalScope;

interface PushData {
  conversationId?: string;
  messageId?: string;
}

self.addEventListener('push', (event) => {
  let data: PushData = {};
  try {
    data = (event.data?.json() ?? {}) as PushData;
  } catch {
    // A push the page cannot read still tells the user something arrived.
  }
  event.waitUntil(
    self.registration.showNotification('New message', {
      body: 'Open the chat to read it.',
      // One notification per conversation, as the push's Topic collapses them.
      tag: data.conversationId ?? 'message',
      data,
    }),
  );
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  event.waitUntil(
    self.clients.matchAll({ type: 'window', includeUncontrolled: true }).then(async (windows) => {
      const open = windows.find((client) => new URL(client.url).pathname.startsWith('/demo'));
      if (open) await open.focus();
      else await self.clients.openWindow('/demo');
    }),
  );
});
