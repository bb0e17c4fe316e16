/**
 * The demo chat: a plain TypeScript page on @messaging-service/client. Everything that
 * makes a chat reliable (resends, ordering, de-duplication, catch-up, the outbox that
 * survives a reload) is the SDK's; this file only keeps what is on screen in step with
 * the SDK's events and the REST API.
 */
import {
  ClientError,
  indexedDbStorage,
  MessagingClient,
  type Message,
  type StateChange,
} from '@messaging-service/client';

/** GET /v1/conversations/:id, the fields the page uses. */
interface ConversationJson {
  id: string;
  kind: 'direct' | 'group';
  title: string | null;
  encryption: 'server' | 'e2e';
  lastSeq: number;
  members: { userId: string; readSeq: number }[];
}

type TickStatus = 'sent' | 'delivered' | 'read';

interface Conversation {
  id: string;
  kind: 'direct' | 'group';
  title: string | null;
  encryption: 'server' | 'e2e';
  members: string[];
  lastSeq: number;
  /** My read mark. */
  readSeq: number;
  messages: Map<number, Message>;
  /** History was read once; older pages load on scroll while `hasOlder`. */
  loaded: boolean;
  hasOlder: boolean;
  loadingOlder: boolean;
  deliveredIds: Set<string>;
  deliveredSeq: number;
  /** The highest read mark of the other members: my messages up to it are read. */
  othersReadSeq: number;
  /** Who is typing, with the timer that ends it should the `false` never come. */
  typing: Map<string, number>;
}

/** A send the page made, kept in localStorage so a reload can still show its text. */
interface PendingText {
  conversationId: string;
  body: string;
  createdAt: string;
}

const HISTORY_PAGE = 30;
/** Stop saying "typing" when the user pauses this long without sending. */
const TYPING_IDLE_MS = 4_000;
/** How often the outbox is read back from IndexedDB to redraw the "sending…" entries. */
const OUTBOX_POLL_MS = 1_000;

const $ = <T extends HTMLElement>(id: string): T => {
  const element = document.getElementById(id);
  if (!element) throw new Error(`#${id} is missing from index.html`);
  return element as T;
};

const ui = {
  banner: $('banner'),
  signin: $('signin'),
  signinForm: $<HTMLFormElement>('signin-form'),
  signinName: $<HTMLInputElement>('signin-name'),
  signinToken: $<HTMLInputElement>('signin-token'),
  signinError: $('signin-error'),
  app: $('app'),
  me: $('me'),
  signout: $('signout'),
  newForm: $<HTMLFormElement>('new-conversation'),
  newMembers: $<HTMLInputElement>('new-members'),
  newTitle: $<HTMLInputElement>('new-title'),
  newE2e: $<HTMLInputElement>('new-e2e'),
  newError: $('new-error'),
  conversations: $('conversations'),
  title: $('conversation-title'),
  members: $('conversation-members'),
  messages: $('messages'),
  typing: $('typing'),
  composer: $<HTMLFormElement>('composer'),
  composerInput: $<HTMLInputElement>('composer-input'),
  pushEnable: $<HTMLButtonElement>('push-enable'),
  pushStatus: $('push-status'),
};

const storageKey = {
  user: 'demo.user',
  pastedToken: 'demo.token',
  device: (user: string) => `demo.device.${user}`,
  pending: (user: string) => `demo.pending.${user}`,
  open: (user: string) => `demo.open.${user}`,
};

let me = '';
let myDeviceId = '';
let client: MessagingClient | null = null;
let tokens: () => Promise<string> = () => Promise.reject(new Error('not signed in'));
const conversations = new Map<string, Conversation>();
const online = new Set<string>();
let current: string | null = null;
/** clientMsgIds whose `send` promise this page holds: they leave the outbox through it. */
const inFlight = new Set<string>();
let typingIdle: number | undefined;
let reconnectCountdown: number | undefined;

/**
 * Work started from an event handler. A failure (often the network, which the SDK heals
 * on its own) is logged and the page goes on; the next event redraws what is current.
 */
function background(work: Promise<unknown>): void {
  work.catch((error: unknown) => console.warn(`demo: ${error instanceof Error ? error.message : String(error)}`));
}

// ------------------------------------------------------------------ sign-in and tokens

function deviceIdFor(user: string): string {
  // One device per browser profile and user: the SDK's outbox and read marks belong to it.
  const stored = localStorage.getItem(storageKey.device(user));
  if (stored) return stored;
  const id = `web-${crypto.randomUUID().replaceAll('-', '').slice(0, 16)}`;
  localStorage.setItem(storageKey.device(user), id);
  return id;
}

/** Dev tokens from POST /demo/token, reused until a few minutes before they expire. */
function devTokens(user: string): () => Promise<string> {
  let cached: { token: string; expiresAt: number } | null = null;
  return async () => {
    if (cached && cached.expiresAt - Date.now() > 5 * 60_000) return cached.token;
    const response = await fetch('/demo/token', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ userId: user }),
    });
    if (response.status === 404) throw new Error('dev tokens are off here: paste a token');
    if (!response.ok) throw new Error(`token request failed (${response.status})`);
    const { data } = (await response.json()) as { data: { token: string; expiresAt: string } };
    cached = { token: data.token, expiresAt: Date.parse(data.expiresAt) };
    return data.token;
  };
}

async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const response = await fetch(path, {
    method,
    headers: {
      authorization: `Bearer ${await tokens()}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = (await response.json()) as { data: T; error?: { message: string } };
  if (!response.ok) throw new Error(json.error?.message ?? `${method} ${path}: ${response.status}`);
  return json.data;
}

async function signIn(user: string, pastedToken: string | null): Promise<void> {
  me = user;
  tokens = pastedToken ? () => Promise.resolve(pastedToken) : devTokens(user);
  // Once up front: a page without dev tokens says so at sign-in rather than retrying.
  await tokens();
  const deviceId = deviceIdFor(user);
  myDeviceId = deviceId;
  client = new MessagingClient({
    url: location.origin,
    deviceId,
    token: () => tokens(),
    // The outbox lives in IndexedDB: a send typed offline survives a reload of the page.
    // So does the device's e2e key pair: the page encrypts in e2e conversations.
    storage: indexedDbStorage(`demo-${user}-${deviceId}`),
    e2e: true,
  });
  listen(client);
  ui.signin.hidden = true;
  ui.app.hidden = false;
  ui.me.textContent = user;
  await renderOutbox();
  await client.connect();
  await refreshConversations();
  const open = localStorage.getItem(storageKey.open(user));
  if (open && conversations.has(open)) await openConversation(open);
  window.setInterval(() => background(renderOutbox()), OUTBOX_POLL_MS);
}

ui.signinForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const user = ui.signinName.value.trim();
  const pasted = ui.signinToken.value.trim() || null;
  if (!user) return;
  ui.signinError.textContent = '';
  localStorage.setItem(storageKey.user, user);
  if (pasted) localStorage.setItem(storageKey.pastedToken, pasted);
  else localStorage.removeItem(storageKey.pastedToken);
  signIn(user, pasted).catch(showSignInError);
});

ui.signout.addEventListener('click', () => {
  localStorage.removeItem(storageKey.user);
  localStorage.removeItem(storageKey.pastedToken);
  void (client?.close() ?? Promise.resolve()).finally(() => location.reload());
});

function showSignInError(error: unknown): void {
  ui.signin.hidden = false;
  ui.app.hidden = true;
  ui.signinError.textContent = error instanceof Error ? error.message : String(error);
  localStorage.removeItem(storageKey.user);
  if (client) background(client.close());
  client = null;
}

// ------------------------------------------------------------------ SDK events

function listen(chat: MessagingClient): void {
  chat.on('state', showState);
  chat.on('synced', ({ delivered }) => {
    setBanner('synced', delivered > 0 ? `Synced · ${delivered} new while away` : 'Synced');
    // Conversations created while this page was away are found by listing again.
    background(refreshConversations());
  });
  chat.on('message', (message) => background(receive(message)));
  chat.on('typing', ({ conversationId, userId, isTyping, expiresAt }) => {
    const conversation = conversations.get(conversationId);
    if (!conversation || userId === me) return;
    window.clearTimeout(conversation.typing.get(userId));
    conversation.typing.delete(userId);
    if (isTyping) {
      const lasts = Math.max(0, Date.parse(expiresAt) - Date.now());
      conversation.typing.set(
        userId,
        window.setTimeout(() => {
          conversation.typing.delete(userId);
          renderTyping();
        }, lasts),
      );
    }
    renderTyping();
  });
  chat.on('receipt', ({ conversationId, userId, status, seq, messageIds }) => {
    const conversation = conversations.get(conversationId);
    if (!conversation) return;
    if (userId === me) {
      // My read mark moved on another device.
      if (status === 'read') conversation.readSeq = Math.max(conversation.readSeq, seq);
    } else if (status === 'delivered') {
      for (const id of messageIds ?? []) conversation.deliveredIds.add(id);
      conversation.deliveredSeq = Math.max(conversation.deliveredSeq, seq);
    } else {
      conversation.othersReadSeq = Math.max(conversation.othersReadSeq, seq);
    }
    render();
  });
  chat.on('presence', ({ userId, status }) => {
    if (status === 'online') online.add(userId);
    else online.delete(userId);
    render();
  });
  chat.on('membership', ({ conversationId, userId, change }) => {
    if (change === 'removed' && userId === me) {
      conversations.delete(conversationId);
      if (current === conversationId) current = null;
      render();
      return;
    }
    background(loadConversation(conversationId).then(render));
  });
  chat.on('error', (error) => console.warn(`chat: ${error.code}: ${error.message}`));
}

function showState({ state, delayMs, error }: StateChange): void {
  window.clearInterval(reconnectCountdown);
  switch (state) {
    case 'idle':
      setBanner('idle', '');
      break;
    case 'connecting':
      setBanner('connecting', 'Connecting…');
      break;
    case 'connected':
      setBanner('connected', 'Connected · catching up…');
      break;
    case 'reconnecting': {
      // Count down to the SDK's next try (full-jitter backoff); 'online' cuts it short.
      const at = Date.now() + (delayMs ?? 0);
      const tick = () => setBanner('reconnecting', `Reconnecting in ${Math.ceil((at - Date.now()) / 1000)} s…`);
      tick();
      reconnectCountdown = window.setInterval(tick, 500);
      break;
    }
    case 'closed':
      setBanner('closed', `Disconnected${error ? `: ${error.code}` : ''}. Reload to reconnect.`);
      break;
  }
}

function setBanner(state: string, text: string): void {
  ui.banner.dataset.state = state;
  ui.banner.textContent = text;
}

// ------------------------------------------------------------------ conversations

/**
 * Merges a fetched conversation into what the page holds. An existing entry is updated in
 * place: a history page or a receipt may be landing on it while the fetch was under way.
 */
function mergeConversation(json: ConversationJson): Conversation {
  const others = json.members.filter((member) => member.userId !== me);
  const mine = json.members.find((member) => member.userId === me);
  const conversation = conversations.get(json.id) ?? {
    id: json.id,
    kind: json.kind,
    title: json.title,
    encryption: json.encryption,
    members: [],
    lastSeq: 0,
    readSeq: 0,
    messages: new Map<number, Message>(),
    loaded: false,
    hasOlder: false,
    loadingOlder: false,
    deliveredIds: new Set<string>(),
    deliveredSeq: 0,
    othersReadSeq: 0,
    typing: new Map<string, number>(),
  };
  conversation.title = json.title;
  conversation.members = json.members.map((member) => member.userId);
  conversation.lastSeq = Math.max(conversation.lastSeq, json.lastSeq);
  conversation.readSeq = Math.max(conversation.readSeq, mine?.readSeq ?? 0);
  conversation.othersReadSeq = Math.max(conversation.othersReadSeq, ...others.map((member) => member.readSeq));
  conversations.set(json.id, conversation);
  return conversation;
}

/** Fetches one conversation with its members and joins it (typing, presence, receipts). */
async function loadConversation(id: string): Promise<Conversation | null> {
  if (!client) return null;
  const conversation = mergeConversation(await api<ConversationJson>('GET', `/v1/conversations/${id}`));
  const joined = await client.join(id);
  conversation.lastSeq = Math.max(conversation.lastSeq, joined.lastSeq);
  conversation.readSeq = Math.max(conversation.readSeq, joined.readSeq);
  for (const { userId } of joined.presence) if (userId !== me) online.add(userId);
  return conversation;
}

async function refreshConversations(): Promise<void> {
  const list = await api<{ id: string }[]>('GET', '/v1/conversations?limit=50');
  await Promise.all(list.map(({ id }) => loadConversation(id)));
  render();
}

function nameOf(conversation: Conversation): string {
  if (conversation.title) return conversation.title;
  const others = conversation.members.filter((member) => member !== me);
  return others.length > 0 ? others.join(', ') : 'just me';
}

function unreadOf(conversation: Conversation): number {
  if (conversation.id === current) return 0;
  return Math.max(0, conversation.lastSeq - conversation.readSeq);
}

async function openConversation(id: string): Promise<void> {
  const previous = current;
  if (previous && previous !== id) client?.typing(previous, false);
  current = id;
  localStorage.setItem(storageKey.open(me), id);
  const conversation = conversations.get(id);
  if (!conversation || !client) return;
  ui.composerInput.disabled = false;
  (ui.composer.querySelector('button') as HTMLButtonElement).disabled = false;
  if (!conversation.loaded) {
    const page = await client.history(id, { limit: HISTORY_PAGE });
    for (const message of page.messages) conversation.messages.set(message.seq, message);
    conversation.hasOlder = page.hasMore;
    conversation.loaded = true;
  }
  render();
  scrollToEnd();
  await markRead(conversation);
}

async function markRead(conversation: Conversation): Promise<void> {
  if (!client || conversation.id !== current || document.visibilityState !== 'visible') return;
  const seq = Math.max(conversation.lastSeq, ...conversation.messages.keys());
  if (seq <= conversation.readSeq) return;
  conversation.readSeq = seq;
  render();
  await client.read(conversation.id, seq);
}

async function receive(message: Message): Promise<void> {
  let conversation = conversations.get(message.conversationId);
  if (!conversation) conversation = (await loadConversation(message.conversationId)) ?? undefined;
  if (!conversation) return;
  conversation.lastSeq = Math.max(conversation.lastSeq, message.seq);
  // A message ends its sender's typing at once (the server's `false` may come later).
  window.clearTimeout(conversation.typing.get(message.senderId));
  conversation.typing.delete(message.senderId);
  if (conversation.loaded) conversation.messages.set(message.seq, message);
  const atEnd = nearEnd();
  render();
  if (conversation.id === current && atEnd) scrollToEnd();
  await markRead(conversation);
}

/** Older messages, a page at a time, when the list is scrolled to its top. */
async function loadOlder(): Promise<void> {
  const conversation = current ? conversations.get(current) : undefined;
  if (!client || !conversation?.hasOlder || conversation.loadingOlder) return;
  conversation.loadingOlder = true;
  try {
    const oldest = Math.min(...conversation.messages.keys());
    const page = await client.history(conversation.id, { beforeSeq: oldest, limit: HISTORY_PAGE });
    const before = ui.messages.scrollHeight;
    for (const message of page.messages) conversation.messages.set(message.seq, message);
    conversation.hasOlder = page.hasMore;
    render();
    // Keep the message that was at the top where it was.
    ui.messages.scrollTop += ui.messages.scrollHeight - before;
  } finally {
    conversation.loadingOlder = false;
  }
}

ui.messages.addEventListener('scroll', () => {
  if (ui.messages.scrollTop < 40) background(loadOlder());
});

document.addEventListener('visibilitychange', () => {
  const conversation = current ? conversations.get(current) : undefined;
  if (conversation) background(markRead(conversation));
});

ui.newForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const memberIds = ui.newMembers.value
    .split(',')
    .map((name) => name.trim())
    .filter((name) => name && name !== me);
  const title = ui.newTitle.value.trim();
  if (memberIds.length === 0) return;
  const kind = memberIds.length === 1 && !title ? 'direct' : 'group';
  ui.newError.textContent = '';
  api<ConversationJson>('POST', '/v1/conversations', {
    kind,
    memberIds: kind === 'direct' ? [me, ...memberIds] : memberIds,
    ...(title ? { title } : {}),
    ...(ui.newE2e.checked ? { encryption: 'e2e' } : {}),
  })
    .then(async (created) => {
      ui.newMembers.value = '';
      ui.newTitle.value = '';
      ui.newE2e.checked = false;
      await loadConversation(created.id);
      await openConversation(created.id);
    })
    .catch((error: unknown) => {
      ui.newError.textContent = error instanceof Error ? error.message : String(error);
    });
});

// ------------------------------------------------------------------ sending

function pendingTexts(): Record<string, PendingText> {
  return JSON.parse(localStorage.getItem(storageKey.pending(me)) ?? '{}') as Record<string, PendingText>;
}

function savePendingTexts(pending: Record<string, PendingText>): void {
  localStorage.setItem(storageKey.pending(me), JSON.stringify(pending));
}

ui.composer.addEventListener('submit', (event) => {
  event.preventDefault();
  const body = ui.composerInput.value.trim();
  if (!client || !current || !body) return;
  const conversationId = current;
  const clientMsgId = crypto.randomUUID();
  ui.composerInput.value = '';
  client.typing(conversationId, false);
  // The text is kept beside the SDK's outbox (which holds ids, not what to draw) so the
  // "sending…" entry can be drawn again after a reload.
  savePendingTexts({ ...pendingTexts(), [clientMsgId]: { conversationId, body, createdAt: new Date().toISOString() } });
  inFlight.add(clientMsgId);
  render();
  scrollToEnd();
  client
    .send(conversationId, { body }, { clientMsgId })
    .then((stored) => sent(stored))
    .catch((error: unknown) => {
      // Only permanent errors reject (the SDK retries everything else): drop the entry.
      const { [clientMsgId]: _failed, ...rest } = pendingTexts();
      savePendingTexts(rest);
      console.warn(`send failed: ${error instanceof ClientError ? error.code : String(error)}`);
      render();
    })
    .finally(() => inFlight.delete(clientMsgId));
});

async function sent(message: Message): Promise<void> {
  const { [message.clientMsgId]: _done, ...rest } = pendingTexts();
  savePendingTexts(rest);
  const conversation = conversations.get(message.conversationId);
  if (!conversation) return;
  conversation.lastSeq = Math.max(conversation.lastSeq, message.seq);
  if (conversation.loaded) conversation.messages.set(message.seq, message);
  render();
  if (conversation.id === current) scrollToEnd();
  await markRead(conversation);
}

ui.composerInput.addEventListener('input', () => {
  if (!client || !current) return;
  const typing = ui.composerInput.value.trim() !== '';
  client.typing(current, typing);
  window.clearTimeout(typingIdle);
  if (typing) {
    const conversationId = current;
    typingIdle = window.setTimeout(() => client?.typing(conversationId, false), TYPING_IDLE_MS);
  }
});

/**
 * Redraws the "sending…" entries from the SDK's outbox. An entry that left the outbox
 * without this page's `send` promise (it was sent by a page before a reload) is read
 * back with `history`, since the SDK never emits a device's own messages.
 */
async function renderOutbox(): Promise<void> {
  if (!client) return;
  const outbox = new Set((await client.outbox()).map((entry) => entry.clientMsgId));
  const pending = pendingTexts();
  const settled = Object.entries(pending).filter(([id]) => !outbox.has(id) && !inFlight.has(id));
  // Nothing left the outbox behind this page's back: the entries on screen are current.
  if (settled.length === 0) return;
  for (const [id] of settled) delete pending[id];
  savePendingTexts(pending);
  if (client.state !== 'connected') return;
  for (const conversationId of new Set(settled.map(([, entry]) => entry.conversationId))) {
    const conversation = conversations.get(conversationId);
    if (!conversation?.loaded) continue;
    const after = Math.max(0, ...conversation.messages.keys());
    const page = await client.history(conversationId, { afterSeq: after, limit: 100 });
    for (const message of page.messages) conversation.messages.set(message.seq, message);
  }
  render();
}

// ------------------------------------------------------------------ drawing

function nearEnd(): boolean {
  return ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 80;
}

function scrollToEnd(): void {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: { className?: string; text?: string; data?: Record<string, string> } = {},
  children: Node[] = [],
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (props.className) node.className = props.className;
  if (props.text !== undefined) node.textContent = props.text;
  for (const [key, value] of Object.entries(props.data ?? {})) node.dataset[key] = value;
  node.append(...children);
  return node;
}

const dot = (userId: string) =>
  element('span', { className: 'dot', data: { user: userId, online: String(online.has(userId)) } });

function tickOf(conversation: Conversation, message: Message): TickStatus {
  if (message.seq <= conversation.othersReadSeq) return 'read';
  if (conversation.deliveredIds.has(message.id) || message.seq <= conversation.deliveredSeq) return 'delivered';
  return 'sent';
}

function render(): void {
  renderList();
  renderConversation();
  renderTyping();
}

function renderList(): void {
  const items = [...conversations.values()].sort((a, b) => b.lastSeq - a.lastSeq || a.id.localeCompare(b.id));
  ui.conversations.replaceChildren(
    ...items.map((conversation) => {
      const others = conversation.members.filter((member) => member !== me);
      const item = element('li', { data: { id: conversation.id, name: nameOf(conversation) } }, [
        ...(conversation.kind === 'direct' && others[0] ? [dot(others[0])] : []),
        element('span', { className: 'name', text: nameOf(conversation) }),
        element('span', { className: 'unread', text: unreadOf(conversation) ? String(unreadOf(conversation)) : '' }),
      ]);
      item.setAttribute('aria-current', String(conversation.id === current));
      item.addEventListener('click', () => background(openConversation(conversation.id)));
      return item;
    }),
  );
}

function renderConversation(): void {
  const conversation = current ? conversations.get(current) : undefined;
  if (!conversation) return;
  ui.title.textContent = nameOf(conversation);
  // A lock (style.css) on end-to-end encrypted conversations.
  ui.title.dataset.encryption = conversation.encryption;
  ui.members.replaceChildren(
    ...conversation.members
      .filter((member) => member !== me)
      .map((member) => element('span', { data: { member } }, [dot(member), document.createTextNode(` ${member}`)])),
  );
  const rows: HTMLElement[] = [];
  if (conversation.hasOlder) rows.push(element('li', { className: 'history-note', text: 'scroll up for older' }));
  for (const message of [...conversation.messages.values()].sort((a, b) => a.seq - b.seq)) {
    const mine = message.senderId === me;
    const tick = mine ? tickOf(conversation, message) : null;
    rows.push(
      element('li', { className: mine ? 'mine' : 'theirs', data: { seq: String(message.seq), id: message.id } }, [
        ...(mine || conversation.kind === 'direct'
          ? []
          : [element('span', { className: 'sender', text: message.senderId })]),
        element('span', {
          className: message.undecryptable ? 'body undecryptable' : 'body',
          text: message.body ?? (message.undecryptable ? '(cannot be decrypted on this device)' : '(encrypted)'),
        }),
        element('span', { className: 'meta' }, [
          document.createTextNode(new Date(message.createdAt).toLocaleTimeString([], { timeStyle: 'short' })),
          ...(tick
            ? [element('span', { className: 'tick', text: tick === 'sent' ? ' ✓' : ' ✓✓', data: { status: tick } })]
            : []),
        ]),
      ]),
    );
  }
  const pending = Object.entries(pendingTexts())
    .filter(([, entry]) => entry.conversationId === conversation.id)
    .sort(([, a], [, b]) => a.createdAt.localeCompare(b.createdAt));
  for (const [clientMsgId, entry] of pending) {
    rows.push(
      element('li', { className: 'mine pending', data: { clientMsgId } }, [
        element('span', { className: 'body', text: entry.body }),
        element('span', { className: 'meta', text: 'sending…' }),
      ]),
    );
  }
  ui.messages.replaceChildren(...rows);
}

function renderTyping(): void {
  const conversation = current ? conversations.get(current) : undefined;
  const who = conversation ? [...conversation.typing.keys()] : [];
  ui.typing.textContent = who.length === 0 ? '' : `${who.join(', ')} ${who.length === 1 ? 'is' : 'are'} typing…`;
}

// ------------------------------------------------------------------ web push

/** base64url (the VAPID key's form) to the bytes PushManager.subscribe takes. */
function base64UrlBytes(text: string): Uint8Array<ArrayBuffer> {
  const base64 = text
    .replaceAll('-', '+')
    .replaceAll('_', '/')
    .padEnd(Math.ceil(text.length / 4) * 4, '=');
  return Uint8Array.from(atob(base64), (char) => char.charCodeAt(0));
}

/** Resolves once the registration's worker is active. */
async function activated(registration: ServiceWorkerRegistration): Promise<void> {
  const worker = registration.installing ?? registration.waiting ?? registration.active;
  if (!worker || worker.state === 'activated') return;
  await new Promise<void>((resolve) => {
    worker.addEventListener('statechange', () => {
      if (worker.state === 'activated') resolve();
    });
  });
}

/**
 * Opts this browser in to Web Push: registers the service worker, subscribes with the
 * service's VAPID key (GET /v1/push/web-push-key) and registers the subscription as this
 * device's (PUT /v1/devices/:id). The service then pushes while the page is closed.
 */
async function enableWebPush(): Promise<void> {
  if (!('serviceWorker' in navigator) || !('PushManager' in window)) {
    throw new Error('this browser has no Web Push');
  }
  ui.pushStatus.textContent = 'Subscribing…';
  const { publicKey } = await api<{ publicKey: string }>('GET', '/v1/push/web-push-key').catch((error: unknown) => {
    throw new Error(`web push is off on this server (${error instanceof Error ? error.message : String(error)})`);
  });
  if ((await Notification.requestPermission()) !== 'granted') throw new Error('notifications are blocked');
  const registration = await navigator.serviceWorker.register('/demo/sw.js', { scope: '/demo/' });
  // Not `navigator.serviceWorker.ready`: the page (/demo) lies outside the worker's scope
  // (/demo/), so that promise would never settle. Subscribing needs an active worker.
  await activated(registration);
  const subscription = await registration.pushManager.subscribe({
    userVisibleOnly: true,
    applicationServerKey: base64UrlBytes(publicKey),
  });
  await api('PUT', `/v1/devices/${encodeURIComponent(myDeviceId)}`, {
    platform: 'web',
    webPush: subscription.toJSON(),
  });
  ui.pushStatus.textContent = 'On';
  ui.pushEnable.disabled = true;
}

ui.pushEnable.addEventListener('click', () => {
  enableWebPush().catch((error: unknown) => {
    ui.pushStatus.textContent = error instanceof Error ? error.message : String(error);
  });
});

// ------------------------------------------------------------------ start

const rememberedUser = localStorage.getItem(storageKey.user);
if (rememberedUser) {
  signIn(rememberedUser, localStorage.getItem(storageKey.pastedToken)).catch(showSignInError);
}
